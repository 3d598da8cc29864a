"""
The policy layer with a fake clock and fake peers: every rule, IPv4, IPv6
and IPv4-mapped addresses, UNIX peers, reloads, and what gets logged.
"""

from __future__ import annotations

import ipaddress
import resource
from collections.abc import Iterator
from typing import Any, cast

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import tcp
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import ServerFactory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, Logger, formatEvent
from twisted.python.failure import Failure

from socksvc.config.schema import PolicySettings
from socksvc.core import policy as policy_module
from socksvc.core.policy import DENIED, RATE_EXCEEDED, TOO_MANY, TOO_MANY_FROM_YOU, address_allowed
from socksvc.core.protocols import Refuser, ServiceFactory, StreamProtocol, Tracked
from socksvc.daemon import accept as accept_module
from socksvc.daemon.accept import AcceptErrorLog, guard_port
from socksvc.daemon.fdlimit import fd_warning, raise_fd_limit
from socksvc.util import addresses as addresses_module
from socksvc.util.addresses import format_peer, host_ip, peer_facts, peer_ip, source_key
from socksvc.util.ratelimit import RateLimitedLog, TokenBucket
from tests.support import connect, context, peer
from tests.support.policy import ctx_with, nets, of

# -- helpers -------------------------------------------------------------------


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[LogEvent]]:
    """Every event the policy layer logs."""
    found: list[LogEvent] = []
    logger = Logger(namespace="socksvc", observer=cast(Any, found.append))
    monkeypatch.setattr(policy_module, "log", logger)
    monkeypatch.setattr(accept_module, "log", logger)
    yield found


def refused_with(proto: Any, transport: Any, reason: str) -> bool:
    return (
        isinstance(proto, Refuser)
        and transport.value() == f"socksvc: {reason}\r\n".encode()
        and transport.disconnected  # StringTransport.abortConnection sets it
    )


# -- addresses -----------------------------------------------------------------


@given(st.one_of(st.ip_addresses().map(str), st.text(max_size=20)))
def test_host_ip_is_peer_ip_of_a_host_string(host: str) -> None:
    """UDP checks datagram sources with host_ip; stream peers go through peer_ip: the same answer."""

    class Addr:
        pass

    addr = Addr()
    addr.host = host  # type: ignore[attr-defined]
    assert host_ip(host) == peer_ip(addr)  # type: ignore[arg-type]


def test_peer_ip_unwraps_mapped_and_scoped_addresses() -> None:
    assert peer_ip(peer("10.1.2.3")) == ipaddress.ip_address("10.1.2.3")
    assert peer_ip(peer("::ffff:10.1.2.3")) == ipaddress.ip_address("10.1.2.3")
    assert peer_ip(peer("2001:db8::1")) == ipaddress.ip_address("2001:db8::1")
    assert peer_ip(peer("fe80::1%eth0")) == ipaddress.ip_address("fe80::1")
    assert peer_ip(peer("unix")) is None
    assert peer_ip(None) is None


def test_source_key_groups_ipv6_by_64() -> None:
    a = peer_ip(peer("2001:db8:1:2:aaaa::1"))
    b = peer_ip(peer("2001:db8:1:2:bbbb::2"))
    c = peer_ip(peer("2001:db8:1:3::1"))
    assert source_key(a) == source_key(b) == "2001:db8:1:2::/64"
    assert source_key(c) != source_key(a)
    assert source_key(peer_ip(peer("::ffff:192.0.2.7"))) == source_key(peer_ip(peer("192.0.2.7"))) == "192.0.2.7"
    assert source_key(None) == "local"


def test_format_peer() -> None:
    assert format_peer(peer("127.0.0.1", 5000)) == "127.0.0.1:5000"
    assert format_peer(peer("::1", 5000)) == "[::1]:5000"
    assert format_peer(peer("unix")) == "unix"


