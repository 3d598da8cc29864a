"""
The shared policy layer: who may connect, how many, how fast, for how long,
and what is logged about it.

One L{Policy} object per service holds the settings and the live state
(connections, per-source counts, the rate bucket, the idle sweeper). Factories
built by L{ServiceFactory} ask it about every new peer in C{buildProtocol}:
there is no wrapping protocol, so an admitted connection costs nothing per
read beyond two attribute updates in the service's own protocol. A config
reload swaps the settings with L{Policy.reconfigure}; established connections
stay (they are not re-checked against new lists or caps), new limits apply to
new connections, and the sweeper follows a new idle_timeout.

Refused peers get one line (C{socksvc: REASON}) and are aborted at once: they
never count against a cap, never get a read buffer, never log a traceback.
Refusals are logged at most once per reason per 10 s per service; what was
held back is reported in a summary line when the 10 s are up.

Running out of file descriptors (EMFILE) is handled by Twisted's listening
port, which keeps one descriptor in reserve and uses it to accept and close
the waiting peers, so the listener never spins; L{guard_port} rate-limits the
log lines Twisted writes about it (one per closed peer otherwise), and
L{raise_fd_limit} lifts the soft descriptor limit to the hard one.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import attrs
from twisted.internet.interfaces import IAddress, IDelayedCall, IHalfCloseableProtocol, IReactorTime
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.task import LoopingCall
from twisted.logger import ILogObserver, LogEvent, Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from socksvc.config.settings import IPNetwork, as_float, as_int, as_networks, setting
from socksvc.core.writethrough import send_last

log = Logger(namespace="socksvc")

IP = ipaddress.IPv4Address | ipaddress.IPv6Address

REFUSAL_LOG_PERIOD = 10.0
"""Seconds between two refusal lines for the same reason (per service)."""

SWEEPS_PER_TIMEOUT = 10
"""The idle sweeper runs idle_timeout / this often: aborts come at most 10% late."""

MIN_SWEEP_INTERVAL = 0.05

# Refusal reasons: the text after "socksvc: " that a refused peer reads.
DENIED = "access denied"
TOO_MANY = "too many connections, try again later"
TOO_MANY_FROM_YOU = "too many connections from your address"
RATE_EXCEEDED = "connection rate exceeded, try again later"
REASONS = (DENIED, TOO_MANY, TOO_MANY_FROM_YOU, RATE_EXCEEDED)


@attrs.frozen
class PolicySettings:
    """Keys valid in [defaults] and in every [services.NAME] table."""

    max_connections: int = setting(1024, as_int(), "connections open at once for this service; 0 = no limit")
    max_per_source: int = setting(
        64, as_int(), "connections open at once from one IPv4 address or IPv6 /64; 0 = no limit"
    )
    idle_timeout: float = setting(300.0, as_float(), "seconds without input before a connection is aborted; 0 = never")
    allow: tuple[IPNetwork, ...] = setting((), as_networks, "CIDRs allowed to connect; empty = everyone")
    deny: tuple[IPNetwork, ...] = setting((), as_networks, "CIDRs refused (checked before allow)")
    max_rate: float = setting(0.0, as_float(), "new connections per second for this service; 0 = no limit")
    max_rate_burst: int = setting(0, as_int(), "connections allowed at once above max_rate; 0 = one second's worth")


# -- addresses ---------------------------------------------------------------

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def peer_ip(addr: IAddress | None) -> IP | None:
    """The peer's IP address (IPv4-mapped IPv6 unwrapped), or None (UNIX)."""
    host = getattr(addr, "host", None)
    if not isinstance(host, str):
        return None
    return host_ip(host)


