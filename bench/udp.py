"""
UDP echo: datagram round trips per second.

Each client sends a datagram, waits for it to come back, and repeats (a
datagram not back within a second counts as lost and is sent again).
Cells: 64-byte datagrams with 1 and 4 clients. socksvc runs its default
echo settings: its per-source rate limit exempts loopback (rate_exempt), so
the default config is the fair one here. Its loop guard counts each client
socket's back-to-back round trips (a client that sends again the moment its
datagram is back looks like a loop's other end): a run of the default 0.7 s
stays well below loop_budget_ephemeral (65,536), so nothing is dropped, but
with --duration above about 1.5 s a fast client would lose a datagram (and
wait its 1 s timeout) every 65,536 round trips.
"""

from __future__ import annotations

from typing import Any

from bench.harness import Case, Plan, clients_name, measure, plan_timing, size_name

SIZE = 64
CLIENTS = (1, 4)
QUICK = (4,)


def cases(quick: bool) -> list[Case]:
    return [Case(f"{size_name(SIZE)}, {clients_name(n)}", "udp", n, SIZE) for n in (QUICK if quick else CLIENTS)]


def run(quick: bool) -> list[dict[str, Any]]:
    rounds, duration = plan_timing(quick)
    return measure(Plan("udp", "udp", "round trip", cases(quick), rounds, duration))