def test_address_rules() -> None:
    s = PolicySettings(deny=nets("10.0.0.0/8", "2001:db8:bad::/48"), allow=nets("10.0.0.0/8", "192.0.2.0/24", "::/0"))
    assert not address_allowed(s, peer_ip(peer("10.9.9.9")))  # deny wins over allow
    assert not address_allowed(s, peer_ip(peer("::ffff:10.9.9.9")))  # mapped unwrapped
    assert address_allowed(s, peer_ip(peer("192.0.2.1")))
    assert address_allowed(s, peer_ip(peer("::ffff:192.0.2.1")))
    assert not address_allowed(s, peer_ip(peer("198.51.100.1")))  # not in allow; ::/0 is IPv6 only
    assert address_allowed(s, peer_ip(peer("2001:db8::1")))
    assert not address_allowed(s, peer_ip(peer("2001:db8:bad:1::1")))
    assert address_allowed(s, None)  # UNIX peers skip address rules
    assert address_allowed(PolicySettings(), peer_ip(peer("203.0.113.9")))


def test_mapped_form_rules_match_ipv4_peers() -> None:
    s = PolicySettings(deny=nets("::ffff:10.0.0.0/104"))
    assert not address_allowed(s, peer_ip(peer("10.1.1.1")))
    assert not address_allowed(s, peer_ip(peer("::ffff:10.1.1.1")))
    assert address_allowed(s, peer_ip(peer("11.1.1.1")))
    assert address_allowed(PolicySettings(deny=nets("::/0")), peer_ip(peer("::ffff:10.1.1.1")))


@settings(max_examples=200, deadline=None)
@given(
    addr=st.ip_addresses(v=4),
    net=st.tuples(st.ip_addresses(v=4), st.integers(0, 32)),
    mapped=st.booleans(),
    as_allow=st.booleans(),
)
def test_ipv4_rules_property(addr: Any, net: Any, mapped: bool, as_allow: bool) -> None:
    network = ipaddress.ip_network(f"{net[0]}/{net[1]}", strict=False)
    host = f"::ffff:{addr}" if mapped else str(addr)
    ip = peer_ip(peer(host))
    s = PolicySettings(allow=(network,)) if as_allow else PolicySettings(deny=(network,))
    assert address_allowed(s, ip) == ((addr in network) == as_allow)


@settings(max_examples=200, deadline=None)
@given(addr=st.ip_addresses(v=6), prefix=st.integers(0, 128))
def test_ipv6_rules_property(addr: Any, prefix: int) -> None:
    network = ipaddress.ip_network(f"{addr}/{prefix}", strict=False)
    ip = peer_ip(peer(str(addr)))
    assert ip is not None
    mapped: Any = ipaddress.ip_network("::ffff:0:0/96")
    expected = ip in network if ip.version == 6 else network.subnet_of(mapped)
    assert address_allowed(PolicySettings(deny=(network,)), ip) == (not expected)


# -- admission through the factory -----------------------------------------------


def test_denied_peer_gets_one_line_and_is_aborted(events: list[LogEvent]) -> None:
    ctx = ctx_with(deny=nets("192.0.2.0/24", "2001:db8::/32"))
    for host in ("192.0.2.5", "::ffff:192.0.2.5", "2001:db8::5"):
        proto, transport = connect(ctx, peer(host))
        assert refused_with(proto, transport, DENIED)
    assert not ctx.policy.connections and not ctx.policy.per_source
    assert ctx.policy.refused == {DENIED: 3}
    proto, transport = connect(ctx, peer("198.51.100.1"))
    assert isinstance(proto, Tracked) and not transport.disconnecting
    proto, transport = connect(ctx, peer("unix"))
    assert isinstance(proto, Tracked)


def test_allow_list_and_unix_peers() -> None:
    ctx = ctx_with(allow=nets("127.0.0.0/8"))
    assert isinstance(connect(ctx, peer("127.0.0.2"))[0], Tracked)
    assert isinstance(connect(ctx, peer("::ffff:127.0.0.2"))[0], Tracked)
    assert refused_with(*connect(ctx, peer("::1")), DENIED)
    assert isinstance(connect(ctx, peer("unix"))[0], Tracked)