def host_ip(host: str) -> IP | None:
    """L{peer_ip} for a host string (a datagram's source): None if it is not an IP address."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def source_key(ip: IP | None) -> str:
    """How peers are grouped for per-source limits: IPv4 address, IPv6 /64."""
    if ip is None:
        return "local"
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


_FACTS: dict[str, tuple[IP | None, str]] = {}
_FACTS_MAX = 4096


def peer_facts(addr: IAddress | None) -> tuple[IP | None, str]:
    """
    L{peer_ip} and its L{source_key} at once, remembered per host string (a
    bounded table, emptied when full): parsing an address costs more than
    the rest of admitting a connection.
    """
    host = getattr(addr, "host", None)
    if not isinstance(host, str):
        return None, "local"
    facts = _FACTS.get(host)
    if facts is None:
        ip = peer_ip(addr)
        facts = (ip, source_key(ip))
        if len(_FACTS) >= _FACTS_MAX:
            _FACTS.clear()
        _FACTS[host] = facts
    return facts


def format_peer(addr: IAddress | None) -> str:
    """C{127.0.0.1:5000}, C{[::1]:5000}, or C{unix}."""
    host = getattr(addr, "host", None)
    port = getattr(addr, "port", None)
    if isinstance(host, str):
        if ":" in host:
            return f"[{host}]:{port}"
        return f"{host}:{port}"
    return "unix"


def _in_any(ip: IP, networks: tuple[IPNetwork, ...]) -> bool:
    """
    Is C{ip} in one of C{networks}? An IPv4 address also matches a network
    written in IPv4-mapped form (C{::ffff:10.0.0.0/104}); C{::/0} and other
    IPv6 networks wider than the mapped range do not match IPv4 peers.
    """
    for net in networks:
        if net.version == ip.version:
            if ip in net:
                return True
        elif (
            isinstance(net, ipaddress.IPv6Network)
            and net.subnet_of(_MAPPED)
            and ipaddress.IPv6Address(int(_MAPPED.network_address) | int(ip)) in net
        ):
            return True
    return False


def address_allowed(settings: PolicySettings, ip: IP | None) -> bool:
    """
    allow/deny: deny wins; a non-empty allow list admits only its members.
    C{None} (a UNIX-socket peer) is always allowed. Pass the address through
    L{peer_ip} first so IPv4-mapped peers are unwrapped.
    """
    if ip is None:
        return True
    if _in_any(ip, settings.deny):
        return False
    if settings.allow:
        return _in_any(ip, settings.allow)
    return True


# -- rate limits -------------------------------------------------------------


class TokenBucket:
    """A token bucket: C{rate} tokens a second, at most C{burst} saved up."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float, amount: float = 1.0) -> bool:
        """Spend C{amount} tokens if there are that many."""
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.stamp = now
        elif elapsed < 0:
            self.stamp = now  # the clock went back: start counting from here
        if self.tokens >= amount:
            self.tokens -= amount
            return True
        return False


def effective_burst(rate: float, burst: int) -> float:
    """A bucket's size: C{burst}, or one second's worth of C{rate} (at least 1) when it is 0."""
    if burst > 0:
        return float(burst)
    return float(max(1, math.ceil(rate)))


