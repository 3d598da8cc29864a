"""
Unit tests for the UDP echo guard (socksvc.core.datagram): a fake clock and a fake
transport, no sockets. The loopback tests are in test_udp_loopback.py.
"""

from __future__ import annotations

import errno
import ipaddress
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import error as terror
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from socksvc.config.schema import PolicySettings
from socksvc.core.datagram import (
    BROADCAST,
    DEFAULT_DENY_SOURCE_PORTS,
    DENIED,
    ERROR,
    MULTICAST,
    OWN_PORT,
    RATE,
    SEND_ERROR,
    SOURCE_PORT,
    TOO_LARGE,
    UNSPECIFIED,
    DatagramGuard,
    bad_source,
)
from socksvc.core.policy import Policy
from socksvc.core.service import ServiceContext
from socksvc.services.catalogue import loads
from socksvc.services.echo import SERVICE_TYPE, EchoSettings, UDPEcho
from socksvc.util.ratelimit import SourceLimiter, effective_burst

CLIENT_PORT = 40000


class FakeUDPTransport:
    """Records what the protocol writes; raises C{fail} instead when set."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []
        self.fail: BaseException | None = None

    def write(self, datagram: bytes, addr: Any = None) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append((datagram, addr))


def udp_context(body: str = "", clock: Clock | None = None) -> ServiceContext[Any, Any]:
    """An echo service's context, its keys checked from TOML C{body} lines."""
    text = f'[services.echo]\nlisten = ["udp:0"]\n{body}\n'
    cfg = loads(text, "<test>").service("echo")
    clock = clock or Clock()
    return SERVICE_TYPE.context("echo", cfg.settings, Policy("echo", cfg.policy, clock), clock, set())


CONTEXTS: dict[UDPEcho, ServiceContext[Any, Any]] = {}
"""Each test protocol's context (the protocol itself knows only its guard)."""


def echo(body: str = "", clock: Clock | None = None) -> tuple[UDPEcho, FakeUDPTransport, Clock]:
    clock = clock or Clock()
    ctx = udp_context(body, clock)
    proto = UDPEcho(ctx.state.guard)
    CONTEXTS[proto] = ctx
    transport = FakeUDPTransport()
    proto.makeConnection(transport)  # type: ignore[arg-type]
    return proto, transport, clock


def send(proto: UDPEcho, data: bytes, host: str = "192.0.2.1", port: int = CLIENT_PORT) -> None:
    proto.datagramReceived(data, (host, port))


def nonzero(drops: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in drops.items() if v}


# -- echo ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["192.0.2.1", "127.0.0.1", "2001:db8::1", "::1", "::ffff:192.0.2.1", "fe80::1"],
)
def test_datagram_comes_back_unchanged_to_its_sender(host: str) -> None:
    proto, transport, _ = echo()
    for data in (b"hello", b"", b"\x00\xff" * 100, bytes(range(256)) * 255):
        send(proto, data, host)
    assert transport.sent == [
        (b"hello", (host, CLIENT_PORT)),
        (b"", (host, CLIENT_PORT)),
        (b"\x00\xff" * 100, (host, CLIENT_PORT)),
        (bytes(range(256)) * 255, (host, CLIENT_PORT)),
    ]
    assert nonzero(proto.drops) == {}
    assert proto.state.replied == 4


def test_largest_datagram_is_echoed_whole() -> None:
    proto, transport, _ = echo()
    big = b"x" * 65507
    send(proto, big)
    assert transport.sent == [(big, ("192.0.2.1", CLIENT_PORT))]
    assert proto.state.bytes_in == proto.state.bytes_out == 65507


def test_reply_is_never_larger_than_the_request() -> None:
    class Amplifier(UDPEcho):
        def reply_for(self, datagram: bytes) -> bytes:
            return datagram + b"!"

    ctx = udp_context()
    proto = Amplifier(ctx.state.guard)
    transport = FakeUDPTransport()
    proto.makeConnection(transport)  # type: ignore[arg-type]
    send(proto, b"")
    send(proto, b"abc")
    assert transport.sent == []
    assert proto.drops[TOO_LARGE] == 2


