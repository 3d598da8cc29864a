"""
Chat delivery: members, their outboxes, rooms, and batched fan-out.

Plain objects given a clock: no sockets here. A member talks to its
connection through the small L{Connection} interface (the protocols
implement it; tests use fakes), and sees chat events through its L{View}
(the line formatter, the IRC view, the web view), which renders them.

Delivery is batched: between L{Delivery.batch} entry and exit, events for a
room are collected once; at the end each room's events are rendered once per
view and every recipient gets everything meant for it in one write. A room's
membership never changes while the batch holds events for it
(L{Delivery.settle} flushes first), so each member's share is simply "the
events for its rooms, plus its own". A member in several rooms (an IRC
client in several channels) gets its share assembled in order, and an event
sent to several of its rooms (a quit, a rename) once.

Each member's unsent output is bounded: the transport tells us (through the
producer API) when its buffer is full; from then on lines wait in the
member's own queue, up to C{send_queue_max} bytes. Beyond that the member is
stalled: lines are counted, not kept, and it is told how many it missed once
it catches up, or aborted after C{stall_timeout} seconds.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall

from socksvc.services.chat.events import Error, Event, Missed, Notice
from socksvc.services.chat.formats import Formatter
from socksvc.services.chat.names import look_key
from socksvc.services.chat.sanitize import name_key
from socksvc.util.ratelimit import TokenBucket


class View(Protocol):
    """How one kind of client sees chat events (L{Formatter} is the line clients' view)."""

    auto_join: bool
    """Does a member land in the first room when it registers (line and web clients; not IRC)?"""

    def room(self, ev: Event) -> bytes:
        """A room event, rendered the same for every member of this view."""

    def personal(self, ev: Event, m: Any) -> bytes:
        """An event for member C{m} alone."""

    @property
    def wrap(self) -> Callable[[bytes], bytes] | None:
        """
        What a chunk of rendered events becomes on the wire (the web view: one
        WebSocket frame), applied once per chunk: once for every member of a
        view sharing a room's batch. None: the rendered bytes go as they are.
        """


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
        "mid",
        "missed",
        "more",
        "nick",
        "origin",
        "paused",
        "queue",
        "queued",
        "room",
        "since",
        "stall_timer",
        "stalled",
        "state",
        "view",
    )

    def __init__(self, state: Outlet, conn: Connection, view: View | None = None) -> None:
        self.state = state
        self.conn = conn
        self.view: View = view if view is not None else state.fmt
        self.nick: str | None = None
        self.key: str | None = None
        self.look: str | None = None  # look_key(nick): the key of ChatState.looks
        self.room: Room | None = None
        self.more: list[Room] | None = None  # rooms beyond `room`: an IRC client in several channels
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
        self.mid = 0
        """With a bus: this member's id within its node (0: not known to the cluster yet)."""
        self.origin: str | None = None
        """With a bus: the node a remote member is connected to (None: this one)."""
        self.since = 0
        """With a bus: when it took its nickname (ms; the older of two holders keeps a name)."""

    def __repr__(self) -> str:
        return f"<Member {self.nick!r}>"

    # -- rooms ---------------------------------------------------------------

    def rooms(self) -> list[Room]:
        """Every room this member is in: C{room} first (line and web members have at most that one)."""
        if self.room is None:
            return []
        return [self.room] if not self.more else [self.room, *self.more]

    def in_room(self, room: Room) -> bool:
        return room is self.room or (self.more is not None and room in self.more)

    def add_room(self, room: Room) -> None:
        if self.room is None:
            self.room = room
        elif self.more is None:
            self.more = [room]
        else:
            self.more.append(room)

    def drop_room(self, room: Room) -> None:
        more = self.more
        if room is self.room:
            self.room = more.pop(0) if more else None
        elif more is not None and room in more:
            more.remove(room)
        if not more:
            self.more = None

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
            self.conn.send(self.render(Missed(missed)))

    def render(self, ev: Event) -> bytes:
        """An event for this member alone, as its connection sends it."""
        data = self.view.personal(ev, self)
        wrap = self.view.wrap
        return wrap(data) if wrap is not None and data else data

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

    __slots__ = ("configured", "created", "history", "key", "look", "members", "name", "topic", "topic_at", "topic_by")

    def __init__(self, name: str, history: int, configured: bool = False, created: float = 0.0) -> None:
        self.name = name
        self.key = name_key(name)
        self.look = look_key(name)
        self.members: dict[str, Member] = {}
        self.topic = ""
        self.topic_by = ""
        self.topic_at = 0.0
        self.created = created
        self.history: deque[tuple[float, Any]] = deque(maxlen=history)
        """(when, L{socksvc.services.chat.events.Said}) for the last lines said."""
        self.configured = configured

    def __repr__(self) -> str:
        return f"<Room {self.name!r} {len(self.members)}>"


