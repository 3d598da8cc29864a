"""
Chat events: what happened, as data. Each kind of client renders them its
own way (a view: L{socksvc.services.chat.formats.Formatter} for line
clients, the IRC view, the web view).

The state's actions make events and hand them to delivery; nothing in the
state writes a client's bytes. Events sent to a room (L{ROOM_EVENTS}) must
render the same for every member of one view (so a room's share is rendered
once per view, not once per member); the others are for one member and may
refer to local objects (a L{Room}, to list its members when rendered).

Text fields hold what the client sent (decoded, not yet escaped): every
view escapes it where it encodes (L{socksvc.services.chat.sanitize.visible}),
so nothing reaches a client unescaped whichever view renders it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

SAY = "say"
ACTION = "action"
NOTICE = "notice"
"""Kinds of L{Said} and L{Private}: a plain message, C{/me} (CTCP ACTION), an IRC NOTICE."""


# -- room events: the same bytes for every member of one view ------------------


class Said(NamedTuple):
    """NICK said TEXT in ROOM (C{kind}: L{SAY}, L{ACTION}, L{NOTICE})."""

    room: str
    nick: str
    text: str
    kind: str = SAY


class Joined(NamedTuple):
    room: str
    nick: str


class Left(NamedTuple):
    """NICK left ROOM (moved to another room, or an IRC PART)."""

    room: str
    nick: str
    reason: str = ""


class Quit(NamedTuple):
    """NICK disconnected (sent once to everyone sharing a room with it)."""

    nick: str
    reason: str = ""


class Renamed(NamedTuple):
    """OLD is now NEW (sent once to everyone sharing a room with it)."""

    old: str
    new: str


class Topic(NamedTuple):
    """NICK set ROOM's topic to TEXT; an empty TEXT cleared it."""

    room: str
    nick: str
    text: str


class RoomNotice(NamedTuple):
    """A server notice to everyone in ROOM (another service's announcement)."""

    room: str
    text: str


ROOM_EVENTS = (Said, Joined, Left, Quit, Renamed, Topic, RoomNotice)


# -- events for one member --------------------------------------------------------


class Notice(NamedTuple):
    """A server notice: free text (a welcome, a MOTD line, help, a hint)."""

    text: str


class Error(NamedTuple):
    """
    What the member sent was refused: C{text} says why. C{code} names the
    case for views that have their own replies (IRC numerics): C{nick_taken},
    C{nick_bad}, C{no_nick}, C{room}, C{flood}, C{too_long}, C{not_in_room}.
    C{arg} is what was refused (the nickname, the room).
    """

    text: str
    code: str = ""
    arg: str = ""


class Private(NamedTuple):
    """A private message from SENDER to the member (C{target} is the member's nick)."""

    sender: str
    target: str
    text: str
    kind: str = SAY


class PrivateSent(NamedTuple):
    """The member's own private message to TARGET, confirmed."""

    target: str
    text: str
    kind: str = SAY


class Nick(NamedTuple):
    """
    The member's nickname is now NICK (OLD: the one before, or None on
    registering; WHY: "" or "nickname collision", when the cluster renamed it).
    """

    nick: str
    old: str | None
    why: str = ""


class Entered(NamedTuple):
    """
    The member is now in ROOM (SIZE members, itself included); HISTORY is
    the room's last lines, (when, L{Said}), to replay. LIVE: the room
    announces joins and parts (it is within C{announce_max}); a view that
    keeps a roster lists the members only then (an auditorium's roster would
    go stale at once, and listing 10,000 names on every join costs the
    server what 10,000 joins cost), and otherwise only on request.
    """

    room: Any
    """The L{socksvc.services.chat.delivery.Room} (a local object: views list its members)."""
    size: int
    history: tuple[tuple[float, Said], ...] = ()
    live: bool = True


class RoomTopic(NamedTuple):
    """ROOM's topic, asked for or shown on joining (empty: none is set)."""

    room: str
    text: str


class Roster(NamedTuple):
    """Who is in ROOM (the reply to /who)."""

    room: Any
    """The L{socksvc.services.chat.delivery.Room}."""


class RoomList(NamedTuple):
    """Every room with its member count, configured rooms first (the reply to /rooms)."""

    rooms: tuple[tuple[str, int], ...]


class Bye(NamedTuple):
    """The last thing the member hears: C{Disconnected: REASON}, or the shutdown notice."""

    text: str


class Missed(NamedTuple):
    """The member fell behind and caught up: LINES lines were dropped for it."""

    lines: int


Event = Any
"""Any of the event classes above (a NamedTuple: renderers dispatch on its type)."""