class RateLimitedLog:
    """
    At most one log line per key per C{period} seconds.

    C{emit(held)} is called for a line that gets through, with the number
    of lines held back for that key since the last one. When C{summary} is
    given, held-back lines are not left waiting for the next line (which may
    never come): at the end of the period C{summary(key, held)} is called
    (from a C{callLater} on C{clock}), and that counts as the key's line for
    the next period.
    """

    MAX_KEYS = 4096
    """Keys remembered at most (idle ones are forgotten first), so any key set is safe."""

    def __init__(
        self,
        clock: IReactorTime,
        period: float = REFUSAL_LOG_PERIOD,
        summary: Callable[[str, int], None] | None = None,
    ) -> None:
        self.clock = clock
        self.period = period
        self.summary = summary
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._flush: dict[str, IDelayedCall] = {}

    def __call__(self, key: str, emit: Callable[[int], None]) -> bool:
        """Call C{emit(suppressed_count)} unless C{key} logged recently."""
        now = self.clock.seconds()
        last = self._last.get(key)
        if last is not None and 0 <= now - last < self.period:
            self._held[key] = self._held.get(key, 0) + 1
            if self.summary is not None and key not in self._flush:
                self._flush[key] = self.clock.callLater(last + self.period - now, self._flush_key, key)
            return False
        if len(self._last) >= self.MAX_KEYS and key not in self._last:
            self._forget(now)
        self._last[key] = now
        self._cancel(key)
        emit(self._held.pop(key, 0))
        return True

    def held(self, key: str) -> int:
        """Lines held back for C{key} and not reported yet."""
        return self._held.get(key, 0)

    def _flush_key(self, key: str) -> None:
        self._flush.pop(key, None)
        held = self._held.pop(key, 0)
        if held and self.summary is not None:
            self._last[key] = self.clock.seconds()
            self.summary(key, held)

    def _cancel(self, key: str) -> None:
        call = self._flush.pop(key, None)
        if call is not None and call.active():
            call.cancel()

    def _forget(self, now: float) -> None:
        for key, last in list(self._last.items()):
            if now - last >= self.period and key not in self._held:
                del self._last[key]
        if len(self._last) >= self.MAX_KEYS:
            # Still full of recent keys: forget the oldest half (their held counts go with them).
            for key in sorted(self._last, key=self._last.__getitem__)[: self.MAX_KEYS // 2]:
                del self._last[key]
                self._held.pop(key, None)
                self._cancel(key)

    def flush(self) -> None:
        """Report everything held now (on stop): no count is lost."""
        for key in list(self._flush):
            self._cancel(key)
            self._flush_key(key)
        for key in list(self._held):
            self._flush_key(key)


# -- connections -------------------------------------------------------------


class Tracked(Protocol):
    """
    Base for every service's stream protocol: what the policy layer knows of
    a connection. A subclass adds to C{bytes_in}/C{bytes_out} and sets
    C{touched} when the peer did something that counts as activity (any
    input for a byte service, a complete line for a line service); only
    C{touched} keeps a connection from being aborted by the idle sweeper,
    unless the subclass makes C{idle_exempt} true for connections that idle
    by design (a chat member listening). A subclass may set C{close_reason}
    (a few words) before closing; it goes in the close event.
    """

    policy: Policy
    service_name: str = ""
    peer: str = ""
    source: str = "local"
    bytes_in: int = 0
    bytes_out: int = 0
    started: float = 0.0
    last_seen: float = 0.0
    touched: bool = False
    idle_sweeps: int = 0
    idle_aborted: bool = False
    close_reason: str = ""

    @property
    def idle_exempt(self) -> bool:
        """True while this connection may idle without being swept (see the class doc)."""
        return False

    def connectionMade(self) -> None:
        self.policy.opened(self)

    def connectionLost(self, reason: Failure = Failure(Exception("connection lost"))) -> None:
        self.policy.closed(self, reason)


@implementer(IHalfCloseableProtocol)
class StreamProtocol(Tracked):
    """
    A service's stream protocol with the usual set-up. With C{nodelay},
    TCP_NODELAY (replies go out at once, not after Nagle's wait). With
    C{self_producer}, the transport is registered as its own streaming
    producer: a peer that sends without reading fills our write buffer, and
    that pauses reading from it, so memory stays flat. Half-close: after the
    peer's half-close what is owed is still delivered, then the connection
    closes (a subclass with a last word overrides C{readConnectionLost});
    when the peer can no longer read at all, the connection is aborted.
    """

    nodelay: ClassVar[bool] = True
    self_producer: ClassVar[bool] = True

    def connectionMade(self) -> None:
        super().connectionMade()
        transport: Any = self.transport
        if self.nodelay:
            set_nodelay = getattr(transport, "setTcpNoDelay", None)
            if set_nodelay is not None:
                set_nodelay(True)
        if self.self_producer:
            transport.registerProducer(transport, True)

    def readConnectionLost(self) -> None:
        """The peer half-closed: deliver what is owed, then close."""
        transport: Any = self.transport
        if self.self_producer:
            transport.unregisterProducer()
        transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """The peer stopped reading for good: nothing more can be delivered."""
        transport: Any = self.transport
        transport.abortConnection()


class Refuser(Protocol):
    """
    Says why in one line, then closes at once: a refused peer holds no slot
    or buffer.

    The line goes straight to the socket (L{send_last}). When the kernel took
    all of it (on a fresh plain TCP or UNIX connection it always does) the
    connection is closed in order at once, input the peer already sent read
    away first, so the peer reads the line before its end-of-file: an abort
    (RST) can overtake the line, and a client doing a non-blocking connect
    then sees only "connection reset". When the line could not be sent whole
    (TLS, say), the connection is aborted, its descriptor released on the
    next reactor turn. Either way nothing waits on the peer.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def connectionMade(self) -> None:
        transport: Any = self.transport
        line = f"socksvc: {self.reason}\r\n".encode()
        sent = send_last(transport, line)
        if sent == len(line):
            return
        if not sent:
            transport.write(line)  # best effort: abort discards it unless the transport sends at once
        transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        """Whatever came with the connection is dropped unread."""


class Policy:
    """Policy settings and live connection state for one service."""

    def __init__(self, service: str, settings: PolicySettings, clock: IReactorTime) -> None:
        self.service = service
        self.clock = clock
        self.settings = settings
        self.connections: set[Tracked] = set()
        self.per_source: dict[str, int] = {}
        self.accepted = 0
        self.refused: dict[str, int] = {}
        self.log_refusal = RateLimitedLog(clock, REFUSAL_LOG_PERIOD, summary=self._refusal_summary)
        self._bucket: TokenBucket | None = None
        self._sweeper: LoopingCall | None = None
        self._running = False
        self.reconfigure(settings)

    # settings

    def reconfigure(self, settings: PolicySettings) -> None:
        """
        Apply new settings (a reload). Established connections are kept and
        keep their place in the counts; new caps, lists and rates apply to
        new connections; a changed idle_timeout applies to every connection
        and (re)starts or stops the sweeper if the policy is running.
        """
        old = self.settings
        self.settings = settings
        if settings.max_rate > 0:
            burst = effective_burst(settings.max_rate, settings.max_rate_burst)
            now = self.clock.seconds()
            if self._bucket is None:
                self._bucket = TokenBucket(settings.max_rate, burst, now)
            else:
                # Keep what was spent: a reload is not a way around the rate.
                self._bucket.take(now, 0.0)
                self._bucket.rate = settings.max_rate
                self._bucket.burst = burst
                self._bucket.tokens = min(self._bucket.tokens, burst)
        else:
            self._bucket = None
        if self._running and (old.idle_timeout != settings.idle_timeout or self._sweeper is None):
            self._stop_sweeper()
            self._start_sweeper()

    def sweep_interval(self) -> float:
        return max(MIN_SWEEP_INTERVAL, self.settings.idle_timeout / SWEEPS_PER_TIMEOUT)

    def start(self) -> None:
        """The service is running: start the idle sweeper (if idle_timeout is set)."""
        self._running = True
        self._start_sweeper()

    def stop(self) -> None:
        """The service stopped: stop the sweeper, report held refusal counts."""
        self._running = False
        self._stop_sweeper()
        self.log_refusal.flush()

    @property
    def sweeping(self) -> bool:
        return self._sweeper is not None and self._sweeper.running

    def _start_sweeper(self) -> None:
        if self.settings.idle_timeout > 0 and self._sweeper is None:
            self._sweeper = LoopingCall(self.sweep)
            self._sweeper.clock = self.clock
            self._sweeper.start(self.sweep_interval(), now=False).addErrback(self._sweeper_failed)

    def _stop_sweeper(self) -> None:
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None and sweeper.running:
            sweeper.stop()

    def _sweeper_failed(self, failure: Failure) -> None:
        log.failure("{service}: idle sweeper failed; restarting it", failure, service=self.service)
        self._sweeper = None
        if self._running:
            self._start_sweeper()

    # admission

    def check(self, addr: IAddress | None) -> str | None:
        """Why a new peer at C{addr} is refused, or None to admit it."""
        ip = peer_ip(addr)
        return self.check_ip(ip, source_key(ip))

    def check_ip(self, ip: IP | None, source: str) -> str | None:
        """L{check} for a peer already parsed: C{ip} from L{peer_ip}, C{source} its L{source_key}."""
        s = self.settings
        if (s.deny or s.allow) and not address_allowed(s, ip):
            return DENIED
        if s.max_connections and len(self.connections) >= s.max_connections:
            return TOO_MANY
        if s.max_per_source and ip is not None and self.per_source.get(source, 0) >= s.max_per_source:
            return TOO_MANY_FROM_YOU
        if self._bucket is not None and not self._bucket.take(self.clock.seconds()):
            return RATE_EXCEEDED
        return None

    def refuse(self, addr: IAddress | None, reason: str) -> Refuser:
        """Count and (rate-limited) log a refusal; the protocol that says so."""
        self.refused[reason] = self.refused.get(reason, 0) + 1
        peer = format_peer(addr)

        def emit(held: int) -> None:
            more = f" (and {held} more since the last such line)" if held else ""
            log.info(
                "{service}: refused {peer}: {reason}{more}",
                event="refuse",
                service=self.service,
                peer=peer,
                reason=reason,
                more=more,
                held=held,
            )

        self.log_refusal(reason, emit)
        return Refuser(reason)

    def _refusal_summary(self, reason: str, held: int) -> None:
        log.info(
            "{service}: refused {held} more connections in the last {period:.0f}s: {reason}",
            event="refuse_summary",
            service=self.service,
            reason=reason,
            held=held,
            period=self.log_refusal.period,
        )

    # bookkeeping

    def opened(self, conn: Tracked) -> None:
        now = self.clock.seconds()
        conn.started = conn.last_seen = now
        conn.idle_sweeps = -1  # the first sweep may come at once: it does not count
        self.connections.add(conn)
        self.per_source[conn.source] = self.per_source.get(conn.source, 0) + 1
        self.accepted += 1

    def closed(self, conn: Tracked, reason: Failure) -> None:
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        left = self.per_source.get(conn.source, 1) - 1
        if left > 0:
            self.per_source[conn.source] = left
        else:
            self.per_source.pop(conn.source, None)
        duration = self.clock.seconds() - conn.started
        why = conn.close_reason or _close_reason(reason)
        log.info(
            "{service}: {peer} closed after {duration:.3f}s, {bytes_in} bytes in, {bytes_out} bytes out{why}",
            event="close",
            service=self.service,
            peer=conn.peer,
            source=conn.source,
            duration=duration,
            bytes_in=conn.bytes_in,
            bytes_out=conn.bytes_out,
            why=f" ({why})" if why else "",
            reason=why,
        )

    def sweep(self) -> None:
        """
        Abort connections idle for idle_timeout seconds or more.

        A connection is idle when nothing touched it for idle_timeout seconds
        of reactor time I{and} for that many sweeps' worth of intervals, so a
        wall-clock jump (reactor time is wall time) or a long stall of the
        process cannot abort connections early.
        """
        timeout = self.settings.idle_timeout
        if timeout <= 0:
            return
        now = self.clock.seconds()
        needed = math.ceil(timeout / self.sweep_interval() - 1e-9)
        for conn in list(self.connections):
            if conn.touched or conn.idle_exempt:
                conn.touched = False
                conn.last_seen = now
                conn.idle_sweeps = 0
                continue
            conn.idle_sweeps += 1
            if conn.idle_sweeps < needed or now - conn.last_seen < timeout:
                continue
            transport: Any = conn.transport
            if transport is None or conn.idle_aborted:
                continue
            conn.idle_aborted = True
            conn.close_reason = f"idle for {now - conn.last_seen:.0f}s"
            log.info(
                "{service}: {peer} idle for {idle:.0f}s, disconnecting",
                event="idle",
                service=self.service,
                peer=conn.peer,
                idle=now - conn.last_seen,
            )
            try:
                transport.abortConnection()
            except Exception:
                log.failure("{service}: aborting idle {peer} failed", service=self.service, peer=conn.peer)


def _close_reason(reason: Failure | None) -> str:
    from twisted.internet.error import ConnectionDone

    if reason is None or reason.type is ConnectionDone or reason.check(ConnectionDone):
        return ""
    text = reason.getErrorMessage().split("\n", 1)[0]
    return text


class ServiceFactory(ServerFactory):
    """
    A service's stream factory: asks the policy about each peer, then builds
    the service's L{Tracked} protocol.
    """

    noisy = False

    def __init__(self, context: Any, make: Callable[[], Tracked]) -> None:
        self.context = context
        self.make = make

    def buildProtocol(self, addr: IAddress) -> Protocol | None:  # type: ignore[override]
        policy: Policy = self.context.policy
        ip, source = peer_facts(addr)
        reason = policy.check_ip(ip, source)
        if reason is not None:
            return policy.refuse(addr, reason)
        proto = self.make()
        proto.factory = self
        proto.policy = policy
        proto.service_name = policy.service
        proto.peer = format_peer(addr)
        proto.source = source
        return proto


# -- file descriptors ----------------------------------------------------------


def raise_fd_limit(cap: int = 1 << 20) -> tuple[int, int]:
    """
    Raise the soft RLIMIT_NOFILE to the hard limit (at most C{cap}), as a
    server should: the usual soft limit, 1024, is below the default
    max_connections of a single service. Never lowers it.

    @return: the (soft, hard) limits now in force.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    return soft, hard


def fd_warning(policies: Iterable[PolicySettings], soft_limit: int, reserve: int = 64) -> str | None:
    """
    A warning when the services' connection caps add up to more than the
    descriptor limit allows (C{reserve} is kept for listeners, logs and
    the like), or None.
    """
    caps = [p.max_connections for p in policies]
    if not caps:
        return None
    if 0 in caps:
        total = "no limit"
    elif sum(caps) + reserve > soft_limit:
        total = str(sum(caps))
    else:
        return None
    return (
        f"the file descriptor limit is {soft_limit} but max_connections adds up to {total}: "
        "at the limit new connections are closed unanswered (raise LimitNOFILE= or lower max_connections)"
    )


# What Twisted's listening port logs when accept() fails, and what we make of it.
_ACCEPT_EVENTS: tuple[tuple[str, str | None, str], ...] = (
    ("EMFILE encountered", "emfile", "out of file descriptors (EMFILE): new connections are closed unanswered"),
    ("EMFILE recovery: Closed socket", "closed", "closed a new connection unanswered: out of file descriptors"),
    ("Re-reserving EMFILE", None, ""),
    ("Could not re-reserve EMFILE", "reserve", "cannot re-reserve the EMFILE recovery descriptor"),
    ("Could not accept new connection", "accept", "cannot accept new connections"),
)


def _accept_event(fmt: str) -> tuple[str | None, str] | None:
    for prefix, key, text in _ACCEPT_EVENTS:
        if fmt.startswith(prefix):
            return key, text
    return None


@implementer(ILogObserver)
class AcceptErrorLog:
    """
    A log observer for one listening port's own logger: Twisted logs a line
    for every connection it has to close while out of file descriptors (so a
    connection flood at EMFILE is a log flood); this keeps one line per kind
    per 10 s, with a summary count, and passes other events through.
    """

    def __init__(self, where: str, clock: IReactorTime, observer: Callable[[LogEvent], None]) -> None:
        self.where = where
        self.observer = observer
        self.limit = RateLimitedLog(clock, REFUSAL_LOG_PERIOD, summary=self._summary)
        self.counts: dict[str, int] = {}
        self._text: dict[str, str] = {}

    def __call__(self, event: LogEvent) -> None:
        fmt = str(event.get("log_format") or "")
        kind = _accept_event(fmt)
        if kind is None:
            self.observer(event)
            return
        key, text = kind
        if key is None:
            return
        detail = event.get("acceptError") or ""
        if detail:
            key = f"{key} {detail}"
            text = f"{text} ({detail})"
        self.counts[key] = self.counts.get(key, 0) + 1
        self._text[key] = text

        def emit(held: int) -> None:
            log.warn(
                "{where}: {what}",
                event="accept_error",
                where=self.where,
                what=text,
                kind=key,
                held=held,
            )

        self.limit(key, emit)

    def _summary(self, key: str, held: int) -> None:
        log.warn(
            "{where}: {what}: {held} more times in the last {period:.0f}s",
            event="accept_error_summary",
            where=self.where,
            what=self._text.get(key, key),
            kind=key,
            held=held,
            period=self.limit.period,
        )


def guard_port(port: Any, clock: IReactorTime, where: str = "") -> AcceptErrorLog | None:
    """
    Rate-limit what a listening port logs about failed accepts (see
    L{AcceptErrorLog}). Call it on every stream port once it listens; ports
    without Twisted's accept logger (UDP, test doubles) are left alone.
    """
    from twisted.internet import tcp

    if not isinstance(port, tcp.Port):
        return None
    current = port._logger
    if isinstance(current.observer, AcceptErrorLog):
        return current.observer
    guard = AcceptErrorLog(where or repr(port), clock, current.observer)
    port._logger = Logger(namespace=current.namespace, source=port, observer=guard)
    return guard
