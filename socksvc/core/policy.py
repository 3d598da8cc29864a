"""
The shared policy layer: who may connect, how many, how fast, for how long,
and what is logged about it.

One L{Policy} object per service holds the settings and the live state
(connections, per-source counts, the rate bucket, the idle sweeper). The
service's factory (L{socksvc.core.protocols.ServiceFactory}) asks it about
every new peer in C{buildProtocol}: there is no wrapping protocol, so an
admitted connection costs nothing per read beyond two attribute updates in
the service's own protocol. A config reload swaps the settings with
L{Policy.reconfigure}; established connections stay (they are not
re-checked against new lists or caps), new limits apply to new connections,
and the sweeper follows a new idle_timeout.

Refusals are counted, and logged at most once per reason per 10 s per
service; what was held back is reported in a summary line when the 10 s are
up. Closes are logged one line each (unless C{log_connections} is false) up
to C{log_close_rate} lines a second per service; beyond that they are
counted, with their bytes, and summarised once per 10 s
(L{socksvc.core.closelog.CloseCeiling}). A field whose name starts with C{_}
only shapes the message (the JSON log leaves it out).
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Hashable
from typing import Any, Protocol

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from socksvc.config.schema import PolicySettings
from socksvc.core.closelog import CloseCeiling
from socksvc.util.addresses import IP, format_peer, in_any, peer_ip, source_key
from socksvc.util.histogram import Histogram
from socksvc.util.ratelimit import LOG_PERIOD, RateLimitedLog, TokenBucket, effective_burst

log = Logger(namespace="socksvc")

REFUSAL_LOG_PERIOD = LOG_PERIOD
"""Seconds between two refusal lines for the same reason (per service)."""

SWEEPS_PER_TIMEOUT = 10
"""The idle sweeper runs idle_timeout / this often: aborts come at most 10% late."""

MIN_SWEEP_INTERVAL = 0.05

# Refusal reasons: the text after "socksvc: " that a refused peer reads.
DENIED = "access denied"
TOO_MANY = "too many connections, try again later"
TOO_MANY_FROM_YOU = "too many connections from your address"
TOO_MANY_FROM_SUBNET = "too many connections from your network"
RATE_EXCEEDED = "connection rate exceeded, try again later"
REASONS = (DENIED, TOO_MANY, TOO_MANY_FROM_YOU, TOO_MANY_FROM_SUBNET, RATE_EXCEEDED)


class RateBucket(Protocol):
    """A connection-rate bucket (L{TokenBucket}, or one every worker process shares)."""

    def take(self, now: float, amount: float = 1.0) -> bool: ...


class SharedCounts(Protocol):
    """
    The counts admission reads when the daemon runs worker processes
    (L{socksvc.daemon.shared} provides them): open connections and
    connections per source and per subnet summed over every worker, and one
    connection-rate bucket for them all. This process keeps its own counts as well.
    """

    def connections(self) -> int:
        """Connections open now, in every worker."""

    def from_source(self, source: str) -> int:
        """Connections open now from C{source} (a L{source_key}), in every worker (or more: never fewer)."""

    def from_subnet(self, subnet: Hashable) -> int:
        """Connections open now from C{subnet} (a L{subnet_key}), in every worker (or more: never fewer)."""

    def opened(self, source: str, subnet: Hashable) -> None:
        """This worker admitted a connection from C{source} in C{subnet} (None: not counted by subnet)."""

    def closed(self, source: str, subnet: Hashable) -> None:
        """A connection from C{source} in C{subnet} that this worker admitted closed."""

    def rate_bucket(self, rate: float, burst: float, now: float) -> RateBucket:
        """The service's one max_rate bucket, set to C{rate} and C{burst} (what was spent is kept)."""

    def workers(self) -> int:
        """How many worker processes serve the service: each spends 1/this of a per-source rate (UDP's)."""


class Connection(Protocol):
    """What the policy keeps of one admitted connection (L{socksvc.core.protocols.Tracked} is one)."""

    peer: str
    source: str
    bytes_in: int
    bytes_out: int
    started: float
    last_seen: float
    touched: bool
    idle_sweeps: int
    idle_aborted: bool
    close_reason: str
    transport: Any

    @property
    def idle_exempt(self) -> bool: ...


def subnet_key(ip: IP | None, settings: PolicySettings) -> Hashable:
    """
    How peers are grouped for max_per_subnet: the first subnet_v4 (IPv4) or
    subnet_v6 (IPv6) bits of the address, with the family and length (so
    counts taken under another prefix length, before a reload, stay apart).
    None for a UNIX-socket peer (never grouped).
    """
    if ip is None:
        return None
    # One int (family, length, prefix), not a tuple: a chat keeps one per member.
    if isinstance(ip, ipaddress.IPv4Address):
        bits = settings.subnet_v4
        return (bits << 129) | (int(ip) >> (32 - bits))
    bits = settings.subnet_v6
    return (1 << 136) | (bits << 129) | (int(ip) >> (128 - bits))


