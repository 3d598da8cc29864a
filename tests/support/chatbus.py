"""Chat nodes on the in-memory bus (tests/support/memorybus.py), over StringTransport, on one task.Clock."""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.task import Clock

from socksvc.services.chat.cluster import Cluster
from socksvc.services.chat.replica import Replica
from tests.support.chat import Chat, Client
from tests.support.memorybus import Hub, MemoryBus


def settle(clock: Clock) -> None:
    """Run everything due now (bus deliveries are a turn later), until nothing is."""
    for _ in range(1000):
        if not any(c.getTime() <= clock.seconds() for c in clock.getDelayedCalls()):
            return
        clock.advance(0)
    raise AssertionError("still busy after 1000 turns")


class Node:
    """One chat node: a chat state with a cluster on the hub."""

    def __init__(self, hub: Hub, name: str, body: str = "", **settings: Any) -> None:
        self.hub = hub
        self.name = name
        self.chat = Chat(body, clock=hub.clock)
        if settings:
            self.state.reconfigure(attrs.evolve(self.state.settings, **settings))
        self.link = MemoryBus(hub, name, ttl=self.state.settings.node_timeout)
        self.cluster = Cluster(self.state, self.link, name)
        self.replica = Replica(self.cluster)
        self.state.cluster = self.cluster
        self.replica.start()
        settle(hub.clock)

    @property
    def state(self) -> Any:
        return self.chat.state

    def connect(self, nick: str | None = None) -> Client:
        client = self.chat.connect(None)
        if nick is not None:
            client.send(nick)
            settle(self.hub.clock)
        return client

    def who(self, client: Client) -> list[str]:
        client.lines()
        client.send("/who")
        settle(self.hub.clock)
        line = next(x for x in client.lines() if x.startswith("-!- Members of"))
        return line.partition(": ")[2].split(", ")


def cluster(n: int = 2, body: str = "", **settings: Any) -> tuple[Hub, list[Node]]:
    hub = Hub(Clock())
    hub.clock.advance(1_700_000_000)
    return hub, [Node(hub, f"node{i}", body, **settings) for i in range(n)]
