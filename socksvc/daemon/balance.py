"""
Sharing a listening socket's connections evenly between worker processes.

Every worker listens on the same socket (one accept queue, docs/workers.md
says why), and the kernel wakes them all when a connection arrives; the
first to call accept() gets it. Left alone, that is not even: an idle worker
wakes first and takes connection after connection (measured here: all 16 of
16 echo clients on one of two workers, in one run of three). So before it
accepts, a worker compares the connections it holds for the service with
the fewest any other live worker serving it holds (the shared table,
L{socksvc.daemon.shared}): when it is L{MARGIN} or more ahead it leaves the
queue to the others for a moment: it stops reading the socket and looks
again on the next reactor turn, then every L{RECHECK} seconds. If nobody
else takes the connection for L{PATIENCE} seconds (the others are busy or
stuck), it takes it anyway, one at first, then twice as many each time it
still has to (so a hung worker costs its peers a few milliseconds, never
their throughput). A greeting, served whole inside the accept loop
(L{socksvc.daemon.quickport}), never holds a connection, so it is never
held back.

C{SOCKSVC_ACCEPT_BALANCE=0} in the environment turns this off (for
measurements only).
"""

from __future__ import annotations

import os
from typing import Any, Protocol

from twisted.internet import tcp

MARGIN = 2
"""Connections a worker may hold beyond the least loaded other worker before it leaves new ones to them."""
RECHECK = 0.002
"""Seconds between looks while holding back (after the first, on the next reactor turn)."""
PATIENCE = 0.05
"""Seconds of holding back after which a worker accepts anyway."""

ENABLED = os.environ.get("SOCKSVC_ACCEPT_BALANCE", "1") != "0"


class Load(Protocol):
    """What the balancer reads (L{socksvc.daemon.shared.WorkerCounts} provides it)."""

    def mine(self) -> int: ...

    def least_other(self) -> int | None: ...


def allowance(mine: int, least: int | None) -> int | None:
    """
    How many connections a worker holding C{mine} may accept now (None: no
    limit; 0 or less: none). While no worker holds any (short connections,
    such as greetings served inside the accept loop, never do) there is
    nothing to balance, and the accept loop takes all it can: capping it
    would cost an event loop turn every few connections.
    """
    if least is None or (mine == 0 and least == 0):
        return None
    return least + MARGIN - mine


class Holding:
    """
    When to hold back and when to accept anyway (see the module doc): for
    each readable event, L{step} says how many connections to accept (None:
    as many as the loop takes) or for how long to stop reading instead.
    """

    def __init__(self) -> None:
        self.since: float | None = None
        self.grace = 0

    def step(self, now: float, allowed: int | None) -> tuple[int | None, float]:
        """(connections to accept at most, 0.0) or (0, seconds to hold back)."""
        if allowed is None or allowed > 0:
            self.since = None
            self.grace = 0
            return allowed, 0.0
        if self.since is None:
            self.since = now
        held = now - self.since
        if held < PATIENCE:
            return 0, min(RECHECK, held * 2)
        self.grace = max(1, self.grace * 2)
        return self.grace, 0.0


class BalancedPort(tcp.Port):
    """
    The accept side of a listening port that shares its socket with other
    workers (a mixin in practice: L{balance} makes a subclass of the port's
    own class).
    """

    load: Load
    clock: Any
    holding: Holding
    _natural = 1
    _recheck: Any = None

    def doRead(self) -> None:
        load = self.load
        take, hold = self.holding.step(self.clock.seconds(), allowance(load.mine(), load.least_other()))
        if take == 0:
            self._hold(hold)
        else:
            self._accept(take)

    def _accept(self, at_most: int | None = None) -> None:
        """Twisted's accept loop (or QuickPort's), taking at most C{at_most} connections this time."""
        natural = self._natural
        limit = natural if at_most is None else min(natural, at_most)
        self.numberAccepts = limit
        super().doRead()
        # The loop grows numberAccepts when it took all it could, and shrinks it to what it took.
        if self.numberAccepts <= limit:
            self._natural = max(1, self.numberAccepts)
        elif limit == natural:
            self._natural = self.numberAccepts

    def _hold(self, delay: float) -> None:
        self.stopReading()
        if self._recheck is None or not self._recheck.active():
            self._recheck = self.clock.callLater(delay, self._look_again)

    def _look_again(self) -> None:
        self._recheck = None
        if self.connected and not self.disconnecting:
            self.startReading()

    def connectionLost(self, reason: Any) -> None:
        if self._recheck is not None and self._recheck.active():
            self._recheck.cancel()
        self._recheck = None
        super().connectionLost(reason)


_classes: dict[type, type] = {}


def balance(port: Any, load: Load, clock: Any) -> bool:
    """
    Make a listening stream port (TCP, TLS, UNIX; plain or a QuickPort)
    share its queue evenly, by C{load}. True when it did.
    """
    if not ENABLED or not isinstance(port, tcp.Port) or isinstance(port, BalancedPort):
        return False
    cls = type(port)
    balanced = _classes.get(cls)
    if balanced is None:
        balanced = _classes[cls] = type(f"Balanced{cls.__name__}", (BalancedPort, cls), {})
    port.__class__ = balanced
    assert isinstance(port, BalancedPort)
    port.load = load
    port.clock = clock
    port.holding = Holding()
    port._natural = max(1, port.numberAccepts)
    return True
