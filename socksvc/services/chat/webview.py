"""
The web view of the chat: chat events as JSON for the chat page.

One JSON object a line, UTF-8; a batch of events is one WebSocket text
message of such lines (the page splits it). Every text field is escaped
here (L{visible}: controls and bidi overrides shown as escapes), and the
page inserts every field as text, never as HTML.

Object types (C{t}): C{say} (C{kind} action or notice; none for a plain line), C{join},
C{part}, C{quit}, C{nick}, C{topic}, C{notice}, C{error}, C{private},
C{sent}, C{you}, C{room}, C{who}, C{rooms}, C{bye}, C{missed}. docs/chat.md
lists their fields.
"""

from __future__ import annotations

import json
from typing import Any

from socksvc.services.chat.events import (
    ROOM_EVENTS,
    SAY,
    Bye,
    Entered,
    Error,
    Event,
    Joined,
    Left,
    Missed,
    Nick,
    Notice,
    Private,
    PrivateSent,
    Quit,
    Renamed,
    RoomList,
    RoomNotice,
    RoomTopic,
    Roster,
    Said,
    Topic,
)
from socksvc.services.chat.sanitize import name_key, visible

ROSTER_MAX = 2000
"""Names sent with a room (a bigger room's list is cut; C{size} still counts everyone)."""

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _line(obj: dict[str, Any]) -> bytes:
    return _dumps(obj).encode("utf-8") + b"\n"


def roster(room: Any) -> list[str]:
    nicks = sorted((m.nick for m in room.members.values() if m.nick), key=name_key)
    return nicks[:ROSTER_MAX]


class WebView:
    """The web page's view of one chat service (L{socksvc.services.chat.delivery.View})."""

    kind = "web"
    auto_join = True
    """The page lands in the first room when its nickname is taken, as a line client does."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock

    @staticmethod
    def wrap(payload: bytes) -> bytes:
        """
        A chunk of events as one unmasked text frame (RFC 6455 5.2): made once
        for a room's batch and written to every web member, as line clients'
        lines are; built here, not by autobahn's sendMessage, whose
        maxMessagePayloadSize caps what we send too (a batch is bigger than a
        line of input).
        """
        size = len(payload)
        if size < 126:
            head = bytes((0x81, size))
        elif size < 1 << 16:
            head = bytes((0x81, 126)) + size.to_bytes(2, "big")
        else:
            head = bytes((0x81, 127)) + size.to_bytes(8, "big")
        return head + payload

    def room(self, ev: Event) -> bytes:
        kind = type(ev)
        if kind is Said:
            # A web member is in one room, and a room's lines reach it before the news that it
            # moved (delivery settles a room before its members change): no room field needed.
            if ev.kind == SAY:  # the common case, kept short: no kind
                return _line({"t": "say", "nick": ev.nick, "text": visible(ev.text)})
            return _line({"t": "say", "nick": ev.nick, "text": visible(ev.text), "kind": ev.kind})
        if kind is Joined:
            return _line({"t": "join", "room": ev.room, "nick": ev.nick})
        if kind is Left:
            return _line({"t": "part", "room": ev.room, "nick": ev.nick, "reason": visible(ev.reason)})
        if kind is Quit:
            return _line({"t": "quit", "nick": ev.nick, "reason": visible(ev.reason)})
        if kind is Renamed:
            return _line({"t": "nick", "old": ev.old, "new": ev.new})
        if kind is Topic:
            return _line({"t": "topic", "room": ev.room, "nick": ev.nick, "text": visible(ev.text)})
        if kind is RoomNotice:
            return _line({"t": "notice", "room": ev.room, "text": visible(ev.text)})
        return self.personal(ev, None)

    def personal(self, ev: Event, m: Any) -> bytes:
        kind = type(ev)
        if kind is Notice:
            return _line({"t": "notice", "text": visible(ev.text)})
        if kind is Error:
            return _line({"t": "error", "text": visible(ev.text), "code": ev.code})
        if kind is Private:
            return _line(
                {"t": "private", "from": ev.sender, "to": ev.target, "text": visible(ev.text), "kind": ev.kind}
            )
        if kind is PrivateSent:
            return _line({"t": "sent", "to": ev.target, "text": visible(ev.text), "kind": ev.kind})
        if kind is Nick:
            you: dict[str, Any] = {"t": "you", "nick": ev.nick, "old": ev.old}
            if ev.why:
                you["why"] = ev.why  # the cluster renamed it (nickname collision)
            return _line(you)
        if kind is Entered:
            room = ev.room
            history = [
                {"time": int(when), "nick": said.nick, "text": visible(said.text), "kind": said.kind}
                for when, said in ev.history
            ]
            return _line(
                {
                    "t": "room",
                    "room": room.name,
                    "size": ev.size,
                    "topic": visible(room.topic),
                    "members": roster(room) if ev.live else [m.nick] if m is not None else [],
                    "live": ev.live,
                    "history": history,
                }
            )
        if kind is RoomTopic:
            return _line({"t": "topic", "room": ev.room, "nick": "", "text": visible(ev.text)})
        if kind is Roster:
            room = ev.room
            return _line({"t": "who", "room": room.name, "size": len(room.members), "members": roster(room)})
        if kind is RoomList:
            return _line({"t": "rooms", "rooms": [[name, size] for name, size in ev.rooms]})
        if kind is Bye:
            return _line({"t": "bye", "text": visible(ev.text)})
        if kind is Missed:
            return _line({"t": "missed", "lines": ev.lines})
        if isinstance(ev, ROOM_EVENTS):
            return self.room(ev)  # our own part, say
        raise TypeError(f"not a chat event: {ev!r}")
