"""
Greeting: connections per second.

Each client connects, reads until the server closes, and repeats (closing
with a reset, so no TIME_WAIT piles up on a shared machine). Cells: 1, 4
and 16 clients. Every server sends socksvc's default message, "Thank you for
connecting" and CRLF, then closes.
"""

from __future__ import annotations

from typing import Any

from bench.harness import Case, Plan, clients_name, measure, plan_timing

CLIENTS = (1, 4, 16)
QUICK = (4,)


def cases(quick: bool) -> list[Case]:
    return [Case(clients_name(n), "greet", n) for n in (QUICK if quick else CLIENTS)]


def run(quick: bool) -> list[dict[str, Any]]:
    rounds, duration = plan_timing(quick)
    return measure(Plan("greeting", "greeting", "connection", cases(quick), rounds, duration))