def wrapped(view: View, data: bytes) -> bytes:
    """C{data} as C{view} sends it (L{View.wrap})."""
    wrap = view.wrap
    return wrap(data) if wrap is not None and data else data


class Delivery:
    """
    Batched fan-out to members and rooms (the chat state derives from it).
    Between L{batch} entry and exit deliveries are collected; each member
    gets its share in one write at the end.
    """

    fmt: Formatter

    def __init__(self) -> None:
        self._depth = 0
        self._entries: list[tuple[Room | Member, Any, Member | None]] = []
        self._room_data: dict[Room, list[Any]] = {}
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
        """Bytes for one member, already in its view's form (an IRC reply, a telnet answer)."""
        if member.gone:
            return
        if self._depth == 0:
            member.deliver(data)
            return
        self._entries.append((member, data, None))
        self._special.add(member)

    def emit(self, member: Member, ev: Event) -> None:
        """An event for one member."""
        if member.gone:
            return
        if self._depth == 0:
            member.deliver(member.render(ev))
            return
        self._entries.append((member, ev, None))
        self._special.add(member)

    def notice(self, member: Member, text: str) -> None:
        self.emit(member, Notice(text))

    def error(self, member: Member, text: str, code: str = "", arg: str = "") -> None:
        """Tell C{member} what it sent was refused, and why (C{code}, C{arg}: see L{Error})."""
        self.emit(member, Error(text, code, arg))

    def to_room(self, room: Room, ev: Event, exclude: Member | None = None) -> None:
        """An event for everyone in C{room} (but C{exclude})."""
        if self._depth == 0:
            rendered: dict[Any, bytes] = {}
            for m in list(room.members.values()):
                if m is not exclude:
                    data = rendered.get(m.view)
                    if data is None:
                        data = rendered[m.view] = wrapped(m.view, m.view.room(ev))
                    m.deliver(data)
            return
        self._entries.append((room, ev, exclude))
        pending = self._room_data.get(room)
        if pending is None:
            self._room_data[room] = [ev]
        else:
            pending.append(ev)
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
        for room, events in room_data.items():
            shared: dict[Any, bytes] = {}
            for m in list(room.members.values()):
                if m.more is not None:
                    special.add(m)  # in several rooms: assembled below, each event once
                    continue
                if special and m in special:
                    continue
                view = m.view
                data = shared.get(view)
                if data is None:
                    data = view.room(events[0]) if len(events) == 1 else b"".join([view.room(ev) for ev in events])
                    data = shared[view] = wrapped(view, data)
                m.deliver(data)
        if not special:
            return
        cache: dict[tuple[int, int], bytes] = {}
        for m in special:
            if m.gone:
                continue
            view = m.view
            seen: set[int] | None = set() if m.more is not None else None
            mine: list[bytes] = []
            for target, payload, exclude in entries:
                if target is m:
                    mine.append(payload if isinstance(payload, bytes) else view.personal(payload, m))
                elif exclude is not m and (target is m.room or (seen is not None and target in m.rooms())):
                    if seen is not None:
                        if id(payload) in seen:
                            continue  # sent to two of its rooms (a quit, a rename): once is enough
                        seen.add(id(payload))
                    key = (id(payload), id(view))
                    data = cache.get(key)
                    if data is None:
                        data = cache[key] = view.room(payload)
                    mine.append(data)
            if mine:
                m.deliver(wrapped(view, mine[0] if len(mine) == 1 else b"".join(mine)))
