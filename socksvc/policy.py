"""
The shared policy layer: who may connect, how many, how fast, for how long,
and what is logged about it.

One L{Policy} object per service holds the settings and the live state
(connections, per-source counts, the rate bucket). Factories built by
L{ServiceFactory} ask it about every new peer in C{buildProtocol}: there is
no wrapping protocol, so an admitted connection costs nothing per read beyond
two attribute updates in the service's own protocol. A config reload swaps
the settings with L{Policy.reconfigure}; established connections stay.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from socksvc.settings import IPNetwork, as_float, as_int, as_networks, setting

log = Logger(namespace="socksvc")


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


def peer_ip(addr: IAddress | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The peer's IP address (IPv4-mapped IPv6 unwrapped), or None (UNIX)."""
    host = getattr(addr, "host", None)
    if not isinstance(host, str):
        return None
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def source_key(ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> str:
    """How peers are grouped for per-source limits: IPv4 address, IPv6 /64."""
    if ip is None:
        return "local"
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


def format_peer(addr: IAddress | None) -> str:
    """C{127.0.0.1:5000}, C{[::1]:5000}, or C{unix}."""
    host = getattr(addr, "host", None)
    port = getattr(addr, "port", None)
    if isinstance(host, str):
        if ":" in host:
            return f"[{host}]:{port}"
        return f"{host}:{port}"
    return "unix"


def address_allowed(settings: PolicySettings, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
    """allow/deny: deny wins; a non-empty allow list admits only its members."""
    if ip is None:
        return True
    if any(ip in net for net in settings.deny if net.version == ip.version):
        return False
    if settings.allow:
        return any(ip in net for net in settings.allow if net.version == ip.version)
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
        if self.tokens >= amount:
            self.tokens -= amount
            return True
        return False


class RateLimitedLog:
    """
    At most one log line per key per C{period} seconds; the next line that
    gets through says how many were held back in between.
    """

    def __init__(self, clock: IReactorTime, period: float = 10.0) -> None:
        self.clock = clock
        self.period = period
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, key: str, emit: Callable[[int], None]) -> bool:
        """Call C{emit(suppressed_count)} unless C{key} logged recently."""
        now = self.clock.seconds()
        last = self._last.get(key)
        if last is not None and now - last < self.period:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._last[key] = now
        emit(self._held.pop(key, 0))
        return True


# -- connections -------------------------------------------------------------


class Tracked(Protocol):
    """
    Base for every service's stream protocol: what the policy layer knows of
    a connection. A subclass adds to C{bytes_in}/C{bytes_out} and sets
    C{touched} when the peer did something that counts as activity (any
    input for a byte service, a complete line for a line service).
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

    def connectionMade(self) -> None:
        self.policy.opened(self)

    def connectionLost(self, reason: Failure = Failure(Exception("connection lost"))) -> None:
        self.policy.closed(self, reason)


class Refuser(Protocol):
    """Says why in one line, then aborts: a refused peer holds no slot or buffer."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def connectionMade(self) -> None:
        from socksvc.writethrough import send_now

        assert self.transport is not None
        send_now(self.transport, f"socksvc: {self.reason}\r\n".encode())
        self.transport.abortConnection()  # type: ignore[attr-defined]


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
        self.log_refusal = RateLimitedLog(clock)
        self._bucket: TokenBucket | None = None
        self._sweeper: LoopingCall | None = None
        self.reconfigure(settings)

    # settings

    def reconfigure(self, settings: PolicySettings) -> None:
        """Apply new settings; established connections are kept."""
        self.settings = settings
        if settings.max_rate > 0:
            burst = settings.max_rate_burst or max(1, math.ceil(settings.max_rate))
            self._bucket = TokenBucket(settings.max_rate, burst, self.clock.seconds())
        else:
            self._bucket = None
        if self._sweeper is not None:
            self.stop()
            self.start()

    def sweep_interval(self) -> float:
        return max(0.05, self.settings.idle_timeout / 4)

    def start(self) -> None:
        """Start the idle sweeper (if idle_timeout is set)."""
        if self.settings.idle_timeout > 0 and self._sweeper is None:
            self._sweeper = LoopingCall(self.sweep)
            self._sweeper.clock = self.clock
            self._sweeper.start(self.sweep_interval(), now=False)

    def stop(self) -> None:
        if self._sweeper is not None:
            if self._sweeper.running:
                self._sweeper.stop()
            self._sweeper = None

    # admission

    def check(self, addr: IAddress | None) -> str | None:
        """Why a new peer at C{addr} is refused, or None to admit it."""
        s = self.settings
        ip = peer_ip(addr)
        if not address_allowed(s, ip):
            return "access denied"
        if s.max_connections and len(self.connections) >= s.max_connections:
            return "too many connections, try again later"
        if s.max_per_source and ip is not None and self.per_source.get(source_key(ip), 0) >= s.max_per_source:
            return "too many connections from your address"
        if self._bucket is not None and not self._bucket.take(self.clock.seconds()):
            return "connection rate exceeded, try again later"
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

    # bookkeeping

    def opened(self, conn: Tracked) -> None:
        now = self.clock.seconds()
        conn.started = conn.last_seen = now
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
        why = _close_reason(reason)
        log.info(
            "{service}: {peer} closed after {duration:.3f}s, {bytes_in} bytes in, {bytes_out} bytes out{why}",
            event="close",
            service=self.service,
            peer=conn.peer,
            duration=duration,
            bytes_in=conn.bytes_in,
            bytes_out=conn.bytes_out,
            why=why,
        )

    def sweep(self) -> None:
        """Abort connections idle for idle_timeout seconds or more."""
        timeout = self.settings.idle_timeout
        if timeout <= 0:
            return
        now = self.clock.seconds()
        for conn in list(self.connections):
            if conn.touched:
                conn.touched = False
                conn.last_seen = now
            elif now - conn.last_seen >= timeout:
                log.info(
                    "{service}: {peer} idle for {idle:.0f}s, disconnecting",
                    event="idle",
                    service=self.service,
                    peer=conn.peer,
                    idle=now - conn.last_seen,
                )
                conn.idle_aborted = True  # type: ignore[attr-defined]
                transport = conn.transport
                if transport is not None:
                    transport.abortConnection()  # type: ignore[attr-defined]


def _close_reason(reason: Failure) -> str:
    from twisted.internet.error import ConnectionDone

    if reason is None or reason.check(ConnectionDone):
        return ""
    text = reason.getErrorMessage().split("\n", 1)[0]
    return f" ({text})" if text else ""


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
        reason = policy.check(addr)
        if reason is not None:
            return policy.refuse(addr, reason)
        proto = self.make()
        proto.factory = self
        proto.policy = policy
        proto.service_name = policy.service
        proto.peer = format_peer(addr)
        proto.source = source_key(peer_ip(addr))
        return proto
