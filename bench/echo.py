"""
Echo: TCP round trips per second.

Each client sends a message, reads all of it back, and repeats, for a fixed
time. Cells: 1 KiB and 64 KiB messages with 1, 4 and 16 clients. Servers:
the socksvc daemon (default settings), the textbook Twisted echo protocol,
an asyncio echo server and the same on uvloop.
"""

from __future__ import annotations

from typing import Any

from bench.harness import Case, Plan, clients_name, measure, plan_timing, size_name

SIZES = (1024, 65536)
CLIENTS = (1, 4, 16)
QUICK = ((1024, 1), (65536, 4))


def cases(quick: bool) -> list[Case]:
    cells = QUICK if quick else [(size, clients) for size in SIZES for clients in CLIENTS]
    return [Case(f"{size_name(size)}, {clients_name(clients)}", "echo", clients, size) for size, clients in cells]


def run(quick: bool) -> list[dict[str, Any]]:
    rounds, duration = plan_timing(quick)
    return measure(Plan("echo", "echo", "round trip", cases(quick), rounds, duration))
