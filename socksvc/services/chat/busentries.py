"""
Chat bus entries: what one node tells the others, as the flat field lists a
Redis stream entry holds, and the checks every entry read off the bus
passes before it touches the state.

A node trusts nothing it reads: an entry must have a known type, a node id
and member id of the right shape, names that pass the same rules as a
client's (L{socksvc.services.chat.sanitize.name_problem}), and text within
bounds; anything else is dropped and counted (L{decode} raises
L{BadEntry}). Text is kept as sent: every view escapes it where it renders
(L{socksvc.services.chat.sanitize.visible}), so a compromised node cannot
push a control character to a terminal any more than a client can.

Fields (all strings): C{t} type, C{n} origin node, C{m} member id (a number,
unique within its node), C{s} the origin's own sequence number (duplicates
after a resend are dropped by it), C{q} the cluster sequence the publish
script adds (a gap is lines lost), and per type:

  - nick: C{nick}, C{old} ("" on registering), C{since} (ms), C{why} ("" or "collision")
  - join: C{nick}, C{room}, C{stay} ("1": an IRC client adds the room; "": moves there)
  - nick and join may carry C{again} ("1"): the member is announced again for
    nodes that missed it (Redis lost it, a collision); its own node ignores it
  - part: C{nick}, C{room}, C{why}
  - quit: C{nick}, C{why}
  - say: C{nick}, C{room}, C{text}, C{kind} (say, action, notice)
  - priv: C{nick}, C{to}, C{text}, C{kind}
  - topic: C{nick}, C{room}, C{text}
  - notice: C{room}, C{text} (another service's announcement; C{m} is 0)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple, cast

from socksvc.services.chat.events import ACTION, NOTICE, SAY
from socksvc.services.chat.sanitize import ROOM_MAX, name_problem

NICK, JOIN, PART, QUIT, SAYS, PRIV, TOPIC, ANNOUNCE = "nick", "join", "part", "quit", "say", "priv", "topic", "notice"
TYPES = frozenset({NICK, JOIN, PART, QUIT, SAYS, PRIV, TOPIC, ANNOUNCE})
KINDS = frozenset({SAY, ACTION, NOTICE})
COLLISION = "collision"

NODE_RE = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
NUMBER_RE = re.compile(r"[0-9]{1,19}")
NAME_MAX = 64
"""Longest nickname an entry may carry (the most C{nick_max} allows)."""
TEXT_MAX = 16384
"""Characters of text an entry may carry (a line, a topic, a reason)."""
FIELDS_MAX = 24


class BadEntry(ValueError):
    """An entry that is not one a socksvc node would write: dropped and counted."""


class Entry(NamedTuple):
    """One entry, checked. C{rid}: its stream id; C{q}: the cluster sequence (0 when absent)."""

    rid: str
    t: str
    node: str
    mid: int
    s: int
    q: int
    nick: str = ""
    room: str = ""
    text: str = ""
    kind: str = SAY
    old: str = ""
    why: str = ""
    to: str = ""
    stay: bool = False
    since: int = 0
    again: bool = False
    """Said again (Redis lost it, or a collision): for nodes that missed it; its own node has it already."""

    @property
    def member(self) -> tuple[str, int]:
        return (self.node, self.mid)


def encode(t: str, node: str, mid: int, s: int, **fields: str) -> list[str]:
    """The field list for XADD (C{q} is added by the publish script)."""
    out = ["t", t, "n", node, "m", str(mid), "s", str(s)]
    for key, value in fields.items():
        if value:
            out += [key, value]
    return out


_nodes_ok: dict[str, None] = {}
"""Node ids already checked (bounded: a cluster has a few)."""
_names_ok: dict[tuple[str, int], None] = {}
"""Names already checked (a bounded cache: most lines come from a few nicknames)."""


def _name(value: str, limit: int, what: str) -> str:
    if (value, limit) in _names_ok:
        return value
    problem = name_problem(value, limit, what=what)
    if problem is not None:
        raise BadEntry(f"bad {what}: {problem}")
    if len(_names_ok) >= 4096:
        _names_ok.clear()
    _names_ok[(value, limit)] = None
    return value


def check_name(value: object, room: bool = False) -> str:
    """A nickname (or, C{room}, a room name) read off the bus, checked as a client's would be."""
    if not isinstance(value, str):
        raise BadEntry("a name is not text")
    return _name(value, ROOM_MAX if room else NAME_MAX, "room name" if room else "nickname")


