"""
The close line's ceiling (log_close_rate, log_close_burst) and
log_connections, on a task.Clock: a connect-and-reset flood writes a
bounded number of lines, and the counts it did not log one by one are in
the summaries, bytes and all.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import attrs
import pytest
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.logger import LogEvent, Logger, formatEvent
from twisted.python.failure import Failure

from socksvc.config.loader import ConfigError
from socksvc.config.schema import PolicySettings
from socksvc.core import policy as policy_module
from socksvc.core.closelog import CloseCeiling
from socksvc.core.policy import Policy
from socksvc.services.catalogue import loads
from tests.support import connect, peer
from tests.support.policy import ctx_with, nets, of


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[LogEvent]]:
    found: list[LogEvent] = []
    monkeypatch.setattr(policy_module, "log", Logger(namespace="socksvc", observer=cast(Any, found.append)))
    yield found


class Conn:
    """The least a policy needs of a connection."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "close_reason",
        "idle_aborted",
        "idle_sweeps",
        "last_seen",
        "peer",
        "source",
        "started",
        "touched",
        "transport",
    )

    idle_exempt = False

    def __init__(self, n: int) -> None:
        self.peer = f"192.0.2.{n % 250 + 1}:{1024 + n % 60000}"
        self.source = f"192.0.2.{n % 250 + 1}"
        self.bytes_in = n % 7
        self.bytes_out = n % 5
        self.close_reason = ""
        self.transport = None


RESET = Failure(ConnectionLost("Connection reset by peer"))


def flood(policy: Policy, clock: Clock, count: int, seconds: float) -> tuple[int, int]:
    """C{count} connect-and-reset cycles spread over C{seconds}; gives the bytes in and out they carried."""
    step = seconds / count
    total_in = total_out = 0
    for n in range(count):
        conn = Conn(n)
        policy.opened(conn)
        policy.closed(conn, RESET)
        total_in += conn.bytes_in
        total_out += conn.bytes_out
        clock.advance(step)
    return total_in, total_out


def make_policy(clock: Clock, **settings: Any) -> Policy:
    return Policy("echo", attrs.evolve(PolicySettings(), **settings), clock)


def test_a_connect_and_reset_flood_writes_a_bounded_log(events: list[LogEvent]) -> None:
    """The issue's numbers: 167,000 cycles in 31 s once wrote 167,534 lines."""
    clock = Clock()
    policy = make_policy(clock)  # the defaults: 100 lines a second, a burst of 100
    total_in, total_out = flood(policy, clock, 167_000, 31.0)
    clock.advance(10)
    closes, summaries = of(events, "close"), of(events, "close_summary")
    assert len(closes) <= 100 + 100 * 31 + 1
    assert len(closes) >= 100 * 31 - 100
    assert len(summaries) == 4  # one per 10 s window: 0-10, 10-20, 20-30, 30-31
    assert len(events) < 3_300  # not 167,000
    # Nothing is lost: every close is either a line or counted in a summary, with its bytes.
    assert len(closes) + sum(s["held"] for s in summaries) == 167_000
    assert sum(e["bytes_in"] for e in closes) + sum(s["bytes_in"] for s in summaries) == total_in
    assert sum(e["bytes_out"] for e in closes) + sum(s["bytes_out"] for s in summaries) == total_out
    assert [round(s["period"]) for s in summaries] == [10, 10, 10, 10]


def test_the_summary_line_reads_like_the_refusal_summary(events: list[LogEvent]) -> None:
    clock = Clock()
    policy = make_policy(clock, log_close_rate=1.0)
    for n in range(12_346):
        conn = Conn(n)
        conn.bytes_in, conn.bytes_out = 2, 3
        policy.opened(conn)
        policy.closed(conn, Failure(ConnectionDone()))
    assert len(of(events, "close")) == 1
    assert of(events, "close_summary") == []  # not before the 10 s are up
    clock.advance(9.9)
    assert of(events, "close_summary") == []
    clock.advance(0.1)
    [summary] = of(events, "close_summary")
    assert (summary["service"], summary["held"], summary["bytes_in"], summary["bytes_out"]) == (
        "echo",
        12_345,
        24_690,
        37_035,
    )
    assert formatEvent(summary) == (
        "echo: and 12,345 more connections closed in the last 10s, 24,690 bytes in, 37,035 bytes out"
        " (over log_close_rate)"
    )


def test_under_the_rate_every_close_has_its_line(events: list[LogEvent]) -> None:
    clock = Clock()
    policy = make_policy(clock, log_close_rate=10.0, log_close_burst=5)
    flood(policy, clock, 300, 60.0)  # 5 a second
    clock.advance(10)
    assert len(of(events, "close")) == 300
    assert of(events, "close_summary") == []


def test_the_burst_is_what_may_come_at_once(events: list[LogEvent]) -> None:
    clock = Clock()
    policy = make_policy(clock, log_close_rate=10.0, log_close_burst=25)
    flood(policy, clock, 1000, 0.001)
    assert len(of(events, "close")) == 25
    clock.advance(2)  # 20 tokens back
    flood(policy, clock, 100, 0.001)
    assert len(of(events, "close")) == 45


