"""
Bus entry parsing: the fast ways of L{busentries.pairs} and L{busentries.decode}
accept exactly what the plain ones (kept here as they were) accepted, and give
the same result.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from socksvc.services.chat import busentries
from socksvc.services.chat.busentries import FIELDS_MAX, BadEntry, decode, encode, pairs

NUMBER_RE = re.compile(r"[0-9]{1,19}")
NODE_RE = re.compile(r"[A-Za-z0-9_.:-]{1,100}")


def old_pairs(flat: Sequence[object]) -> dict[str, str]:
    if len(flat) % 2 or len(flat) > 2 * FIELDS_MAX:
        raise BadEntry("bad field list")
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


def outcome(f: object, *args: object) -> object:
    try:
        return ("ok", f(*args))  # type: ignore[operator]
    except BadEntry:
        return ("bad",)


KEYS = ["t", "n", "m", "s", "q", "nick", "room", "text", "kind", "old", "why", "to", "stay", "since", "again", "x"]
TEXTS = st.one_of(
    st.sampled_from(KEYS),
    st.sampled_from(["say", "join", "quit", "notice", "nick", "priv", "action", "lobby", "bob", "1", "0", ""]),
    st.text(max_size=12),
    st.from_regex(r"[0-9]{0,21}", fullmatch=True),
    st.text(alphabet="0123456789٣²", max_size=20),
)
FIELD = st.one_of(
    TEXTS,
    TEXTS.map(lambda s: s.encode()),
    st.binary(max_size=8),
    st.integers(),
    st.booleans(),
    st.none(),
    st.binary(max_size=4).map(bytearray),
    st.floats(allow_nan=False),
)


@settings(max_examples=400)
@given(st.lists(FIELD, max_size=2 * FIELDS_MAX + 3))
def test_pairs_as_before(flat: list[object]) -> None:
    assert outcome(pairs, flat) == outcome(old_pairs, flat)


def old_number(value: str | None) -> bool:
    return value is not None and NUMBER_RE.fullmatch(value) is not None


@settings(max_examples=400)
@given(st.one_of(st.none(), TEXTS, st.text(alphabet="0123456789٣²\n ", max_size=22)))
def test_numbers_as_before(value: str | None) -> None:
    try:
        got: object = busentries._number(value, "x")
    except BadEntry:
        got = None
    assert got == (int(value) if value is not None and old_number(value) else None)


ENTRY = st.fixed_dictionaries(
    {"t": st.sampled_from(sorted(busentries.TYPES)), "n": st.sampled_from(["a:1:x", "b", ""]), "m": TEXTS, "s": TEXTS},
    optional={k: TEXTS for k in KEYS[4:]},
)


@settings(max_examples=600)
@given(ENTRY, st.text(alphabet="ab:;/\n\x00é", max_size=102))
def test_decode_node_ids_as_before(fields: dict[str, str], node: str) -> None:
    """A node id is checked with NODE_RE whether or not one like it was seen (the check is cached)."""
    fields = {**fields, "n": node}
    for _ in range(2):
        got = outcome(decode, "1-1", fields)
        if not NODE_RE.fullmatch(node):
            assert got == ("bad",)


def test_redis_reply_fields() -> None:
    flat = [x.encode() for x in encode("say", "n1", 3, 7, nick="bob", room="lobby", text="hi é")] + [b"q", b"9"]
    e = decode("1-1", pairs(flat))
    assert (e.t, e.node, e.mid, e.s, e.q, e.nick, e.room, e.text) == ("say", "n1", 3, 7, 9, "bob", "lobby", "hi é")
    assert pairs([b"t", b"\xff"]) == {"t": "\ufffd"}
