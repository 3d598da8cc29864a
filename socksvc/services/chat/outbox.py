"""
A chat node's way out to the bus: entries in the order they were made, what
one reactor turn made in one step, sent again after a lost connection (the
origin's own sequence numbers let every node apply each once), and held in a
bounded queue (C{bus_queue} lines) while the bus is unreachable, the sender
told; beyond it, told the line was not sent. L{socksvc.services.chat.cluster.Cluster}
builds on it.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from socksvc.services.chat.bus import BusLink
from socksvc.services.chat.busentries import ANNOUNCE, PRIV, SAYS, TOPIC, encode
from socksvc.services.chat.delivery import Member

UNREACHABLE = "the chat bus is unreachable"
BATCH = 256
"""Entries published in one step at most."""
LINE_TYPES = frozenset({SAYS, PRIV, TOPIC, ANNOUNCE})


class Pending:
    """An entry on its way to the bus."""

    __slots__ = ("fields", "hash_key", "hash_op", "hash_value", "line", "s")

    def __init__(self, s: int, fields: list[str], hash_op: str, hash_key: str, hash_value: str, line: bool) -> None:
        self.s = s
        self.fields = fields
        self.hash_op = hash_op
        self.hash_key = hash_key
        self.hash_value = hash_value
        self.line = line


class Outbox:
    """Publishing, in order, with the outage queue."""

    def __init__(self, state: Any, link: BusLink, node: str) -> None:
        self.state = state
        self.link = link
        self.node = node
        self.clock = state.clock
        self.s = 0
        self.unacked: dict[int, Pending] = {}
        self.outbox: list[Pending] = []
        """Entries of this reactor turn, published together at its end."""
        self.flushing: IDelayedCall | None = None
        self.held: deque[Pending] = deque()
        self.held_lines = 0
        self.ready = False
        """The snapshot is applied: entries can be published."""
        self.told: set[Member] = set()
        """Members told this outage that their lines are held."""
        self.lines_held = 0
        self.lines_not_sent = 0

    @property
    def settings(self) -> Any:
        return self.state.settings

    @property
    def up(self) -> bool:
        return self.ready and self.link.up

    def publish(
        self, t: str, m: Member | None, hash_op: str = "", hash_key: str = "", hash_value: str = "", **fields: str
    ) -> Pending:
        self.s += 1
        mid = m.mid if m is not None else 0
        p = Pending(self.s, encode(t, self.node, mid, self.s, **fields), hash_op, hash_key, hash_value, t in LINE_TYPES)
        if self.up:
            self.outbox.append(p)
            if self.flushing is None:  # what this reactor turn publishes goes in one step (one read brings it back)
                self.flushing = self.clock.callLater(0, self.flush_out)
        else:
            self.held.append(p)
            if p.line:
                self.held_lines += 1
                self.lines_held += 1
        return p

    def flush_out(self) -> None:
        self.flushing = None
        out, self.outbox = self.outbox, []
        if not self.up:  # gone meanwhile: sent again, before what is held, when the bus is back
            self.unacked.update((p.s, p) for p in out)
            return
        self.send(out)

    def send(self, items: list[Pending]) -> None:
        for start in range(0, len(items), BATCH):
            batch = items[start : start + BATCH]
            for p in batch:
                self.unacked[p.s] = p
            d = self.link.publish([(p.fields, p.hash_op, p.hash_key, p.hash_value) for p in batch])
            sent = [p.s for p in batch]
            d.addCallbacks(self._acked, self._failed, callbackArgs=(sent,), errbackArgs=(sent,))

    def _acked(self, rids: list[str], sent: list[int]) -> None:
        for s in sent:
            self.unacked.pop(s, None)

    def _failed(self, failure: Failure, sent: list[int]) -> None:
        if not failure.check(ConnectionError):  # refused by Redis itself (the link's own failures are ConnectionErrors)
            for s in sent:  # resending would not help
                self.unacked.pop(s, None)
            self.state.log_event(
                "bus_error", "{service}: the chat bus refused entries: {why}", why=failure.getErrorMessage()
            )
        # a lost connection: they stay unacked and are sent again when the bus is back (duplicates are dropped by s)

    def flush_held(self) -> None:
        """The bus is back: send again what may not have arrived, then what waited."""
        again = sorted(self.unacked.values(), key=lambda p: p.s)
        self.unacked.clear()
        if self.flushing is not None and self.flushing.active():
            self.flushing.cancel()
        self.flushing = None
        waiting, self.outbox = self.outbox, []
        held = list(self.held)
        self.held.clear()
        self.held_lines = 0
        self.send(again + waiting + held)
        if self.told:
            told, self.told = self.told, set()
            for m in told:
                if not m.gone:
                    self.state.notice(m, "the chat bus is back: held lines are being delivered")

    def can_hold(self, m: Member) -> bool:
        """A line from C{m} while the bus is down: may it wait? (telling C{m} either way)"""
        if self.up:
            return True
        limit = self.settings.bus_queue
        if self.held_lines >= limit:
            self.lines_not_sent += 1
            self.state.error(m, f"not sent: {UNREACHABLE} and {self.held_lines} lines are waiting", "bus")
            return False
        if m not in self.told:
            self.told.add(m)
            self.state.notice(
                m, f"{UNREACHABLE}: your lines are held (at most {limit} in all) and sent when it is back"
            )
        return True
