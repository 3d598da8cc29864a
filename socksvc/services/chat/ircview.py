"""
The IRC view of the chat: chat events as IRC lines (RFC 1459/2812, with the
modern client conventions of https://modern.ircdocs.horse).

Every line is built here, as bytes: the text a client sent is escaped
(L{visible}: no control character, so no CTCP, colour code or line end
another client did not mean) and a line longer than IRC's 512 bytes
(CRLF included) is split at a character boundary, preferring a space, into
several lines of the same command. Names (nicknames, rooms) obey the chat's
name rules, so they never hold a space, a colon or a comma.

A chat member is C{NICK!NICK@SERVER} to IRC clients; room C{lobby} is
channel C{#lobby}.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from socksvc.services.chat.events import (
    ACTION,
    NOTICE,
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
from socksvc.wire import CHAT_ERROR_TEXT, CHAT_HISTORY, CHAT_MISSED

MAX_LINE = 512
"""Bytes of one IRC line, CRLF included (RFC 1459 2.3)."""
CRLF = b"\r\n"
ACTION_START = "\x01ACTION "
ACTION_END = "\x01"

# The numerics this server sends (RFC 2812 section 5, and the modern ircdocs).
RPL_WELCOME, RPL_YOURHOST, RPL_CREATED, RPL_MYINFO, RPL_ISUPPORT = "001", "002", "003", "004", "005"
RPL_UMODEIS, RPL_LUSERCLIENT, RPL_AWAY = "221", "251", "301"
RPL_USERHOST, RPL_ISON, RPL_UNAWAY, RPL_NOWAWAY = "302", "303", "305", "306"
RPL_WHOISUSER, RPL_WHOISSERVER, RPL_ENDOFWHO, RPL_ENDOFWHOIS, RPL_WHOISCHANNELS = "311", "312", "315", "318", "319"
RPL_LISTSTART, RPL_LIST, RPL_LISTEND, RPL_CHANNELMODEIS, RPL_CREATIONTIME = "321", "322", "323", "324", "329"
RPL_NOTOPIC, RPL_TOPIC, RPL_TOPICWHOTIME = "331", "332", "333"
RPL_VERSION, RPL_WHOREPLY, RPL_NAMREPLY, RPL_ENDOFNAMES, RPL_ENDOFBANLIST = "351", "352", "353", "366", "368"
RPL_MOTD, RPL_MOTDSTART, RPL_ENDOFMOTD, RPL_TIME = "372", "375", "376", "391"
ERR_NOSUCHNICK, ERR_NOSUCHCHANNEL, ERR_CANNOTSENDTOCHAN, ERR_TOOMANYTARGETS = "401", "403", "404", "407"
ERR_NORECIPIENT, ERR_NOTEXTTOSEND, ERR_INPUTTOOLONG, ERR_UNKNOWNCOMMAND = "411", "412", "417", "421"
ERR_NOMOTD, ERR_NONICKNAMEGIVEN, ERR_ERRONEUSNICKNAME, ERR_NICKNAMEINUSE = "422", "431", "432", "433"
ERR_NOTONCHANNEL, ERR_NOTREGISTERED, ERR_NEEDMOREPARAMS, ERR_ALREADYREGISTERED = "442", "451", "461", "462"
ERR_CHANOPRIVSNEEDED, ERR_UMODEUNKNOWNFLAG, ERR_USERSDONTMATCH, ERR_INVALIDCAPCMD = "482", "501", "502", "410"


def split_text(text: str, room: int) -> list[str]:
    """
    C{text} in pieces of at most C{room} UTF-8 bytes, cut at character
    boundaries, preferring the last space of a piece's second half.
    """
    data = text.encode("utf-8")
    if len(data) <= room:
        return [text]
    room = max(room, 4)  # one character, whatever it is, always fits
    out: list[str] = []
    while len(data) > room:
        cut = room
        while cut > 0 and (data[cut] & 0xC0) == 0x80:  # not inside a UTF-8 sequence
            cut -= 1
        space = data.rfind(b" ", room // 2, cut)
        if space > 0:
            cut = space
        out.append(data[:cut].decode("utf-8"))
        data = data[cut + 1 :] if data[cut : cut + 1] == b" " and space > 0 else data[cut:]
    if data:
        out.append(data.decode("utf-8"))
    return out


def lines(head: str, text: str, start: str = "", end: str = "") -> bytes:
    """
    C{head} (prefix, command and middle parameters, ending with a space),
    then C{:start TEXT end} and CRLF: one line, or several when TEXT would
    make it longer than L{MAX_LINE} bytes. TEXT is made visible here.
    """
    head_b = f"{head}:{start}".encode()
    end_b = end.encode()
    text = visible(text)
    room = MAX_LINE - len(CRLF) - len(head_b) - len(end_b)
    data = text.encode("utf-8")
    if len(data) <= room:
        return head_b + data + end_b + CRLF
    return b"".join(head_b + part.encode("utf-8") + end_b + CRLF for part in split_text(text, room))


def channel(room: str) -> str:
    return "#" + room


class IrcView:
    """The IRC clients' view of one chat service (L{socksvc.services.chat.delivery.View})."""

    kind = "irc"
    wrap: Callable[[bytes], bytes] | None = None
    auto_join = False
    """IRC clients join the channels they want (JOIN): none is forced on them."""

    def __init__(self, server: str, clock: Any) -> None:
        self.server = server
        """This server's name: the prefix of its own lines, and every member's host."""
        self.clock = clock
        self.started = clock.seconds()
        """When the view was made (RPL_CREATED)."""

    def mask(self, nick: str) -> str:
        """A member as an IRC client sees it: C{NICK!NICK@SERVER}."""
        return f"{nick}!{nick}@{self.server}"

    def reply(self, numeric: str, target: str, *params: str, text: str | None = None) -> bytes:
        """A numeric reply to C{target} (a nickname, or C{*} before one is taken), with C{text} last."""
        head = f":{self.server} {numeric} {target} " + "".join(p + " " for p in params)
        if text is None:
            return head.rstrip(" ").encode("utf-8") + CRLF
        return lines(head, text)

    def stamp(self, when: float) -> str:
        return time.strftime("%H:%M", time.localtime(when))

    # -- room events -----------------------------------------------------------

    def room(self, ev: Event) -> bytes:
        kind = type(ev)
        if kind is Said:
            return self.said(self.mask(ev.nick), channel(ev.room), ev.text, ev.kind)
        if kind is Joined:
            return f":{self.mask(ev.nick)} JOIN {channel(ev.room)}".encode() + CRLF
        if kind is Left:
            head = f":{self.mask(ev.nick)} PART {channel(ev.room)}"
            return lines(head + " ", ev.reason) if ev.reason else head.encode() + CRLF
        if kind is Quit:
            return lines(f":{self.mask(ev.nick)} QUIT ", ev.reason or "Quit")
        if kind is Renamed:
            return f":{self.mask(ev.old)} NICK :{ev.new}".encode() + CRLF
        if kind is Topic:
            return lines(f":{self.mask(ev.nick)} TOPIC {channel(ev.room)} ", ev.text)
        if kind is RoomNotice:
            return lines(f":{self.server} NOTICE {channel(ev.room)} ", ev.text)
        return self.personal(ev, None)

    def said(self, source: str, target: str, text: str, kind: str) -> bytes:
        """A PRIVMSG (or NOTICE, or CTCP ACTION) from C{source} to C{target}."""
        if kind == ACTION:
            return lines(f":{source} PRIVMSG {target} ", text, ACTION_START, ACTION_END)
        return lines(f":{source} {'NOTICE' if kind == NOTICE else 'PRIVMSG'} {target} ", text)

    # -- events for one member -------------------------------------------------

    def personal(self, ev: Event, m: Any) -> bytes:
        me = m.nick if m is not None and m.nick else "*"
        kind = type(ev)
        if kind is Private:
            return self.said(self.mask(ev.sender), ev.target, ev.text, ev.kind)
        if kind is PrivateSent:
            return b""  # IRC clients show what they sent themselves
        if kind is Notice:
            return lines(f":{self.server} NOTICE {me} ", ev.text)
        if kind is Error:
            return self.error(ev, me)
        if kind is Entered:
            return self.entered(ev, me)
        if kind is Nick:
            if ev.old is None or ev.old == ev.nick:
                return b""  # registering: the welcome says it (see the IRC protocol)
            changed = f":{self.mask(ev.old)} NICK :{ev.nick}".encode() + CRLF
            if ev.why:
                changed += lines(f":{self.server} NOTICE {ev.nick} ", f"You are now known as {ev.nick} ({ev.why})")
            return changed
        if kind is Left:
            return self.room(ev)  # our own PART, confirmed
        if kind is RoomTopic:
            if ev.text:
                return self.reply(RPL_TOPIC, me, channel(ev.room), text=ev.text)
            return self.reply(RPL_NOTOPIC, me, channel(ev.room), text="No topic is set")
        if kind is Roster:
            return self.names(me, ev.room)
        if kind is RoomList:
            out = [self.reply(RPL_LISTSTART, me, "Channel", text="Users  Name")]
            out += [self.reply(RPL_LIST, me, channel(name), str(size), text="") for name, size in ev.rooms]
            out.append(self.reply(RPL_LISTEND, me, text="End of /LIST"))
            return b"".join(out)
        if kind is Bye:
            return lines("ERROR ", ev.text)
        if kind is Missed:
            return lines(f":{self.server} NOTICE {me} ", CHAT_MISSED.format(missed=ev.lines))
        if isinstance(ev, ROOM_EVENTS):
            return self.room(ev)
        raise TypeError(f"not a chat event: {ev!r}")

    def error(self, ev: Error, me: str) -> bytes:
        """A refusal as its numeric (a NOTICE where IRC has none)."""
        code, arg = ev.code, ev.arg
        if code == "nick_taken":
            return self.reply(ERR_NICKNAMEINUSE, me, arg or "*", text=ev.text)
        if code == "nick_bad":
            return self.reply(ERR_ERRONEUSNICKNAME, me, arg or "*", text=ev.text)
        if code == "no_nick":
            return self.reply(ERR_NOSUCHNICK, me, arg or "*", text="No such nick/channel")
        if code == "room":
            return self.reply(ERR_NOSUCHCHANNEL, me, channel(arg.removeprefix("#")), text=ev.text)
        if code == "joined":
            return b""
        if code == "too_long":
            return self.reply(ERR_INPUTTOOLONG, me, text="Input line was too long")
        return lines(f":{self.server} NOTICE {me} ", CHAT_ERROR_TEXT + ev.text)

    def entered(self, ev: Entered, me: str) -> bytes:
        """JOIN, the topic, the names, then the room's history as notices."""
        room = ev.room
        chan = channel(room.name)
        out = [f":{self.mask(me)} JOIN {chan}".encode() + CRLF]
        if room.topic:
            out.append(self.reply(RPL_TOPIC, me, chan, text=room.topic))
            out.append(self.reply(RPL_TOPICWHOTIME, me, chan, room.topic_by or self.server, str(int(room.topic_at))))
        if ev.live:
            out.append(self.names(me, room))
        else:
            head = f":{self.server} {RPL_NAMREPLY} {me} = {chan} :{me}".encode()
            out.append(head + CRLF + self.reply(RPL_ENDOFNAMES, me, chan, text="End of /NAMES list"))
            text = f"{chan} has {ev.size} members; joins and parts are not announced here (NAMES or WHO lists them)"
            out.append(lines(f":{self.server} NOTICE {me} ", text))
        for when, said in ev.history:
            body = f"* {said.nick} {said.text}" if said.kind == ACTION else f"<{said.nick}> {said.text}"
            out.append(lines(f":{self.server} NOTICE {chan} ", f"[{CHAT_HISTORY} {self.stamp(when)}] {body}"))
        return b"".join(out)

    def names(self, me: str, room: Any) -> bytes:
        """RPL_NAMREPLY lines (as many as 512 bytes need), then RPL_ENDOFNAMES."""
        chan = channel(room.name)
        nicks = sorted((m.nick for m in room.members.values() if m.nick), key=name_key)
        head = f":{self.server} {RPL_NAMREPLY} {me} = {chan} :".encode()
        room_left = MAX_LINE - len(CRLF) - len(head)
        out: list[bytes] = []
        line: list[bytes] = []
        size = 0
        for nick in nicks:
            data = nick.encode("utf-8")
            if line and size + 1 + len(data) > room_left:
                out.append(head + b" ".join(line) + CRLF)
                line, size = [], 0
            size += len(data) + (1 if line else 0)
            line.append(data)
        if line:
            out.append(head + b" ".join(line) + CRLF)
        out.append(self.reply(RPL_ENDOFNAMES, me, chan, text="End of /NAMES list"))
        return b"".join(out)
