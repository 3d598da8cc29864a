"""
The IRC commands the chat's IRC listener answers: registration (CAP, NICK,
USER), channels (JOIN, PART, TOPIC, NAMES, LIST, MODE), messages (PRIVMSG,
NOTICE, CTCP ACTION), who is who (WHO, WHOIS, ISON, USERHOST), and the
rest a client sends on its own (PING, PONG, AWAY, MOTD, LUSERS, VERSION,
TIME, QUIT).

Each C{irc_COMMAND(prefix, params)} is called by C{IRC.handleCommand} (see
L{socksvc.services.chat.irc}). What changes the chat goes through the chat
state's actions; replies only this client needs are numerics built by the
view (L{socksvc.services.chat.ircview}) and sent through its outbox.
"""

from __future__ import annotations

import time
from typing import Any

from socksvc.core.service import ServiceContext
from socksvc.services.chat import ircview as rpl
from socksvc.services.chat.delivery import Member, Room
from socksvc.services.chat.events import ACTION, NOTICE, SAY
from socksvc.services.chat.ircview import IrcView, channel, lines
from socksvc.services.chat.rooms import REASON_MAX
from socksvc.services.chat.sanitize import ROOM_MAX, clip, name_key, visible
from socksvc.services.chat.state import ChatState

FREE = frozenset({"PING", "PONG", "QUIT", "CAP"})
"""Commands that take no flood token: keeping the connection alive, leaving, capability talk."""
BEFORE_REGISTRATION = frozenset({"CAP", "NICK", "USER", "PASS", "PING", "PONG", "QUIT"})
MAX_TARGETS = 4
"""Targets of one PRIVMSG or NOTICE (ISUPPORT MAXTARGETS)."""
REALNAME_MAX = 100
AWAY_MAX = 200