# -- sources that make reflection or loops possible ----------------------------


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("255.255.255.255", BROADCAST),
        ("::ffff:255.255.255.255", BROADCAST),
        ("224.0.0.1", MULTICAST),
        ("239.255.255.250", MULTICAST),
        ("::ffff:239.1.2.3", MULTICAST),
        ("ff02::1", MULTICAST),
        ("ff05::1:3", MULTICAST),
        ("0.0.0.0", UNSPECIFIED),
        ("0.1.2.3", UNSPECIFIED),
        ("::", UNSPECIFIED),
        ("::ffff:0.0.0.0", UNSPECIFIED),
        ("not an address", UNSPECIFIED),
    ],
)
def test_no_reply_to_impossible_sources(host: str, reason: str) -> None:
    proto, transport, _ = echo()
    send(proto, b"x", host)
    assert transport.sent == []
    assert nonzero(proto.drops) == {reason: 1}


@pytest.mark.parametrize("port", DEFAULT_DENY_SOURCE_PORTS)
def test_no_reply_to_default_denied_source_ports(port: int) -> None:
    proto, transport, _ = echo()
    send(proto, b"x", "192.0.2.1", port)
    send(proto, b"x", "::ffff:192.0.2.1", port)
    send(proto, b"x", "127.0.0.1", port)  # loopback is rate exempt, not port exempt
    assert transport.sent == []
    assert nonzero(proto.drops) == {SOURCE_PORT: 3}


def test_default_deny_list_covers_the_known_reflectors() -> None:
    assert set(EchoSettings().deny_source_ports) >= {0, 7, 13, 17, 19, 37, 53, 123, 1900, 11211}


def test_deny_source_ports_is_configurable() -> None:
    proto, transport, _ = echo("deny_source_ports = [50000]")
    send(proto, b"a", port=50000)
    send(proto, b"b", port=19)  # no longer listed
    assert transport.sent == [(b"b", ("192.0.2.1", 19))]
    assert nonzero(proto.drops) == {SOURCE_PORT: 1}


def test_no_reply_to_the_daemons_own_udp_ports() -> None:
    """
    A datagram "from" one of our own UDP ports could only be a spoof (or
    another socksvc): answering it is how two echo servers loop. Loopback
    cannot show this one (a test cannot send from a port the daemon holds on
    the same address), so test_udp_loopback uses 127.0.0.2 for the source.
    """
    proto, transport, _ = echo("deny_source_ports = []")
    proto.state.own_ports.update({7007, 7008})
    send(proto, b"a", "192.0.2.1", 7007)
    send(proto, b"b", "::ffff:192.0.2.1", 7008)
    send(proto, b"c", "127.0.0.1", 7008)
    send(proto, b"d", "192.0.2.1", 7009)
    assert transport.sent == [(b"d", ("192.0.2.1", 7009))]
    assert nonzero(proto.drops) == {OWN_PORT: 3}
    # The daemon adds the real port after binding port 0: the set is read live.
    proto.state.own_ports.add(7009)
    send(proto, b"e", "192.0.2.1", 7009)
    assert proto.drops[OWN_PORT] == 4


def test_allow_and_deny_apply_to_every_datagram_mapped_or_not() -> None:
    proto, transport, _ = echo('allow = ["192.0.2.0/24", "2001:db8::/32"]\ndeny = ["192.0.2.66/32"]')
    send(proto, b"1", "192.0.2.1")
    send(proto, b"2", "::ffff:192.0.2.2")
    send(proto, b"3", "2001:db8::5")
    send(proto, b"4", "192.0.2.66")
    send(proto, b"5", "::ffff:192.0.2.66")
    send(proto, b"6", "198.51.100.1")
    send(proto, b"7", "2001:db9::1")
    assert [d for d, _ in transport.sent] == [b"1", b"2", b"3"]
    assert nonzero(proto.drops) == {DENIED: 4}


def test_a_reload_applies_to_the_next_datagram() -> None:
    proto, transport, _ = echo()
    send(proto, b"a", port=50000)
    ctx = CONTEXTS[proto]
    # What the daemon does on a reload: new settings pushed through the context to the state.
    ctx.reconfigure(attrs.evolve(ctx.settings, deny_source_ports=(50000,)))
    send(proto, b"b", port=50000)
    ctx.policy.reconfigure(PolicySettings(deny=(ipaddress.ip_network("192.0.2.0/24"),)))
    ctx.reconfigure(ctx.settings)
    send(proto, b"c", port=50001)
    assert [d for d, _ in transport.sent] == [b"a"]
    assert nonzero(proto.drops) == {SOURCE_PORT: 1, DENIED: 1}


_MAPPED_CONTEXT = udp_context('deny = ["10.0.0.0/8"]')
_MAPPED_CONTEXT.udp_ports.add(7007)