def address_allowed(settings: PolicySettings, ip: IP | None) -> bool:
    """
    allow/deny: deny wins; a non-empty allow list admits only its members.
    C{None} (a UNIX-socket peer) is always allowed. Pass the address through
    L{peer_ip} first so IPv4-mapped peers are unwrapped.
    """
    if ip is None:
        return True
    if in_any(ip, settings.deny):
        return False
    if settings.allow:
        return in_any(ip, settings.allow)
    return True


class Policy:
    """Policy settings and live connection state for one service."""

    def __init__(self, service: str, settings: PolicySettings, clock: IReactorTime) -> None:
        self.service = service
        self.clock = clock
        self.settings = settings
        self.connections: set[Connection] = set()
        self.per_source: dict[str, int] = {}
        self.per_subnet: dict[Hashable, int] = {}
        self.accepted = 0
        self.refused: dict[str, int] = {}
        # Figures for metrics, kept in plain attributes: nothing per byte, a
        # comparison per connection, a bisect and three additions at close.
        self.peak = 0
        """Most connections open at once since the service started."""
        self.closed_bytes_in = 0
        """Bytes received on connections now closed (the open ones hold theirs)."""
        self.closed_bytes_out = 0
        self.durations = Histogram()
        """Seconds each closed connection lasted."""
        self.log_refusal = RateLimitedLog(clock, REFUSAL_LOG_PERIOD, summary=self._refusal_summary)
        self.close_log = CloseCeiling(clock, settings.log_close_rate, settings.log_close_burst, self._close_summary)
        self._bucket: RateBucket | None = None
        self._sweeper: LoopingCall | None = None
        self._running = False
        self.shared: SharedCounts | None = None
        """With worker processes: the daemon-wide counts caps are checked against (L{share})."""
        self.reconfigure(settings)

    def share(self, shared: SharedCounts) -> None:
        """
        Check the caps and the rate against the whole daemon's counts from now
        on (a worker process does this before it serves anyone).
        """
        self.shared = shared
        self._bucket = None
        self.reconfigure(self.settings)

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
        self.close_log.reconfigure(*self._close_ceiling(settings))
        if settings.max_rate > 0:
            burst = effective_burst(settings.max_rate, settings.max_rate_burst)
            now = self.clock.seconds()
            if self.shared is not None:
                self._bucket = self.shared.rate_bucket(settings.max_rate, burst, now)
            elif not isinstance(self._bucket, TokenBucket):
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

    def _close_ceiling(self, settings: PolicySettings) -> tuple[float, int]:
        """
        log_close_rate and its burst for this process: with worker processes
        each logs its share, so the daemon writes as many close lines as one
        process would.
        """
        rate, burst = settings.log_close_rate, settings.log_close_burst
        share = self.shared.workers() if self.shared is not None else 1
        if share <= 1 or rate <= 0:
            return rate, burst
        return rate / share, max(1, round(effective_burst(rate, burst) / share))

    def sweep_interval(self) -> float:
        return max(MIN_SWEEP_INTERVAL, self.settings.idle_timeout / SWEEPS_PER_TIMEOUT)

    def start(self) -> None:
        """The service is running: start the idle sweeper (if idle_timeout is set)."""
        self._running = True
        self._start_sweeper()

    def stop(self) -> None:
        """The service stopped: stop the sweeper, report held refusal and close counts."""
        self._running = False
        self._stop_sweeper()
        self.log_refusal.flush()
        self.close_log.flush()

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

    def check(self, addr: Any) -> str | None:
        """Why a new peer at C{addr} is refused, or None to admit it."""
        ip = peer_ip(addr)
        return self.check_ip(ip, source_key(ip), self.subnet_of(ip))

    def subnet_of(self, ip: IP | None) -> Hashable:
        """The peer's L{subnet_key} under the current settings."""
        return subnet_key(ip, self.settings)

    def check_ip(self, ip: IP | None, source: str, subnet: Hashable = None) -> str | None:
        """
        L{check} for a peer already parsed: C{ip} from L{peer_ip}, C{source}
        its L{source_key}, C{subnet} its L{subnet_of} (None: not counted).
        """
        s = self.settings
        if (s.deny or s.allow) and not address_allowed(s, ip):
            return DENIED
        shared = self.shared
        if shared is not None:
            if s.max_connections and shared.connections() >= s.max_connections:
                return TOO_MANY
            if s.max_per_source and ip is not None and shared.from_source(source) >= s.max_per_source:
                return TOO_MANY_FROM_YOU
            if s.max_per_subnet and subnet is not None and shared.from_subnet(subnet) >= s.max_per_subnet:
                return TOO_MANY_FROM_SUBNET
        else:
            if s.max_connections and len(self.connections) >= s.max_connections:
                return TOO_MANY
            if s.max_per_source and ip is not None and self.per_source.get(source, 0) >= s.max_per_source:
                return TOO_MANY_FROM_YOU
            if s.max_per_subnet and subnet is not None and self.per_subnet.get(subnet, 0) >= s.max_per_subnet:
                return TOO_MANY_FROM_SUBNET
        if self._bucket is not None and not self._bucket.take(self.clock.seconds()):
            return RATE_EXCEEDED
        return None

    def refuse(self, addr: Any, reason: str) -> None:
        """Count and (rate-limited) log a refusal (the factory builds the protocol that says so)."""
        self.refused[reason] = self.refused.get(reason, 0) + 1
        peer = format_peer(addr)

        def emit(held: int) -> None:
            more = f" (and {held} more since the last such line)" if held else ""
            log.info(
                "{service}: refused {peer}: {reason}{_more}",
                event="refuse",
                service=self.service,
                peer=peer,
                reason=reason,
                held=held,
                _more=more,
            )

        self.log_refusal(reason, emit)

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

    def opened(self, conn: Connection) -> None:
        now = self.clock.seconds()
        conn.started = conn.last_seen = now
        conn.idle_sweeps = -1  # the first sweep may come at once: it does not count
        connections = self.connections
        connections.add(conn)
        if len(connections) > self.peak:
            self.peak = len(connections)
        self.per_source[conn.source] = self.per_source.get(conn.source, 0) + 1
        subnet = getattr(conn, "subnet", None)  # a Tracked protocol's (the admin channel has none)
        if subnet is not None:
            self.per_subnet[subnet] = self.per_subnet.get(subnet, 0) + 1
        self.accepted += 1
        if self.shared is not None:
            self.shared.opened(conn.source, subnet)

    def closed(self, conn: Connection, reason: Failure) -> None:
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        left = self.per_source.get(conn.source, 1) - 1
        if left > 0:
            self.per_source[conn.source] = left
        else:
            self.per_source.pop(conn.source, None)
        subnet = getattr(conn, "subnet", None)
        if subnet is not None:
            left = self.per_subnet.get(subnet, 1) - 1
            if left > 0:
                self.per_subnet[subnet] = left
            else:
                self.per_subnet.pop(subnet, None)
        if self.shared is not None:
            self.shared.closed(conn.source, subnet)
        # Metrics, whether or not the close is logged.
        duration = self.clock.seconds() - conn.started
        self.closed_bytes_in += conn.bytes_in
        self.closed_bytes_out += conn.bytes_out
        self.durations.observe(duration)
        if not self.settings.log_connections:
            return
        close_log = self.close_log
        if not close_log.admit():
            close_log.hold(conn.bytes_in, conn.bytes_out)
            return
        why = conn.close_reason or close_reason(reason)
        log.info(
            "{service}: {peer} closed after {duration:.3f}s, {bytes_in} bytes in, {bytes_out} bytes out{_why}",
            event="close",
            service=self.service,
            peer=conn.peer,
            source=conn.source,
            duration=duration,
            bytes_in=conn.bytes_in,
            bytes_out=conn.bytes_out,
            reason=why,
            _why=f" ({why})" if why else "",
        )

    def _close_summary(self, held: int, bytes_in: int, bytes_out: int, seconds: float) -> None:
        log.info(
            "{service}: and {held:,} more connections closed in the last {period:.0f}s, "
            "{bytes_in:,} bytes in, {bytes_out:,} bytes out (over log_close_rate)",
            event="close_summary",
            service=self.service,
            held=held,
            bytes_in=bytes_in,
            bytes_out=bytes_out,
            period=seconds,
        )

    def bytes_totals(self) -> tuple[int, int]:
        """Bytes in and out of every connection so far, open ones included (read at scrape time)."""
        bytes_in, bytes_out = self.closed_bytes_in, self.closed_bytes_out
        for conn in self.connections:
            bytes_in += conn.bytes_in
            bytes_out += conn.bytes_out
        return bytes_in, bytes_out

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


def close_reason(reason: Failure | None) -> str:
    """A few words on why a connection closed; empty for a clean close."""
    if reason is None or reason.type is ConnectionDone or reason.check(ConnectionDone):
        return ""
    text = reason.getErrorMessage().split("\n", 1)[0]
    return text