def test_max_connections_and_refusals_cost_no_slot() -> None:
    ctx = ctx_with(max_connections=3, max_per_source=0)
    open_ = [connect(ctx, peer("10.0.0.1", 1000 + i)) for i in range(3)]
    assert all(isinstance(p, Tracked) for p, _ in open_)
    for i in range(5):
        assert refused_with(*connect(ctx, peer("10.0.0.2", 2000 + i)), TOO_MANY)
    assert len(ctx.policy.connections) == 3
    open_[0][0].connectionLost(Failure(ConnectionDone()))
    assert isinstance(connect(ctx, peer("10.0.0.2"))[0], Tracked)
    assert refused_with(*connect(ctx, peer("unix")), TOO_MANY)  # caps apply to UNIX peers too


def test_max_connections_zero_means_no_limit() -> None:
    ctx = ctx_with(max_connections=0, max_per_source=0, max_per_subnet=0)
    assert all(isinstance(connect(ctx, peer("10.0.0.1", i))[0], Tracked) for i in range(2000))


def test_max_per_source_ipv4_and_mapped_share_a_count() -> None:
    ctx = ctx_with(max_per_source=2)
    assert isinstance(connect(ctx, peer("10.0.0.1"))[0], Tracked)
    assert isinstance(connect(ctx, peer("::ffff:10.0.0.1"))[0], Tracked)
    assert refused_with(*connect(ctx, peer("10.0.0.1")), TOO_MANY_FROM_YOU)
    assert refused_with(*connect(ctx, peer("::ffff:10.0.0.1")), TOO_MANY_FROM_YOU)
    assert isinstance(connect(ctx, peer("10.0.0.2"))[0], Tracked)
    assert ctx.policy.per_source == {"10.0.0.1": 2, "10.0.0.2": 1}


def test_max_per_source_ipv6_counts_a_64() -> None:
    ctx = ctx_with(max_per_source=2)
    first, _ = connect(ctx, peer("2001:db8:0:1::1"))
    assert isinstance(connect(ctx, peer("2001:db8:0:1:ffff::2"))[0], Tracked)
    assert refused_with(*connect(ctx, peer("2001:db8:0:1::99")), TOO_MANY_FROM_YOU)
    assert isinstance(connect(ctx, peer("2001:db8:0:2::1"))[0], Tracked)  # another /64
    first.connectionLost(Failure(ConnectionDone()))
    assert isinstance(connect(ctx, peer("2001:db8:0:1::99"))[0], Tracked)


def test_max_per_source_zero_and_unix() -> None:
    ctx = ctx_with(max_per_source=0)
    assert all(isinstance(connect(ctx, peer("10.0.0.1", i))[0], Tracked) for i in range(100))
    ctx = ctx_with(max_per_source=1)
    assert all(isinstance(connect(ctx, peer("unix"))[0], Tracked) for _ in range(5))


def test_max_rate_with_burst_and_recovery() -> None:
    clock = Clock()
    ctx = ctx_with(clock=clock, max_rate=2.0, max_rate_burst=4, max_per_source=0)
    assert all(isinstance(connect(ctx, peer("10.0.0.1", i))[0], Tracked) for i in range(4))
    for _ in range(10):  # refusals spend no tokens
        assert refused_with(*connect(ctx, peer("10.0.0.1")), RATE_EXCEEDED)
    clock.advance(0.5)
    assert isinstance(connect(ctx, peer("10.0.0.1"))[0], Tracked)
    assert refused_with(*connect(ctx, peer("10.0.0.1")), RATE_EXCEEDED)
    clock.advance(100)
    assert sum(isinstance(connect(ctx, peer("10.0.0.1"))[0], Tracked) for _ in range(10)) == 4  # burst, no more