@settings(max_examples=200, deadline=None)
@given(st.ip_addresses(v=4), st.integers(min_value=0, max_value=65535))
def test_mapped_and_plain_ipv4_get_the_same_verdict(ip: ipaddress.IPv4Address, port: int) -> None:
    ctx = _MAPPED_CONTEXT
    a = DatagramGuard(ctx.name, ctx.settings, ctx.policy, ctx.reactor, ctx.udp_ports)
    b = DatagramGuard(ctx.name, ctx.settings, ctx.policy, ctx.reactor, ctx.udp_ports)
    assert a.check(str(ip), port) == b.check(f"::ffff:{ip}", port)


@settings(max_examples=200, deadline=None)
@given(st.ip_addresses())
def test_bad_source_matches_the_address_kind(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    reason = bad_source(ip)
    if ip.is_multicast:
        assert reason == MULTICAST
    elif ip == ipaddress.IPv4Address("255.255.255.255"):
        assert reason == BROADCAST
    elif ip.is_unspecified or (ip.version == 4 and int(ip) >> 24 == 0):
        assert reason == UNSPECIFIED
    else:
        assert reason is None


# -- the per-source rate limit -------------------------------------------------


def test_a_flood_from_one_source_gets_burst_then_rate() -> None:
    proto, transport, clock = echo("rate_per_source = 2\nburst = 5")
    for _ in range(20):
        send(proto, b"x")
    assert len(transport.sent) == 5
    assert proto.drops[RATE] == 15
    clock.advance(1.0)
    for _ in range(20):
        send(proto, b"x")
    assert len(transport.sent) == 7  # two more tokens in one second
    clock.advance(100.0)
    for _ in range(20):
        send(proto, b"x")
    assert len(transport.sent) == 12  # saved up to burst, no more
    assert proto.drops[RATE] == 15 + 18 + 15


def test_sources_are_ipv4_addresses_and_ipv6_slash_64s() -> None:
    proto, transport, _ = echo("rate_per_source = 1\nburst = 1")
    send(proto, b"a", "192.0.2.1")
    send(proto, b"b", "::ffff:192.0.2.1")  # same source as a
    send(proto, b"c", "192.0.2.2")
    send(proto, b"d", "2001:db8:0:1::1")
    send(proto, b"e", "2001:db8:0:1:ffff::2")  # same /64 as d
    send(proto, b"f", "2001:db8:0:2::1")
    assert [d for d, _ in transport.sent] == [b"a", b"c", b"d", b"f"]
    assert proto.drops[RATE] == 2


def test_loopback_is_exempt_by_default_and_only_then() -> None:
    proto, transport, _ = echo("rate_per_source = 1\nburst = 1")
    for host in ("127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"):
        for _ in range(10):
            send(proto, b"x", host)
    assert len(transport.sent) == 40
    proto, transport, _ = echo("rate_per_source = 1\nburst = 1\nrate_exempt = []")
    for _ in range(10):
        send(proto, b"x", "127.0.0.1")
    assert len(transport.sent) == 1
    proto, transport, _ = echo('rate_per_source = 1\nburst = 1\nrate_exempt = ["192.0.2.0/24"]')
    for _ in range(10):
        send(proto, b"x", "192.0.2.7")
        send(proto, b"x", "198.51.100.7")
    assert len(transport.sent) == 11


def test_rate_zero_turns_the_limit_off() -> None:
    proto, transport, _ = echo("rate_per_source = 0\nburst = 1\nmax_sources = 1")
    for i in range(500):
        send(proto, b"x", f"10.0.{i // 250}.{i % 250}")
    assert len(transport.sent) == 500
    assert proto.state.limiter is None


def test_burst_zero_means_one_seconds_worth() -> None:
    assert effective_burst(10, 0) == 10
    assert effective_burst(0.5, 0) == 1
    assert effective_burst(10, 3) == 3
    proto, transport, _ = echo("rate_per_source = 4\nburst = 0")
    for _ in range(10):
        send(proto, b"x")
    assert len(transport.sent) == 4


def test_the_source_table_is_bounded_and_evicts_the_least_recently_seen() -> None:
    limiter = SourceLimiter(rate=1, burst=1, max_sources=3)
    assert limiter.allow("a", 0)
    assert limiter.allow("b", 0)
    assert limiter.allow("c", 0)
    assert not limiter.allow("a", 0)  # a is now the most recently seen
    assert limiter.allow("d", 0)  # evicts b, the oldest
    assert list(limiter.table) == ["c", "a", "d"]
    assert limiter.evicted == 1
    assert not limiter.allow("a", 0)  # a kept its empty bucket
    assert list(limiter.table) == ["c", "d", "a"]
    assert limiter.allow("b", 0)  # b came back with a full one (evicts c)
    assert list(limiter.table) == ["d", "a", "b"]
    assert limiter.evicted == 2


def test_the_table_stays_bounded_under_a_spoofed_source_storm() -> None:
    proto, transport, _ = echo("rate_per_source = 1\nburst = 1\nmax_sources = 100")
    for i in range(5000):
        send(proto, b"x", f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
    limiter = proto.state.limiter
    assert limiter is not None
    assert len(limiter.table) == 100
    assert limiter.evicted == 4900
    assert len(transport.sent) == 5000


def test_a_reload_resizes_the_limiter() -> None:
    proto, transport, _ = echo("rate_per_source = 1\nburst = 10\nmax_sources = 10")
    for i in range(10):
        send(proto, b"x", f"10.0.0.{i}")
    ctx = CONTEXTS[proto]
    ctx.reconfigure(attrs.evolve(ctx.settings, burst=2, max_sources=3))
    for _ in range(5):
        send(proto, b"x", "10.0.0.9")
    limiter = proto.state.limiter
    assert limiter is not None
    assert len(limiter.table) == 3
    assert limiter.burst == 2
    assert len(transport.sent) == 10 + 2  # 10.0.0.9 kept 9 tokens, capped to 2
    ctx.reconfigure(attrs.evolve(ctx.settings, rate_per_source=0.0))
    for _ in range(5):
        send(proto, b"x", "10.0.0.9")
    assert len(transport.sent) == 17


@settings(max_examples=60, deadline=None)
@given(
    rate=st.floats(min_value=0.1, max_value=50),
    burst=st.integers(min_value=1, max_value=20),
    max_sources=st.integers(min_value=1, max_value=16),
    events=st.lists(
        st.tuples(st.integers(min_value=0, max_value=12), st.floats(min_value=0, max_value=2)),
        max_size=300,
    ),
)
def test_limiter_never_grows_past_max_sources_nor_gives_more_than_burst_plus_rate(
    rate: float, burst: int, max_sources: int, events: list[tuple[int, float]]
) -> None:
    limiter = SourceLimiter(rate, burst, max_sources)
    now = 0.0
    allowed: dict[str, int] = {}
    for source, step in events:
        now += step
        key = f"s{source}"
        if limiter.allow(key, now):
            allowed[key] = allowed.get(key, 0) + 1
        assert len(limiter.table) <= max_sources
    if max_sources > 12:  # 13 keys at most: nothing evicted: every source kept its one bucket
        for n in allowed.values():
            assert n <= burst + rate * now + 1e-6
    # With a single source there is no eviction at all.
    single = SourceLimiter(rate, burst, max_sources)
    t = 0.0
    got = 0
    for _source, step in events:
        t += step
        got += single.allow("one", t)
    assert got <= burst + rate * t + 1e-6


# -- failures ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (OSError(errno.EAGAIN, "Resource temporarily unavailable"), "EAGAIN"),
        (OSError(errno.ENOBUFS, "No buffer space available"), "ENOBUFS"),
        (OSError(errno.ECONNREFUSED, "Connection refused"), "ECONNREFUSED"),
        (OSError(errno.EHOSTUNREACH, "No route to host"), "EHOSTUNREACH"),
        (OSError(errno.EPERM, "Operation not permitted"), "EPERM"),
        (terror.MessageLengthError("message too long"), "EMSGSIZE"),
        (terror.InvalidAddressError("fe80::1", "no scope"), "InvalidAddressError"),
    ],
)
def test_sendto_errors_are_counted_never_raised(exc: BaseException, code: str) -> None:
    proto, transport, _ = echo()
    transport.fail = exc
    with capturedLogs() as events:
        for _ in range(50):
            send(proto, b"x")
    assert proto.drops[SEND_ERROR] == 50
    assert proto.state.send_errors == {code: 50}
    assert proto.state.replied == 0
    lines = [e for e in events if e.get("event") == "udp-drop"]
    assert len(lines) == 1  # one line per reason per 10 s
    assert not [e for e in events if "log_failure" in e]
    transport.fail = None
    send(proto, b"y")
    assert transport.sent == [(b"y", ("192.0.2.1", CLIENT_PORT))]