def test_no_ceiling_with_rate_0(events: list[LogEvent]) -> None:
    clock = Clock()
    policy = make_policy(clock, log_close_rate=0.0)
    flood(policy, clock, 5000, 1.0)
    clock.advance(10)
    assert len(of(events, "close")) == 5000
    assert of(events, "close_summary") == []


def test_stopping_reports_what_is_held(events: list[LogEvent]) -> None:
    clock = Clock()
    policy = make_policy(clock, log_close_rate=1.0)
    policy.start()
    flood(policy, clock, 50, 2.0)
    policy.stop()
    [summary] = of(events, "close_summary")
    assert summary["held"] == 50 - len(of(events, "close"))
    assert summary["period"] == pytest.approx(2.0, abs=0.05)  # since the first close held
    assert clock.getDelayedCalls() == []  # the 10 s call is gone with it
    clock.advance(10)
    assert len(of(events, "close_summary")) == 1


def test_log_connections_false_logs_no_closes_but_every_refusal(events: list[LogEvent]) -> None:
    clock = Clock()
    ctx = ctx_with(clock=clock, log_connections=False, deny=nets("192.0.2.0/24"))
    proto, _transport = connect(ctx, peer("198.51.100.1"))
    proto.dataReceived(b"hi")
    proto.connectionLost(Failure(ConnectionDone()))
    assert ctx.policy.connections == set()  # the bookkeeping still happens
    assert ctx.policy.accepted == 1
    connect(ctx, peer("192.0.2.9"))
    clock.advance(10)
    assert of(events, "close") == [] and of(events, "close_summary") == []
    [refusal] = of(events, "refuse")
    assert refusal["reason"] == "access denied"


def test_a_reload_changes_the_ceiling_but_not_what_was_spent(events: list[LogEvent]) -> None:
    clock = Clock()
    ctx = ctx_with(clock=clock, log_close_rate=10.0, log_close_burst=10)
    policy = ctx.policy
    flood(policy, clock, 10, 0.001)
    assert len(of(events, "close")) == 10
    policy.reconfigure(attrs.evolve(policy.settings, log_close_rate=1000.0, log_close_burst=1000))
    flood(policy, clock, 10, 0.001)  # the bucket was empty: a reload is not a way around it
    assert len(of(events, "close")) < 15
    clock.advance(1)
    flood(policy, clock, 500, 0.001)
    assert len(of(events, "close")) >= 500
    policy.reconfigure(attrs.evolve(policy.settings, log_close_rate=0.0))
    flood(policy, clock, 3000, 0.001)
    assert len(of(events, "close")) >= 3500


def test_a_real_protocol_close_still_carries_every_field(events: list[LogEvent]) -> None:
    clock = Clock()
    ctx = ctx_with(clock=clock)
    proto, _transport = connect(ctx, peer("::1", 4242))
    proto.dataReceived(b"hello")
    clock.advance(2.5)
    proto.connectionLost(Failure(ConnectionDone()))
    [close] = of(events, "close")
    assert formatEvent(close) == "echo: [::1]:4242 closed after 2.500s, 5 bytes in, 5 bytes out"
    assert (close["reason"], close["_why"]) == ("", "")


def test_the_ceiling_alone() -> None:
    clock = Clock()
    said: list[tuple[int, int, int, float]] = []
    ceiling = CloseCeiling(clock, 2.0, 0, lambda *a: said.append(a), period=5.0)
    assert [ceiling.admit() for _ in range(3)] == [True, True, False]
    ceiling.hold(10, 20)
    clock.advance(1)
    assert ceiling.admit() and ceiling.admit() and not ceiling.admit()
    ceiling.hold(1, 2)
    clock.advance(4)
    assert said == [(2, 11, 22, 5.0)]
    ceiling.flush()
    assert said == [(2, 11, 22, 5.0)]  # nothing held: nothing said


# -- config ------------------------------------------------------------------------------

BASE = '[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1"]\n'


def test_the_keys_load_in_defaults_and_per_service() -> None:
    config = loads(
        "[defaults]\nlog_close_rate = 5\nlog_close_burst = 50\n"
        + BASE
        + "log_connections = false\n[services.chat]\nlisten = ['tcp:0']\nlog_close_rate = 0\n"
    )
    echo, chat = config.services
    assert (echo.policy.log_connections, echo.policy.log_close_rate, echo.policy.log_close_burst) == (False, 5.0, 50)
    assert (chat.policy.log_connections, chat.policy.log_close_rate) == (True, 0.0)
    default = loads(BASE).services[0].policy
    assert (default.log_connections, default.log_close_rate, default.log_close_burst) == (True, 100.0, 0)


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("log_close_rate = -1", "must be at least 0"),
        ("log_close_rate = 1e7", "must be at most 1e+06"),
        ('log_close_rate = "fast"', "expected a number"),
        ("log_close_burst = -1", "must be at least 0"),
        ("log_close_burst = 1000001", "must be at most 1000000"),
        ("log_close_burst = 1.5", "expected an integer"),
        ('log_connections = "yes"', "expected true or false"),
    ],
)
def test_bad_values_are_one_line(line: str, error: str) -> None:
    with pytest.raises(ConfigError) as e:
        loads(BASE + line + "\n")
    assert error in str(e.value)
    assert "\n" not in str(e.value)
