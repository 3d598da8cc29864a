"""
Text rules for chat: what a client's text may show on another terminal, what
a nickname or room name may be, and how names compare.

Nothing here knows about connections; every function is pure.
"""

from __future__ import annotations

import unicodedata

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
    name = unicodedata.name(ch, "")
    code = f"U+{ord(ch):04X}"
    return f"{code} {name}" if name else code


def name_problem(name: str, limit: int, reserved: frozenset[str] = frozenset(), what: str = "nickname") -> str | None:
    """
    Why C{name} cannot be a nickname (or room name), or None if it can.
    C{reserved} holds L{name_key} forms.
    """
    if not name:
        return f"a {what} needs at least one character"
    if len(name) > limit:
        return f"too long (at most {limit} characters)"
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
    key = name_key(name)
    if len(key) > limit * 4:
        return f"too long (at most {limit} characters)"
    if key in reserved:
        return f"{name} is reserved"
    # The folded form must obey the rules too (NFKC can produce spaces or symbols).
    for i, ch in enumerate(key):
        if not _name_char_ok(ch, i == 0):
            return f"character {_describe(name[min(i, len(name) - 1)])} is not allowed; use letters, digits, _ - ."
    return None


def nick_problem(name: str, limit: int, reserved: frozenset[str] = frozenset()) -> str | None:
    """Why C{name} cannot be a nickname, or None."""
    return name_problem(name, limit, reserved, "nickname")


def room_problem(name: str) -> str | None:
    """Why C{name} (without a leading #) cannot be a room name, or None."""
    return name_problem(name, ROOM_MAX, frozenset(), "room name")


def clip(text: str, limit: int) -> str:
    """At most C{limit} characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


# -- telnet ------------------------------------------------------------------

IAC = 255
_SE, _SB = 240, 250
_WILL, _DONT = 251, 254
_DATA, _IAC, _OPT, _SUB, _SUB_IAC = range(5)


class TelnetFilter:
    """
    Removes telnet IAC sequences from a byte stream, across reads: option
    negotiation (C{IAC WILL/WONT/DO/DONT x}), subnegotiation (C{IAC SB ...
    IAC SE}, discarded as it comes, never stored) and other C{IAC x}.
    C{IAC IAC} stands for a 0xFF data byte.
    """

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = _DATA

    def feed(self, data: bytes) -> bytes:
        if self.state == _DATA and IAC not in data:
            return data
        out = bytearray()
        state = self.state
        i, n = 0, len(data)
        while i < n:
            if state == _DATA:
                j = data.find(IAC, i)
                if j < 0:
                    out += data[i:]
                    break
                out += data[i:j]
                state = _IAC
                i = j + 1
                continue
            b = data[i]
            i += 1
            if state == _IAC:
                if b == IAC:
                    out.append(IAC)
                    state = _DATA
                elif _WILL <= b <= _DONT:
                    state = _OPT
                elif b == _SB:
                    state = _SUB
                else:
                    state = _DATA
            elif state == _OPT:
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