def test_max_rate_default_burst_is_one_seconds_worth() -> None:
    ctx = ctx_with(max_rate=0.5)
    assert isinstance(connect(ctx)[0], Tracked)
    assert refused_with(*connect(ctx), RATE_EXCEEDED)
    ctx = ctx_with(max_rate=3)
    assert [isinstance(connect(ctx)[0], Tracked) for _ in range(4)] == [True, True, True, False]


def test_token_bucket_survives_the_clock_going_back() -> None:
    bucket = TokenBucket(1.0, 1.0, 100.0)
    assert bucket.take(100.0)
    assert not bucket.take(50.0)
    assert bucket.take(51.0)


# -- idle timeout ------------------------------------------------------------------


def started(type_name: str = "echo", **policy: Any) -> tuple[Any, Clock]:
    clock = Clock()
    ctx = ctx_with(type_name, clock=clock, **policy)
    ctx.policy.start()
    return ctx, clock


def test_idle_connection_is_aborted_not_before_the_timeout(events: list[LogEvent]) -> None:
    ctx, clock = started(idle_timeout=10.0)
    clock.advance(0.3)
    proto, transport = connect(ctx)
    clock.pump([0.1] * 99)  # 9.9 s after connecting
    assert not transport.disconnected
    clock.pump([0.1] * 25)
    assert transport.disconnected  # abortConnection, not loseConnection
    proto.connectionLost(Failure(ConnectionLost()))
    (close,) = of(events, "close")
    assert close["reason"].startswith("idle for 1")
    assert of(events, "idle")[0]["peer"] == "127.0.0.1:40000"


def test_input_keeps_a_byte_service_alive() -> None:
    ctx, clock = started(idle_timeout=10.0)
    proto, transport = connect(ctx)
    for _ in range(30):
        clock.advance(3)
        proto.dataReceived(b"x")
    assert not transport.disconnected
    clock.pump([1] * 12)
    assert transport.disconnected


def test_an_idle_exempt_connection_is_never_swept() -> None:
    """idle_exempt spares a connection for as long as it is true; then the timeout starts over."""
    ctx, clock = started(idle_timeout=10.0)
    proto, transport = connect(ctx)
    exempt = {"now": True}
    proto.__class__ = type("Exempt", (type(proto),), {"idle_exempt": property(lambda self: exempt["now"])})
    clock.pump([1] * 60)
    assert not transport.disconnected
    exempt["now"] = False
    clock.pump([1] * 9)
    assert not transport.disconnected  # idle time counts from the last sweep that spared it
    clock.pump([1] * 4)
    assert transport.disconnected


def test_line_service_only_counts_complete_lines() -> None:
    ctx, clock = started("reverse", idle_timeout=10.0)
    trickler, t1 = connect(ctx, peer("10.0.0.1"))
    talker, t2 = connect(ctx, peer("10.0.0.2"))
    for i in range(12):
        clock.advance(1)
        trickler.dataReceived(b"a")
        if i % 3 == 0:
            talker.dataReceived(b"hi\n")
    clock.pump([1] * 3)
    assert t1.disconnected
    assert not t2.disconnected


@settings(max_examples=60, deadline=None)
@given(
    timeout=st.floats(0.1, 1000),
    gaps=st.lists(st.floats(0, 2.0), max_size=20),
    offset=st.floats(0, 1),
)
def test_sweeper_never_aborts_early_and_always_aborts(timeout: float, gaps: list[float], offset: float) -> None:
    ctx, clock = started(idle_timeout=timeout)
    clock.advance(offset * timeout)
    proto, transport = connect(ctx)
    last = clock.seconds()
    for gap in gaps:
        clock.advance(gap * timeout / 2)
        if transport.disconnected:
            break
        proto.dataReceived(b"x")
        last = clock.seconds()
    step = timeout / 50
    latest = timeout + 2 * ctx.policy.sweep_interval()  # 1.2 x timeout above 0.5 s
    while not transport.disconnected:
        assert clock.seconds() - last <= latest + step
        clock.advance(step)
    assert clock.seconds() - last >= timeout


