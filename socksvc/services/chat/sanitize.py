"""
Text rules for chat: what a client's text may show on another terminal, what
a nickname or room name may be, and how names compare. The standards-based
part of the name rules (PRECIS, UTS #39) is in L{socksvc.services.chat.names}.

Nothing here knows about connections; every function is pure.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping

from socksvc.services.chat import names
from socksvc.util.visible import UNSAFE
from socksvc.util.visible import visible as _visible

NAME_PUNCT = frozenset("_-.")
ROOM_MAX = 32


def visible(text: str) -> str:
    """
    C{text} with every unsafe character replaced by a visible escape (see
    L{socksvc.util.visible}: C0 controls but TAB, DEL, C1 controls, bidi
    embeddings/overrides and isolates, line/paragraph separators).
    """
    return _visible(text, UNSAFE)


def decode_line(line: bytes) -> str:
    """
    One received line as text: lone CRs dropped, UTF-8 decoded with
    replacement. (Unsafe characters are made visible when a line is sent:
    see L{visible}; names are checked against the raw text.)
    """
    if b"\r" in line:
        line = line.replace(b"\r", b"")
    return line.decode("utf-8", "replace")


def name_key(name: str) -> str:
    """The form names are compared by: NFKC, case-folded, NFKC again."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def _name_char_ok(ch: str, first: bool) -> bool:
    if ch in NAME_PUNCT:
        return True
    cat = unicodedata.category(ch)
    if cat[0] == "L" or cat == "Nd":
        return True
    return cat[0] == "M" and not first


def _describe(ch: str) -> str:
    return names.describe(ch)


def _chars_problem(name: str, what: str) -> str | None:
    for i, ch in enumerate(name):
        if not _name_char_ok(ch, i == 0):
            if ch == "\t" or unicodedata.category(ch) == "Zs":
                return f"no spaces in a {what}"
            shown = visible(ch) if UNSAFE.match(ch) else ch
            if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") or ch in "\u200b":
                shown = _describe(ch)
            else:
                shown = f"{shown!r} ({_describe(ch)})"
            return f"character {shown} is not allowed; use letters, digits, _ - ."
    return None


def name_check(
    name: str,
    limit: int,
    reserved: frozenset[str] = frozenset(),
    what: str = "nickname",
    reserved_looks: Mapping[str, str] | None = None,
    taken: Callable[[str, str], str | None] | None = None,
) -> tuple[str, str | None]:
    """
    C{(form, None)} if C{name} can be a nickname (or room name), C{form}
    being the name as it is kept: its PRECIS enforcement (see
    L{socksvc.services.chat.names.precis}). Otherwise C{(name, why not)}.
    C{reserved} holds L{name_key} forms; C{reserved_looks} maps
    L{socksvc.services.chat.names.look_key} forms to the reserved names. C{taken},
    given the form and its look key, says why it is in use (or None); it is
    asked before the script checks, so that a look-alike of a present name
    is refused as that.
    """
    if not name:
        return name, f"a {what} needs at least one character"
    if len(name) > limit:
        return name, f"too long (at most {limit} characters)"
    problem = _chars_problem(name, what)
    if problem is not None:
        return name, problem
    form, problem = names.precis(name)
    if problem is not None:
        return name, problem
    if len(form) > limit:
        return name, f"too long (at most {limit} characters)"
    key = name_key(form)
    if key in reserved:
        return name, f"{name} is reserved"
    # The kept and the folded forms must obey the rules too (NFKC can produce spaces or symbols).
    for i, ch in enumerate(key):
        if not _name_char_ok(ch, i == 0):
            return (
                name,
                f"character {_describe(name[min(i, len(name) - 1)])} is not allowed; use letters, digits, _ - .",
            )
    problem = _chars_problem(form, what)
    if problem is not None:
        return name, problem
    look = names.look_key(form)
    like = reserved_looks.get(look) if reserved_looks else None
    if like is not None:
        return name, f'"{name}" looks like "{like}", which is reserved'
    problem = taken(form, look) if taken is not None else None
    if problem is not None:
        return name, problem
    problem = names.look_problem(form)
    if problem is not None:
        return name, f'"{name}" {problem}'
    return form, None


