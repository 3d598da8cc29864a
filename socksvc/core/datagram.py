"""
The datagram guard: what keeps every UDP service from being turned into a weapon.

A UDP server answers whatever source address a datagram claims, and UDP
source addresses are trivially forged. Unguarded, it reflects traffic at
third parties, and two such servers (echo, chargen, daytime, DNS...) can be
set to answer each other forever (CVE-1999-0103, CVE-2024-2169 "loop DoS").
A datagram service gets every protection by declaring it: its settings
class derives from L{GuardSettings}, its state holds a L{DatagramGuard}, and
its protocol derives from L{GuardedDatagram} and says what to answer
(C{reply_for}). Every datagram then passes these checks, in this order,
before it is answered; the first that fails drops it and counts it by
reason:

 1. C{broadcast}, C{multicast}, C{unspecified}: a source address that no
    real sender has (255.255.255.255, 224.0.0.0/4, ff00::/8, 0.0.0.0/8,
    ::). IPv4-mapped IPv6 sources (::ffff:a.b.c.d) are unwrapped first, for
    this and every later check.
 2. C{source_port}: a source port in C{deny_source_ports} (other
    reflectors and amplifiers: echo, chargen, DNS, NTP, SSDP, memcached...).
 3. C{own_port}: a source port that this daemon itself listens on for UDP
    (the set the daemon keeps): its own services cannot loop.
 4. C{denied}: the service's C{allow} / C{deny} lists.
 5. C{rate}: a per-source token bucket (C{rate_per_source}, C{burst}),
    sources grouped by IPv4 address and IPv6 /64, in a table of at most
    C{max_sources} entries that evicts the least recently seen one. Sources
    in C{rate_exempt} (loopback by default) skip it.
 6. C{loop}, last, with a reply in hand: whatever the rate settings say,
    a peer (address and port) that answered each of our last C{loop_budget}
    replies within 0.25 s (C{loop_budget_ephemeral} for an ephemeral port)
    gets no more until it pauses: this ends a loop with any other daemon
    (L{socksvc.util.loopguard}). Only replies count: discard never trips it.

A reply larger than its request is never sent (C{too_large}), except by
a protocol's declared C{slack}: a service whose answer to an empty request
is a fixed few bytes (time's 4, daytime's 22) says so, and its docs give
the amplification that allows. A protocol whose C{reply_for} returns None
sends nothing (discard). A failed send (EAGAIN, ENOBUFS, ECONNREFUSED,
EHOSTUNREACH...) is counted as C{send_error} (and by errno in
C{send_errors}), never raised. Each reason is logged at most once per 10
seconds, with the number held back.

All state lives in one L{DatagramGuard} per service (shared by its udp:
listeners, so a source gets one budget however many ports it hits); a
reload pushes the new settings to it (L{DatagramGuard.reconfigure}) and
applies from the next datagram.
"""

from __future__ import annotations

import errno
import ipaddress
from typing import Any, ClassVar

import attrs
from twisted.internet import error as terror
from twisted.internet import udp
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from socksvc.config.settings import MAX_COUNT, MAX_RATE, as_float, as_int, as_list, as_networks, as_port, setting
from socksvc.core.policy import Policy, address_allowed
from socksvc.core.service import ServiceContext, ServiceStatus
from socksvc.util.addresses import host_ip, source_key
from socksvc.util.loopguard import LoopGuard, ephemeral_floor
from socksvc.util.ratelimit import RateLimitedLog, SourceLimiter

log = Logger(namespace="socksvc")

DEFAULT_DENY_SOURCE_PORTS = (0, 7, 9, 13, 17, 19, 37, 53, 69, 111, 123, 137, 161, 389, 1900, 5353, 11211)


