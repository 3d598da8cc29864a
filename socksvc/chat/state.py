"""
Chat state: members, rooms, history, and the delivery of lines.

Plain objects given a clock: no sockets here. A member talks to its
connection through the small L{Connection} interface (the protocol
implements it; tests use fakes). The state outlives a config reload: it is
kept in the service context and given new settings by L{ChatState.reconfigure}.

Delivery is batched: between L{ChatState.batch} entry and exit, lines for a
room are collected once and every recipient gets everything meant for it in
one write. A room's membership never changes while the batch holds lines for it
(L{ChatState.settle} flushes first), so each member's share is simply "the
lines for its room, plus its own".

Each member's unsent output is bounded: the transport tells us (through the
producer API) when its buffer is full; from then on lines wait in the
member's own queue, up to C{send_queue_max} bytes. Beyond that the member is
stalled: lines are counted, not kept, and it is told how many it missed once
it catches up, or aborted after C{stall_timeout} seconds.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Iterator
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from socksvc.chat.names import look_key
from socksvc.chat.sanitize import clip, name_key, nick_check, room_check, visible
from socksvc.policy import RateLimitedLog, TokenBucket

log = Logger(namespace="socksvc")

CRLF = b"\r\n"
WELCOME_HOLD = 0.02  # seconds the welcome waits for a nickname to go out with
LIST_WIDTH = 400  # characters of names on one /who or /rooms line
REASON_MAX = 200  # characters of a /quit reason

HELP = (
    "Commands (case-insensitive):",
    "  /nick NAME        take or change your nickname",
    "  /join ROOM        move to ROOM (created if new)",
    "  /rooms            list rooms and member counts",
    "  /who              list members of this room",
    "  /msg NICK TEXT    private message",
    "  /me TEXT          action: * you TEXT",
    "  /topic [TEXT|-]   show, set or clear the room topic",
    "  /help             this list",
    "  /quit [REASON]    leave",
    "Any other line is said to your room; //TEXT says /TEXT.",
)


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

    def __init__(self, state: ChatState, conn: Connection) -> None:
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
            self.missed += data.count(b"\n")
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
        self.missed += data.count(b"\n")
        state = self.state
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
            self.conn.send(self.state.line(f"-!- You missed {missed} lines (you were not reading fast enough)"))

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


class ChatState:
    """Everything the chat service knows, for one service instance."""

    def __init__(self, settings: Any, clock: IReactorTime, service: str = "chat") -> None:
        self.clock = clock
        self.service = service
        self.settings = settings
        self.members: set[Member] = set()
        self.nicks: dict[str, Member] = {}
        self.rooms: dict[str, Room] = {}
        self.looks: dict[str, Member] = {}  # by look_key: no two members look alike
        self.room_looks: dict[str, Room] = {}
        self.reserved: frozenset[str] = frozenset()
        self.reserved_looks: dict[str, str] = {}
        self._stamp_minute = -1
        self._stamp_text = ""
        self._depth = 0
        self._entries: list[tuple[Room | Member, bytes, Member | None]] = []
        self._room_data: dict[Room, list[bytes]] = {}
        self._special: set[Member] = set()
        self._log_limit = RateLimitedLog(clock)
        self._held: list[Member] = []
        self._hold_timer: IDelayedCall | None = None
        self.reconfigure(settings)

    # -- settings ------------------------------------------------------------

    def reconfigure(self, settings: Any) -> None:
        """Apply new settings to the live state."""
        self.settings = settings
        self.reserved = frozenset(name_key(n) for n in settings.reserved_nicks)
        self.reserved_looks = {look_key(n): n for n in settings.reserved_nicks}
        wanted = {name_key(n): n for n in settings.rooms}
        for room in self.rooms.values():
            room.configured = room.key in wanted
            if room.history.maxlen != settings.history:
                room.history = deque(room.history, maxlen=settings.history)
        for key, name in wanted.items():
            if key not in self.rooms:
                self.add_room(Room(name, settings.history, configured=True))
        for room in [r for r in self.rooms.values() if not r.configured and not r.members]:
            self.drop_room(room)
        for m in self.members:
            if m.bucket is not None:
                if settings.flood_rate > 0:
                    m.bucket.rate = settings.flood_rate
                    m.bucket.burst = settings.flood_burst
                    m.bucket.tokens = min(m.bucket.tokens, settings.flood_burst)
                else:
                    m.bucket = None

    def add_room(self, room: Room) -> None:
        self.rooms[room.key] = room
        self.room_looks[room.look] = room

    def drop_room(self, room: Room) -> None:
        if self.rooms.get(room.key) is room:
            del self.rooms[room.key]
        if self.room_looks.get(room.look) is room:
            del self.room_looks[room.look]

    def first_room(self) -> Room:
        return self.rooms[name_key(self.settings.rooms[0])]

    # -- formatting ----------------------------------------------------------

    def stamp(self, now: float | None = None) -> str:
        """C{HH:MM} (server local time) for C{now}."""
        if now is None:
            now = self.clock.seconds()
        minute = int(now // 60)
        if minute != self._stamp_minute:
            self._stamp_minute = minute
            self._stamp_text = time.strftime("%H:%M", time.localtime(now))
        return self._stamp_text

    def line(self, body: str) -> bytes:
        """
        A live line as sent: optional timestamp, body, CRLF. Every line sent
        goes through here, so this is where unsafe characters are made visible.
        """
        body = visible(body)
        if self.settings.timestamps:
            body = f"[{self.stamp()}] {body}"
        return body.encode("utf-8") + CRLF

    def notice_lines(self, text: str) -> bytes:
        return self.line("-!- " + text)

    # -- batching ------------------------------------------------------------

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
        self.tell(member, self.notice_lines(text))

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

    # -- logging -------------------------------------------------------------

    def log_event(self, event: str, fmt: str, **fields: Any) -> None:
        def emit(held: int) -> None:
            more = f" (and {held} more such events)" if held else ""
            log.info(fmt + "{more}", event=event, service=self.service, more=more, **fields)

        self._log_limit(event, emit)

    # -- connections ---------------------------------------------------------

    def connect(self, conn: Connection) -> Member:
        """
        A new connection: welcome it and ask for a nickname. The welcome is
        held for a moment (L{WELCOME_HOLD}): a client that sends its
        nickname at once (scripts, `socksvc chat`) then gets the welcome and
        its registration in one write. Its first input releases it; a timer
        releases everyone else's.
        """
        m = Member(self, conn)
        m.held = []
        self._held.append(m)
        if self._hold_timer is None:
            self._hold_timer = self.clock.callLater(WELCOME_HOLD, self.release_held)
        self.members.add(m)
        self.notice(m, "Welcome to socksvc chat")
        for text in self.settings.motd.splitlines():
            if text.strip():
                self.notice(m, text)
        self.ask_nick(m)
        return m

    def release_held(self) -> None:
        """Send every held welcome now."""
        if self._hold_timer is not None and self._hold_timer.active():
            self._hold_timer.cancel()
        self._hold_timer = None
        held, self._held = self._held, []
        for m in held:
            m.release()

    def ask_nick(self, m: Member) -> None:
        limit = self.settings.nick_max
        self.notice(m, f"Choose a nickname: letters, digits, _ - . (at most {limit} characters)")

    def leave(self, m: Member, announce: str | None) -> None:
        """Take C{m} out of its room (telling the room C{announce})."""
        room = m.room
        if room is None or m.key is None:
            return
        self.settle(room)
        announce_it = announce is not None and self.announces(room)
        if room.members.get(m.key) is m:
            del room.members[m.key]
        m.room = None
        if announce is not None and announce_it:
            self.to_room(room, self.notice_lines(announce))
        if not room.members and not room.configured:
            self.drop_room(room)

    def announces(self, room: Room) -> bool:
        limit: int = self.settings.announce_max
        return limit == 0 or len(room.members) <= limit

    def remove(self, m: Member, reason: str | None) -> None:
        """C{m} is gone: tell its room, forget it."""
        if m.gone:
            return
        if m.nick is not None:
            text = f"{m.nick} has quit" + (f" ({reason})" if reason else "")
            self.leave(m, text)
            if m.key is not None and self.nicks.get(m.key) is m:
                del self.nicks[m.key]
            if m.look is not None and self.looks.get(m.look) is m:
                del self.looks[m.look]
        m.drop()
        self.members.discard(m)

    def disconnected(self, m: Member, reason: str | None = "connection closed") -> None:
        """The connection went away (read side closed, reset, aborted)."""
        with self.batch():
            self.remove(m, reason)

    def kick(self, m: Member, reason: str) -> None:
        """Disconnect C{m} at once, telling it (best effort) and its room why."""
        if m.gone:
            return
        self.log_event("kick", "{service}: disconnecting {nick}: {reason}", nick=m.nick or "(no nick)", reason=reason)
        conn = m.conn
        self.remove(m, reason)
        conn.send_last(self.notice_lines(f"Disconnected: {reason}"), reason)

    def stall_expired(self, m: Member) -> None:
        m.stall_timer = None
        if m.stalled and not m.gone:
            with self.batch():
                self.kick(m, "not reading")

    def quit(self, m: Member, reason: str) -> None:
        """C{/quit}: leave politely, flush, close."""
        if m.gone:
            return
        reason = clip(reason.strip(), REASON_MAX)
        self.notice(m, "Disconnected: quit")
        self.flush()
        m.release()
        conn = m.conn
        self.remove(m, reason or None)
        conn.close("quit")

    def shutdown(self) -> None:
        """The service is stopping: tell everyone, close."""
        data = self.notice_lines("server is shutting down")
        self.flush()
        self.release_held()
        for m in list(self.members):
            conn = m.conn
            m.deliver(data)
            m.drop()
            conn.close("server shutting down")
        self.members.clear()
        self.nicks.clear()
        self.looks.clear()
        for room in self.rooms.values():
            room.members.clear()

    # -- input ---------------------------------------------------------------

    def flood_ok(self, m: Member) -> bool:
        """Take a token for one line; False (and maybe a notice or a kick) if over the limit."""
        s = self.settings
        if s.flood_rate <= 0:
            return True
        now = self.clock.seconds()
        bucket = m.bucket
        if bucket is None:
            bucket = m.bucket = TokenBucket(s.flood_rate, s.flood_burst, now)
        if bucket.take(now):
            return True
        quiet = s.flood_burst / s.flood_rate
        if m.flood_since is None or now - m.last_drop > quiet:
            m.flood_since = now
            self.notice(m, f"error: flooding: lines are being dropped (limit {s.flood_rate:g} lines/s)")
        m.last_drop = now
        if s.flood_kick > 0 and now - m.flood_since >= s.flood_kick:
            self.kick(m, "flooding")
        return False

    def too_long(self, m: Member) -> None:
        self.notice(m, f"error: line too long (over {self.settings.max_line} bytes); not sent")

    def no_line_end(self, m: Member) -> None:
        self.kick(m, f"line too long (no line end in {8 * self.settings.max_line} bytes)")

    def input_line(self, m: Member, text: str) -> None:
        """One line of decoded input from C{m} (flood control is the caller's: L{flood_ok})."""
        if m.gone or not text.strip():
            return
        if text.startswith("/") and not text.startswith("//"):
            from socksvc.chat.commands import run

            run(self, m, text)
            return
        if text.startswith("//"):
            text = text[1:]
        if m.nick is None:
            self.set_nick(m, text.strip())
        else:
            self.say(m, text)

    # -- actions -------------------------------------------------------------

    def set_nick(self, m: Member, name: str) -> None:
        typed = name

        def taken(form: str, look: str) -> str | None:
            holder, twin = self.nicks.get(name_key(form)), self.looks.get(look)
            if holder is not None and holder is not m:
                return f"{typed} is taken"
            if twin is not None and twin is not m:
                return f'"{typed}" looks like "{twin.nick}", which is in use'
            return None

        form, problem = nick_check(name, self.settings.nick_max, self.reserved, self.reserved_looks, taken)
        if problem is not None:
            self.notice(m, f"error: nickname refused: {problem}")
            return
        name, key, look = form, name_key(form), look_key(form)
        look = key if look == key else look  # most often the same: keep one string
        if self.nicks.get(key) is m and m.nick == name:
            self.notice(m, f"You are now known as {name}")
            return
        if m.look is not None and self.looks.get(m.look) is m:
            del self.looks[m.look]
        m.look = look
        self.looks[look] = m
        old = m.nick
        if old is None:
            m.nick, m.key = name, key
            self.nicks[key] = m
            self.notice(m, f"You are now known as {name}")
            self.join_room(m, self.first_room())
            return
        room = m.room
        assert m.key is not None
        if self.nicks.get(m.key) is m:
            del self.nicks[m.key]
        if room is not None and room.members.get(m.key) is m:
            del room.members[m.key]
            room.members[key] = m
        m.nick, m.key = name, key
        self.nicks[key] = m
        self.notice(m, f"You are now known as {name}")
        if room is not None and self.announces(room):
            self.to_room(room, self.notice_lines(f"{old} is now known as {name}"), exclude=m)

    def find_room(self, name: str) -> tuple[Room | None, str | None]:
        """The room called C{name} (created if allowed), or why not."""
        if name.startswith("#"):
            name = name[1:]
        typed = name

        def taken(form: str, look: str) -> str | None:
            twin = self.room_looks.get(look)
            if twin is not None and name_key(form) not in self.rooms:
                return f'"{typed}" looks like "{twin.name}", which exists'
            return None

        name, problem = room_check(name, taken)
        if problem is not None:
            return None, f"bad room name: {problem}"
        key = name_key(name)
        room = self.rooms.get(key)
        if room is not None:
            return room, None
        s = self.settings
        if not s.allow_create:
            return None, f"no such room: {name} (only the server's rooms can be joined; /rooms lists them)"
        if s.max_rooms and len(self.rooms) >= s.max_rooms:
            return None, f"too many rooms (at most {s.max_rooms}); join one of /rooms"
        room = Room(name, s.history)
        self.add_room(room)
        return room, None

    def join(self, m: Member, name: str) -> None:
        room, problem = self.find_room(name)
        if room is None:
            self.notice(m, f"error: {problem}")
            return
        if m.room is room:
            self.notice(m, f"error: you are already in {room.name}")
            return
        self.leave(m, f"{m.nick} has left {m.room.name}" if m.room is not None else None)
        self.join_room(m, room)

    def join_room(self, m: Member, room: Room) -> None:
        assert m.key is not None
        self.settle(room)
        room.members[m.key] = m
        m.room = room
        if self.announces(room):
            self.to_room(room, self.notice_lines(f"{m.nick} has joined {room.name}"), exclude=m)
        count = len(room.members)
        self.notice(m, f"You are now in {room.name} ({count} member{'' if count == 1 else 's'})")
        if room.topic:
            self.notice(m, f"Topic of {room.name}: {room.topic}")
        if room.history:
            out = []
            for when, body in room.history:
                out.append(f"[history {self.stamp(when)}] {body}".encode() + CRLF)
            self.tell(m, b"".join(out))

    def _said(self, m: Member, body: str) -> None:
        room = m.room
        if room is None:
            return
        now = self.clock.seconds()
        body = visible(body)
        if room.history.maxlen:
            room.history.append((now, body))
        self.to_room(room, self.line(body), exclude=m)

    def say(self, m: Member, text: str) -> None:
        self._said(m, f"<{m.nick}> {text}")

    def action(self, m: Member, text: str) -> None:
        self._said(m, f"* {m.nick} {text}")

    def privmsg(self, m: Member, nick: str, text: str) -> None:
        target = self.nicks.get(name_key(nick))
        if target is None:
            self.notice(m, f"error: no such nick: {nick}")
            return
        self.tell(target, self.line(f"*{m.nick}* {text}"))
        self.notice_free(m, f"-> *{target.nick}* {text}")

    def notice_free(self, m: Member, body: str) -> None:
        self.tell(m, self.line(body))

    def topic(self, m: Member, text: str) -> None:
        room = m.room
        if room is None:
            return
        text = text.strip()
        if not text:
            if room.topic:
                self.notice(m, f"Topic of {room.name}: {room.topic}")
            else:
                self.notice(m, f"No topic is set for {room.name}")
            return
        if text == "-":
            room.topic = ""
            self.to_room(room, self.notice_lines(f"{m.nick} cleared the topic of {room.name}"))
            return
        room.topic = clip(text, REASON_MAX)
        self.to_room(room, self.notice_lines(f"{m.nick} set the topic of {room.name} to: {room.topic}"))

    def who(self, m: Member) -> None:
        room = m.room
        if room is None:
            return
        names = sorted((x.nick or "" for x in room.members.values()), key=name_key)
        self.list_lines(m, f"Members of {room.name} ({len(names)}): ", names)

    def list_rooms(self, m: Member) -> None:
        configured = [r for r in self.rooms.values() if r.configured]
        others = sorted((r for r in self.rooms.values() if not r.configured), key=lambda r: r.key)
        items = [f"{r.name} ({len(r.members)})" for r in configured + others]
        self.list_lines(m, "Rooms: ", items)

    def list_lines(self, m: Member, head: str, items: list[str]) -> None:
        out: list[bytes] = []
        line: list[str] = []
        width = 0
        for item in items:
            if line and width + len(item) > LIST_WIDTH:
                out.append(self.notice_lines(head + ", ".join(line)))
                line, width = [], 0
            line.append(item)
            width += len(item) + 2
        out.append(self.notice_lines(head + ", ".join(line)))
        self.tell(m, b"".join(out))

    def help(self, m: Member) -> None:
        self.tell(m, b"".join(self.notice_lines(text) for text in HELP))