def name_problem(name: str, limit: int, reserved: frozenset[str] = frozenset(), what: str = "nickname") -> str | None:
    """
    Why C{name} cannot be a nickname (or room name), or None if it can.
    C{reserved} holds L{name_key} forms.
    """
    return name_check(name, limit, reserved, what)[1]


def nick_problem(name: str, limit: int, reserved: frozenset[str] = frozenset()) -> str | None:
    """Why C{name} cannot be a nickname, or None."""
    return name_problem(name, limit, reserved, "nickname")


def nick_check(
    name: str,
    limit: int,
    reserved: frozenset[str] = frozenset(),
    reserved_looks: Mapping[str, str] | None = None,
    taken: Callable[[str, str], str | None] | None = None,
) -> tuple[str, str | None]:
    """L{name_check} for a nickname."""
    return name_check(name, limit, reserved, "nickname", reserved_looks, taken)


def room_problem(name: str) -> str | None:
    """Why C{name} (without a leading #) cannot be a room name, or None."""
    return name_problem(name, ROOM_MAX, frozenset(), "room name")


def room_check(name: str, taken: Callable[[str, str], str | None] | None = None) -> tuple[str, str | None]:
    """L{name_check} for a room name (without a leading #)."""
    return name_check(name, ROOM_MAX, frozenset(), "room name", None, taken)


