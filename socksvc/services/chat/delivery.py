"""
Chat delivery: members, their outboxes, rooms, and batched fan-out.

Plain objects given a clock: no sockets here. A member talks to its
connection through the small L{Connection} interface (the protocol
implements it; tests use fakes).

Delivery is batched: between L{Delivery.batch} entry and exit, lines for a
room are collected once and every recipient gets everything meant for it in
one write. A room's membership never changes while the batch holds lines for it
(L{Delivery.settle} flushes first), so each member's share is simply "the
lines for its room, plus its own".

Each member's unsent output is bounded: the transport tells us (through the
producer API) when its buffer is full; from then on lines wait in the
member's own queue, up to C{send_queue_max} bytes. Beyond that the member is
stalled: lines are counted, not kept, and it is told how many it missed once
it catches up, or aborted after C{stall_timeout} seconds.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterator
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall

from socksvc.services.chat.formats import Formatter
from socksvc.services.chat.names import look_key
from socksvc.services.chat.sanitize import name_key
from socksvc.util.ratelimit import TokenBucket
from socksvc.wire import CHAT_MISSED, CHAT_NOTICE


class Outlet(Protocol):
    """What a member needs of the state it belongs to (L{socksvc.services.chat.state.ChatState} is one)."""

    settings: Any
    clock: Any
    fmt: Formatter
    lines_missed: int

    def stall_expired(self, m: Member) -> None: ...

    def log_event(self, event: str, fmt: str, **fields: Any) -> None: ...


class Connection(Protocol):
    """What the state needs from a member's connection."""

    def send(self, data: bytes) -> None:
        """Write now (or queue in the transport)."""

    def send_last(self, data: bytes, reason: str) -> None:
        """Best effort to write C{data}, then abort the connection (C{reason} is for the log)."""

    def close(self, reason: str = "") -> None:
        """Deliver what is written, then close (C{reason} is for the log)."""


class Member:
    """One connected client, registered (has a nick) or not."""

    __slots__ = (
        "bucket",
        "conn",
        "flood_since",
        "gone",
        "held",
        "key",
        "last_drop",
        "look",
        "missed",
        "nick",
        "paused",
        "queue",
        "queued",
        "room",
        "stall_timer",
        "stalled",
        "state",
    )

    def __init__(self, state: Outlet, conn: Connection) -> None:
        self.state = state
        self.conn = conn
        self.nick: str | None = None
        self.key: str | None = None
        self.look: str | None = None  # look_key(nick): the key of ChatState.looks
        self.room: Room | None = None
        self.bucket: TokenBucket | None = None
        self.flood_since: float | None = None
        self.last_drop = 0.0
        self.paused = False
        self.queue: deque[bytes] | None = None
        self.queued = 0
        self.stalled = False
        self.missed = 0
        self.stall_timer: IDelayedCall | None = None
        self.gone = False
        self.held: list[bytes] | None = None

    def __repr__(self) -> str:
        return f"<Member {self.nick!r}>"

    # -- output --------------------------------------------------------------

    def deliver(self, data: bytes) -> None:
        """Send C{data} (whole lines), or queue it, or count it as missed."""
        if self.gone:
            return
        if self.held is not None:
            self.held.append(data)
            return
        if self.stalled:
            n = data.count(b"\n")
            self.missed += n
            self.state.lines_missed += n
            return
        if self.paused:
            limit = self.state.settings.send_queue_max
            if self.queued + len(data) > limit:
                self._stall(data)
                return
            if self.queue is None:
                self.queue = deque()
            self.queue.append(data)
            self.queued += len(data)
            return
        self.conn.send(data)

    def release(self) -> None:
        """Send the output held since connecting (the welcome), and stop holding."""
        held, self.held = self.held, None
        if held:
            self.deliver(b"".join(held))

    def _stall(self, data: bytes) -> None:
        self.stalled = True
        n = data.count(b"\n")
        self.missed += n
        state = self.state
        state.lines_missed += n
        timeout = state.settings.stall_timeout
        if self.stall_timer is None:
            self.stall_timer = state.clock.callLater(timeout, state.stall_expired, self)
        state.log_event(
            "stall",
            "{service}: {nick} is not reading; holding at {queued} bytes",
            nick=self.nick or "(no nick)",
            queued=self.queued,
        )

    def pause(self) -> None:
        """The transport's buffer is full."""
        self.paused = True

    def resume(self) -> None:
        """The transport's buffer drained: send what waited, then say what was missed."""
        self.paused = False
        queue = self.queue
        while queue and not self.paused and not self.gone:
            data = queue.popleft()
            self.queued -= len(data)
            self.conn.send(data)
        if self.paused or self.gone:
            return
        self.queue = None
        self.queued = 0
        if self.stalled:
            self.stalled = False
            if self.stall_timer is not None and self.stall_timer.active():
                self.stall_timer.cancel()
            self.stall_timer = None
            missed, self.missed = self.missed, 0
            self.conn.send(self.state.fmt.line(CHAT_NOTICE + CHAT_MISSED.format(missed=missed)))

    def unsent(self) -> int:
        """Bytes waiting in this member's own queue."""
        return self.queued

    def drop(self) -> None:
        """Forget everything owed; no more output."""
        self.gone = True
        self.queue = None
        self.queued = 0
        self.held = None
        if self.stall_timer is not None and self.stall_timer.active():
            self.stall_timer.cancel()
        self.stall_timer = None


