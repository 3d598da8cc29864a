"""
What a client's input costs it: the per-connection budget of lines and bytes
(blank lines and telnet commands too), one slice per reactor turn,
line_timeout, the per-subnet caps and the chat's own policy defaults.
All on a fake clock.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from socksvc.config.schema import PolicySettings
from socksvc.config.settings import setting_fields
from socksvc.core.lineinput import SLICE_BYTES, SLICE_LINES, LineInput
from socksvc.core.policy import TOO_MANY_FROM_SUBNET, TOO_MANY_FROM_YOU
from socksvc.core.protocols import Refuser, Tracked
from socksvc.services.catalogue import loads, types
from socksvc.util.lines import LineSplitter, TooLong
from tests.support import connect, context, peer
from tests.support.chat import Chat

# -- the budget --------------------------------------------------------------


def reverse(body: str = "", clock: Clock | None = None) -> tuple[Any, Any, Clock]:
    clock = clock or Clock()
    proto, transport = connect(context("reverse", body, clock=clock))
    return proto, transport, clock


def test_reverse_lines_over_the_budget_wait_with_reading_paused() -> None:
    proto, transport, clock = reverse("input_line_rate = 10\ninput_burst = 1")
    proto.dataReceived(b"ab\n" * 25)
    assert transport.value() == b"ba\n" * 10
    assert transport.producerState == "paused"
    clock.advance(1)
    assert transport.value() == b"ba\n" * 20
    clock.advance(0.5)
    assert transport.value() == b"ba\n" * 25
    assert transport.producerState == "producing"


def test_bytes_are_charged_as_they_come_even_without_a_line() -> None:
    proto, transport, clock = reverse("input_byte_rate = 1000\ninput_burst = 1")
    proto.dataReceived(b"x" * 3000)  # no line end: still 3 s of budget
    assert transport.producerState == "paused"
    clock.advance(1.9)
    assert transport.producerState == "paused"
    clock.advance(0.2)
    assert transport.producerState == "producing"


def test_a_flood_of_blank_lines_to_chat_is_slowed_then_cut_off() -> None:
    chat = Chat("throttle_kick = 10")
    alice = chat.connect("alice")
    bob = chat.connect("bob")
    alice.lines()
    bob.raw(b"\n" * 65536)  # one read's worth of blank lines: no flood token, but 65,536 lines
    assert bob.transport.producerState == "paused"
    assert bob.proto.splitter.ready  # waiting, not handled
    for _ in range(9):
        chat.clock.advance(1)
        assert bob.transport.producerState == "paused"  # still working through its first read
    chat.clock.advance(1.1)
    assert bob.transport.disconnected
    assert bob.proto.close_reason == "sending too fast"
    assert bob.output().endswith(b"-!- Disconnected: sending too fast\r\n")
    assert alice.lines() == ["-!- bob has quit (sending too fast)"]


def test_reverse_at_full_speed_is_slowed_then_cut_off_with_a_reason() -> None:
    proto, transport, clock = reverse("throttle_kick = 20")
    line = "a\u0301" * 1365 + "\n"
    data = line.encode()
    for _ in range(40):
        if transport.disconnecting:
            break
        if transport.producerState == "producing":
            proto.dataReceived(data * 16)  # what one read holds
        clock.advance(1)
    assert transport.disconnecting
    assert transport.value().endswith(b"error: sending too fast\r\n")
    assert proto.close_reason == "sending too fast"
    # At most the budget went through (16 KiB a second, 4 s saved up, one read in debt), not 64 KiB a second.
    assert proto.bytes_out <= 16384 * (4 + clock.seconds()) + 16 * len(data)


def test_an_honest_burst_is_not_cut_off() -> None:
    """A paste of 300 lines waits a few seconds; it is never disconnected."""
    proto, transport, clock = reverse("throttle_kick = 5")
    proto.dataReceived(b"hello\n" * 300)
    clock.pump([0.1] * 100)
    assert transport.value() == b"olleh\n" * 300
    assert not transport.disconnecting
    assert transport.producerState == "producing"


def test_one_slice_per_turn() -> None:
    proto, transport, clock = reverse("input_line_rate = 0\ninput_byte_rate = 0")
    proto.dataReceived(b"x\n" * (3 * SLICE_LINES))
    assert transport.value() == b"x\n" * SLICE_LINES
    assert transport.producerState == "paused"
    for turn in (2, 3):
        # The next slice is the next turn's: one call, due now (a real reactor runs it after the
        # ready sockets; task.Clock would chain it at once, so it is run by hand here).
        (call,) = clock.getDelayedCalls()
        assert call.getTime() == clock.seconds()
        clock.calls.remove(call)
        call.func(*call.args, **call.kw)
        assert transport.value() == b"x\n" * (turn * SLICE_LINES)
    assert clock.getDelayedCalls() == []
    assert transport.producerState == "producing"


def test_a_slice_stops_at_its_bytes() -> None:
    proto, transport, _clock = reverse("input_line_rate = 0\ninput_byte_rate = 0")
    line = b"y" * 999 + b"\n"
    proto.dataReceived(line * 40)
    assert len(transport.value()) == len(line) * (SLICE_BYTES // len(line) + 1)


def test_output_backpressure_and_budget_both_hold_reading() -> None:
    proto, transport, clock = reverse("input_line_rate = 10\ninput_burst = 1")
    proto.dataReceived(b"ab\n" * 15)
    assert transport.producerState == "paused"
    proto.input.pauseProducing()  # the write buffer is full too
    clock.advance(10)  # the budget refilled: still held for the output
    assert transport.producerState == "paused"
    assert transport.value() == b"ba\n" * 10
    proto.input.resumeProducing()
    clock.advance(0)
    assert transport.value() == b"ba\n" * 15
    assert transport.producerState == "producing"


def test_the_budget_follows_a_reload() -> None:
    ctx = context("reverse", "input_line_rate = 10\ninput_burst = 1")
    proto, transport = connect(ctx)
    ctx.policy.reconfigure(attrs.evolve(ctx.policy.settings, input_line_rate=0.0))
    proto.dataReceived(b"ab\n" * 100)
    assert transport.value() == b"ba\n" * 100


# -- line_timeout ------------------------------------------------------------


def test_reverse_trickle_is_closed_at_line_timeout() -> None:
    proto, transport, clock = reverse("idle_timeout = 0")
    for _ in range(19):
        proto.dataReceived(b"a")
        clock.advance(3)
    assert not transport.disconnecting
    proto.dataReceived(b"a")
    clock.advance(3)
    assert transport.disconnecting
    assert transport.value() == b"error: line not finished within 60s\r\n"


def test_a_peer_gone_quiet_mid_line_is_closed_by_its_timer() -> None:
    proto, transport, clock = reverse("line_timeout = 5")
    proto.dataReceived(b"half a li")
    clock.advance(4.9)
    assert not transport.disconnecting
    clock.advance(0.2)
    assert transport.disconnecting
    assert proto.close_reason == "line not finished within 5s"


def test_finished_lines_stop_the_clock() -> None:
    proto, transport, clock = reverse("line_timeout = 5\nidle_timeout = 0")
    for _ in range(10):
        proto.dataReceived(b"abc")
        clock.advance(3)
        proto.dataReceived(b"\n")
        clock.advance(100)
    assert not transport.disconnecting
    assert clock.getDelayedCalls() == []


@pytest.mark.parametrize("registered", [False, True])
def test_chat_line_timeout_before_and_after_registration(registered: bool) -> None:
    chat = Chat("line_timeout = 30\nidle_timeout = 0")
    bob = chat.connect("bob" if registered else None)
    bob.raw(b"never fini")
    chat.clock.advance(29)
    assert not bob.transport.disconnected
    chat.clock.advance(1.5)
    assert bob.transport.disconnected
    assert bob.output().endswith(b"-!- Disconnected: line not finished within 30s\r\n")


def test_a_listening_chat_member_has_no_timer() -> None:
    chat = Chat()
    bob = chat.connect("bob")
    chat.clock.advance(100000)
    assert not bob.transport.disconnected


# -- LineInput against a model -----------------------------------------------


class Owner:
    def __init__(self, policy: PolicySettings) -> None:
        self.transport = _Transport()
        self.policy = _Policy(policy)
        self.got: list[bytes | TooLong] = []
        self.refused: list[str] = []

    def lines_received(self, lines: list[bytes | TooLong]) -> None:
        self.got += lines

    def input_refused(self, reason: str) -> None:
        self.refused.append(reason)


@attrs.define
class _Policy:
    settings: PolicySettings


class _Transport:
    disconnecting = False

    def __init__(self) -> None:
        self.reading = True

    def pauseProducing(self) -> None:
        self.reading = False

    def resumeProducing(self) -> None:
        self.reading = True


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 40), st.integers(1, 30), st.floats(0, 2)), max_size=25),
    st.floats(1, 100),
    st.floats(100, 5000),
)
def test_every_line_comes_out_once_in_order_and_the_rates_hold(
    reads: list[tuple[int, int, float]], line_rate: float, byte_rate: float
) -> None:
    policy = PolicySettings(
        input_line_rate=line_rate, input_byte_rate=byte_rate, input_burst=1.0, throttle_kick=0.0, line_timeout=0.0
    )
    clock = Clock()
    owner = Owner(policy)
    li = LineInput(owner, LineSplitter(64), clock, policy)
    sent: list[bytes] = []
    n = 0
    for count, size, gap in reads:
        if owner.transport.reading:
            data = b""
            for _ in range(count):
                line = str(n).encode().ljust(size, b".")[:size]
                sent.append(line)
                data += line + b"\n"
                n += 1
            li.received(data, policy)
        clock.advance(gap)
    clock.pump([1.0] * 2000)
    assert owner.got == sent[: len(owner.got)]
    assert len(owner.got) == len(sent)
    # Lines handled never ran ahead of the line budget: burst + rate x time.
    assert len(owner.got) <= line_rate * (1 + clock.seconds()) + SLICE_LINES


# -- per-subnet caps ---------------------------------------------------------


def echo_ctx(**policy: Any) -> Any:
    ctx = context("echo")
    ctx.policy.reconfigure(attrs.evolve(ctx.policy.settings, **policy))
    return ctx


def refused(proto: Any, transport: Any, reason: str) -> bool:
    return isinstance(proto, Refuser) and transport.value() == f"socksvc: {reason}\r\n".encode()


def test_max_per_subnet_groups_ipv4_by_24() -> None:
    ctx = echo_ctx(max_per_subnet=10, max_per_source=4)
    held = [connect(ctx, peer(f"198.51.100.{i // 4}", 1000 + i)) for i in range(10)]
    assert all(isinstance(p, Tracked) for p, _ in held)
    assert refused(*connect(ctx, peer("198.51.100.200")), TOO_MANY_FROM_SUBNET)
    assert refused(*connect(ctx, peer("198.51.100.0")), TOO_MANY_FROM_YOU)  # the address cap comes first
    assert isinstance(connect(ctx, peer("198.51.101.1"))[0], Tracked)  # the next /24
    held[0][0].connectionLost(Failure(ConnectionDone()))
    assert isinstance(connect(ctx, peer("198.51.100.200"))[0], Tracked)


def test_max_per_subnet_groups_ipv6_by_48_and_mapped_as_ipv4() -> None:
    ctx = echo_ctx(max_per_subnet=2, max_per_source=0)
    assert isinstance(connect(ctx, peer("2001:db8:1:1::1"))[0], Tracked)
    assert isinstance(connect(ctx, peer("2001:db8:1:ffff::1"))[0], Tracked)
    assert refused(*connect(ctx, peer("2001:db8:1:2::9")), TOO_MANY_FROM_SUBNET)
    assert isinstance(connect(ctx, peer("2001:db8:2::1"))[0], Tracked)
    assert isinstance(connect(ctx, peer("::ffff:192.0.2.1"))[0], Tracked)
    assert isinstance(connect(ctx, peer("192.0.2.2"))[0], Tracked)
    assert refused(*connect(ctx, peer("::ffff:192.0.2.3")), TOO_MANY_FROM_SUBNET)


def test_subnet_prefixes_are_configurable_and_unix_is_never_grouped() -> None:
    ctx = echo_ctx(max_per_subnet=1, max_per_source=0, subnet_v4=32, subnet_v6=128)
    assert isinstance(connect(ctx, peer("192.0.2.1"))[0], Tracked)
    assert isinstance(connect(ctx, peer("192.0.2.2"))[0], Tracked)
    assert refused(*connect(ctx, peer("192.0.2.2")), TOO_MANY_FROM_SUBNET)
    assert all(isinstance(connect(ctx, peer("unix"))[0], Tracked) for _ in range(3))


def test_a_reload_changing_the_prefix_keeps_the_counts_right() -> None:
    ctx = echo_ctx(max_per_subnet=5)
    conns = [connect(ctx, peer("192.0.2.1", i))[0] for i in range(3)]
    ctx.policy.reconfigure(attrs.evolve(ctx.policy.settings, subnet_v4=16))
    conns += [connect(ctx, peer("192.0.9.1", i))[0] for i in range(2)]
    for p in conns:
        p.connectionLost(Failure(ConnectionDone()))
    assert ctx.policy.per_subnet == {}


# -- the chat's own policy defaults --------------------------------------------

CHAT = '[services.chat]\nlisten = ["tcp:0"]\n'
ECHO = '[services.echo]\nlisten = ["tcp:0"]\n'


def test_chat_defaults_to_thousands_of_connections() -> None:
    config = loads(CHAT + ECHO)
    assert config.service("chat").policy.max_connections == 10000
    assert config.service("echo").policy.max_connections == 1024


def test_defaults_and_the_table_still_override_the_type() -> None:
    config = loads("[defaults]\nmax_connections = 500\n" + CHAT + ECHO)
    assert config.service("chat").policy.max_connections == 500
    config = loads("[defaults]\nmax_connections = 500\n" + CHAT + "max_connections = 20000\n")
    assert config.service("chat").policy.max_connections == 20000


def test_type_policy_defaults_are_valid_policy_values() -> None:
    fields = setting_fields(PolicySettings)
    for stype in types().values():
        for key, value in stype.policy_defaults.items():
            assert key in fields, (stype.name, key)
            assert fields[key][1].parse(value) == value


def test_a_debt_longer_than_throttle_kick_is_a_disconnect_at_the_deadline() -> None:
    """8,192 telnet NOPs cost 8,192 lines: at 50 a second that is 164 s of debt; the kick comes at 60 s."""
    chat = Chat()
    bob = chat.connect("bob")
    bob.raw(b"\xff\xf1" * 8192)
    assert bob.transport.producerState == "paused"
    chat.clock.advance(59)
    assert not bob.transport.disconnected
    chat.clock.advance(1.5)
    assert bob.transport.disconnected
    assert bob.proto.close_reason == "sending too fast"