def test_connection_refused_callback_is_counted() -> None:
    proto, _, _ = echo()
    proto.connectionRefused()
    assert proto.drops[SEND_ERROR] == 1
    assert proto.state.send_errors == {"ECONNREFUSED": 1}


def test_an_internal_error_is_counted_and_logged_once_per_period() -> None:
    class Broken(UDPEcho):
        def reply_for(self, datagram: bytes) -> bytes:
            raise RuntimeError("bug")

    ctx = udp_context()
    proto = Broken(ctx.state.guard)
    proto.makeConnection(FakeUDPTransport())  # type: ignore[arg-type]
    with capturedLogs() as events:
        for _ in range(30):
            send(proto, b"x")
    assert proto.drops[ERROR] == 30
    assert len([e for e in events if "log_failure" in e]) == 1


# -- logging -------------------------------------------------------------------


def test_drops_are_logged_once_per_reason_per_ten_seconds_with_a_count() -> None:
    proto, _, clock = echo("rate_per_source = 1\nburst = 1")
    with capturedLogs() as events:
        for _ in range(5):
            send(proto, b"x", port=19)
            send(proto, b"x", "224.0.0.1")
        clock.advance(9)
        send(proto, b"x", port=19)
        clock.advance(1)
        send(proto, b"x", port=19)
    drops = [e for e in events if e.get("event") == "udp-drop"]
    assert [(e["reason"], e["held"]) for e in drops] == [("source_port", 0), ("multicast", 0), ("source_port", 5)]
    assert drops[0]["peer"] == "192.0.2.1:19"
    assert "(and 5 more since the last such line)" in drops[2]["more"]
    assert proto.drops[SOURCE_PORT] == 7
    assert proto.drops[MULTICAST] == 5