class Room:
    """A room: its members by name key, topic and recent history."""

    __slots__ = ("configured", "history", "key", "look", "members", "name", "topic")

    def __init__(self, name: str, history: int, configured: bool = False) -> None:
        self.name = name
        self.key = name_key(name)
        self.look = look_key(name)
        self.members: dict[str, Member] = {}
        self.topic = ""
        self.history: deque[tuple[float, str]] = deque(maxlen=history)
        self.configured = configured

    def __repr__(self) -> str:
        return f"<Room {self.name!r} {len(self.members)}>"


class Delivery:
    """
    Batched fan-out to members and rooms (the chat state derives from it).
    Between L{batch} entry and exit deliveries are collected; each member
    gets its share in one write at the end.
    """

    fmt: Formatter

    def __init__(self) -> None:
        self._depth = 0
        self._entries: list[tuple[Room | Member, bytes, Member | None]] = []
        self._room_data: dict[Room, list[bytes]] = {}
        self._special: set[Member] = set()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Collect deliveries; everyone gets their share in one write at the end."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self.flush()

    def tell(self, member: Member, data: bytes) -> None:
        """Lines for one member."""
        if member.gone:
            return
        if self._depth == 0:
            member.deliver(data)
            return
        self._entries.append((member, data, None))
        self._special.add(member)

    def notice(self, member: Member, text: str) -> None:
        self.tell(member, self.fmt.notice_lines(text))

    def to_room(self, room: Room, data: bytes, exclude: Member | None = None) -> None:
        """Lines for everyone in C{room} (but C{exclude})."""
        if self._depth == 0:
            for m in list(room.members.values()):
                if m is not exclude:
                    m.deliver(data)
            return
        self._entries.append((room, data, exclude))
        pending = self._room_data.get(room)
        if pending is None:
            self._room_data[room] = [data]
        else:
            pending.append(data)
        if exclude is not None:
            self._special.add(exclude)

    def settle(self, room: Room) -> None:
        """
        The members of C{room} are about to change: first deliver what the
        batch holds for it, so those lines reach the members it had.
        """
        if room in self._room_data:
            self.flush()

    def flush(self) -> None:
        """Deliver what the batch collected."""
        if not self._entries:
            return
        entries, self._entries = self._entries, []
        room_data, self._room_data = self._room_data, {}
        special, self._special = self._special, set()
        for room, parts in room_data.items():
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            if special:
                for m in list(room.members.values()):
                    if m not in special:
                        m.deliver(data)
            else:
                for m in list(room.members.values()):
                    m.deliver(data)
        for m in special:
            if m.gone:
                continue
            mine = [
                data
                for target, data, exclude in entries
                if target is m or (target is m.room and exclude is not m and m.room is not None)
            ]
            if mine:
                m.deliver(mine[0] if len(mine) == 1 else b"".join(mine))