def test_a_clock_jump_does_not_abort_at_once() -> None:
    ctx, clock = started(idle_timeout=60.0)
    _proto, transport = connect(ctx)
    clock.advance(1)
    clock.advance(3600)  # wall clock stepped forward an hour
    assert not transport.disconnected
    clock.pump([6] * 11)
    assert transport.disconnected


def test_idle_timeout_zero_never_aborts() -> None:
    ctx, clock = started(idle_timeout=0.0)
    _proto, transport = connect(ctx)
    clock.advance(10**6)
    assert not ctx.policy.sweeping and not transport.disconnected


# -- reload ----------------------------------------------------------------------


def test_reconfigure_keeps_connections_and_applies_to_new_ones() -> None:
    ctx, _clock = started(max_per_source=0)
    kept = [connect(ctx, peer("192.0.2.1", i)) for i in range(5)]
    ctx.policy.reconfigure(attrs.evolve(ctx.policy.settings, deny=nets("192.0.2.0/24"), max_connections=3))
    assert all(not t.disconnecting for _, t in kept)
    assert len(ctx.policy.connections) == 5
    assert refused_with(*connect(ctx, peer("192.0.2.1")), DENIED)
    assert refused_with(*connect(ctx, peer("198.51.100.1")), TOO_MANY)
    for p, _ in kept[:3]:
        p.connectionLost(Failure(ConnectionDone()))
    assert isinstance(connect(ctx, peer("198.51.100.1"))[0], Tracked)


def test_reconfigure_starts_and_stops_the_sweeper() -> None:
    ctx, clock = started(idle_timeout=0.0)
    _proto, transport = connect(ctx)
    assert not ctx.policy.sweeping
    ctx.policy.reconfigure(attrs.evolve(ctx.policy.settings, idle_timeout=5.0))
    assert ctx.policy.sweeping
    clock.pump([0.5] * 13)
    assert transport.disconnected
    ctx.policy.reconfigure(attrs.evolve(ctx.policy.settings, idle_timeout=0.0))
    assert not ctx.policy.sweeping
    _p2, t2 = connect(ctx)
    clock.advance(1000)
    assert not t2.disconnected


def test_reconfigure_does_not_start_a_stopped_policy() -> None:
    ctx = ctx_with(idle_timeout=0.0)
    ctx.policy.reconfigure(attrs.evolve(ctx.policy.settings, idle_timeout=5.0))
    assert not ctx.policy.sweeping
    ctx.policy.start()
    assert ctx.policy.sweeping
    ctx.policy.stop()
    assert not ctx.policy.sweeping


def test_reconfigure_changes_the_sweep_interval() -> None:
    ctx, clock = started(idle_timeout=1000.0)
    _proto, transport = connect(ctx)
    ctx.policy.reconfigure(attrs.evolve(ctx.policy.settings, idle_timeout=2.0))
    clock.pump([0.1] * 25)
    assert transport.disconnected


def test_reload_is_not_a_way_around_the_rate() -> None:
    ctx = ctx_with(max_rate=1.0)
    assert isinstance(connect(ctx)[0], Tracked)
    ctx.policy.reconfigure(attrs.evolve(ctx.policy.settings, max_rate=1.0, deny=()))
    assert refused_with(*connect(ctx), RATE_EXCEEDED)
    ctx.policy.reconfigure(attrs.evolve(ctx.policy.settings, max_rate=0.0))
    assert isinstance(connect(ctx)[0], Tracked)


# -- logging ---------------------------------------------------------------------


def test_one_close_event_per_connection(events: list[LogEvent]) -> None:
    clock = Clock()
    ctx = ctx_with(clock=clock)
    proto, _transport = connect(ctx, peer("::1", 4242))
    proto.dataReceived(b"hello")
    clock.advance(2.5)
    proto.connectionLost(Failure(ConnectionDone()))
    proto.connectionLost(Failure(ConnectionDone()))
    (close,) = of(events, "close")
    assert (close["service"], close["peer"], close["duration"]) == ("echo", "[::1]:4242", 2.5)
    assert (close["bytes_in"], close["bytes_out"], close["reason"]) == (5, 5, "")
    assert formatEvent(close) == "echo: [::1]:4242 closed after 2.500s, 5 bytes in, 5 bytes out"


