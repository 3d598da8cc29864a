"""
The loop guard: how a datagram service notices that it is in a traffic loop.

A loop (CVE-1999-0103, CVE-2024-2169 "Loop DoS") is one datagram bouncing
between two services that each answer whatever arrives: started by a single
spoofed datagram, it runs until something drops it. Seen from one end, the
peer (one source address I{and port}) answers each of our replies at once.

A client that waits for each reply before it sends the next looks exactly
the same, one exchange at a time (a benchmark client that repeats its
payload is a perfect echo server, from here). So the guard does not try to
tell them apart by content: it gives every peer a budget of replies in a
row that came back within L{WINDOW}, and drops the datagram over it. A loop
has its datagram in flight and nothing else, so that one drop ends it for
good; the peer's next datagrams within the window (more loops started at
once) are dropped too. A client whose datagram is dropped waits for its
timeout (a pause longer than the window) and resends: its count starts
again.

The budget depends on the peer's port. Servers listen on ports they choose,
mostly below the ephemeral range; clients' sockets get their ports from the
kernel, in the ephemeral range (32768-60999 on Linux, 49152-65535 on the
BSDs, macOS and Windows). A peer whose port is below L{ephemeral_floor}
looks like a server, and gets the small budget: a loop with it ends after
that many replies. One at or above it looks like a client, and gets a large
budget that a client waiting for each reply (a benchmark, a ping flood) does
not use up in seconds, while a loop with a server on an ephemeral port (a
daemon listening on port 0) still ends after that many.

Plain object, given the time by its caller, so tests drive it by hand.
"""

from __future__ import annotations

import contextlib
from typing import Any

WINDOW = 0.25
"""Seconds: a datagram that comes sooner than this after our reply to the same peer counts."""

EPHEMERAL_FLOOR = 32768
"""The lowest port of Linux's default ephemeral range (IANA's starts higher, at 49152)."""


def ephemeral_floor(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> int:
    """
    The lowest port a client socket may get here: L{EPHEMERAL_FLOOR}, or the
    kernel's C{ip_local_port_range} floor when an admin set it lower (local
    clients may then have lower ports). Read once at start-up, never per datagram.
    """
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open(path, encoding="ascii") as f:
            low = int(f.read().split()[0])
        if 1 <= low < EPHEMERAL_FLOOR:
            return low
    return EPHEMERAL_FLOOR


class LoopGuard:
    """
    Replies in a row, per peer (address, port), that the peer answered
    within L{WINDOW}; a table of at most C{max_peers} of them.

    An entry is C{[time of our last reply, replies in a row]}. A peer whose
    last reply is older than the window has nothing to remember, so the
    table is cleared of such entries when it fills (at most once a window);
    if it is still full, the entry made first goes.
    """

    __slots__ = ("budget", "ephemeral_budget", "floor", "max_peers", "swept", "table", "trips")

    def __init__(self, budget: int, ephemeral_budget: int, max_peers: int, floor: int = EPHEMERAL_FLOOR) -> None:
        self.budget = max(1, budget)
        self.ephemeral_budget = max(1, ephemeral_budget)
        self.max_peers = max(1, max_peers)
        self.floor = floor
        self.table: dict[Any, list[float]] = {}
        self.swept = float("-inf")
        self.trips = 0
        """Datagrams dropped as a loop's."""

    def allow(self, peer: Any, port: int, now: float) -> bool:
        """
        May C{peer} (a hashable address and port; C{port} is its port) have
        a reply now? True records the reply; False is the loop's drop.
        """
        entry = self.table.get(peer)
        if entry is None:
            if len(self.table) >= self.max_peers:
                self._make_room(now)
            self.table[peer] = [now, 0.0]
            return True
        since = now - entry[0]
        if 0.0 <= since <= WINDOW:
            streak = entry[1] + 1.0
            if streak >= (self.ephemeral_budget if port >= self.floor else self.budget):
                # No reply, so the time of the last one stays: every datagram
                # from this peer within the window after it is dropped too.
                entry[1] = streak
                self.trips += 1
                return False
            entry[1] = streak
        else:
            entry[1] = 0.0
        entry[0] = now
        return True

    def reconfigure(self, budget: int, ephemeral_budget: int, max_peers: int) -> None:
        """New budgets and size; peers keep their counts."""
        self.budget = max(1, budget)
        self.ephemeral_budget = max(1, ephemeral_budget)
        self.max_peers = max(1, max_peers)
        while len(self.table) > self.max_peers:
            del self.table[next(iter(self.table))]

    def _make_room(self, now: float) -> None:
        table = self.table
        if now - self.swept >= WINDOW or now < self.swept:
            self.swept = now
            for key in [k for k, entry in table.items() if not 0.0 <= now - entry[0] <= WINDOW]:
                del table[key]
        while len(table) >= self.max_peers:
            del table[next(iter(table))]
