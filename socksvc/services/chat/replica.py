"""
The applying half of a chat node: stream entries, snapshots and
heartbeats become the chat state's members, rooms and lines.

L{Replica} is the bus's handler (L{socksvc.services.chat.bus.BusHandler}).
On start (and after Redis lost its data) it reads one snapshot (every live
node's members and the topics, with the stream position they are at), seeds
room histories from the stream's tail, then applies entries in stream
order. Remote members are L{Member} objects on L{REMOTE}, so everything that
reads rooms and rosters sees the whole cluster. Every entry is checked
(L{socksvc.services.chat.busentries.decode}); a bad one is dropped and
counted. A node whose heartbeat stops is gone: its members quit, here and
on every other node, each node telling its own members.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from socksvc.services.chat.bus import REMOTE, REMOTE_VIEW, Beat, Snapshot
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
from socksvc.services.chat.cluster import Cluster
from socksvc.services.chat.delivery import Member, Room
from socksvc.services.chat.events import Private, PrivateSent, RoomNotice, Said
from socksvc.services.chat.names import look_key
from socksvc.services.chat.sanitize import clip, name_key

log = Logger(namespace="socksvc")

HISTORY_SCAN = 2000
"""Stream entries read back on start to fill room histories."""
RETRY = 1.0
NOTICE_MAX = 1000


def id_key(rid: str) -> tuple[int, int]:
    ms, _, seq = rid.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return 0, 0


class Replica:
    """The bus handler of one node: applies what the bus says to the chat state."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        cluster.replica = self
        self.state: Any = cluster.state
        self.link = cluster.link
        self.clock = cluster.clock
        self.remote: dict[tuple[str, int], Member] = {}
        self.by_node: dict[str, set[int]] = {}
        self.seen: dict[str, int] = {}
        """The last node sequence applied from each node (a resent entry is applied once)."""
        self.q = 0
        self.again: dict[Member, int] = {}
        """Members to announce again at the next heartbeats (their name was taken back from a newer holder)."""
        self.timer: IDelayedCall | None = None
        self.stopped = False
        self.syncing = False

    # -- life --------------------------------------------------------------------

    def start(self) -> None:
        """Connect (from the reactor's first turn; a rehearsal's state is shut down before that)."""
        self.timer = self.clock.callLater(0, self._start)

    def _start(self) -> None:
        self.timer = None
        self.link.start(self)
        self.tick()

    def stop(self) -> None:
        self.stopped = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def tick(self) -> None:
        """The heartbeat: every fifth of C{node_timeout}."""
        if self.stopped:
            return
        self.timer = self.clock.callLater(self.state.settings.node_timeout / 5, self.tick)
        if self.cluster.up:
            d = self.link.beat(dict(self.cluster.leases), list(self.by_node))
            d.addCallbacks(self.beaten, self._ignore)

    def beat_now(self) -> None:
        """The next heartbeat at once (the timer starts over from it)."""
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.tick()

    def _ignore(self, failure: Failure) -> None:
        pass  # a failed heartbeat: the link reports the outage itself

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

    def sync(self) -> None:
        if self.syncing or self.stopped:
            return
        self.syncing = True
        d = self.link.snapshot()
        d.addCallback(self._snapshot)
        d.addErrback(self._sync_failed)

    def _sync_failed(self, failure: Failure) -> None:
        self.syncing = False
        self.state.log_event("bus_sync", "{service}: chat bus snapshot failed: {why}", why=failure.getErrorMessage())
        if not self.stopped and self.link.up:
            self.clock.callLater(RETRY, self.sync)

    def _snapshot(self, snap: Snapshot) -> Any:
        d = self.link.tail(min(HISTORY_SCAN, self.state.settings.history * 50))
        d.addCallback(self._synced, snap)
        return d

    def _synced(self, tail: list[tuple[str, Sequence[object]]], snap: Snapshot) -> None:
        self.syncing = False
        state = self.state
        with state.batch():
            self.reconcile(snap)
            upto = id_key(snap.last_id)
            for rid, flat in tail:
                if id_key(rid) > upto:
                    break
                try:
                    e = decode(rid, pairs(flat))
                except BadEntry:
                    continue
                room = state.rooms.get(name_key(e.room)) if e.t == SAYS else None
                if (
                    room is not None
                    and room.history.maxlen
                    and not any(
                        w
                        for w, s in room.history
                        if s.text == e.text and s.nick == e.nick and w == id_key(rid)[0] / 1000
                    )
                ):
                    room.history.append((id_key(rid)[0] / 1000, Said(room.name, e.nick, e.text, e.kind)))
        self.q = snap.seq
        self.link.last_id = snap.last_id
        first = not self.cluster.ready
        self.cluster.ready = True
        if first:
            # Beat now, before any entry of this node's: until its key exists other nodes
            # take its members for a dead node's ("has quit (node timed out)").
            self.beat_now()
        self.link.read()
        if not first or self.cluster.local:
            self.reannounce()
        self.cluster.flush_held()

    def reconcile(self, snap: Snapshot) -> None:
        """Make the remote members those of C{snap}: who is gone quits, who is new joins."""
        state = self.state
        wanted: dict[tuple[str, int], dict[str, Any]] = {}
        for node, members in snap.members.items():
            if node == self.cluster.node:
                continue
            for field, text in members.items():
                try:
                    record = json.loads(text)
                    if isinstance(record, dict) and field.isdigit():
                        wanted[(node, int(field))] = record
                except (ValueError, TypeError):
                    self.cluster.entries_bad += 1
        for gone in [k for k in self.remote if k not in wanted]:
            self.forget(gone, "left the cluster")
        for (node, mid), record in wanted.items():
            nick, rooms, since = record.get("nick"), record.get("rooms"), record.get("since", 0)
            if not isinstance(nick, str) or not isinstance(rooms, list) or not isinstance(since, int):
                self.cluster.entries_bad += 1
                continue
            m = self.remote.get((node, mid))
            try:
                if m is None or m.nick != nick:
                    m = self.registered(node, mid, since, nick, m)
                if m is None:
                    continue
                for name in rooms[:100]:
                    if isinstance(name, str):
                        self.enter(m, name, stay=True)
            except BadEntry:
                self.cluster.entries_bad += 1
        for room_key, text in snap.topics.items():
            room = state.rooms.get(room_key)
            try:
                record = json.loads(text)
                if room is not None and isinstance(record.get("text"), str):
                    room.topic = clip(record["text"], 200)
                    room.topic_by = clip(str(record.get("by", "")), 64)
                    room.topic_at = float(record.get("at", 0)) / 1000
            except (ValueError, TypeError, AttributeError):
                self.cluster.entries_bad += 1

    def reannounce(self, members: list[Member] | None = None) -> None:
        """Tell the cluster again who is here (Redis lost it, or others took this node for dead)."""
        c = self.cluster
        for m in list(c.local.values()) if members is None else members:
            if m.conn is REMOTE or m.nick is None:
                continue
            rooms = [r.name for r in m.rooms()]
            c.publish(NICK, m, "set", str(m.mid), c.record(m, m.nick, rooms), nick=m.nick, since=str(m.since))
            for name in rooms:
                c.publish(JOIN, m, "set", str(m.mid), c.record(m, m.nick, rooms), nick=m.nick, room=name, stay="1")

    def beaten(self, beat: Beat) -> None:
        if self.again:
            # by now the newer holder has been renamed: the nodes that refused ours take it now
            self.reannounce(list(self.again))
            self.again = {m: n - 1 for m, n in self.again.items() if n > 1}
        for look in beat.retaken:
            value = self.cluster.leases.get(look)
            m = self.cluster.local.get(int(value.split("|")[1])) if value is not None else None
            if m is not None:
                self.again[m] = 2
        for node in beat.dead:
            self.node_gone(node)
        if beat.seq < self.q:
            self.reset(rewind=True)
        elif not beat.was_alive:
            self.reannounce()
        for look in beat.clashes:
            value = self.cluster.leases.pop(look, None)
            if value is None:
                continue
            m = self.cluster.local.get(int(value.split("|")[1]))
            if m is not None and m.conn is not REMOTE and m.nick is not None and m not in self.cluster.waiting:
                self.cluster.save(m)

    def reset(self, rewind: bool = False) -> None:
        """
        Redis lost its data (its sequence went back): start over from what it
        has now. C{rewind}: read its stream from the start (its ids may be
        below the last one read here, when its clock is behind ours).
        """
        self.state.log_event("bus_reset", "{service}: the chat bus lost its data; resynchronising")
        self.q = 0
        if rewind:
            self.link.last_id = "0-0"
        self.cluster.tell_all("the chat bus restarted and lost its data: some lines may not have been delivered")
        self.reannounce()

    def node_gone(self, node: str) -> None:
        with self.state.batch():
            for mid in list(self.by_node.get(node, ())):
                self.forget((node, mid), "node timed out")
        self.by_node.pop(node, None)
        self.seen.pop(node, None)
        self.link.forget(node)

    def forget(self, key: tuple[str, int], reason: str) -> None:
        m = self.remote.pop(key, None)
        mids = self.by_node.get(key[0])
        if mids is not None:
            mids.discard(key[1])
            if not mids:
                del self.by_node[key[0]]
        if m is not None:
            self.state.remove(m, reason)

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

    def registered(self, node: str, mid: int, since: int, nick: str, m: Member | None) -> Member | None:
        """A remote member called C{nick} (made if new); None if another member holds the name here."""
        state = self.state
        holder, twin = state.nicks.get(name_key(nick)), state.looks.get(look_key(nick))
        if (holder is not None and holder is not m) or (twin is not None and twin is not m):
            return None
        if m is None:
            m = Member(state, REMOTE, REMOTE_VIEW)
            m.origin, m.mid, m.since = node, mid, since
            m.held = None
            self.remote[(node, mid)] = m
            self.by_node.setdefault(node, set()).add(mid)
        state.apply_nick(m, nick)
        return m

    def enter(self, m: Member, name: str, stay: bool) -> Room:
        state = self.state
        room: Room | None = state.rooms.get(name_key(name))
        if room is None:
            room = Room(name, state.settings.history, created=self.clock.seconds())
            state.add_room(room)
        if not m.in_room(room):
            state.apply_join(m, room, stay)
        return room

    def apply(self, e: Entry) -> None:
        state, c = self.state, self.cluster
        m = self.member(e)
        local = e.node == c.node
        t = e.t
        if t == NICK:
            self.nick(e, m, local)
        elif t == JOIN:
            if m is None and not local:
                m = self.registered(e.node, e.mid, e.since, e.nick, None)
            if m is not None:
                self.enter(m, e.room, e.stay)
                if local:
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
            if local:
                c.local.pop(e.mid, None)
                if m.nick is not None:
                    look = look_key(m.nick)
                    value = c.leases.get(look)
                    if value is not None and value.split("|")[1] == str(m.mid):
                        del c.leases[look]
                        c.link.release(look, value)
            else:
                self.remote.pop((e.node, e.mid), None)
                mids = self.by_node.get(e.node)
                if mids is not None:
                    mids.discard(e.mid)
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
            value = c.leases.pop(look, None)
            if value is not None:
                c.link.release(look, value)
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
            rooms = [r.name for r in m.rooms()]
            for name in rooms:
                record = c.record(m, e.nick, rooms)
                c.publish(JOIN, m, "set", str(m.mid), record, nick=e.nick, room=name, stay="1")
        if old is not None and look_key(old) != look:
            value = c.leases.get(look_key(old))
            if value is not None and value.split("|")[1] == str(m.mid):
                del c.leases[look_key(old)]
                c.link.release(look_key(old), value)
        c.done(m, True)