def test_refusal_flood_logs_one_line_per_reason_per_period_with_a_count(events: list[LogEvent]) -> None:
    clock = Clock()
    ctx = ctx_with(clock=clock, deny=nets("192.0.2.0/24"), max_connections=1)
    connect(ctx, peer("10.0.0.1"))
    for i in range(100):
        clock.advance(0.01)
        connect(ctx, peer("192.0.2.1", i))
        connect(ctx, peer("10.0.0.2", i))
    refusals = of(events, "refuse")
    assert sorted(e["reason"] for e in refusals) == sorted([DENIED, TOO_MANY])
    assert not of(events, "refuse_summary")
    clock.advance(10)  # no further refusal comes: the held counts are still reported
    summaries = {e["reason"]: e["held"] for e in of(events, "refuse_summary")}
    assert summaries == {DENIED: 99, TOO_MANY: 99}
    assert "echo: refused 99 more connections in the last 10s: access denied" in [
        formatEvent(e) for e in of(events, "refuse_summary")
    ]
    clock.advance(1)
    connect(ctx, peer("192.0.2.1"))  # within 10 s of the summary: held again
    assert len(of(events, "refuse")) == 2
    clock.advance(10)
    assert [e["held"] for e in of(events, "refuse_summary") if e["reason"] == DENIED] == [99, 1]
    clock.advance(60)
    connect(ctx, peer("192.0.2.1"))
    assert len(of(events, "refuse")) == 3


def test_stop_flushes_held_refusals(events: list[LogEvent]) -> None:
    ctx = ctx_with(deny=nets("0.0.0.0/0"))
    ctx.policy.start()
    for _ in range(3):
        connect(ctx, peer("10.0.0.1"))
    ctx.policy.stop()
    assert [e["held"] for e in of(events, "refuse_summary")] == [2]


def test_rate_limited_log_without_summary_reports_on_the_next_line() -> None:
    clock = Clock()
    limit = RateLimitedLog(clock, 10.0)
    got: list[int] = []
    assert limit("k", got.append)
    assert not limit("k", got.append)
    assert not limit("k", got.append)
    assert limit.held("k") == 2
    assert clock.getDelayedCalls() == []
    clock.advance(10)
    assert limit("k", got.append)
    assert got == [0, 2]


def test_rate_limited_log_keys_are_bounded() -> None:
    clock = Clock()
    limit = RateLimitedLog(clock, 10.0)
    for i in range(3 * RateLimitedLog.MAX_KEYS):
        limit(f"source-{i}", lambda held: None)
    assert len(limit._last) <= RateLimitedLog.MAX_KEYS


# -- EMFILE: the accept-error log guard ---------------------------------------------


def test_accept_error_log_is_rate_limited(events: list[LogEvent]) -> None:
    clock = Clock()
    passed: list[LogEvent] = []
    guard = AcceptErrorLog("echo tcp 127.0.0.1:7", clock, passed.append)
    for i in range(500):
        guard({"log_format": "EMFILE encountered; releasing reserved file descriptor."})
        guard({"log_format": "EMFILE recovery: Closed socket from {address}", "address": ("127.0.0.1", i)})
        guard({"log_format": "Re-reserving EMFILE recovery file descriptor."})
    guard({"log_format": "Could not accept new connection ({acceptError})", "acceptError": "ENFILE"})
    guard({"log_format": "something else"})
    assert [e["log_format"] for e in passed] == ["something else"]
    assert sorted(e["kind"] for e in of(events, "accept_error")) == ["accept ENFILE", "closed", "emfile"]
    clock.advance(10)
    assert sorted((e["kind"], e["held"]) for e in of(events, "accept_error_summary")) == [
        ("closed", 499),
        ("emfile", 499),
    ]


