"""
Chat text formats: every line a line client (nc, telnet, `socksvc chat`)
receives is made here. L{Formatter} is the line view: it renders chat
events (L{socksvc.services.chat.events}) as lines.

A live line is an optional C{[HH:MM] } stamp, the body with every unsafe
character made visible, and CRLF; notices start with C{-!- }; replayed
history lines with C{[history HH:MM] }. The line shapes are in
L{socksvc.wire}, which the console client parses with.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from socksvc.services.chat.events import (
    ACTION,
    ROOM_EVENTS,
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
from socksvc.wire import (
    CHAT_ERROR_TEXT,
    CHAT_HISTORY,
    CHAT_MISSED,
    CHAT_NICK_ACCEPTED,
    CHAT_NOTICE,
    CHAT_PRIVATE_SENT,
)

CRLF = b"\r\n"
LIST_WIDTH = 400  # characters of names on one /who or /rooms line


class Formatter:
    """
    Formats lines for one chat service (timestamps per its settings, times
    from its clock); the view of every line member.
    """

    def __init__(self, clock: Any, timestamps: bool) -> None:
        self.clock = clock
        self.timestamps = timestamps
        self._stamp_minute = -1
        self._stamp_text = ""

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
        if self.timestamps:
            body = f"[{self.stamp()}] {body}"
        return body.encode("utf-8") + CRLF

    def notice_lines(self, text: str) -> bytes:
        return self.line(CHAT_NOTICE + text)

    def history_line(self, when: float, body: str) -> bytes:
        """A line replayed from a room's history (C{body} is already visible)."""
        return f"[{CHAT_HISTORY} {self.stamp(when)}] {body}".encode() + CRLF

    def notice_list(self, head: str, items: list[str]) -> bytes:
        """Notices listing C{items} after C{head}, wrapped at L{LIST_WIDTH} characters."""
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
        return b"".join(out)

    # -- the line view: events as line-client lines ---------------------------

    kind = "line"
    wrap: Callable[[bytes], bytes] | None = None
    auto_join = True
    """Line clients land in the first room when they register."""

    def room(self, ev: Event) -> bytes:
        """A room event (the same bytes for every line member of the room)."""
        kind = type(ev)
        if kind is Said:
            if ev.kind == ACTION:
                return self.line(f"* {ev.nick} {ev.text}")
            return self.line(f"<{ev.nick}> {ev.text}")
        if kind is Joined:
            return self.notice_lines(f"{ev.nick} has joined {ev.room}")
        if kind is Left:
            return self.notice_lines(f"{ev.nick} has left {ev.room}" + (f" ({ev.reason})" if ev.reason else ""))
        if kind is Quit:
            return self.notice_lines(f"{ev.nick} has quit" + (f" ({ev.reason})" if ev.reason else ""))
        if kind is Renamed:
            return self.notice_lines(f"{ev.old} is now known as {ev.new}")
        if kind is Topic:
            if ev.text:
                return self.notice_lines(f"{ev.nick} set the topic of {ev.room} to: {ev.text}")
            return self.notice_lines(f"{ev.nick} cleared the topic of {ev.room}")
        if kind is RoomNotice:
            return self.notice_lines(ev.text)
        return self.personal(ev, None)

    def personal(self, ev: Event, m: Any) -> bytes:
        """An event for one member (C{m}, the L{socksvc.services.chat.delivery.Member}; None for a room event)."""
        kind = type(ev)
        if kind is Notice or kind is Bye:
            return self.notice_lines(ev.text)
        if kind is Error:
            return self.notice_lines(CHAT_ERROR_TEXT + ev.text)
        if kind is Private:
            if ev.kind == ACTION:
                return self.line(f"*{ev.sender}* * {ev.sender} {ev.text}")
            return self.line(f"*{ev.sender}* {ev.text}")
        if kind is PrivateSent:
            text = f"* {m.nick} {ev.text}" if ev.kind == ACTION and m is not None else ev.text
            return self.line(f"{CHAT_PRIVATE_SENT}*{ev.target}* {text}")
        if kind is Nick:
            return self.notice_lines(CHAT_NICK_ACCEPTED + ev.nick + (f" ({ev.why})" if ev.why else ""))
        if kind is Entered:
            room = ev.room
            size = ev.size
            out = self.notice_lines(f"You are now in {room.name} ({size} member{'' if size == 1 else 's'})")
            if room.topic:
                out += self.notice_lines(f"Topic of {room.name}: {room.topic}")
            for when, said in ev.history:
                body = f"* {said.nick} {said.text}" if said.kind == ACTION else f"<{said.nick}> {said.text}"
                out += self.history_line(when, visible(body))
            return out
        if kind is RoomTopic:
            if ev.text:
                return self.notice_lines(f"Topic of {ev.room}: {ev.text}")
            return self.notice_lines(f"No topic is set for {ev.room}")
        if kind is Roster:
            names = sorted((x.nick or "" for x in ev.room.members.values()), key=name_key)
            return self.notice_list(f"Members of {ev.room.name} ({len(names)}): ", names)
        if kind is RoomList:
            return self.notice_list("Rooms: ", [f"{name} ({count})" for name, count in ev.rooms])
        if kind is Missed:
            return self.notice_lines(CHAT_MISSED.format(missed=ev.lines))
        if isinstance(ev, ROOM_EVENTS):
            return self.room(ev)
        raise TypeError(f"not a chat event: {ev!r}")
