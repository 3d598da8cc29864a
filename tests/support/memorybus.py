"""
An in-memory chat bus for unit tests of the node logic: the same interface
as the Redis bus (L{socksvc.services.chat.bus.BusLink}), the same semantics
as its scripts (sequence numbers, leases that expire, heartbeats, presence
hashes, retention), on a task.Clock. Everything that crosses a real bus is
tested against a real redis-server (tests/test_chat_bus_redis.py); this is
for the many small cases of ordering, outages and collisions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from socksvc.services.chat.bus import Beat, BusHandler, Snapshot

LEASE = re.compile(r"^([^|]*)\|(\d+)\|(\d+)\|")


def older(a: str, b: str) -> bool:
    ma, mb = LEASE.match(a), LEASE.match(b)
    if ma is None:
        return False
    if mb is None:
        return True
    if int(ma[3]) != int(mb[3]):
        return int(ma[3]) < int(mb[3])
    return f"{ma[1]}|{ma[2]}" < f"{mb[1]}|{mb[2]}"


class Hub:
    """The Redis server: one stream, its sequence, heartbeats, presence, topics, leases."""

    def __init__(self, clock: Clock, keep: int = 10000) -> None:
        self.clock = clock
        self.keep = keep
        self.log: list[tuple[str, list[str]]] = []
        self.seq = 0
        self.ms = 0
        self.n = 0
        self.expiry: dict[str, float] = {}
        self.values: dict[str, str] = {}
        self.nodes: set[str] = set()
        self.members: dict[str, dict[str, str]] = {}
        self.topics: dict[str, str] = {}
        self.links: list[MemoryBus] = []
        self.ops = 0

    def get(self, key: str) -> str | None:
        if key in self.expiry and self.expiry[key] <= self.clock.seconds():
            del self.expiry[key]
            self.values.pop(key, None)
        return self.values.get(key)

    def set(self, key: str, value: str, ttl: float) -> None:
        self.values[key] = value
        self.expiry[key] = self.clock.seconds() + ttl

    def alive(self, node: str) -> bool:
        return self.get("node:" + node) is not None

    def add(self, fields: list[str]) -> str:
        self.seq += 1
        ms = max(int(self.clock.seconds() * 1000), self.ms)
        self.n = self.n + 1 if ms == self.ms else 0
        self.ms = ms
        rid = f"{ms}-{self.n}"
        self.log.append((rid, [*fields, "q", str(self.seq)]))
        del self.log[: max(0, len(self.log) - self.keep)]
        for link in self.links:
            link.wake()
        return rid

    def flush(self) -> None:
        """Redis restarted with its data gone."""
        self.log.clear()
        self.seq = 0
        self.values.clear()
        self.expiry.clear()
        self.nodes.clear()
        self.members.clear()
        self.topics.clear()


def key(rid: str) -> tuple[int, int]:
    a, _, b = rid.partition("-")
    return int(a), int(b)


class MemoryBus:
    """One node's link to the L{Hub}; C{cut()} and C{mend()} make an outage."""

    def __init__(self, hub: Hub, node: str, ttl: float = 15.0) -> None:
        self.hub = hub
        self.node = node
        self.ttl = ttl
        self.up = False
        self.last_id = "0-0"
        self.handler: BusHandler | None = None
        self.reading = False
        self.pending = False
        self.connected = True
        hub.links.append(self)

    def _check(self) -> Deferred[Any] | None:
        self.hub.ops += 1
        if not self.up:
            return fail(ConnectionError("the chat bus is not connected"))
        return None

    def start(self, handler: BusHandler) -> None:
        self.handler = handler
        if self.connected:
            self.up = True
            handler.bus_up()

    def cut(self) -> None:
        self.connected = False
        if self.up:
            self.up = False
            self.reading = False
            assert self.handler is not None
            self.handler.bus_down("cut")

    def mend(self) -> None:
        self.connected = True
        if not self.up and self.handler is not None:
            self.up = True
            self.handler.bus_up()

    def read(self) -> None:
        if self.up:
            self.reading = True
            self.wake()

    def wake(self) -> None:
        if self.reading and not self.pending:
            self.pending = True
            self.hub.clock.callLater(0, self._deliver)

    def _deliver(self) -> None:
        self.pending = False
        if not (self.up and self.reading):
            return
        after = key(self.last_id)
        new = [(rid, list(f)) for rid, f in self.hub.log if key(rid) > after]
        if new:
            self.last_id = new[-1][0]
            assert self.handler is not None
            self.handler.bus_entries(new)

    def stop(self) -> Deferred[None]:
        self.up = False
        self.reading = False
        if self in self.hub.links:
            self.hub.links.remove(self)
        return succeed(None)

    def publish(self, entries: list[tuple[list[str], str, str, str]]) -> Deferred[list[str]]:
        bad = self._check()
        if bad is not None:
            return bad
        ids = []
        for fields, hash_op, hash_key, hash_value in entries:
            ids.append(self.hub.add(fields))
            if hash_op == "set":
                self.hub.members.setdefault(self.node, {})[hash_key] = hash_value
            elif hash_op == "del":
                self.hub.members.get(self.node, {}).pop(hash_key, None)
            elif hash_op == "topic":
                self.hub.topics[hash_key] = hash_value
        return succeed(ids)

    def claim(self, look: str, value: str) -> Deferred[str | None]:
        bad = self._check()
        if bad is not None:
            return bad
        cur = self.hub.get("nick:" + look)
        m = LEASE.match(cur or "")
        if cur is None or cur == value or (m is not None and not self.hub.alive(m[1])):
            self.hub.set("nick:" + look, value, self.ttl)
            return succeed(None)
        return succeed(cur)

    def release(self, look: str, value: str) -> Deferred[None]:
        if self.up and self.hub.get("nick:" + look) == value:
            self.hub.values.pop("nick:" + look, None)
        return succeed(None)

    def beat(self, leases: dict[str, str], nodes: Sequence[str]) -> Deferred[Beat]:
        bad = self._check()
        if bad is not None:
            return bad
        hub = self.hub
        was = hub.alive(self.node)
        hub.set("node:" + self.node, "1", self.ttl)
        hub.nodes.add(self.node)
        clashes = {}
        retaken = []
        for look, mine in leases.items():
            cur = hub.get("nick:" + look)
            m = LEASE.match(cur or "")
            if cur is None or cur == mine or (m is not None and not hub.alive(m[1])):
                hub.set("nick:" + look, mine, self.ttl)
            elif older(mine, cur):
                hub.set("nick:" + look, mine, self.ttl)
                retaken.append(look)
            else:
                clashes[look] = cur
        live = sum(1 for n in hub.nodes if hub.alive(n))
        return succeed(Beat(clashes, [n for n in nodes if not hub.alive(n)], hub.seq, was, retaken, live))

    def snapshot(self) -> Deferred[Snapshot]:
        bad = self._check()
        if bad is not None:
            return bad
        hub = self.hub
        members = {n: dict(hub.members.get(n, {})) for n in hub.nodes if hub.alive(n)}
        last = hub.log[-1][0] if hub.log else "0-0"
        return succeed(Snapshot(last, hub.seq, members, dict(hub.topics)))

    def tail(self, count: int) -> Deferred[list[tuple[str, Sequence[object]]]]:
        bad = self._check()
        if bad is not None:
            return bad
        return succeed([(rid, list(f)) for rid, f in self.hub.log[-count:]])

    def forget(self, node: str) -> Deferred[None]:
        self.hub.nodes.discard(node)
        self.hub.members.pop(node, None)
        return succeed(None)

    def leave(self) -> Deferred[None]:
        self.forget(self.node)
        self.hub.values.pop("node:" + self.node, None)
        return succeed(None)
