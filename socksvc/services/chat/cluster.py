"""
A chat node of a cluster: what this process's members do becomes bus
entries, and entries (its own included) become what its members see.

The chat state (L{socksvc.services.chat.state.ChatState}) calls this in
place of acting at once when a bus is configured: C{nick}, C{join},
C{part}, C{say}, C{priv}, C{topic}, C{announce}, C{depart}. Each becomes an
entry in the cluster's stream; the node applies entries as it reads them
(L{socksvc.services.chat.replica}), so every member on every node sees a
room's lines in the stream's order, its own node's lines included.

A member that asked for a nickname or a room waits (its further lines are
held, L{hold}) until its entry comes back, so the lines it sends next go
where it now is. While the bus is unreachable lines wait in a bounded queue
(C{bus_queue}) and are published in order once it is back; beyond that, or
for a nickname or a room, the member is told at once that it was not done.
Nicknames are leased cluster-wide (L{socksvc.services.chat.bus.BusLink.claim});
docs/chat-bus.md says what each failure costs.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from socksvc.services.chat.bus import REMOTE, REMOTE_VIEW, BusLink
from socksvc.services.chat.busentries import ANNOUNCE, COLLISION, JOIN, NICK, PART, PRIV, QUIT, SAYS, TOPIC
from socksvc.services.chat.delivery import Member, Room
from socksvc.services.chat.events import Notice
from socksvc.services.chat.names import look_key
from socksvc.services.chat.outbox import UNREACHABLE, Outbox
from socksvc.services.chat.sanitize import clip, visible

log = Logger(namespace="socksvc")


def departed(m: Member) -> bool:
    """Gone, or gone from this node and waiting for its quit to come back."""
    return m.gone or m.conn is REMOTE


def lease_value(node: str, m: Member, nick: str) -> str:
    """What a nickname lease holds: who holds it, since when, and the name as shown."""
    return f"{node}|{m.mid}|{m.since}|{nick}"


def lease_parts(value: str) -> tuple[str, int, int, str]:
    """(node, member id, since, nick) of a lease value; a value no node writes parses as ("", 0, 0, value)."""
    node, _, rest = value.partition("|")
    mid, _, rest = rest.partition("|")
    since, _, nick = rest.partition("|")
    if not (mid.isdigit() and since.isdigit()):
        return "", 0, 0, value
    return node, int(mid), int(since), nick


SAVE_TRIES = 1000
"""Suffixes a collision rename tries (NICK-2 ... NICK-999) before one of its node's own."""