def _number(value: str | None, what: str) -> int:
    # what NUMBER_RE matches: ASCII digits are the only ASCII characters isdigit() takes
    if value is None or not (0 < len(value) <= 19 and value.isascii() and value.isdigit()):
        raise BadEntry(f"bad {what}")
    return int(value)


def _text(value: str | None, what: str) -> str:
    if value is None:
        return ""
    if len(value) > TEXT_MAX:
        raise BadEntry(f"{what} over {TEXT_MAX} characters")
    return value


_bytes_text = bytes.decode


def pairs(flat: Sequence[object]) -> dict[str, str]:
    """A stream entry's flat field list as a dict (strings only; anything else is a L{BadEntry})."""
    if len(flat) % 2 or len(flat) > 2 * FIELDS_MAX:
        raise BadEntry("bad field list")
    raw = cast("Sequence[bytes]", flat)
    text = _bytes_text
    try:  # what Redis replies: all bytes (bytes.decode refuses anything else, and the general way is taken)
        keys, values = raw[::2], raw[1::2]
        return {text(k, "utf-8", "replace"): text(v, "utf-8", "replace") for k, v in zip(keys, values, strict=True)}
    except TypeError:
        return _pairs_any(flat)


def _pairs_any(flat: Sequence[object]) -> dict[str, str]:
    out: dict[str, str] = {}
    for i in range(0, len(flat), 2):
        key, value = flat[i], flat[i + 1]
        if isinstance(key, bytes):
            key = key.decode("utf-8", "replace")
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(key, str) or not isinstance(value, str):
            raise BadEntry("a field is not text")
        out[key] = value
    return out


def decode(rid: str, f: Mapping[str, str]) -> Entry:
    """Check one entry's fields; a L{BadEntry} says what is wrong."""
    t = f.get("t", "")
    if t not in TYPES:
        raise BadEntry(f"unknown type {t[:20]!r}")
    node = f.get("n", "")
    if node not in _nodes_ok:
        if not NODE_RE.fullmatch(node):
            raise BadEntry("bad node id")
        if len(_nodes_ok) >= 1024:
            _nodes_ok.clear()
        _nodes_ok[node] = None
    mid = _number(f.get("m"), "member id")
    s = _number(f.get("s"), "node sequence")
    q = _number(f["q"], "cluster sequence") if "q" in f else 0
    kind = f.get("kind", SAY)
    if kind not in KINDS:
        raise BadEntry("bad kind")
    nick = f.get("nick", "")
    if t != ANNOUNCE and (nick or t != QUIT):  # a member that quits before its nickname came back has none
        nick = _name(nick, NAME_MAX, "nickname")
    room = ""
    if t in (JOIN, PART, SAYS, TOPIC, ANNOUNCE):
        room = _name(f.get("room", ""), ROOM_MAX, "room name")
    old = to = ""
    if t == NICK and f.get("old"):
        old = _name(f["old"], NAME_MAX, "nickname")
    if t == PRIV:
        to = _name(f.get("to", ""), NAME_MAX, "nickname")
    text = _text(f.get("text"), "text")
    if t in (SAYS, PRIV, ANNOUNCE) and not text.strip():
        raise BadEntry("no text")
    why = _text(f.get("why"), "reason")
    since = _number(f["since"], "since") if "since" in f else 0
    stay, again = f.get("stay") == "1", f.get("again") == "1"
    return Entry(rid, t, node, mid, s, q, nick, room, text, kind, old, why, to, stay, since, again)
