"""
Unit tests for the loop guard (socksvc.util.loopguard) and its place in the
datagram guard: two echo services wired back to back on a fake clock, as a
spoofed datagram would join them. The real daemons are in test_udp_loops.py.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from socksvc.core.datagram import LOOP, RATE, DatagramGuard
from socksvc.core.policy import Policy
from socksvc.core.service import ServiceContext
from socksvc.services.catalogue import loads
from socksvc.services.discard import UDPDiscard
from socksvc.services.echo import SERVICE_TYPE, UDPEcho
from socksvc.util.loopguard import EPHEMERAL_FLOOR, WINDOW, LoopGuard, ephemeral_floor

SERVER_A = ("127.0.0.1", 7007)
SERVER_B = ("127.0.0.1", 7008)
CLIENT = ("127.0.0.1", 40000)


def guard(body: str = "", clock: Clock | None = None, floor: int = EPHEMERAL_FLOOR) -> DatagramGuard:
    text = f'[services.echo]\nlisten = ["udp:0"]\n{body}\n'
    cfg = loads(text, "<test>").service("echo")
    clock = clock or Clock()
    return DatagramGuard("echo", cfg.settings, Policy("echo", cfg.policy, clock), clock, set(), floor=floor)


def echo_context(body: str = "", clock: Clock | None = None) -> ServiceContext[Any, Any]:
    """An echo service's context, its keys from TOML C{body} lines."""
    cfg = loads(f'[services.echo]\nlisten = ["udp:0"]\n{body}\n', "<test>").service("echo")
    clock = clock or Clock()
    return SERVICE_TYPE.context("echo", cfg.settings, Policy("echo", cfg.policy, clock), clock, set())


def decide(g: DatagramGuard, host: str, port: int) -> str | None:
    """What the protocol decides for a datagram whose reply is known: the checks, then the loop guard."""
    return g.check(host, port) or g.loop(host, port)


class Wire:
    """A UDP transport that queues what it sends, as (datagram, from, to)."""

    def __init__(self, me: tuple[str, int], queue: deque[tuple[bytes, Any, Any]]) -> None:
        self.me = me
        self.queue = queue

    def write(self, datagram: bytes, addr: Any = None) -> None:
        self.queue.append((datagram, self.me, addr))


def run_loop(body: str, a: tuple[str, int], b: tuple[str, int], spoofed: list[bytes], limit: int = 10**6) -> int:
    """
    Two echo services at C{a} and C{b}; each datagram of C{spoofed} arrives at
    B "from" A. Deliver until nothing is in flight (or C{limit}); the
    number of datagrams delivered.
    """
    clock = Clock()
    queue: deque[tuple[bytes, Any, Any]] = deque()
    protos = {}
    for me in (a, b):
        proto = UDPEcho(guard(body, clock))
        proto.makeConnection(Wire(me, queue))  # type: ignore[arg-type]
        protos[me] = proto
    for data in spoofed:
        queue.append((data, a, b))
    delivered = 0
    while queue and delivered < limit:
        data, source, dest = queue.popleft()
        protos[dest].datagramReceived(data, source)
        delivered += 1
        clock.advance(0.00003)  # a loopback round trip
    return delivered


@pytest.mark.parametrize(
    "body",
    [
        "",  # loopback rate-exempt: the case the rate limit never stopped
        "rate_per_source = 0",
        'rate_exempt = ["0.0.0.0/0", "::/0"]',
        "rate_exempt = []\nrate_per_source = 1000000\nburst = 1000000",
    ],
)
def test_a_loop_between_two_echo_services_ends_after_the_budget(body: str) -> None:
    delivered = run_loop(body, SERVER_A, SERVER_B, [b"ping"])
    # B replies 64 times, A replies 64 times, B drops the 65th: the spoofed one, 128, the drop.
    assert delivered == 1 + 2 * 64


def test_many_loops_at_once_all_end() -> None:
    """Ten spoofed datagrams, ten loops in flight (different payloads): one budget for them all."""
    delivered = run_loop("", SERVER_A, SERVER_B, [b"loop %d" % i for i in range(10)])
    assert delivered <= 2 * 64 + 2 * 10


def test_a_loop_between_ephemeral_ports_ends_after_the_ephemeral_budget() -> None:
    a, b = ("127.0.0.1", 40001), ("127.0.0.1", 40002)
    assert run_loop("loop_budget_ephemeral = 500", a, b, [b"ping"]) == 1 + 2 * 500
    assert run_loop("", a, b, [b"ping"]) == 1 + 2 * 65536  # the default: ended all the same


def test_a_server_port_is_below_the_floor_and_a_client_port_at_or_above() -> None:
    g = guard("loop_budget = 3\nloop_budget_ephemeral = 5", floor=20000)
    for port, budget in ((19999, 3), (20000, 5), (65535, 5), (1, 3)):
        replies = sum(decide(g, "192.0.2.1", port) is None for _ in range(50))
        assert replies == budget, port


def test_a_client_that_waits_its_timeout_after_a_drop_goes_on() -> None:
    clock = Clock()
    g = guard("loop_budget_ephemeral = 100", clock)
    answered = [decide(g, *CLIENT) is None for _ in range(101)]
    assert answered == [True] * 100 + [False]
    assert decide(g, *CLIENT) == LOOP  # still within the window after our last reply
    clock.advance(1.0)  # the client's timeout: a pause
    assert [decide(g, *CLIENT) for _ in range(100)] == [None] * 100