@attrs.frozen
class GuardSettings:
    """
    The guard's keys: a datagram service's settings class derives from this
    one, and its udp: listens are guarded by them (see docs/udp.md).
    """

    deny_source_ports: tuple[int, ...] = setting(
        DEFAULT_DENY_SOURCE_PORTS,
        as_list(as_port),
        "UDP: never reply to these source ports (other reflectors and amplifiers)",
    )
    rate_per_source: float = setting(
        100.0, as_float(maximum=MAX_RATE), "UDP: replies a second to one IPv4 address or IPv6 /64; 0 = no limit"
    )
    burst: int = setting(
        200,
        as_int(maximum=MAX_COUNT),
        "UDP: replies one source may get at once above rate_per_source; 0 = one second's worth",
    )
    max_sources: int = setting(
        65536,
        as_int(minimum=1, maximum=1 << 20),
        "UDP: sources tracked for rate limiting, peers for the loop guard (oldest evicted)",
    )
    rate_exempt: tuple[Any, ...] = setting(
        tuple(as_networks(["127.0.0.0/8", "::1/128"])),
        as_networks,
        "UDP: CIDRs not rate limited (loopback cannot be spoofed from outside); the loop guard still applies",
    )
    loop_budget: int = setting(
        64,
        as_int(minimum=1, maximum=MAX_COUNT),
        "UDP: replies in a row to a peer (address and port) that answers each within 0.25 s: a loop's mark",
    )
    loop_budget_ephemeral: int = setting(
        65536,
        as_int(minimum=1, maximum=MAX_COUNT),
        "UDP: loop_budget for a peer port in the ephemeral range (clients' ports: 32768 up, or the kernel's range)",
    )


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Drop reasons (keys of DatagramGuard.drops).
BROADCAST = "broadcast"
MULTICAST = "multicast"
UNSPECIFIED = "unspecified"
SOURCE_PORT = "source_port"
OWN_PORT = "own_port"
DENIED = "denied"
RATE = "rate"
LOOP = "loop"
TOO_LARGE = "too_large"
SEND_ERROR = "send_error"
ERROR = "error"
DISABLED = "disabled"
"""A service whose UDP side is switched off by a setting (chargen's udp = false); counted only when it happens."""
REASONS = (BROADCAST, MULTICAST, UNSPECIFIED, SOURCE_PORT, OWN_PORT, DENIED, RATE, LOOP, TOO_LARGE, SEND_ERROR, ERROR)

_WHY = {
    BROADCAST: "broadcast source address",
    MULTICAST: "multicast source address",
    UNSPECIFIED: "unspecified source address",
    SOURCE_PORT: "source port is in deny_source_ports",
    OWN_PORT: "source port is one of this daemon's UDP ports",
    DENIED: "address denied by allow/deny",
    RATE: "rate_per_source exceeded",
    LOOP: "the peer answers every reply at once (a loop?): loop_budget used up",
    TOO_LARGE: "reply would be larger than the request",
    DISABLED: "this service does not answer UDP (its udp setting is off)",
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


class _Verdict:
    """What is known of one source host under one set of settings."""

    __slots__ = ("exempt", "key", "reason")

    def __init__(self, reason: str | None, key: str, exempt: bool) -> None:
        self.reason = reason
        self.key = key
        self.exempt = exempt


class DatagramGuard:
    """
    One datagram service's guard: counters, the per-source limiter and a
    bounded cache of per-host verdicts. Plain object given a clock, the
    service's policy (for allow/deny) and the daemon's set of UDP ports;
    settings come with L{reconfigure}.
    """

    VERDICT_CACHE = 4096

    def __init__(
        self,
        name: str,
        settings: GuardSettings,
        policy: Policy,
        clock: Any,
        own_ports: set[int] | frozenset[int],
        floor: int | None = None,
    ) -> None:
        self.name = name
        self.policy = policy
        self.clock = clock
        self.own_ports = own_ports
        """The daemon's UDP ports (owned by the daemon; read here)."""
        self.drops: dict[str, int] = dict.fromkeys(REASONS, 0)
        self.send_errors: dict[str, int] = {}
        self.received = 0
        self.replied = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.log_drop = RateLimitedLog(clock)
        self.listeners = 0
        """udp: ports of the service now running (the summary is logged when the last stops)."""
        self.limiter: SourceLimiter | None = None
        self.now = 0.0
        """The time of the last L{check}."""
        self.loops = LoopGuard(1, 1, 1, ephemeral_floor() if floor is None else floor)
        """The loop guard (sized by L{reconfigure}); C{floor}: the lowest ephemeral port, the kernel's by default."""
        self._settings = settings
        self._policy_settings = policy.settings
        self._deny_ports: frozenset[int] = frozenset()
        self._verdicts: dict[str, _Verdict] = {}
        self.reconfigure(settings)

    # settings

    def reconfigure(self, settings: GuardSettings) -> None:
        """New guard settings, and the policy's allow/deny as they are now (a reload pushes both)."""
        s = settings
        self._settings, self._policy_settings = s, self.policy.settings
        self._deny_ports = frozenset(s.deny_source_ports)
        self._verdicts = {}
        self.loops.reconfigure(s.loop_budget, s.loop_budget_ephemeral, s.max_sources)
        if s.rate_per_source > 0:
            # With worker processes each keeps its share of every source's rate.
            share = self.policy.shared.workers() if self.policy.shared is not None else 1
            if self.limiter is None:
                self.limiter = SourceLimiter(s.rate_per_source, s.burst, s.max_sources, share)
            else:
                self.limiter.reconfigure(s.rate_per_source, s.burst, s.max_sources, share)
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
        """
        Why a datagram from C{(host, port)} gets no reply, or None to answer it
        (then L{loop} has the last word, once the reply is known).
        """
        v = self.verdict(host)
        reason = v.reason
        if reason is not None and reason != DENIED:
            return reason
        if port in self._deny_ports:
            return SOURCE_PORT
        if port in self.own_ports:
            return OWN_PORT
        if reason is not None:
            return reason
        self.now = now = self.clock.seconds()
        limiter = self.limiter
        if limiter is not None and not v.exempt and not limiter.allow(v.key, now):
            return RATE
        return None

    def loop(self, host: str, port: int) -> str | None:
        """LOOP if a reply to C{(host, port)} would be one too many in a row, else None (and it counts)."""
        return None if self.loops.allow((host, port), port, self.now) else LOOP

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
            service=self.name,
            received=self.received,
            replied=self.replied,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            dropped=dropped,
            drops=dict(self.drops),
            send_errors=dict(self.send_errors),
        )

    def counters(self) -> dict[str, int]:
        """The figures for status lines and metrics."""
        out = {
            "udp_received": self.received,
            "udp_replied": self.replied,
            "udp_bytes_in": self.bytes_in,
            "udp_bytes_out": self.bytes_out,
        }
        out.update({f"udp_dropped_{k}": v for k, v in self.drops.items()})
        return out

    def _log(self, key: str, host: str, port: int, why: str) -> None:
        peer = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        service = self.name

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


