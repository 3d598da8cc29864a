"""
Making control characters visible: the one escaping rule shared by the chat
server (L{socksvc.services.chat.sanitize}) and the console clients
(L{socksvc.client.chat.format}, the probes' refusal messages).

An unsafe character is replaced by a visible escape: C0 controls as caret
notation (ESC is ``^[``), DEL as ``^?``, C1 controls as ``\\x9b``, anything
above as ``\\u202e``. TAB is never escaped.

Two sets of unsafe characters, built from the same parts:

- L{UNSAFE}: C0 controls but TAB, DEL, C1 controls, bidi embeddings and
  overrides (U+202A-U+202E), isolates (U+2066-U+2069) and the line/paragraph
  separators (U+2028, U+2029). What the server escapes in text it relays.
- L{UNSAFE_STRICT}: all of those plus the bidi marks (U+061C, U+200E,
  U+200F). What a client escapes before anything reaches its terminal: it
  trusts no server to have sanitised text.
"""

from __future__ import annotations

import re

CONTROLS = "\x00-\x08\x0a-\x1f\x7f-\x9f"
"""C0 controls but TAB, DEL, C1 controls (a regex character-class body)."""
LAYOUT = "\u2028\u2029\u202a-\u202e\u2066-\u2069"
"""Line/paragraph separators, bidi embeddings/overrides, bidi isolates."""
BIDI_MARKS = "\u061c\u200e\u200f"
"""Arabic letter mark, left-to-right mark, right-to-left mark."""

UNSAFE = re.compile(f"[{CONTROLS}{LAYOUT}]")
UNSAFE_STRICT = re.compile(f"[{CONTROLS}{LAYOUT}{BIDI_MARKS}]")


def escape_char(c: str) -> str:
    """The visible form of one unsafe character."""
    o = ord(c)
    if o < 0x20:
        return "^" + chr(o + 0x40)
    if o == 0x7F:
        return "^?"
    if o <= 0x9F:
        return f"\\x{o:02x}"
    return f"\\u{o:04x}"


def _sub(m: re.Match[str]) -> str:
    return escape_char(m.group())


def visible(text: str, unsafe: re.Pattern[str] = UNSAFE) -> str:
    """C{text} with every character C{unsafe} matches replaced by its visible escape."""
    if unsafe.search(text) is None:
        return text
    return unsafe.sub(_sub, text)


def is_safe(text: str, unsafe: re.Pattern[str] = UNSAFE) -> bool:
    """True if C{text} holds nothing L{visible} would change."""
    return unsafe.search(text) is None
