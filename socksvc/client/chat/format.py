"""
The chat client's view of server lines: classify, escape, colour.

Pure functions, no I/O, so the console client, the plain line mode and the
tests share them. A server line is one of (see docs/chat.md):

- ``<nick> text``   a message
- ``* nick text``   an action (/me)
- ``*nick* text``   a private message to us
- ``-> *nick* text`` our private message to nick, delivered
- ``-!- text``      a server notice (joins, parts, errors, ...)
- anything else     shown as it is

optionally after a ``[STAMP] `` prefix: ``[14:03]`` when the server has
timestamps on, ``[history 14:01]`` on a line replayed from the room's history.
The client never trusts the server to have sanitised text: every control
character, escape sequence introducer and bidi override is shown visibly
(``^[``, ``\\x9b``, ``\\u202e``) before anything reaches the terminal.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from typing import Literal

import attrs

from socksvc.util.visible import UNSAFE_STRICT, visible
from socksvc.util.visible import is_safe as _is_safe

Kind = Literal["message", "action", "private", "private_sent", "notice", "text"]


def escape(text: str) -> str:
    """
    C{text} with everything a terminal would interpret made visible: C0
    controls but TAB as caret notation (ESC is ``^[``), DEL as ``^?``, C1
    controls as ``\\x9b``, bidi controls, marks and line separators as
    ``\\u202e`` (L{socksvc.util.visible.UNSAFE_STRICT}).
    """
    return visible(text, UNSAFE_STRICT)


def is_safe(text: str) -> bool:
    """True if C{text} holds nothing L{escape} would change."""
    return _is_safe(text, UNSAFE_STRICT)


def decode(data: bytes) -> str:
    """A server line (bytes, no line end) as text: UTF-8, never fatal."""
    return data.decode("utf-8", "replace")


@attrs.frozen
class ChatLine:
    """One classified server line. Fields hold raw (unescaped) text."""

    kind: Kind
    text: str
    nick: str = ""
    stamp: str = ""
    """What was inside the leading ``[...]``: ``14:03``, ``history 14:01``, or empty."""
    history: bool = False


_STAMP = re.compile(r"\[(?P<stamp>[^\[\]\x00-\x1f]{1,40})\] ")
_MESSAGE = re.compile(r"<(?P<nick>[^\s<>]+)> ?(?P<text>.*)", re.DOTALL)
_PRIVATE = re.compile(r"\*(?P<nick>[^\s*]+)\* ?(?P<text>.*)", re.DOTALL)
_PRIVATE_SENT = re.compile(r"-> \*(?P<nick>[^\s*]+)\* ?(?P<text>.*)", re.DOTALL)
_ACTION = re.compile(r"\* (?P<nick>[^\s*]+) ?(?P<text>.*)", re.DOTALL)
_NOTICE = re.compile(r"-!-(?: (?P<text>.*))?$", re.DOTALL)
_SHAPES: tuple[tuple[Kind, re.Pattern[str]], ...] = (
    ("message", _MESSAGE),
    ("private", _PRIVATE),
    ("private_sent", _PRIVATE_SENT),
    ("action", _ACTION),
)


def _shape(rest: str, stamp: str, history: bool) -> ChatLine | None:
    for kind, pattern in _SHAPES:
        m = pattern.match(rest)
        if m is not None:
            return ChatLine(kind, m.group("text"), m.group("nick"), stamp, history)
    m = _NOTICE.match(rest)
    if m is not None:
        return ChatLine("notice", m.group("text") or "", "", stamp, history)
    return None


def classify(line: str) -> ChatLine:
    """
    What kind of line C{line} (one server line, no line end) is. An optional
    leading ``[STAMP] `` is taken off first (``[14:03]``, or ``[history 14:01]``
    for a replayed line), but only when what follows has a known shape.
    """
    m = _STAMP.match(line)
    if m is not None:
        stamp = m.group("stamp")
        history = stamp == "history" or stamp.startswith("history ")
        found = _shape(line[m.end() :], stamp, history)
        if found is not None:
            return found
    return _shape(line, "", False) or ChatLine("text", line)


# ---------------------------------------------------------------- colours

NICK_COLOURS = (
    "ansired",
    "ansigreen",
    "ansiyellow",
    "ansiblue",
    "ansimagenta",
    "ansicyan",
    "ansibrightred",
    "ansibrightgreen",
    "ansibrightyellow",
    "ansibrightblue",
    "ansibrightmagenta",
    "ansibrightcyan",
)

STYLE_RULES: dict[str, str] = {
    "timestamp": "fg:ansibrightblack",
    "history": "italic",
    "notice": "fg:ansibrightblack",
    "private": "bold fg:ansibrightmagenta",
    "private.nick": "reverse",
    "private.sent": "fg:ansimagenta",
    "notice.error": "fg:ansired",
    "prompt": "bold",
    "mention": "bold",
    "self": "bold",
    "local": "fg:ansibrightblack italic",
    "error": "fg:ansired bold",
    "toolbar.bad": "noreverse bg:ansired fg:ansiwhite bold",
    **{f"nick-{i}": f"fg:{c}" for i, c in enumerate(NICK_COLOURS)},
}


def fold_nick(nick: str) -> str:
    """The form the server compares nicknames in (NFKC, casefolded)."""
    return unicodedata.normalize("NFKC", nick).casefold()


def nick_colour(nick: str) -> int:
    """
    Index into L{NICK_COLOURS} for C{nick}: stable across runs and machines
    (CRC-32, not Python's salted hash), the same for every spelling the server
    considers the same nickname.
    """
    return zlib.crc32(fold_nick(nick).encode("utf-8")) % len(NICK_COLOURS)


Fragments = list[tuple[str, str]]


def mentions(text: str, me: str) -> bool:
    """True if C{text} names C{me} as a word (case-insensitively)."""
    if not me:
        return False
    return re.search(r"(?<![\w.-])" + re.escape(fold_nick(me)) + r"(?![\w-])", fold_nick(text)) is not None


def fragments(line: ChatLine, me: str = "", local_time: str = "") -> Fragments:
    """
    prompt_toolkit style-and-text fragments for C{line}, every text piece
    escaped. C{me} is our own nickname (lines naming us are bold),
    C{local_time} a client-side ``HH:MM`` shown when the server sent no stamp.
    """
    out: Fragments = []
    h = " class:history" if line.history else ""
    stamp = line.stamp or local_time
    if stamp:
        out.append(("class:timestamp" + h, "[" + escape(stamp) + "] "))
    text = escape(line.text)
    nick = escape(line.nick)
    colour = f"class:nick-{nick_colour(line.nick)}{h}"
    if line.kind == "message":
        own = bool(me) and fold_nick(line.nick) == fold_nick(me)
        body = "class:mention" if not own and mentions(line.text, me) else ""
        out += [(h, "<"), (colour + (" class:self" if own else ""), nick), (h, "> "), (body + h, text)]
    elif line.kind == "action":
        out += [(h, "* "), (colour, nick), (h, " " + text if text else "")]
    elif line.kind == "private":
        out += [("class:private", "*"), ("class:private class:private.nick", nick), ("class:private", "* " + text)]
    elif line.kind == "private_sent":
        out += [("class:private.sent", "-> *"), (colour, nick), ("class:private.sent", "* " + text)]
    elif line.kind == "notice":
        style = "class:notice.error" if line.text.startswith("error: ") else "class:notice"
        out.append((style + h, "-!- " + text))
    else:
        out.append((h, text))
    return [(s.strip(), t) for s, t in out if t]


def own_line(kind: Kind, me: str, text: str, local_time: str = "") -> Fragments:
    """Our own room message or action, as others see it (the server does not echo it)."""
    return fragments(ChatLine(kind, text, me), me, local_time)


def plain(line: str, local_time: str = "") -> str:
    """C{line} as the plain line mode prints it: escaped, optionally timed."""
    safe = escape(line)
    if local_time and not classify(line).stamp:
        return f"[{local_time}] {safe}"
    return safe
