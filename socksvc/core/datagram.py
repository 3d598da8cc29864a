"""
UDP echo (RFC 862 over datagrams) that cannot be turned into a weapon.

A UDP echo server answers whatever source address a datagram claims, and
UDP source addresses are trivially forged. Unguarded, it reflects traffic
at third parties, and two such servers (echo, chargen, daytime, DNS...) can
be set to answer each other forever (CVE-1999-0103, CVE-2024-2169 "loop
DoS"). So every datagram passes these checks, in this order, before it is
echoed; the first that fails drops it and counts it by reason:

 1. C{broadcast}, C{multicast}, C{unspecified}: a source address that no
    real sender has (255.255.255.255, 224.0.0.0/4, ff00::/8, 0.0.0.0/8,
    ::). IPv4-mapped IPv6 sources (::ffff:a.b.c.d) are unwrapped first, for
    this and every later check.
 2. C{source_port}: a source port in C{deny_source_ports} (other
    reflectors and amplifiers: echo, chargen, DNS, NTP, SSDP, memcached...).
 3. C{own_port}: a source port that this daemon itself listens on for UDP
    (C{context.udp_ports}): two socksvc instances cannot loop.
 4. C{denied}: the service's C{allow} / C{deny} lists.
 5. C{rate}: a per-source token bucket (C{rate_per_source}, C{burst}),
    sources grouped by IPv4 address and IPv6 /64, in a table of at most
    C{max_sources} entries that evicts the least recently seen one. Sources
    in C{rate_exempt} (loopback by default) skip it.

The reply is the datagram itself, so it is never larger than the request.
A failed send (EAGAIN, ENOBUFS, ECONNREFUSED, EHOSTUNREACH...) is counted
as C{send_error} (and by errno in C{send_errors}), never raised. Each
reason is logged at most once per 10 seconds, with the number held back.

All state lives in one L{UDPEchoState} per service (shared by its udp:
listeners, so a source gets one budget however many ports it hits), read
against the settings of the moment: a reload applies to the next datagram.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections import OrderedDict
from typing import Any

from twisted.internet import error as terror
from twisted.internet import udp
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from socksvc.config.listen import ListenSpec
from socksvc.core.policy import RateLimitedLog, TokenBucket, address_allowed, effective_burst, host_ip, source_key
from socksvc.core.service import ServiceContext

log = Logger(namespace="socksvc")

MAX_DATAGRAM = 65536
"""Bytes read per datagram: more than the largest UDP payload (65507 over IPv4, 65527 over IPv6)."""
SOCKET_BUFFER = 1 << 20
"""SO_RCVBUF/SO_SNDBUF asked for (the kernel caps it at net.core.rmem_max/wmem_max)."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Drop reasons (keys of UDPEchoState.drops).
BROADCAST = "broadcast"
MULTICAST = "multicast"
UNSPECIFIED = "unspecified"
SOURCE_PORT = "source_port"
OWN_PORT = "own_port"
DENIED = "denied"
RATE = "rate"
TOO_LARGE = "too_large"
SEND_ERROR = "send_error"
ERROR = "error"
REASONS = (BROADCAST, MULTICAST, UNSPECIFIED, SOURCE_PORT, OWN_PORT, DENIED, RATE, TOO_LARGE, SEND_ERROR, ERROR)

_WHY = {
    BROADCAST: "broadcast source address",
    MULTICAST: "multicast source address",
    UNSPECIFIED: "unspecified source address",
    SOURCE_PORT: "source port is in deny_source_ports",
    OWN_PORT: "source port is one of this daemon's UDP ports",
    DENIED: "address denied by allow/deny",
    RATE: "rate_per_source exceeded",
    TOO_LARGE: "reply would be larger than the request",
}

_LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")


def bad_source(ip: IPAddress | None) -> str | None:
    """Why no datagram can honestly come from C{ip} (already unwrapped), or None."""
    if ip is None:
        return UNSPECIFIED
    if ip.is_multicast:
        return MULTICAST
    if isinstance(ip, ipaddress.IPv4Address):
        if ip == _LIMITED_BROADCAST:
            return BROADCAST
        if ip in _THIS_NETWORK:
            return UNSPECIFIED
    elif ip.is_unspecified:
        return UNSPECIFIED
    return None


class SourceLimiter:
    """
    Per-source token buckets in a table of at most C{max_sources} entries.

    The table is kept in least-recently-seen order: a new source evicts the
    one not heard from for longest (a source that keeps sending stays, with
    its empty bucket). An evicted source comes back with a full bucket,
    which is what it would have had after a quiet spell anyway.
    """

    def __init__(self, rate: float, burst: int, max_sources: int) -> None:
        self.rate = rate
        self.burst = effective_burst(rate, burst)
        self.max_sources = max(1, max_sources)
        self.table: OrderedDict[str, TokenBucket] = OrderedDict()
        self.evicted = 0

    def allow(self, key: str, now: float) -> bool:
        """Spend one token of C{key}'s bucket, if it has one."""
        table = self.table
        bucket = table.get(key)
        if bucket is None:
            while len(table) >= self.max_sources:
                table.popitem(last=False)
                self.evicted += 1
            bucket = table[key] = TokenBucket(self.rate, self.burst, now)
        else:
            table.move_to_end(key)
        return bucket.take(now)

    def reconfigure(self, rate: float, burst: int, max_sources: int) -> None:
        """New limits; known sources keep their tokens (capped to the new burst)."""
        self.rate = rate
        self.burst = effective_burst(rate, burst)
        self.max_sources = max(1, max_sources)
        for bucket in self.table.values():
            bucket.rate = self.rate
            bucket.burst = self.burst
            bucket.tokens = min(bucket.tokens, self.burst)
        while len(self.table) > self.max_sources:
            self.table.popitem(last=False)
            self.evicted += 1