class GuardState:
    """
    The state of a service whose only long-lived part is the guard its udp:
    listens share (discard, chargen): C{make_state=GuardState}.
    """

    def __init__(self, context: ServiceContext[Any, Any]) -> None:
        self.settings = context.settings
        self.guard = DatagramGuard(context.name, context.settings, context.policy, context.reactor, context.udp_ports)

    def reconfigure(self, settings: Any) -> None:
        self.settings = settings
        self.guard.reconfigure(settings)

    def shutdown(self) -> None:
        pass

    def status(self) -> ServiceStatus:
        return ServiceStatus(counters=self.guard.counters())


class GuardedDatagram(DatagramProtocol):
    """
    A datagram service's protocol on one UDP port, guarded as the module doc
    says. A subclass says what to answer (L{reply_for}).
    """

    noisy = False
    slack: ClassVar[int] = 0
    """Bytes a reply may exceed its request by (a fixed-size answer to an empty request); 0 for most."""

    def __init__(self, guard: DatagramGuard) -> None:
        self.state = guard
        self.drops = guard.drops
        """Datagrams not answered, by reason (shared by the service's udp: listeners)."""

    def logPrefix(self) -> str:
        """Twisted's "... starting on PORT" line names the service, not the class."""
        return f"{self.state.name} (udp)"

    def startProtocol(self) -> None:
        self.state.listeners += 1

    def stopProtocol(self) -> None:
        self.state.listeners -= 1
        if self.state.listeners <= 0:
            self.state.log_summary()

    def reply_for(self, datagram: bytes) -> bytes | None:
        """The reply to C{datagram} (a subclass says; never larger than C{datagram} plus C{slack}), or None for none."""
        raise NotImplementedError

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        state = self.state
        host, port = addr[0], addr[1]
        state.received += 1
        state.bytes_in += len(datagram)
        try:
            reason = state.check(host, port)
            if reason is not None:
                state.dropped(reason, host, port)
                return
            reply = self.reply_for(datagram)
            if reply is None:
                return
            if len(reply) > len(datagram) + self.slack:
                state.dropped(TOO_LARGE, host, port)
                return
            if not state.loops.allow((host, port), port, state.now):  # state.loop(), inline
                state.dropped(LOOP, host, port)
                return
            self._send(reply, host, port, addr)
        except Exception:
            # A bug, not the network's doing: count it and log it with its
            # traceback, but at most once per 10 s (Twisted would log every one).
            state.drops[ERROR] += 1

            def emit(held: int) -> None:
                log.failure(
                    "{service}: error handling a udp datagram (and {held} more since the last such line)",
                    service=self.state.name,
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
    cost a measurable share of the server's time per datagram: docs/performance.md).
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