def clip(text: str, limit: int) -> str:
    """At most C{limit} characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


# -- telnet ------------------------------------------------------------------

IAC = 255
IAC_BYTE = 255
_SE, _SB = 240, 250
_WILL, _WONT, _DO, _DONT = 251, 252, 253, 254
TIMING_MARK = 6  # RFC 860
_DATA, _IAC, _OPT, _SUB, _SUB_IAC = range(5)
_SIMPLE = tuple(bytes((IAC_BYTE, code)) for code in range(0xF1, 0xFA))
"""The two-byte commands (NOP, DM, BRK, IP, AO, AYT, EC, EL, GA): nothing follows them."""
_OPTION = re.compile(rb"\xff[\xfb-\xfe][\x00-\xff]")
"""One option negotiation (IAC WILL/WONT/DO/DONT x)."""
REPLY_MAX = 4096
"""Bytes of replies a filter holds for its connection at most (a client that only negotiates gets no more)."""


def _answer(verb: int, option: int) -> bytes:
    if verb == _DO:
        return bytes((IAC, _WILL if option == TIMING_MARK else _WONT, option))
    if verb == _WILL:
        return bytes((IAC, _DONT, option))
    return b""


_ANSWERS = {
    bytes((IAC, verb, option)): _answer(verb, option) for verb in range(_WILL, _DONT + 1) for option in range(256)
}
"""What each option negotiation gets back (L{TelnetFilter}): WONT/DONT get nothing."""


class TelnetFilter:
    """
    Removes telnet commands from a byte stream, across reads, and answers
    what a telnet client waits for.

    Removed: option negotiation (C{IAC WILL/WONT/DO/DONT x}), subnegotiation
    (C{IAC SB ... IAC SE}, discarded as it comes, never stored) and other
    C{IAC x}. C{IAC IAC} stands for a 0xFF data byte.

    Answered (in C{replies}, for the connection to send): C{DO TIMING-MARK}
    with C{WILL TIMING-MARK} (RFC 860: a telnet client that sent
    C{IAC IP IAC DO TM} for Ctrl-C throws away everything it receives until
    that answer comes); any other C{DO x} with C{WONT x} and C{WILL x} with
    C{DONT x} (RFC 854: we enable no option; C{WONT} and C{DONT} are never
    answered, so two parties cannot loop).

    Character mode (RFC 854): Enter is C{CR NUL} (or C{CR LF}); C{CR NUL}
    comes out as C{CR LF}, so it ends the line like any other.
    """

    __slots__ = ("commands", "cr", "replies", "state", "verb")

    def __init__(self, cr: bool = False) -> None:
        self.commands = 0  # telnet commands seen (each is charged to the connection like a line)
        self.state = _DATA
        self.verb = 0  # WILL/WONT/DO/DONT waiting for its option byte
        self.cr = cr  # the last data byte was a CR (a NUL may follow in the next read)
        self.replies = bytearray()

    def take_replies(self) -> bytes:
        """What to send back, once."""
        out = bytes(self.replies)
        self.replies.clear()
        return out

    def _data(self, out: bytearray, chunk: bytes) -> None:
        if not chunk:
            return
        if self.cr and chunk[0] == 0:
            chunk = b"\n" + chunk[1:]
        if b"\r\x00" in chunk:
            chunk = chunk.replace(b"\r\x00", b"\r\n")
        out += chunk
        self.cr = chunk[-1] == 13

    def _answer(self, verb: int, option: int) -> None:
        if len(self.replies) < REPLY_MAX:
            self.replies += _answer(verb, option)

    def feed(self, data: bytes) -> bytes:
        if self.state == _DATA:
            if IAC not in data:
                if not self.cr and b"\r\x00" not in data:
                    self.cr = data.endswith(b"\r")
                    return data
                out = bytearray()
                self._data(out, data)
                return bytes(out)
            fast = self._fast(data)
            if fast is not None:
                return fast
        return self._feed(data)

    def _fast(self, data: bytes) -> bytes | None:
        """
        C{data} with its commands taken out in a few C-level passes, when it
        holds only whole two-byte commands and option negotiations (no IAC
        IAC, no SB, nothing cut at the end: a flood of NOPs or DOs); else
        None, and the byte loop does it.
        """
        if b"\xff\xff" in data or b"\xff\xfa" in data:
            return None
        simple = sum(data.count(c) for c in _SIMPLE)
        if simple == data.count(b"\xff"):
            options, rest = [], data  # two-byte commands only: no regex pass
        else:
            options = _OPTION.findall(data)
            rest = _OPTION.sub(b"", data)
            simple = rest.count(b"\xff")
            if simple != sum(rest.count(c) for c in _SIMPLE):
                return None
        for c in _SIMPLE:
            if c in rest:
                rest = rest.replace(c, b"")
        self.commands += len(options) + simple
        if options and len(self.replies) < REPLY_MAX:
            answers = b"".join(map(_ANSWERS.__getitem__, options))
            room = -(-(REPLY_MAX - len(self.replies)) // 3) * 3  # as many as the loop would add
            self.replies += answers[:room]
        out = bytearray()
        self._data(out, rest)
        return bytes(out)

    def _feed(self, data: bytes) -> bytes:
        out = bytearray()
        state = self.state
        i, n = 0, len(data)
        while i < n:
            if state == _DATA:
                j = data.find(IAC, i)
                if j < 0:
                    self._data(out, data[i:])
                    break
                self._data(out, data[i:j])
                state = _IAC
                i = j + 1
                continue
            b = data[i]
            i += 1
            if state == _IAC:
                self.commands += 1
                if b == IAC:
                    out.append(IAC)
                    self.cr = False
                    state = _DATA
                elif _WILL <= b <= _DONT:
                    self.verb = b
                    state = _OPT
                elif b == _SB:
                    state = _SUB
                else:
                    state = _DATA
            elif state == _OPT:
                self._answer(self.verb, b)
                state = _DATA
            elif state == _SUB:
                j = data.find(IAC, i - 1)
                if j < 0:
                    break
                i = j + 1
                state = _SUB_IAC
            else:  # _SUB_IAC
                state = _DATA if b == _SE else _SUB
        self.state = state
        return bytes(out)