def test_listeners_of_one_service_share_counters_and_budget() -> None:
    clock = Clock()
    ctx = udp_context("rate_per_source = 1\nburst = 3", clock)
    first, second = UDPEcho(ctx.state.guard), UDPEcho(ctx.state.guard)
    t1, t2 = FakeUDPTransport(), FakeUDPTransport()
    first.makeConnection(t1)  # type: ignore[arg-type]
    second.makeConnection(t2)  # type: ignore[arg-type]
    for _ in range(3):
        send(first, b"x")
        send(second, b"x")
    assert len(t1.sent) + len(t2.sent) == 3
    assert first.drops is second.drops
    assert first.drops[RATE] == 3


def test_totals_are_logged_when_the_last_listener_stops() -> None:
    ctx = udp_context()
    first, second = UDPEcho(ctx.state.guard), UDPEcho(ctx.state.guard)
    first.makeConnection(FakeUDPTransport())  # type: ignore[arg-type]
    second.makeConnection(FakeUDPTransport())  # type: ignore[arg-type]
    send(first, b"abc")
    send(second, b"x", port=19)
    with capturedLogs() as events:
        first.doStop()
        assert [e for e in events if e.get("event") == "udp-summary"] == []
        second.doStop()
    (summary,) = [e for e in events if e.get("event") == "udp-summary"]
    assert (summary["received"], summary["replied"], summary["bytes_in"]) == (2, 1, 4)
    assert summary["dropped"] == "source_port 1"


class _FailingSocket:
    def __init__(self, code: int) -> None:
        self.code = code
        self.sent: list[Any] = []

    def sendto(self, data: bytes, addr: Any) -> int:
        if self.code:
            raise OSError(self.code, errno.errorcode.get(self.code, "?"))
        self.sent.append((data, addr))
        return len(data)


class _Port:
    def __init__(self, code: int) -> None:
        self.socket = _FailingSocket(code)
        self.written: list[Any] = []

    def write(self, data: bytes, addr: Any) -> None:
        self.written.append((data, addr))


def test_the_direct_reply_fails_as_twisteds_write_does() -> None:
    from socksvc.core.datagram import _sendto

    ok = _Port(0)
    _sendto(ok, b"x", ("127.0.0.1", 5))
    assert ok.socket.sent == [(b"x", ("127.0.0.1", 5))]
    with pytest.raises(terror.MessageLengthError):
        _sendto(_Port(errno.EMSGSIZE), b"x", ("127.0.0.1", 5))
    _sendto(_Port(errno.ECONNREFUSED), b"x", ("127.0.0.1", 5))  # ignored, as Twisted does
    interrupted = _Port(errno.EINTR)
    _sendto(interrupted, b"x", ("127.0.0.1", 5))
    assert interrupted.written == [(b"x", ("127.0.0.1", 5))]  # tried again the usual way
    with pytest.raises(OSError) as e:
        _sendto(_Port(errno.ENOBUFS), b"x", ("127.0.0.1", 5))
    assert e.value.errno == errno.ENOBUFS
