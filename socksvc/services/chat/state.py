"""
Chat state: the roster, rooms and history, and what members do in them.

Plain objects given a clock: no sockets here. The state outlives a config
reload: the service type makes it once (C{make_state}) and the daemon gives
it new settings with L{ChatState.reconfigure}. Delivery (outboxes, batching,
stalls) is L{socksvc.services.chat.delivery}; line formats are
L{socksvc.services.chat.formats}; the command surface (names, usage, help,
what works before a nickname) is L{socksvc.services.chat.commands}, which
calls the actions here.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from socksvc.core.service import SHOWN, RoomStatus, ServiceStatus
from socksvc.services.chat.delivery import Connection, Delivery, Member, Room
from socksvc.services.chat.formats import Formatter
from socksvc.services.chat.names import look_key
from socksvc.services.chat.sanitize import clip, name_key, nick_check, room_check, visible
from socksvc.util.ratelimit import RateLimitedLog, TokenBucket

log = Logger(namespace="socksvc")

WELCOME_HOLD = 0.02  # seconds the welcome waits for a nickname to go out with
REASON_MAX = 200  # characters of a /quit reason
NOTICE_MAX = 1000  # characters of a notice another service posts


def _nothing() -> None:
    pass


class ChatState(Delivery):
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
        self.fmt = Formatter(clock, settings.timestamps)
        # Counters for metrics (read at scrape time): one addition per event.
        self.lines = 0
        """Lines members said: room messages, actions, private messages."""
        self.lines_flooded = 0
        """Input lines dropped by flood control."""
        self.lines_too_long = 0
        """Input lines dropped for being over max_line."""
        self.lines_missed = 0
        """Lines not delivered to a stalled member (one per member that missed one)."""
        super().__init__()
        self._log_limit = RateLimitedLog(clock)
        self._held: list[Member] = []
        self._hold_timer: IDelayedCall | None = None
        self.unsubscribe: Callable[[], None] = _nothing
        """Stops L{post_notice} being called (set when subscribed to the daemon's notice bus)."""
        self.reconfigure(settings)

    # -- settings ------------------------------------------------------------

    def reconfigure(self, settings: Any) -> None:
        """Apply new settings to the live state."""
        self.settings = settings
        self.fmt.timestamps = settings.timestamps
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
            self.to_room(room, self.fmt.notice_lines(announce))
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
        conn.send_last(self.fmt.notice_lines(f"Disconnected: {reason}"), reason)

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

    def post_notice(self, room: str, text: str) -> bool:
        """
        A server notice from another service of the daemon (smtp's announce,
        through the notice bus): one C{-!- } line to C{room} if it exists,
        escaped like every chat line. False when there is no such room.
        """
        found = self.rooms.get(name_key(room.removeprefix("#")))
        if found is None:
            return False
        self.to_room(found, self.fmt.notice_lines(clip(text, NOTICE_MAX)))
        return True

    def shutdown(self) -> None:
        """The service is stopping: tell everyone, close."""
        self.unsubscribe()
        data = self.fmt.notice_lines("server is shutting down")
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

    def status(self) -> ServiceStatus:
        """Members with a nickname, rooms and line counts (STATUS=, metrics); the largest rooms and some names."""
        counters = {
            "rooms": len(self.rooms),
            "chat_lines": self.lines,
            "chat_lines_dropped_flood": self.lines_flooded,
            "chat_lines_dropped_too_long": self.lines_too_long,
            "chat_lines_dropped_stalled": self.lines_missed,
        }
        largest = heapq.nlargest(SHOWN, self.rooms.values(), key=lambda r: len(r.members))
        rooms = tuple(RoomStatus(r.name, len(r.members), visible(r.topic)) for r in largest)
        names = tuple(m.nick or "" for m in itertools.islice(self.nicks.values(), SHOWN))
        return ServiceStatus(members=len(self.nicks), counters=counters, rooms=rooms, names=names)

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
        self.lines_flooded += 1
        quiet = s.flood_burst / s.flood_rate
        if m.flood_since is None or now - m.last_drop > quiet:
            m.flood_since = now
            self.notice(m, f"error: flooding: lines are being dropped (limit {s.flood_rate:g} lines/s)")
        m.last_drop = now
        if s.flood_kick > 0 and now - m.flood_since >= s.flood_kick:
            self.kick(m, "flooding")
        return False

    def too_long(self, m: Member) -> None:
        self.lines_too_long += 1
        self.notice(m, f"error: line too long (over {self.settings.max_line} bytes); not sent")

    def no_line_end(self, m: Member) -> None:
        self.kick(m, f"line too long (no line end in {8 * self.settings.max_line} bytes)")

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
            self.to_room(room, self.fmt.notice_lines(f"{old} is now known as {name}"), exclude=m)

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
            self.to_room(room, self.fmt.notice_lines(f"{m.nick} has joined {room.name}"), exclude=m)
        count = len(room.members)
        self.notice(m, f"You are now in {room.name} ({count} member{'' if count == 1 else 's'})")
        if room.topic:
            self.notice(m, f"Topic of {room.name}: {room.topic}")
        if room.history:
            out = []
            for when, body in room.history:
                out.append(self.fmt.history_line(when, body))
            self.tell(m, b"".join(out))

    def _said(self, m: Member, body: str) -> None:
        room = m.room
        if room is None:
            return
        now = self.clock.seconds()
        body = visible(body)
        self.lines += 1
        if room.history.maxlen:
            room.history.append((now, body))
        self.to_room(room, self.fmt.line(body), exclude=m)

    def say(self, m: Member, text: str) -> None:
        self._said(m, f"<{m.nick}> {text}")

    def action(self, m: Member, text: str) -> None:
        self._said(m, f"* {m.nick} {text}")

    def privmsg(self, m: Member, nick: str, text: str) -> None:
        target = self.nicks.get(name_key(nick))
        if target is None:
            self.notice(m, f"error: no such nick: {nick}")
            return
        self.lines += 1
        self.tell(target, self.fmt.line(f"*{m.nick}* {text}"))
        self.notice_free(m, f"-> *{target.nick}* {text}")

    def notice_free(self, m: Member, body: str) -> None:
        self.tell(m, self.fmt.line(body))

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
            self.to_room(room, self.fmt.notice_lines(f"{m.nick} cleared the topic of {room.name}"))
            return
        room.topic = clip(text, REASON_MAX)
        self.to_room(room, self.fmt.notice_lines(f"{m.nick} set the topic of {room.name} to: {room.topic}"))

    def who(self, m: Member) -> None:
        room = m.room
        if room is None:
            return
        names = sorted((x.nick or "" for x in room.members.values()), key=name_key)
        self.tell(m, self.fmt.notice_list(f"Members of {room.name} ({len(names)}): ", names))

    def list_rooms(self, m: Member) -> None:
        configured = [r for r in self.rooms.values() if r.configured]
        others = sorted((r for r in self.rooms.values() if not r.configured), key=lambda r: r.key)
        items = [f"{r.name} ({len(r.members)})" for r in configured + others]
        self.tell(m, self.fmt.notice_list("Rooms: ", items))