class _Verdict:
    """What is known of one source host under one set of settings."""

    __slots__ = ("exempt", "key", "reason")

    def __init__(self, reason: str | None, key: str, exempt: bool) -> None:
        self.reason = reason
        self.key = key
        self.exempt = exempt


class UDPEchoState:
    """
    One UDP echo service's live state: counters, the per-source limiter and
    a bounded cache of per-host verdicts. Plain object; time comes from
    C{context.reactor.seconds()}, settings from the context at use time.
    """

    VERDICT_CACHE = 4096

    def __init__(self, context: ServiceContext) -> None:
        self.context = context
        self.drops: dict[str, int] = dict.fromkeys(REASONS, 0)
        self.send_errors: dict[str, int] = {}
        self.received = 0
        self.replied = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.log_drop = RateLimitedLog(context.reactor)
        self.listeners = 0
        """udp: ports of the service now running (the summary is logged when the last stops)."""
        self.limiter: SourceLimiter | None = None
        self._settings: Any = None
        self._policy_settings: Any = None
        self._deny_ports: frozenset[int] = frozenset()
        self._verdicts: dict[str, _Verdict] = {}
        self._refresh()

    # settings

    def _refresh(self) -> None:
        """Pick up settings a reload may have replaced (cheap when nothing changed)."""
        s = self.context.settings
        p = self.context.policy.settings
        if s is self._settings and p is self._policy_settings:
            return
        self._settings, self._policy_settings = s, p
        self._deny_ports = frozenset(s.deny_source_ports)
        self._verdicts = {}
        if s.rate_per_source > 0:
            if self.limiter is None:
                self.limiter = SourceLimiter(s.rate_per_source, s.burst, s.max_sources)
            else:
                self.limiter.reconfigure(s.rate_per_source, s.burst, s.max_sources)
        else:
            self.limiter = None

    def verdict(self, host: str) -> _Verdict:
        """The settings-dependent facts about C{host}, cached."""
        cached = self._verdicts.get(host)
        if cached is not None:
            return cached
        ip = host_ip(host)
        reason = bad_source(ip)
        exempt = False
        if reason is None:
            assert ip is not None
            if not address_allowed(self._policy_settings, ip):
                reason = DENIED
            exempt = any(ip in net for net in self._settings.rate_exempt if net.version == ip.version)
        v = _Verdict(reason, source_key(ip) if ip is not None else "", exempt)
        if len(self._verdicts) >= self.VERDICT_CACHE:
            self._verdicts.clear()
        self._verdicts[host] = v
        return v

    # the decision

    def check(self, host: str, port: int) -> str | None:
        """Why a datagram from C{(host, port)} gets no reply, or None to echo it."""
        context = self.context
        if context.settings is not self._settings or context.policy.settings is not self._policy_settings:
            self._refresh()
        v = self.verdict(host)
        reason = v.reason
        if reason is not None and reason != DENIED:
            return reason
        if port in self._deny_ports:
            return SOURCE_PORT
        if port in context.udp_ports:
            return OWN_PORT
        if reason is not None:
            return reason
        limiter = self.limiter
        if limiter is not None and not v.exempt and not limiter.allow(v.key, context.reactor.seconds()):
            return RATE
        return None

    # counting and logging

    def dropped(self, reason: str, host: str, port: int) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1
        why = _WHY.get(reason, reason)
        self._log(reason, host, port, why)

    def send_failed(self, host: str, port: int, code: str, text: str) -> None:
        self.drops[SEND_ERROR] += 1
        self.send_errors[code] = self.send_errors.get(code, 0) + 1
        self._log(f"{SEND_ERROR}:{code}", host, port, f"reply not sent: {text}")

    def log_summary(self) -> None:
        """One line of totals, when the service's last udp: port stops."""
        dropped = ", ".join(f"{k} {v}" for k, v in self.drops.items() if v) or "none"
        log.info(
            "{service}: udp: {received} datagrams in, {replied} replies out; dropped: {dropped}",
            event="udp-summary",
            service=self.context.name,
            received=self.received,
            replied=self.replied,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            dropped=dropped,
            drops=dict(self.drops),
            send_errors=dict(self.send_errors),
        )

    def _log(self, key: str, host: str, port: int, why: str) -> None:
        peer = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        service = self.context.name

        def emit(held: int) -> None:
            more = f" (and {held} more since the last such line)" if held else ""
            log.info(
                "{service}: udp datagram from {peer} dropped: {why}{more}",
                event="udp-drop",
                service=service,
                peer=peer,
                reason=key,
                why=why,
                more=more,
                held=held,
            )

        self.log_drop(key, emit)