class IrcCommands:
    """The command half of one IRC client (L{socksvc.services.chat.irc.IrcConnection} is the other)."""

    member: Member | None
    context: ServiceContext[Any, ChatState]
    view: IrcView
    handleCommand: Any

    def init_commands(self) -> None:
        self.pending_nick: str | None = None
        self.username: str | None = None
        self.realname = ""
        self.cap_open = False
        self.registered = False
        self.away = ""

    @property
    def state(self) -> ChatState:
        return self.context.state

    @property
    def me(self) -> str:
        member = self.member
        return member.nick if member is not None and member.nick else "*"

    def out(self, data: bytes) -> None:
        if self.member is not None:
            self.state.tell(self.member, data)

    def send_reply(self, numeric: str, *params: str, text: str | None = None) -> None:
        """A numeric to this client; parameters that came from it are made visible and cut short."""
        shown = tuple(clip(visible(p), 64) or "*" for p in params)
        self.out(self.view.reply(numeric, self.me, *shown, text=text))

    def dispatch(self, command: str, prefix: str, params: list[str]) -> None:
        if not self.registered and command not in BEFORE_REGISTRATION:
            self.send_reply(rpl.ERR_NOTREGISTERED, text="You have not registered")
            return
        self.handleCommand(command, prefix, params)

    def find(self, name: str) -> Room | None:
        if not name.startswith("#"):
            return None
        return self.state.rooms.get(name_key(name[1:]))

    # -- registration ------------------------------------------------------------

    def irc_CAP(self, prefix: str, params: list[str]) -> None:
        sub = params[0].upper() if params else ""
        server = self.view.server
        if sub in ("LS", "REQ") and not self.registered:
            self.cap_open = True  # registration waits for CAP END (IRCv3)
        if sub == "LS" or sub == "LIST":
            self.out(f":{server} CAP {self.me} {sub} :\r\n".encode())
        elif sub == "REQ":
            self.out(lines(f":{server} CAP {self.me} NAK ", params[1] if len(params) > 1 else ""))
        elif sub == "END":
            self.cap_open = False
            self.try_register()
        else:
            self.send_reply(rpl.ERR_INVALIDCAPCMD, sub or "*", text="Invalid CAP command")

    def irc_PASS(self, prefix: str, params: list[str]) -> None:
        if self.registered:
            self.send_reply(rpl.ERR_ALREADYREGISTERED, text="You may not reregister")

    def irc_NICK(self, prefix: str, params: list[str]) -> None:
        member = self.member
        if not params or not params[0] or member is None:
            self.send_reply(rpl.ERR_NONICKNAMEGIVEN, text="No nickname given")
            return
        name = params[0]
        if self.registered:
            self.state.set_nick(member, name)
            return
        form, problem, taken = self.state.check_nick(member, name)
        if problem is not None:
            self.send_reply(rpl.ERR_NICKNAMEINUSE if taken else rpl.ERR_ERRONEUSNICKNAME, name, text=problem)
            return
        self.pending_nick = form
        self.try_register()

    def irc_USER(self, prefix: str, params: list[str]) -> None:
        if self.registered:
            self.send_reply(rpl.ERR_ALREADYREGISTERED, text="You may not reregister")
            return
        if len(params) < 4:
            self.send_reply(rpl.ERR_NEEDMOREPARAMS, "USER", text="Not enough parameters")
            return
        self.username = clip(visible(params[0]), 16)
        self.realname = clip(params[3], REALNAME_MAX)
        self.try_register()

    def try_register(self) -> None:
        """NICK and USER given, CAP negotiation over: take the nickname and welcome the client."""
        member = self.member
        if self.registered or self.cap_open or self.pending_nick is None or self.username is None or member is None:
            return
        nick, self.pending_nick = self.pending_nick, None
        # refused (taken meanwhile): 433, and a new NICK is awaited; with a bus, decided when the cluster agrees
        self.state.set_nick(member, nick, self.registered_as)

    def registered_as(self, taken: bool) -> None:
        member = self.member
        if not taken or self.registered or member is None or member.nick is None:
            return
        self.registered = True
        self.welcome()

    def welcome(self) -> None:
        view, settings = self.view, self.state.settings
        server, me = view.server, self.me
        created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(view.started))
        self.send_reply(rpl.RPL_WELCOME, text=f"Welcome to socksvc chat, {me}")
        self.send_reply(rpl.RPL_YOURHOST, text=f"Your host is {server}, running socksvc")
        self.send_reply(rpl.RPL_CREATED, text=f"This server was created {created}")
        self.send_reply(rpl.RPL_MYINFO, server, "socksvc", "i", "n")
        tokens = (
            "CASEMAPPING=rfc7613",
            "CHANTYPES=#",
            f"CHANNELLEN={ROOM_MAX + 1}",
            f"NICKLEN={settings.nick_max}",
            f"TOPICLEN={REASON_MAX}",
            f"AWAYLEN={AWAY_MAX}",
            "UTF8ONLY",
            "PREFIX=",
            "CHANMODES=,,,n",
            "NETWORK=socksvc",
            f"MAXTARGETS={MAX_TARGETS}",
            f"TARGMAX=PRIVMSG:{MAX_TARGETS},NOTICE:{MAX_TARGETS},JOIN:,PART:,NAMES:1,WHOIS:1",
            "SAFELIST",
        )
        self.send_reply(rpl.RPL_ISUPPORT, *tokens, text="are supported by this server")
        self.irc_LUSERS("", [])
        self.irc_MOTD("", [])

    # -- what a client sends on its own ------------------------------------------

    def irc_PING(self, prefix: str, params: list[str]) -> None:
        server = self.view.server
        self.out(lines(f":{server} PONG {server} ", clip(params[-1], 64) if params else ""))

    def irc_PONG(self, prefix: str, params: list[str]) -> None:
        """Any input counts as an answer to our PING (see the connection's ping_due)."""

    def irc_QUIT(self, prefix: str, params: list[str]) -> None:
        if self.member is not None:
            self.state.quit(self.member, params[0] if params else "")

    def irc_MOTD(self, prefix: str, params: list[str]) -> None:
        motd = [line for line in self.state.settings.motd.splitlines() if line.strip()]
        if not motd:
            self.send_reply(rpl.ERR_NOMOTD, text="MOTD File is missing")
            return
        self.send_reply(rpl.RPL_MOTDSTART, text=f"- {self.view.server} Message of the day -")
        for line in motd:
            self.send_reply(rpl.RPL_MOTD, text=f"- {line}")
        self.send_reply(rpl.RPL_ENDOFMOTD, text="End of /MOTD command")

    def irc_LUSERS(self, prefix: str, params: list[str]) -> None:
        users = len(self.state.nicks)
        self.send_reply(rpl.RPL_LUSERCLIENT, text=f"There are {users} users and 0 invisible on 1 servers")

    def irc_VERSION(self, prefix: str, params: list[str]) -> None:
        self.send_reply(rpl.RPL_VERSION, "socksvc.", self.view.server, text="socksvc chat")

    def irc_TIME(self, prefix: str, params: list[str]) -> None:
        now = time.strftime("%A %B %d %Y -- %H:%M:%S %z", time.localtime(self.context.reactor.seconds()))
        self.send_reply(rpl.RPL_TIME, self.view.server, text=now)

    def irc_AWAY(self, prefix: str, params: list[str]) -> None:
        self.away = clip(params[0], AWAY_MAX) if params and params[0] else ""
        if self.away:
            self.send_reply(rpl.RPL_NOWAWAY, text="You have been marked as being away")
        else:
            self.send_reply(rpl.RPL_UNAWAY, text="You are no longer marked as being away")

    def irc_unknown(self, prefix: str, command: str, params: list[str]) -> None:
        self.send_reply(rpl.ERR_UNKNOWNCOMMAND, command, text="Unknown command")

    # -- channels ------------------------------------------------------------------

    def irc_JOIN(self, prefix: str, params: list[str]) -> None:
        member = self.member
        if not params or member is None:
            self.send_reply(rpl.ERR_NEEDMOREPARAMS, "JOIN", text="Not enough parameters")
            return
        if params[0] == "0":
            for room in member.rooms():
                self.state.part(member, room, "Left all channels")
            return
        for name in params[0].split(","):
            if not name:
                continue
            if not name.startswith("#"):
                self.send_reply(rpl.ERR_NOSUCHCHANNEL, name, text="No such channel (channels start with #)")
                continue
            self.state.join(member, name[1:], stay=True)

    def irc_PART(self, prefix: str, params: list[str]) -> None:
        member = self.member
        if not params or member is None:
            self.send_reply(rpl.ERR_NEEDMOREPARAMS, "PART", text="Not enough parameters")
            return
        for name in params[0].split(","):
            room = self.find(name)
            if room is None:
                self.send_reply(rpl.ERR_NOSUCHCHANNEL, name, text="No such channel")
            elif not member.in_room(room):
                self.send_reply(rpl.ERR_NOTONCHANNEL, name, text="You're not on that channel")
            else:
                self.state.part(member, room, params[1] if len(params) > 1 else "")

    def irc_TOPIC(self, prefix: str, params: list[str]) -> None:
        member = self.member
        if not params or member is None:
            self.send_reply(rpl.ERR_NEEDMOREPARAMS, "TOPIC", text="Not enough parameters")
            return
        room = self.find(params[0])
        if room is None:
            self.send_reply(rpl.ERR_NOSUCHCHANNEL, params[0], text="No such channel")
        elif len(params) > 1:
            if member.in_room(room):
                self.state.set_topic(member, room, params[1])
            else:
                self.send_reply(rpl.ERR_NOTONCHANNEL, params[0], text="You're not on that channel")
        elif room.topic:
            self.send_reply(rpl.RPL_TOPIC, channel(room.name), text=room.topic)
            self.send_reply(rpl.RPL_TOPICWHOTIME, channel(room.name), room.topic_by or "*", str(int(room.topic_at)))
        else:
            self.send_reply(rpl.RPL_NOTOPIC, channel(room.name), text="No topic is set")

    def irc_NAMES(self, prefix: str, params: list[str]) -> None:
        name = params[0].split(",")[0] if params else "*"
        room = self.find(name)
        if room is not None and self.member is not None:
            self.state.who(self.member, room)
        else:
            self.send_reply(rpl.RPL_ENDOFNAMES, name, text="End of /NAMES list")

    def irc_LIST(self, prefix: str, params: list[str]) -> None:
        wanted = {name_key(n[1:]) for n in params[0].split(",") if n.startswith("#")} if params else None
        self.send_reply(rpl.RPL_LISTSTART, "Channel", text="Users  Name")
        for room in self.state.room_list():
            if wanted is None or room.key in wanted:
                self.send_reply(rpl.RPL_LIST, channel(room.name), str(len(room.members)), text=room.topic)
        self.send_reply(rpl.RPL_LISTEND, text="End of /LIST")

    def irc_MODE(self, prefix: str, params: list[str]) -> None:
        """Answered minimally: channels are +n (members only may speak), nobody is an operator."""
        member = self.member
        if not params or member is None:
            self.send_reply(rpl.ERR_NEEDMOREPARAMS, "MODE", text="Not enough parameters")
            return
        target = params[0]
        if target.startswith("#"):
            room = self.find(target)
            if room is None:
                self.send_reply(rpl.ERR_NOSUCHCHANNEL, target, text="No such channel")
            elif len(params) == 1:
                self.send_reply(rpl.RPL_CHANNELMODEIS, channel(room.name), "+n")
                self.send_reply(rpl.RPL_CREATIONTIME, channel(room.name), str(int(room.created)))
            elif params[1].lstrip("+") == "b":
                self.send_reply(rpl.RPL_ENDOFBANLIST, channel(room.name), text="End of channel ban list")
            else:
                self.send_reply(rpl.ERR_CHANOPRIVSNEEDED, channel(room.name), text="You're not channel operator")
        elif name_key(target) != member.key:
            self.send_reply(rpl.ERR_USERSDONTMATCH, text="Can't change mode for other users")
        elif len(params) == 1:
            self.send_reply(rpl.RPL_UMODEIS, "+")

    # -- messages --------------------------------------------------------------------

    def irc_PRIVMSG(self, prefix: str, params: list[str]) -> None:
        self.message(params, False)

    def irc_NOTICE(self, prefix: str, params: list[str]) -> None:
        self.message(params, True)

    def message(self, params: list[str], notice: bool) -> None:
        """PRIVMSG or NOTICE to channels and nicks (a NOTICE never gets an error back: RFC 2812 3.3.2)."""
        member = self.member
        if member is None:
            return
        if not params or not params[0]:
            if not notice:
                self.send_reply(rpl.ERR_NORECIPIENT, text="No recipient given (PRIVMSG)")
            return
        if len(params) < 2 or not params[1]:
            if not notice:
                self.send_reply(rpl.ERR_NOTEXTTOSEND, text="No text to send")
            return
        text, kind = params[1], NOTICE if notice else SAY
        if text.startswith("\x01"):
            word, _, rest = text[1:].rstrip("\x01").partition(" ")
            if word.upper() != "ACTION" or notice:
                return  # other CTCP (VERSION, PING...) is not relayed: a client would answer it for its user
            text, kind = rest, ACTION
        targets = params[0].split(",")
        if len(targets) > MAX_TARGETS:
            if not notice:
                self.send_reply(rpl.ERR_TOOMANYTARGETS, params[0], text=f"Too many targets (at most {MAX_TARGETS})")
            return
        for target in targets:
            if target.startswith("#"):
                room = self.find(target)
                if room is None or not member.in_room(room):
                    if not notice:
                        numeric = rpl.ERR_NOSUCHCHANNEL if room is None else rpl.ERR_CANNOTSENDTOCHAN
                        self.send_reply(numeric, target, text="Cannot send to channel (join it first)")
                    continue
                self.state.say(member, text, room, kind)
            elif not notice or name_key(target) in self.state.nicks:
                self.state.privmsg(member, target, text, kind)

    # -- who is who ------------------------------------------------------------------

    def real_name_of(self, m: Member) -> str:
        conn: Any = m.conn
        if isinstance(conn, IrcCommands):
            return conn.realname
        return f"{getattr(m.view, 'kind', 'line')} client"

    def irc_WHO(self, prefix: str, params: list[str]) -> None:
        mask = params[0] if params else "*"
        room = self.find(mask)
        if room is not None:
            found = list(room.members.values())
        else:
            one = self.state.nicks.get(name_key(mask))
            found = [one] if one is not None else []
        server = self.view.server
        for m in found:
            if m.nick is None:
                continue
            where = channel(room.name) if room is not None else (channel(m.room.name) if m.room else "*")
            away = "G" if isinstance(m.conn, IrcCommands) and m.conn.away else "H"
            self.send_reply(
                rpl.RPL_WHOREPLY, where, m.nick, server, server, m.nick, away, text=f"0 {self.real_name_of(m)}"
            )
        self.send_reply(rpl.RPL_ENDOFWHO, mask, text="End of /WHO list")

    def irc_WHOIS(self, prefix: str, params: list[str]) -> None:
        if not params:
            self.send_reply(rpl.ERR_NONICKNAMEGIVEN, text="No nickname given")
            return
        nick = params[-1]
        m = self.state.nicks.get(name_key(nick))
        server = self.view.server
        if m is None or m.nick is None:
            self.send_reply(rpl.ERR_NOSUCHNICK, nick, text="No such nick/channel")
        else:
            self.send_reply(rpl.RPL_WHOISUSER, m.nick, m.nick, server, "*", text=self.real_name_of(m))
            rooms = " ".join(channel(r.name) for r in m.rooms())
            if rooms:
                self.send_reply(rpl.RPL_WHOISCHANNELS, m.nick, text=rooms)
            self.send_reply(rpl.RPL_WHOISSERVER, m.nick, server, text="socksvc chat")
            if isinstance(m.conn, IrcCommands) and m.conn.away:
                self.send_reply(rpl.RPL_AWAY, m.nick, text=m.conn.away)
        self.send_reply(rpl.RPL_ENDOFWHOIS, nick, text="End of /WHOIS list")

    def irc_ISON(self, prefix: str, params: list[str]) -> None:
        present = []
        for nick in " ".join(params).split()[:32]:
            m = self.state.nicks.get(name_key(nick))
            if m is not None and m.nick is not None:
                present.append(m.nick)
        self.send_reply(rpl.RPL_ISON, text=" ".join(present))

    def irc_USERHOST(self, prefix: str, params: list[str]) -> None:
        found = []
        for nick in params[:5]:
            m = self.state.nicks.get(name_key(nick))
            if m is not None and m.nick is not None:
                found.append(f"{m.nick}=+{m.nick}@{self.view.server}")
        self.send_reply(rpl.RPL_USERHOST, text=" ".join(found))