def test_guard_port_wraps_a_tcp_ports_logger() -> None:
    clock = Clock()
    port = tcp.Port(0, ServerFactory(), interface="127.0.0.1")
    guard = guard_port(port, clock, "echo tcp")
    assert isinstance(guard, AcceptErrorLog)
    assert port._logger.observer is guard
    assert guard_port(port, clock) is guard  # idempotent
    assert guard_port(object(), clock) is None


def test_raise_fd_limit_never_lowers() -> None:
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft, hard = raise_fd_limit()
    assert (soft, hard) == resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard == before[1] and soft >= before[0]


def test_fd_warning() -> None:
    assert fd_warning([PolicySettings(max_connections=100)] * 3, 1024) is None
    assert "adds up to 2048" in (fd_warning([PolicySettings()] * 2, 1024) or "")
    assert "no limit" in (fd_warning([PolicySettings(max_connections=0)], 1 << 20) or "")
    assert fd_warning([], 10) is None


# -- StreamProtocol: the shared stream set-up --------------------------------


class _NoDelayTransport(StringTransport):
    nodelay = False

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.nodelay = enabled

    def abortConnection(self) -> None:
        self.aborted = True
        self.loseConnection()


def _stream(cls: type[StreamProtocol]) -> tuple[StreamProtocol, _NoDelayTransport]:
    from tests.support import context, peer

    proto = ServiceFactory(context("echo"), cls).buildProtocol(peer())
    assert isinstance(proto, cls)
    transport = _NoDelayTransport()
    proto.makeConnection(transport)
    return proto, transport


def test_stream_protocol_sets_nodelay_and_produces_for_itself() -> None:
    proto, transport = _stream(StreamProtocol)
    assert IHalfCloseableProtocol.providedBy(proto)
    assert transport.nodelay and transport.producer is transport and transport.streaming
    proto.readConnectionLost()  # half-close: what is owed still goes, then close
    assert transport.producer is None and transport.disconnecting and not getattr(transport, "aborted", False)


def test_stream_protocol_flags_and_write_side_loss() -> None:
    class Quiet(StreamProtocol):
        nodelay = False
        self_producer = False

    proto, transport = _stream(Quiet)
    assert not transport.nodelay and transport.producer is None
    proto.writeConnectionLost()  # the peer cannot read any more: abort
    assert getattr(transport, "aborted", False)


@settings(max_examples=60)
@given(st.one_of(st.ip_addresses(), st.sampled_from(["::ffff:192.0.2.7", "fe80::1%eth0", "not an address", "unix"])))
def test_peer_facts_are_peer_ip_and_source_key_remembered(host: object) -> None:
    addr = peer(str(host))
    ip = peer_ip(addr)
    expected = (ip, source_key(ip))
    assert peer_facts(addr) == expected
    assert peer_facts(addr) == expected  # the remembered answer is the same
    assert peer_facts(None) == (None, "local")


def test_the_remembered_peer_facts_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(addresses_module, "_FACTS", {})
    monkeypatch.setattr(addresses_module, "_FACTS_MAX", 8)
    for n in range(50):
        peer_facts(peer(f"10.0.0.{n}"))
    assert len(addresses_module._FACTS) <= 8


def test_check_and_check_ip_agree() -> None:
    ctx = context("echo", 'deny = ["10.0.0.0/8"]\nmax_per_source = 1')
    pol = ctx.policy
    for host in ("10.1.2.3", "::ffff:10.1.2.3", "192.0.2.1", "unix"):
        ip, source = peer_facts(peer(host))
        assert pol.check(peer(host)) == pol.check_ip(ip, source)
    proto, _transport = connect(ctx, peer("192.0.2.1"))
    assert pol.check(peer("192.0.2.1")) == TOO_MANY_FROM_YOU == pol.check_ip(*peer_facts(peer("192.0.2.1")))
    assert proto.source == "192.0.2.1"
