"""
The applying half of a chat node: stream entries become the chat state's
members, rooms and lines, in stream order.

L{Replica} is the bus's handler (L{socksvc.services.chat.bus.BusHandler}).
Every entry is checked (L{socksvc.services.chat.busentries.decode}); a bad
one is dropped and counted, and its cluster sequence still counts, so a gap
is lines this node really missed. What the node knows of the cluster's
members and nodes (snapshots, heartbeats, dead nodes, resets) is its base,
L{socksvc.services.chat.presence.Presence}.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.logger import Logger

from socksvc.services.chat.busentries import (
    ANNOUNCE,
    COLLISION,
    JOIN,
    NICK,
    PART,
    PRIV,
    QUIT,
    SAYS,
    TOPIC,
    BadEntry,
    Entry,
    decode,
    pairs,
)
from socksvc.services.chat.delivery import Member
from socksvc.services.chat.events import Private, PrivateSent, RoomNotice
from socksvc.services.chat.names import look_key
from socksvc.services.chat.presence import Presence
from socksvc.services.chat.sanitize import clip, name_key

log = Logger(namespace="socksvc")

NOTICE_MAX = 1000


class Replica(Presence):
    """The bus handler of one node: applies what the bus says to the chat state."""

    def start(self) -> None:
        """Connect (from the reactor's first turn; a rehearsal's state is shut down before that)."""
        self.timer = self.clock.callLater(0, self._start)

    def _start(self) -> None:
        self.timer = None
        self.link.start(self)
        self.tick()

    # -- the bus's calls ---------------------------------------------------------

    def bus_up(self) -> None:
        self.state.log_event("bus_up", "{service}: chat bus connected ({node})", node=self.cluster.node)
        if not self.cluster.ready:
            self.sync()
        else:
            self.cluster.flush_held()
            self.link.read()

    def bus_down(self, why: str) -> None:
        self.state.log_event("bus_down", "{service}: chat bus unreachable: {why}", why=why)

    # -- entries -----------------------------------------------------------------

    def bus_entries(self, entries: Sequence[tuple[str, Sequence[object]]]) -> None:
        with self.state.batch():
            for rid, flat in entries:
                try:
                    fields = pairs(flat)
                    self.sequence(fields.get("q", ""))
                    e = decode(rid, fields)
                except BadEntry as why:
                    self.cluster.entries_bad += 1
                    self.state.log_event(
                        "bus_bad", "{service}: dropped a bad chat bus entry {rid}: {why}", rid=rid, why=str(why)
                    )
                    continue
                if e.s <= self.seen.get(e.node, 0):
                    continue
                self.seen[e.node] = e.s
                self.apply(e)

    def sequence(self, text: str) -> None:
        """The next entry's cluster sequence: a gap is lines lost to this node; going back, Redis lost its data."""
        if not text.isdigit() or len(text) > 19:
            return
        q = int(text)
        if self.q and q <= self.q:
            self.reset()
        elif self.q and q > self.q + 1:
            lost = q - self.q - 1
            self.cluster.lines_lost += lost
            self.cluster.tell_all(
                f"You may have missed up to {lost} lines: the chat bus no longer held them when this server caught up"
            )
        self.q = q

    def member(self, e: Entry) -> Member | None:
        if e.node == self.cluster.node:
            return self.cluster.local.get(e.mid)
        return self.remote.get((e.node, e.mid))

    def apply(self, e: Entry) -> None:
        state, c = self.state, self.cluster
        m = self.member(e)
        local = e.node == c.node
        t = e.t
        if local and e.again:
            return  # announced again for other nodes: this one has it
        if t == NICK:
            self.nick(e, m, local)
        elif t == JOIN:
            if m is None and not local:
                m = self.registered(e.node, e.mid, e.since, e.nick, None)
            if m is not None:
                problem = self.enter(m, e.room, e.stay)
                if local:
                    if problem is not None:  # another node's join took the last room first
                        state.error(m, problem, "room", e.room)
                        self.reannounce([m])  # its presence record said it was there: not so
                    c.done(m)
        elif t == PART:
            room = state.rooms.get(name_key(e.room))
            if m is not None and room is not None:
                state.apply_part(m, room, e.why)
            if m is not None and local:
                c.done(m)
        elif t == QUIT:
            if m is None:
                return
            if not local:
                self.forget((e.node, e.mid), e.why)
                return
            c.local.pop(e.mid, None)
            if m.nick is not None:
                c.release_lease(m, m.nick)
            state.remove(m, e.why or None)
        elif t == SAYS:
            room = state.rooms.get(name_key(e.room))
            if room is not None:
                state.apply_say(room, e.nick, e.text, e.kind, m)
        elif t == PRIV:
            target = state.nicks.get(name_key(e.to))
            if local and m is not None:
                state.lines += 1
                if target is None or target.nick is None:
                    state.error(m, f"no such nick: {e.to}", "no_nick", e.to)
                else:
                    state.emit(m, PrivateSent(target.nick, e.text, e.kind))
            if target is not None and target.origin is None and target.nick is not None:
                state.emit(target, Private(e.nick, target.nick, e.text, e.kind))
        elif t == TOPIC:
            room = state.rooms.get(name_key(e.room))
            if room is not None:
                state.apply_topic(room, e.nick, e.text, e.since / 1000 or self.clock.seconds())
        elif t == ANNOUNCE:
            room = state.rooms.get(name_key(e.room))
            if room is not None:
                state.to_room(room, RoomNotice(room.name, clip(e.text, NOTICE_MAX)))

    def nick(self, e: Entry, m: Member | None, local: bool) -> None:
        state, c = self.state, self.cluster
        if not local:
            if self.registered(e.node, e.mid, e.since, e.nick, m) is None and m is not None and m.nick is None:
                self.forget((e.node, e.mid), "")
            return
        if m is None:
            return
        holder, twin = state.nicks.get(name_key(e.nick)), state.looks.get(look_key(e.nick))
        look = look_key(e.nick)
        if (holder is not None and holder is not m) or (twin is not None and twin is not m):
            c.release_lease(m, e.nick)
            if e.why == COLLISION:
                c.save(m, again=True)
                return
            shown = (holder or twin).nick if (holder or twin) is not None else e.nick
            state.error(
                m,
                f"nickname refused: {e.nick} is taken"
                if holder is not None
                else f'nickname refused: "{e.nick}" looks like "{shown}", which is in use',
                "nick_taken",
                e.nick,
            )
            if m.nick is None:
                c.local.pop(m.mid, None)
            c.done(m, False)
            return
        old = m.nick
        state.apply_nick(m, e.nick, "nickname collision" if e.why == COLLISION else "")
        if e.why == COLLISION:  # nodes that refused its old name never saw it join: say where it is
            self.reannounce([m])
        if old is not None and look_key(old) != look:
            c.release_lease(m, old)
        c.done(m, True)