def _errno_name(e: BaseException) -> tuple[str, str]:
    """A short code (EAGAIN, EMSGSIZE...) and text for a failed send."""
    if isinstance(e, terror.MessageLengthError):
        return "EMSGSIZE", "message too long"
    if isinstance(e, OSError) and e.errno is not None:
        return errno.errorcode.get(e.errno, str(e.errno)), e.strerror or str(e)
    return type(e).__name__, str(e) or type(e).__name__


def state_for(context: ServiceContext) -> UDPEchoState:
    """The service's shared L{UDPEchoState} (kept in C{context.state})."""
    state = context.state
    if isinstance(state, UDPEchoState):
        return state
    state = UDPEchoState(context)
    if context.state is None:
        context.state = state
    return state


class UDPEcho(DatagramProtocol):
    """RFC 862 echo over one UDP port, guarded as the module doc says."""

    noisy = False

    def __init__(self, context: ServiceContext) -> None:
        self.context = context
        self.state = state_for(context)
        self.drops = self.state.drops
        """Datagrams not answered, by reason (shared by the service's udp: listeners)."""

    def logPrefix(self) -> str:
        """Twisted's "... starting on PORT" line names the service, not the class."""
        return f"{self.context.name} (udp)"

    def startProtocol(self) -> None:
        self.state.listeners += 1

    def stopProtocol(self) -> None:
        self.state.listeners -= 1
        if self.state.listeners <= 0:
            self.state.log_summary()

    def reply_for(self, datagram: bytes) -> bytes:
        """The reply to C{datagram}: for echo, itself."""
        return datagram

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        state = self.state
        host, port = addr[0], addr[1]
        state.received += 1
        state.bytes_in += len(datagram)
        try:
            reason = state.check(host, port)
            if reason is None:
                reply = self.reply_for(datagram)
                if len(reply) > len(datagram):
                    reason = TOO_LARGE
            if reason is not None:
                state.dropped(reason, host, port)
                return
            self._send(reply, host, port, addr)
        except Exception:
            # A bug, not the network's doing: count it and log it with its
            # traceback, but at most once per 10 s (Twisted would log every one).
            state.drops[ERROR] += 1

            def emit(held: int) -> None:
                log.failure(
                    "{service}: error handling a udp datagram (and {held} more since the last such line)",
                    service=self.context.name,
                    held=held,
                )

            state.log_drop(ERROR, emit)

    def _send(self, reply: bytes, host: str, port: int, addr: Any) -> None:
        state = self.state
        transport: Any = self.transport
        if transport is None:
            return
        try:
            if type(transport) is udp.Port and transport._connectedAddr is None:
                _sendto(transport, reply, addr)
            else:
                transport.write(reply, addr)
        except (OSError, terror.MessageLengthError, terror.InvalidAddressError) as e:
            code, text = _errno_name(e)
            state.send_failed(host, port, code, text)
            return
        state.replied += 1
        state.bytes_out += len(reply)

    def connectionRefused(self) -> None:
        """Only a connected UDP port calls this; count it like any failed send."""
        self.state.send_failed("?", 0, "ECONNREFUSED", "connection refused")


def _sendto(port: Any, reply: bytes, addr: Any) -> None:
    """
    What C{udp.Port.write(reply, addr)} does, without its checks that
    C{addr} is a numeric address of the port's family: C{addr} is where the
    datagram came from, on this very socket, so it always is (those checks
    were about a tenth of the server's time per datagram).
    """
    try:
        port.socket.sendto(reply, addr)
    except OSError as e:
        if e.errno == errno.EINTR:
            port.write(reply, addr)
        elif e.errno == errno.EMSGSIZE:
            raise terror.MessageLengthError("message too long") from None
        elif e.errno != errno.ECONNREFUSED:  # an earlier datagram's ICMP error: as Twisted, ignore it
            raise


def tune_buffers(port: Any) -> None:
    """Ask for SOCKET_BUFFER-sized receive and send buffers on a UDP port's socket (best effort)."""
    sock = getattr(port, "socket", None)
    if sock is None:
        return
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            if sock.getsockopt(socket.SOL_SOCKET, opt) < SOCKET_BUFFER:
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        except OSError:
            pass  # the defaults still work


def listen_udp(reactor: Any, spec: ListenSpec, protocol: DatagramProtocol) -> Any:
    """
    Bind a udp: listen spec (an IPv6 interface means an IPv6 socket; no
    interface means all IPv4 addresses). Reads whole datagrams of any legal
    size, and records the bound port in the service's C{udp_ports}.
    """
    assert spec.port is not None
    port = reactor.listenUDP(spec.port, protocol, interface=spec.interface, maxPacketSize=MAX_DATAGRAM)
    tune_buffers(port)
    context = getattr(protocol, "context", None)
    udp_ports = getattr(context, "udp_ports", None)
    if isinstance(udp_ports, set):
        udp_ports.add(port.getHost().port)
    return port
