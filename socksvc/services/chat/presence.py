"""
Who is in the cluster, as one node sees it: the snapshot a node starts
from (every live node's members and the topics, with the stream position
they are at), room histories seeded from the stream's tail, heartbeats,
nodes that stop beating, and starting over when Redis lost its data.

L{Presence} is the half of L{socksvc.services.chat.replica.Replica} that
is not applying entries. Remote members are L{Member} objects on L{REMOTE},
so everything that reads rooms and rosters sees the whole cluster; every
name read from Redis is checked as an entry's would be.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from socksvc.services.chat.bus import REMOTE, REMOTE_VIEW, Beat, Snapshot
from socksvc.services.chat.busentries import JOIN, NICK, NODE_RE, SAYS, BadEntry, check_name, decode, pairs
from socksvc.services.chat.cluster import Cluster
from socksvc.services.chat.delivery import Member, Room
from socksvc.services.chat.events import Said
from socksvc.services.chat.names import look_key
from socksvc.services.chat.sanitize import clip, name_key

HISTORY_SCAN = 2000
"""Stream entries read back on start to fill room histories."""
RETRY = 1.0


def id_key(rid: str) -> tuple[int, int]:
    ms, _, seq = rid.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return 0, 0


class Presence:
    """The cluster's members and nodes as this node knows them (L{socksvc.services.chat.replica.Replica} applies
    entries)."""

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
        self.nodes = 1
        """Nodes with a heartbeat at the last one of ours, this one included."""
        self.beats = 0
        self.grace_until = 0.0
        """Until then a missing heartbeat proves nothing (Redis lost them all; each node beats again soon)."""
        self.again: dict[Member, int] = {}
        """Members to announce again at the next heartbeats (their name was taken back from a newer holder)."""
        self.timer: IDelayedCall | None = None
        self.stopped = False
        self.syncing = False

    # -- life --------------------------------------------------------------------

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
                if room is not None and room.history.maxlen:  # sync runs once, before any entry is applied
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
                check_name(nick)
                if not NODE_RE.fullmatch(node) or mid >= 1 << 63:
                    raise BadEntry("bad node id or member id")
                if m is None or m.nick != nick:
                    m = self.registered(node, mid, since, nick, m)
                if m is None:
                    continue
                for name in rooms[:100]:
                    self.enter(m, check_name(name, room=True), stay=True, made=True)
            except BadEntry:
                self.cluster.entries_bad += 1
        for room_key, text in snap.topics.items():
            room = state.rooms.get(room_key)
            try:
                record = json.loads(text)
                if room is not None and isinstance(record.get("text"), str):
                    room.topic = clip(record["text"], 200)
                    room.topic_by = check_name(record.get("by", "")) if record.get("by") else ""
                    room.topic_at = float(record.get("at", 0)) / 1000
            except (ValueError, TypeError, AttributeError):  # BadEntry is a ValueError
                self.cluster.entries_bad += 1

    def reannounce(self, members: list[Member] | None = None) -> None:
        """Tell the cluster again who is here (Redis lost it, or others took this node for dead)."""
        c = self.cluster
        for m in list(c.local.values()) if members is None else members:
            if m.conn is REMOTE or m.nick is None:
                continue
            rooms = [r.name for r in m.rooms()]
            record = c.record(m, m.nick, rooms)
            c.publish(NICK, m, "set", str(m.mid), record, nick=m.nick, since=str(m.since), again="1")
            for name in rooms:
                c.publish(JOIN, m, "set", str(m.mid), record, nick=m.nick, room=name, stay="1", again="1")

    def beaten(self, beat: Beat) -> None:
        self.nodes = beat.nodes
        self.cluster.unstick(self.state.settings.node_timeout)
        if not beat.was_alive and self.beats:  # our heartbeat was gone: Redis lost them all, or we were away
            self.grace_until = self.clock.seconds() + self.state.settings.node_timeout
        self.beats += 1
        if self.again:
            # by now the newer holder has been renamed: the nodes that refused ours take it now
            self.reannounce(list(self.again))
            self.again = {m: n - 1 for m, n in self.again.items() if n > 1}
        for look in beat.retaken:
            m = self.cluster.lease_holder(look)
            if m is not None:
                self.again[m] = 2
        if self.clock.seconds() >= self.grace_until:
            for node in beat.dead:
                self.node_gone(node)
        if beat.seq < self.q:
            self.reset(rewind=True)
        elif not beat.was_alive and self.beats > 1:  # the first beat of all finds no key, of course
            self.reannounce()
        for look in beat.clashes:
            m = self.cluster.lease_holder(look)
            self.cluster.leases.pop(look, None)  # the newer holder's: another node's now
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
        self.grace_until = self.clock.seconds() + self.state.settings.node_timeout
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

    def enter(self, m: Member, name: str, stay: bool, made: bool = False) -> str | None:
        """
        C{m} joins room C{name}, made if need be (C{made}: it is known to exist
        on its node: a snapshot); None, or why not: every node decides the
        same from the same entries (room limits are the cluster's).
        """
        state = self.state
        room: Room | None = state.rooms.get(name_key(name))
        if room is None:
            problem = None if made else state.no_new_room(name)
            if problem is not None:
                return str(problem)
            room = Room(name, state.settings.history, created=self.clock.seconds())
            state.add_room(room)
        if not m.in_room(room):
            state.apply_join(m, room, stay)
        return None
