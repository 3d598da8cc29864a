"""
Chat state: the roster, rooms and history, and what members do in them.

Plain objects given a clock: no sockets here. The state outlives a config
reload: the service type makes it once (C{make_state}) and the daemon gives
it new settings with L{ChatState.reconfigure}. Delivery (outboxes, batching,
stalls) is L{socksvc.services.chat.delivery}; the actions here make events
(L{socksvc.services.chat.events}) and each member's view renders them (line
formats: L{socksvc.services.chat.formats}; IRC and web views: L{socksvc.
services.chat.ircview}, L{socksvc.services.chat.web}). The line command
surface (names, usage, help, what works before a nickname) is
L{socksvc.services.chat.commands}; the IRC commands
(L{socksvc.services.chat.irc}) and the web page's lines call the same
actions, so one roster, one set of rooms and one history serve every client.

A member is in one room (line and web clients: C{member.room}), or, an IRC
client, in any number (C{member.room} and C{member.more}); see docs/chat.md.
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
from socksvc.services.chat.cluster import Cluster
from socksvc.services.chat.delivery import Connection, Member, Room, View
from socksvc.services.chat.events import SAY, Bye, Nick, Private, PrivateSent, Quit, Renamed, RoomNotice
from socksvc.services.chat.formats import Formatter
from socksvc.services.chat.names import look_key
from socksvc.services.chat.rooms import REASON_MAX, RoomActions
from socksvc.services.chat.sanitize import clip, name_key, nick_check, visible
from socksvc.util.ratelimit import RateLimitedLog, TokenBucket
from socksvc.wire import CHAT_DISCONNECTED, CHAT_QUIT, CHAT_SHUTDOWN

log = Logger(namespace="socksvc")

WELCOME_HOLD = 0.02  # seconds the welcome waits for a nickname to go out with
NOTICE_MAX = 1000  # characters of a notice another service posts


def _nothing() -> None:
    pass


class ChatState(RoomActions):
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
        self.views: dict[str, Any] = {}
        """The views of the other kinds of client (irc, web), made by their listeners on first use."""
        self.unsubscribe: Callable[[], None] = _nothing
        """Stops L{post_notice} being called (set when subscribed to the daemon's notice bus)."""
        self.cluster: Cluster | None = None
        """With a bus: this node of the cluster; members' actions become bus entries (docs/chat-bus.md)."""
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
                self.add_room(Room(name, settings.history, configured=True, created=self.clock.seconds()))
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

    # -- logging -------------------------------------------------------------

    def log_event(self, event: str, fmt: str, **fields: Any) -> None:
        def emit(held: int) -> None:
            more = f" (and {held} more such events)" if held else ""
            log.info(fmt + "{more}", event=event, service=self.service, more=more, **fields)

        self._log_limit(event, emit)

    # -- connections ---------------------------------------------------------

    def connect(self, conn: Connection, view: View | None = None) -> Member:
        """
        A new connection (a line client, or the web page's, with its
        C{view}): welcome it and ask for a nickname. The welcome is held for
        a moment (L{WELCOME_HOLD}): a client that sends its nickname at once
        (scripts, `socksvc chat`) then gets the welcome and its registration
        in one write. Its first input releases it; a timer releases
        everyone else's.
        """
        m = Member(self, conn, view)
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

    def attach(self, conn: Connection, view: View) -> Member:
        """A new connection that registers its own way (IRC: NICK and USER): a member, with no welcome."""
        m = Member(self, conn, view)
        self.members.add(m)
        return m

    def ask_nick(self, m: Member) -> None:
        limit = self.settings.nick_max
        self.notice(m, f"Choose a nickname: letters, digits, _ - . (at most {limit} characters)")

    def remove(self, m: Member, reason: str | None) -> None:
        """C{m} is gone: tell its rooms (each member sharing one once), forget it."""
        if m.gone:
            return
        if m.nick is not None:
            with self.batch():
                told = [room for room in m.rooms() if self.announces(room)]
                for room in m.rooms():
                    self.leave(m, room, None)
                quit = Quit(m.nick, reason or "")
                for room in told:
                    if room.members:
                        self.to_room(room, quit)
            if m.key is not None and self.nicks.get(m.key) is m:
                del self.nicks[m.key]
            if m.look is not None and self.looks.get(m.look) is m:
                del self.looks[m.look]
        m.drop()
        self.members.discard(m)

    def gone(self, m: Member, reason: str | None) -> None:
        """
        C{m}'s connection is gone: remove it, or, with a bus, stop its output
        and tell the cluster (it leaves its rooms when the quit comes back).
        """
        if self.cluster is not None and m.origin is None:
            self.cluster.depart(m, reason or "")
        else:
            self.remove(m, reason)

    def disconnected(self, m: Member, reason: str | None = "connection closed") -> None:
        """The connection went away (read side closed, reset, aborted)."""
        with self.batch():
            self.gone(m, reason)

    def kick(self, m: Member, reason: str) -> None:
        """Disconnect C{m} at once, telling it (best effort) and its room why."""
        if m.gone:
            return
        self.log_event("kick", "{service}: disconnecting {nick}: {reason}", nick=m.nick or "(no nick)", reason=reason)
        conn = m.conn
        last = m.render(Bye(CHAT_DISCONNECTED + reason))
        self.gone(m, reason)
        conn.send_last(last, reason)

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
        self.emit(m, Bye(CHAT_QUIT))
        self.flush()
        m.release()
        conn = m.conn
        self.gone(m, reason or None)
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
        if self.cluster is not None:
            self.cluster.announce(found.name, clip(text, NOTICE_MAX))
        else:
            self.to_room(found, RoomNotice(found.name, clip(text, NOTICE_MAX)))
        return True

    def shutdown(self) -> None:
        """The service is stopping: tell everyone, close."""
        self.unsubscribe()
        if self.cluster is not None:
            self.cluster.stop()
        bye = Bye(CHAT_SHUTDOWN)
        self.flush()
        self.release_held()
        for m in list(self.members):
            conn = m.conn
            m.deliver(m.render(bye))
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
        if self.cluster is not None:
            counters.update(self.cluster.counters())
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
            self.error(m, f"flooding: lines are being dropped (limit {s.flood_rate:g} lines/s)", "flood")
        m.last_drop = now
        if s.flood_kick > 0 and now - m.flood_since >= s.flood_kick:
            self.kick(m, "flooding")
        return False

    def too_long(self, m: Member) -> None:
        self.lines_too_long += 1
        self.error(m, f"line too long (over {self.settings.max_line} bytes); not sent", "too_long")

    def no_line_end(self, m: Member) -> None:
        self.kick(m, f"line too long (no line end in {8 * self.settings.max_line} bytes)")

    # -- actions -------------------------------------------------------------

    def check_nick(self, m: Member, name: str) -> tuple[str, str | None, bool]:
        """
        Can C{m} take C{name}? C{(form, None, False)} if so (C{form}: the name
        as it is kept), else C{(name, why not, taken)}: C{taken} when it is
        (or looks like) a name in use, rather than not a name at all.
        """
        typed = name
        in_use = False

        def taken(form: str, look: str) -> str | None:
            nonlocal in_use
            holder, twin = self.nicks.get(name_key(form)), self.looks.get(look)
            if holder is not None and holder is not m:
                in_use = True
                return f"{typed} is taken"
            if twin is not None and twin is not m:
                in_use = True
                return f'"{typed}" looks like "{twin.nick}", which is in use'
            return None

        form, problem = nick_check(name, self.settings.nick_max, self.reserved, self.reserved_looks, taken)
        return form, problem, in_use

    def set_nick(self, m: Member, name: str, then: Callable[[bool], None] | None = None) -> None:
        """
        C{m} asks for nickname C{name}: refused (one error line), or taken,
        now or (with a bus) once the cluster agrees. C{then(taken)} is
        called when it is decided.
        """
        form, problem, in_use = self.check_nick(m, name)
        if problem is not None:
            self.error(m, f"nickname refused: {problem}", "nick_taken" if in_use else "nick_bad", name)
            if then is not None:
                then(False)
            return
        if self.cluster is not None and m.origin is None:
            self.cluster.nick(m, form, then)
            return
        self.apply_nick(m, form)
        if then is not None:
            then(True)

    def apply_nick(self, m: Member, name: str, why: str = "") -> None:
        """C{m} is now called C{name} (checked): tell it, and its rooms."""
        key, look = name_key(name), look_key(name)
        look = key if look == key else look  # most often the same: keep one string
        if self.nicks.get(key) is m and m.nick == name:
            self.emit(m, Nick(name, name))
            return
        if m.look is not None and self.looks.get(m.look) is m:
            del self.looks[m.look]
        m.look = look
        self.looks[look] = m
        old = m.nick
        if old is None:
            m.nick, m.key = name, key
            self.nicks[key] = m
            self.emit(m, Nick(name, None))
            if m.view.auto_join:
                if self.cluster is not None:
                    self.cluster.join(m, self.first_room(), False)
                else:
                    self.join_room(m, self.first_room())
            return
        assert m.key is not None
        if self.nicks.get(m.key) is m:
            del self.nicks[m.key]
        rooms = m.rooms()
        for room in rooms:
            self.settle(room)
            if room.members.get(m.key) is m:
                del room.members[m.key]
                room.members[key] = m
        m.nick, m.key = name, key
        self.nicks[key] = m
        with self.batch():
            self.emit(m, Nick(name, old, why))
            renamed = Renamed(old, name)
            for room in rooms:
                if self.announces(room):
                    self.to_room(room, renamed, exclude=m)

    def privmsg(self, m: Member, nick: str, text: str, kind: str = SAY) -> None:
        target = self.nicks.get(name_key(nick))
        if target is None or target.nick is None or m.nick is None:
            self.error(m, f"no such nick: {nick}", "no_nick", nick)
            return
        if self.cluster is not None:
            self.cluster.priv(m, target.nick, text, kind)
            return
        self.lines += 1
        self.emit(target, Private(m.nick, target.nick, text, kind))
        self.emit(m, PrivateSent(target.nick, text, kind))
