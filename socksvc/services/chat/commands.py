"""
The chat's command surface: every line a member sends comes here.

L{handle_line} decides what a line is: a command (C{/name args}, names
case-insensitive, L{COMMANDS}), a nickname (the first plain line before one
is chosen), or something said to the room (C{//text} says C{/text}). Usage
lines, the help text and the before-nickname rule (only C{/nick},
C{/help}, C{/rooms} and C{/quit}) live here; the state only has actions.
The command names the console client completes are L{socksvc.wire.CHAT_COMMANDS};
a test keeps the two equal.
"""

from __future__ import annotations

from collections.abc import Callable

from socksvc.services.chat.delivery import Member
from socksvc.services.chat.state import ChatState

Handler = Callable[[ChatState, Member, str], None]

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


def _nick(state: ChatState, m: Member, args: str) -> None:
    name = args.strip()
    if not name:
        state.error(m, "usage: /nick NAME")
        return
    if " " in name or "\t" in name:
        state.error(m, "nickname refused: no spaces in a nickname", "nick_bad", name)
        return
    state.set_nick(m, name)


def _join(state: ChatState, m: Member, args: str) -> None:
    name = args.strip()
    if not name or " " in name:
        state.error(m, "usage: /join ROOM")
        return
    state.join(m, name)


def _rooms(state: ChatState, m: Member, args: str) -> None:
    state.list_rooms(m)


def _who(state: ChatState, m: Member, args: str) -> None:
    state.who(m)


def _msg(state: ChatState, m: Member, args: str) -> None:
    nick, _, text = args.lstrip().partition(" ")
    if not nick or not text.strip():
        state.error(m, "usage: /msg NICK TEXT")
        return
    state.privmsg(m, nick, text.lstrip(" "))


def _me(state: ChatState, m: Member, args: str) -> None:
    if not args.strip():
        state.error(m, "usage: /me TEXT")
        return
    state.action(m, args.strip())


def _topic(state: ChatState, m: Member, args: str) -> None:
    state.topic(m, args)


def _help(state: ChatState, m: Member, args: str) -> None:
    state.tell(m, b"".join(state.fmt.notice_lines(text) for text in HELP))


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
        state.error(m, f"unknown command /{shown}; type /help for the list")
        return
    if m.nick is None and name not in BEFORE_NICK:
        state.error(m, "choose a nickname first")
        return
    handler(state, m, args)


def handle_line(state: ChatState, m: Member, text: str) -> None:
    """One line of decoded input from C{m} (flood control is the caller's: L{ChatState.flood_ok})."""
    if m.gone or not text.strip():
        return
    if state.cluster is not None and state.cluster.hold(m, lambda: handle_line(state, m, text)):
        return  # its nickname or room change is on its way through the chat bus: this waits for it
    if text.startswith("/") and not text.startswith("//"):
        run(state, m, text)
        return
    if text.startswith("//"):
        text = text[1:]
    if m.nick is None:
        state.set_nick(m, text.strip())
    else:
        state.say(m, text)