def test_a_peer_that_pauses_between_datagrams_is_never_counted() -> None:
    clock = Clock()
    g = guard("loop_budget = 2", clock)
    for _ in range(1000):
        assert decide(g, *SERVER_A) is None
        clock.advance(WINDOW + 0.01)


def test_peers_are_address_and_port() -> None:
    g = guard("loop_budget = 2")
    assert [decide(g, "127.0.0.1", 7007) for _ in range(3)] == [None, None, LOOP]
    assert decide(g, "127.0.0.1", 7009) is None  # another port of the same host
    assert decide(g, "127.0.0.2", 7007) is None  # the same port of another host


def test_the_rate_limit_comes_first_for_a_source_it_covers() -> None:
    g = guard("rate_exempt = []\nrate_per_source = 1\nburst = 5\nloop_budget = 2")
    assert [decide(g, *SERVER_A) for _ in range(4)] == [None, None, LOOP, LOOP]
    g = guard("rate_exempt = []\nrate_per_source = 1\nburst = 2\nloop_budget = 5")
    assert [decide(g, *SERVER_A) for _ in range(4)] == [None, None, RATE, RATE]


def test_the_loop_drop_is_counted_and_logged() -> None:
    g = guard("loop_budget = 1")
    proto = UDPEcho(g)
    proto.makeConnection(Wire(SERVER_A, deque()))  # type: ignore[arg-type]
    with capturedLogs() as events:
        for _ in range(3):
            proto.datagramReceived(b"x", SERVER_B)
    assert g.drops[LOOP] == 2
    assert g.counters()["udp_dropped_loop"] == 2
    assert g.loops.trips == 2
    [line] = [e for e in events if e.get("event") == "udp-drop"]  # once per 10 s
    assert line["reason"] == LOOP and line["peer"] == "127.0.0.1:7008"
    assert "loop_budget" in line["why"]


def test_a_reload_changes_the_budgets() -> None:
    clock = Clock()
    ctx = echo_context("loop_budget = 3", clock)
    g = ctx.state.guard
    assert [decide(g, *SERVER_A) for _ in range(4)] == [None, None, None, LOOP]
    ctx.reconfigure(echo_context("loop_budget = 10").settings)
    assert decide(g, *SERVER_A) is None  # the peer keeps its count (4 in a row), now under 10
    ctx.reconfigure(echo_context("loop_budget = 2").settings)
    assert decide(g, *SERVER_A) == LOOP


def test_the_table_stays_bounded_and_forgets_quiet_peers_first() -> None:
    loops = LoopGuard(budget=2, ephemeral_budget=2, max_peers=100)
    now = 0.0
    for i in range(5000):
        assert loops.allow(("10.0.0.1", i), 1000, now)
        assert len(loops.table) <= 100
    # A full table forgets the peers not answered for a window first: a peer
    # in a loop keeps its count when new peers come.
    loops = LoopGuard(budget=3, ephemeral_budget=3, max_peers=10)
    assert loops.allow("looping", 7, 0.0) and loops.allow("looping", 7, 0.0)
    for i in range(9):
        assert loops.allow(i, 7, 0.0)
    assert loops.allow("looping", 7, WINDOW)  # the third reply in a row: within the window of the second
    for i in range(9, 18):
        assert loops.allow(i, 7, WINDOW + 0.1)  # 0..8 are swept out, not the looping peer
    assert list(loops.table) == ["looping", *range(9, 18)]
    assert not loops.allow("looping", 7, WINDOW + 0.1)  # and it is still over its budget


def test_a_clock_that_goes_back_starts_the_count_again() -> None:
    loops = LoopGuard(budget=2, ephemeral_budget=2, max_peers=10)
    assert loops.allow("p", 7, 100.0) and loops.allow("p", 7, 100.0)
    assert not loops.allow("p", 7, 100.0)
    assert loops.allow("p", 7, 50.0)


@pytest.mark.parametrize(
    ("text", "floor"),
    [("32768\t60999\n", 32768), ("1024\t65535\n", 1024), ("40000 60999", 32768), ("", 32768), ("x y", 32768)],
)
def test_the_ephemeral_floor_follows_a_lowered_kernel_range(tmp_path: Path, text: str, floor: int) -> None:
    path = tmp_path / "ip_local_port_range"
    path.write_text(text)
    assert ephemeral_floor(str(path)) == floor
    assert ephemeral_floor(str(tmp_path / "missing")) == EPHEMERAL_FLOOR


def test_only_replies_count_so_discard_never_trips_it() -> None:
    """A peer that sends fast to a service that never answers (discard) is no loop: nothing comes back from us."""
    guard_ = DatagramGuard(
        "discard",
        loads('[services.discard]\nlisten = ["udp:0"]\nloop_budget = 2\n', "<t>").service("discard").settings,
        Policy("discard", loads('[services.discard]\nlisten = ["udp:0"]\n', "<t>").service("discard").policy, Clock()),
        Clock(),
        set(),
    )
    proto = UDPDiscard(guard_)
    proto.makeConnection(Wire(SERVER_A, deque()))  # type: ignore[arg-type]
    for _ in range(100):
        proto.datagramReceived(b"x", SERVER_B)
    assert guard_.drops[LOOP] == 0
    assert guard_.loops.table == {}
