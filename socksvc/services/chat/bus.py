"""
What a chat node needs of a bus, and what a bus tells its node.

The node (L{socksvc.services.chat.cluster.Cluster}) speaks only these
interfaces: the Redis bus (L{socksvc.services.chat.redisbus.RedisBus}) is
one implementation; the tests' in-memory bus is another. Everything a bus
returns is checked by the node before use (entries by
L{socksvc.services.chat.busentries.decode}).

Remote members live in the chat state as L{Member} objects like local
ones, so rooms, rosters, limits and look-alike checks see the whole
cluster; their connection is L{REMOTE} (it sends nothing) and their view
L{REMOTE_VIEW} (it renders nothing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

from twisted.internet.defer import Deferred


class Snapshot(NamedTuple):
    """The cluster at one stream position, read in one step."""

    last_id: str
    """The stream's last id ("0-0": empty); reading resumes after it."""
    seq: int
    """The cluster sequence at that id."""
    members: dict[str, dict[str, str]]
    """For every live node: member id -> its presence record (JSON text)."""
    topics: dict[str, str]
    """Room key -> topic record (JSON text)."""


class Beat(NamedTuple):
    """What a heartbeat learnt."""

    clashes: dict[str, str]
    """Look key -> the other holder's lease value, for leases this node holds that another holder has."""
    dead: list[str]
    """Of the nodes asked about, those with no heartbeat."""
    seq: int
    """The cluster sequence now (0: none: Redis lost its data)."""
    was_alive: bool
    """False when this node's own heartbeat had expired (others took it for dead)."""
    retaken: list[str]
    """Look keys of leases this node took back from a newer holder (it is renamed; nodes that missed ours learn it)."""
    nodes: int
    """Nodes with a heartbeat now, this one included."""


class BusHandler(Protocol):
    """The node's side: a bus calls these."""

    def bus_up(self) -> None:
        """Connected (again): commands work."""

    def bus_down(self, why: str) -> None:
        """Commands fail until L{bus_up}."""

    def bus_entries(self, entries: Sequence[tuple[str, Sequence[object]]]) -> None:
        """Stream entries (id, flat fields) after the last one read, in stream order."""


class BusLink(Protocol):
    """The bus's side: a node calls these."""

    up: bool
    last_id: str
    """The id reading resumes after (the node sets it after a snapshot or a reset)."""

    def start(self, handler: BusHandler) -> None:
        """Connect (and keep reconnecting); read entries once L{read} is called."""

    def read(self) -> None:
        """Start (or go on) reading from L{last_id}."""

    def stop(self) -> Deferred[None]:
        """Disconnect for good."""

    def publish(self, entries: list[tuple[list[str], str, str, str]]) -> Deferred[list[str]]:
        """
        XADD entries (fields, hash op, hash key, hash value), in order, in one
        step, each with its cluster sequence C{q}; for each, in the same step,
        its hash op ("set" or "del", or "" for nothing) on the hash key in this
        node's presence hash, or ("topic") in the topics hash. Fires with the
        entries' ids.
        """

    def claim(self, look: str, value: str) -> Deferred[str | None]:
        """Take the lease on C{look}: None when this node has it now, else its holder's value."""

    def release(self, look: str, value: str) -> Deferred[None]:
        """Give up the lease on C{look} if C{value} still holds it."""

    def beat(self, leases: dict[str, str], nodes: Sequence[str]) -> Deferred[Beat]:
        """Heartbeat, renew C{leases}, and say which of C{nodes} have stopped beating."""

    def snapshot(self) -> Deferred[Snapshot]:
        """Every live node's members and the topics, with the stream position they are at."""

    def tail(self, count: int) -> Deferred[list[tuple[str, Sequence[object]]]]:
        """The last C{count} entries of the stream, oldest first (room history on start)."""

    def forget(self, node: str) -> Deferred[None]:
        """A dead node's presence: gone (idempotent)."""

    def leave(self) -> Deferred[None]:
        """This node is stopping: its heartbeat and presence go at once."""


class _Remote:
    """A remote member's connection: the member's own node writes to it."""

    def send(self, data: bytes) -> None:
        pass

    def send_last(self, data: bytes, reason: str) -> None:
        pass

    def close(self, reason: str = "") -> None:
        pass


class _RemoteView:
    auto_join = False
    kind = "remote"  # IRC's WHO and WHOIS: "remote client" (a member of another node)
    wrap: Callable[[bytes], bytes] | None = None

    def room(self, ev: Any) -> bytes:
        return b""

    def personal(self, ev: Any, m: Any) -> bytes:
        return b""


REMOTE = _Remote()
REMOTE_VIEW = _RemoteView()