class Cluster(Outbox):
    """This node: waiting members, leases, what members do as entries. Applying is in L{Replica}."""

    def __init__(self, state: Any, link: BusLink, node: str) -> None:
        super().__init__(state, link, node)
        self.next_mid = 1
        self.local: dict[int, Member] = {}
        """This node's members the cluster knows (registered), by member id."""
        self.waiting: dict[Member, int] = {}
        """Members whose nickname or room changes are on their way (how many)."""
        self.backlog: dict[Member, deque[Callable[[], None]]] = {}
        """What those members sent meanwhile, in order."""
        self.waited: dict[Member, float] = {}
        """Since when each waiting member has waited."""
        self.save_from: dict[Member, int] = {}
        """The next suffix a collision rename tries (a name its lease refused is not tried again)."""
        self.then: dict[Member, Callable[[bool], None]] = {}
        self.leases: dict[str, str] = {}
        """Look key -> lease value, for this node's members' nicknames."""
        self.entries_bad = 0
        self.lines_lost = 0
        self.collisions = 0
        self.replica: Any = None
        """The applying half (L{socksvc.services.chat.replica.Replica}), set by it."""

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    # -- waiting members ---------------------------------------------------------

    def hold(self, m: Member, then: Callable[[], None]) -> bool:
        """Is C{m} waiting for an entry of its own? Then keep C{then} (its next line) for later."""
        if m not in self.waiting:
            return False
        queue = self.backlog.setdefault(m, deque())
        if len(queue) < self.settings.flood_burst * 4 + 16:
            queue.append(then)
        else:  # a client that sends this much before its own join comes back: dropped as flooding
            self.state.lines_flooded += 1
        return True

    def wait(self, m: Member) -> None:
        self.waiting[m] = self.waiting.get(m, 0) + 1
        self.waited.setdefault(m, self.clock.seconds())

    def unstick(self, limit: float) -> None:
        """
        Members waiting longer than C{limit} for an entry of theirs (Redis
        lost it with its data): told so, and their lines are let through.
        """
        now = self.clock.seconds()
        for m, since in list(self.waited.items()):
            if now - since > limit and m in self.waiting:
                self.state.notice(m, "the chat bus did not confirm your last change: it may not have taken effect")
                self.waiting[m] = 1
                self.done(m, False)

    def done(self, m: Member, taken: bool | None = None) -> None:
        """An entry of C{m}'s came back (or failed): once none is on its way, run what it sent meanwhile."""
        if taken is not None:
            then = self.then.pop(m, None)
            if then is not None:
                then(taken)
        left = self.waiting.get(m, 1) - 1
        if left > 0:
            self.waiting[m] = left
            return
        self.waiting.pop(m, None)
        self.waited.pop(m, None)
        self.save_from.pop(m, None)
        queue = self.backlog.pop(m, None)
        while queue and m not in self.waiting and not departed(m):
            queue.popleft()()
        if queue and m in self.waiting:  # waiting again (another /nick or /join): the rest waits behind it
            self.backlog.setdefault(m, deque()).extendleft(reversed(queue))

    def refuse(self, m: Member, what: str, code: str, arg: str) -> None:
        self.state.error(m, f"{what}: {UNREACHABLE}; try again shortly", code, arg)

    def record(self, m: Member, nick: str, rooms: list[str]) -> str:
        return json.dumps({"nick": nick, "rooms": rooms, "since": m.since}, ensure_ascii=False)

    # -- what the state asks -----------------------------------------------------

    def nick(self, m: Member, form: str, then: Callable[[bool], None] | None) -> None:
        if not self.up:
            self.refuse(m, "nickname refused", "nick_bad", form)
            if then is not None:
                then(False)
            return
        if m.mid == 0:
            m.mid = self.next_mid
            self.next_mid += 1
            m.since = self.now_ms()
        self.wait(m)
        if then is not None:
            self.then[m] = then
        value = lease_value(self.node, m, form)
        look = look_key(form)
        d = self.link.claim(look, value)
        d.addCallbacks(self._claimed, self._claim_failed, callbackArgs=(m, form, look, value), errbackArgs=(m, form))

    def _claimed(self, holder: str | None, m: Member, form: str, look: str, value: str, why: str = "") -> None:
        if departed(m):
            if holder is None:
                self.link.release(look, value)
            self.done(m)
            return
        if holder is not None:
            taken = visible(clip(lease_parts(holder)[3], 64))  # what Redis holds is not trusted either
            text = f"{form} is taken" if taken == form else f'"{form}" looks like "{taken}", which is in use'
            if why:
                self.save(m, again=True)  # a collision rename: try the next name
                return
            self.state.error(m, f"nickname refused: {text}", "nick_taken", form)
            self.done(m, False)
            return
        self.local[m.mid] = m
        self.leases[look] = value
        rooms = [r.name for r in m.rooms()]
        self.publish(
            NICK,
            m,
            "set",
            str(m.mid),
            self.record(m, form, rooms),
            nick=form,
            old=m.nick or "",
            since=str(m.since),
            why=why,
        )

    def _claim_failed(self, failure: Failure, m: Member, form: str) -> None:
        self.refuse(m, "nickname refused", "nick_bad", form)
        self.done(m, False)

    def save(self, m: Member, again: bool = False) -> None:
        """Rename C{m}, the newer holder of a name another member holds: NICK-2, NICK-3..."""
        assert m.nick is not None
        base = m.nick.rsplit("-", 1)[0] if m.nick.rsplit("-", 1)[-1].isdigit() else m.nick
        start = self.save_from.get(m, 2) if again else 2  # a name refused by its lease is not tried twice
        for n in range(start, SAVE_TRIES):
            candidate = f"{base[: self.settings.nick_max - len(str(n)) - 1]}-{n}"
            if candidate != m.nick and self.state.check_nick(m, candidate)[1] is None:
                self.save_from[m] = n + 1
                break
        else:
            if again and self.save_from.get(m) == SAVE_TRIES + 1:  # even the last resort was taken: keep the name
                self.save_from.pop(m, None)
                self.done(m)
                return
            candidate = f"{base[: self.settings.nick_max - 6]}-{self.node_tag()}"
            self.save_from[m] = SAVE_TRIES + 1
        if not again:
            self.collisions += 1
            self.wait(m)
        value = lease_value(self.node, m, candidate)
        look = look_key(candidate)
        d = self.link.claim(look, value)
        d.addCallbacks(
            self._claimed,
            self._claim_failed,
            callbackArgs=(m, candidate, look, value, COLLISION),
            errbackArgs=(m, candidate),
        )

    def lease_holder(self, look: str) -> Member | None:
        """The member of this node whose nickname's lease this node holds on C{look}."""
        value = self.leases.get(look)
        return self.local.get(lease_parts(value)[1]) if value is not None else None

    def release_lease(self, m: Member, nick: str) -> None:
        """C{m} no longer goes by C{nick}: give up the lease, if it is C{m}'s."""
        look = look_key(nick)
        value = self.leases.get(look)
        if value is not None and lease_parts(value)[1] == m.mid:
            del self.leases[look]
            self.link.release(look, value)

    def node_tag(self) -> str:
        """A short suffix of this node's own (the last resort of L{save})."""
        return format(sum(self.node.encode()) % 100000, "05d")

    def join(self, m: Member, room: Room, stay: bool) -> None:
        if departed(m):
            return
        if not self.up:
            self.refuse(m, "not joined", "room", room.name)
            return
        assert m.nick is not None
        rooms = [r.name for r in m.rooms()] + [room.name] if stay else [room.name]
        self.wait(m)
        self.publish(
            JOIN,
            m,
            "set",
            str(m.mid),
            self.record(m, m.nick, rooms),
            nick=m.nick,
            room=room.name,
            stay="1" if stay else "",
        )

    def part(self, m: Member, room: Room, reason: str) -> None:
        if departed(m) or m.nick is None:
            return
        rooms = [r.name for r in m.rooms() if r is not room]
        self.wait(m)
        self.publish(PART, m, "set", str(m.mid), self.record(m, m.nick, rooms), nick=m.nick, room=room.name, why=reason)

    def say(self, m: Member, room: Room, text: str, kind: str) -> None:
        if self.can_hold(m):
            self.publish(SAYS, m, nick=m.nick or "", room=room.name, text=text, kind=kind)

    def priv(self, m: Member, to: str, text: str, kind: str) -> None:
        if self.can_hold(m):
            self.publish(PRIV, m, nick=m.nick or "", to=to, text=text, kind=kind)

    def topic(self, m: Member, room: Room, text: str) -> None:
        if self.can_hold(m):
            at = self.now_ms()
            record = json.dumps({"text": text, "by": m.nick or "", "at": at}, ensure_ascii=False)
            self.publish(
                TOPIC, m, "topic", room.key, record, nick=m.nick or "", room=room.name, text=text, since=str(at)
            )

    def announce(self, room: str, text: str) -> None:
        self.publish(ANNOUNCE, None, room=room, text=text)

    def depart(self, m: Member, reason: str) -> None:
        """C{m}'s connection is gone: no more output; it leaves its rooms when its quit comes back."""
        self.told.discard(m)
        self.then.pop(m, None)
        self.waiting.pop(m, None)
        self.waited.pop(m, None)
        self.save_from.pop(m, None)
        self.backlog.pop(m, None)
        if m.mid not in self.local:  # the cluster never heard of it (no nickname yet)
            self.state.remove(m, reason or None)
            return
        m.conn = REMOTE
        m.view = REMOTE_VIEW
        m.queue = None
        m.queued = 0
        m.held = None
        m.paused = m.stalled = False
        if m.stall_timer is not None and m.stall_timer.active():
            m.stall_timer.cancel()
        m.stall_timer = None
        self.publish(QUIT, m, "del", str(m.mid), "", nick=m.nick or "", why=reason)

    def counters(self) -> dict[str, int]:
        """The bus's figures for the chat's status (metrics: docs/metrics.md)."""
        nodes = max(self.replica.nodes, len(self.replica.by_node) + 1) if self.replica is not None else 1
        return {
            "chat_lines_dropped_bus_full": self.lines_not_sent,
            "chat_bus_up": int(self.up),
            "chat_bus_nodes": nodes,
            "chat_bus_lines_held": self.lines_held,
            "chat_bus_lines_lost": self.lines_lost,
            "chat_bus_entries_dropped": self.entries_bad,
            "chat_bus_collisions": self.collisions,
            "chat_bus_queued": len(self.held),
        }

    # -- life --------------------------------------------------------------------

    def tell_all(self, text: str) -> None:
        """A server notice to every local member with a nickname."""
        with self.state.batch():
            for m in self.local.values():
                if m.conn is not REMOTE:
                    self.state.emit(m, Notice(text))

    def stop(self) -> Deferred[None]:
        """The service stops: our members quit everywhere, our presence goes, the link closes."""
        if self.replica is not None:
            self.replica.stop()
        if self.up:
            for m in list(self.local.values()):
                if m.conn is not REMOTE:
                    self.publish(QUIT, m, "del", str(m.mid), "", nick=m.nick or "", why="server shutting down")
            if self.flushing is not None and self.flushing.active():
                self.flushing.cancel()
            self.flush_out()  # now, not next turn: the link closes (after sending what it was given) below
            self.link.leave()
        self.ready = False
        return self.link.stop()
