"""
Chat commands: C{/name args} lines, parsed and dispatched to the state.

Command names are case-insensitive. Before a member has a nickname only
C{/nick}, C{/help}, C{/rooms} and C{/quit} work.
"""

from __future__ import annotations

from collections.abc import Callable

from socksvc.services.chat.state import ChatState, Member

Handler = Callable[[ChatState, Member, str], None]


def _nick(state: ChatState, m: Member, args: str) -> None:
    name = args.strip()
    if not name:
        state.notice(m, "error: usage: /nick NAME")
        return
    if " " in name or "\t" in name:
        state.notice(m, "error: nickname refused: no spaces in a nickname")
        return
    state.set_nick(m, name)


def _join(state: ChatState, m: Member, args: str) -> None:
    name = args.strip()
    if not name or " " in name:
        state.notice(m, "error: usage: /join ROOM")
        return
    state.join(m, name)


def _rooms(state: ChatState, m: Member, args: str) -> None:
    state.list_rooms(m)


def _who(state: ChatState, m: Member, args: str) -> None:
    state.who(m)


def _msg(state: ChatState, m: Member, args: str) -> None:
    nick, _, text = args.lstrip().partition(" ")
    if not nick or not text.strip():
        state.notice(m, "error: usage: /msg NICK TEXT")
        return
    state.privmsg(m, nick, text.lstrip(" "))


def _me(state: ChatState, m: Member, args: str) -> None:
    if not args.strip():
        state.notice(m, "error: usage: /me TEXT")
        return
    state.action(m, args.strip())


def _topic(state: ChatState, m: Member, args: str) -> None:
    state.topic(m, args)


def _help(state: ChatState, m: Member, args: str) -> None:
    state.help(m)


def _quit(state: ChatState, m: Member, args: str) -> None:
    state.quit(m, args)


COMMANDS: dict[str, Handler] = {
    "nick": _nick,
    "join": _join,
    "rooms": _rooms,
    "who": _who,
    "msg": _msg,
    "me": _me,
    "topic": _topic,
    "help": _help,
    "quit": _quit,
}
BEFORE_NICK = frozenset({"nick", "help", "rooms", "quit"})


def run(state: ChatState, m: Member, text: str) -> None:
    """Run one command line (starting with a single C{/})."""
    word, _, args = text[1:].partition(" ")
    if "\t" in word:
        word, _, rest = word.partition("\t")
        args = rest + " " + args if args else rest
    name = word.casefold()
    handler = COMMANDS.get(name)
    if handler is None:
        shown = word if len(word) <= 32 else word[:31] + "\u2026"
        state.notice(m, f"error: unknown command /{shown}; type /help for the list")
        return
    if m.nick is None and name not in BEFORE_NICK:
        state.notice(m, "error: choose a nickname first")
        return
    handler(state, m, args)
