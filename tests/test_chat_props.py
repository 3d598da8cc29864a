"""
Chat property tests: the text rules (hypothesis over arbitrary text and
bytes) and a state machine over connect/nick/join/say/msg/quit whose
invariants are unique nicknames, every delivered line prefixed, and no
control characters delivered.
"""

from __future__ import annotations

import re
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from twisted.internet.error import ConnectionLost

from socksvc.services.chat.names import look_key
from socksvc.services.chat.sanitize import TelnetFilter, decode_line, name_key, nick_problem, visible
from tests.support.chat import LINE, UNSAFE, Chat, Client

# -- text rules --------------------------------------------------------------


@given(st.text())
def test_visible_leaves_nothing_unsafe_and_is_idempotent(text: str) -> None:
    shown = visible(text)
    assert not UNSAFE.search(shown)
    assert visible(shown) == shown
    if not UNSAFE.search(text):
        assert shown == text


@given(st.binary())
def test_decode_line_never_fails_and_drops_cr(data: bytes) -> None:
    text = decode_line(data)
    assert "\r" not in text
    if b"\r" not in data:
        assert text.encode("utf-8", "surrogatepass") == data or "\ufffd" in text


@given(st.text(min_size=1, max_size=30))
def test_accepted_names_are_letters_digits_marks_and_punct(name: str) -> None:
    if nick_problem(name, 24) is None:
        assert 1 <= len(name) <= 24
        assert not UNSAFE.search(name)
        for i, ch in enumerate(name):
            cat = unicodedata.category(ch)
            assert ch in "_-." or cat[0] == "L" or cat == "Nd" or (cat[0] == "M" and i > 0)
        assert nick_problem(name_key(name), 200) is None


@given(st.text(max_size=30))
def test_name_key_is_stable(name: str) -> None:
    assert name_key(name_key(name)) == name_key(name)
    if name.isascii():
        assert name_key(name.upper()) == name_key(name.lower())


@given(st.binary(), st.lists(st.integers(min_value=0, max_value=200), max_size=8))
def test_telnet_filter_is_the_same_however_the_input_is_split(data: bytes, cuts: list[int]) -> None:
    whole = TelnetFilter().feed(data)
    f = TelnetFilter()
    parts = []
    start = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        parts.append(f.feed(data[start:cut]))
        start = cut
    parts.append(f.feed(data[start:]))
    assert b"".join(parts) == whole
    if 0xFF not in data and b"\r\x00" not in data:
        assert whole == data
    assert len(whole) <= len(data)


@given(st.lists(st.one_of(st.text(max_size=12), st.integers(), st.none()), max_size=5) | st.text() | st.integers())
def test_rooms_setting_parser_accepts_only_valid_distinct_names(value: object) -> None:
    from socksvc.services.chat.sanitize import room_problem
    from socksvc.services.chat.service import parse_rooms

    try:
        rooms = parse_rooms(value)
    except ValueError:
        return
    assert rooms
    assert all(room_problem(r) is None for r in rooms)
    assert len({name_key(r) for r in rooms}) == len(rooms)


# -- the state machine -------------------------------------------------------

NAMES = st.one_of(
    st.sampled_from(
        ["bob", "Bob", "\uff22\uff2f\uff22", "alice", "ALICE", "admin", "x" * 30, "bo\u200bb", "é", "e\u0301"]
    ),
    st.sampled_from(["aIice", "\u0430lice", "b0b", "\u0430dmin", "alice\u3164"]),  # look-alikes (UTS #39)
    st.text(min_size=1, max_size=8),
)
ROOMS = st.sampled_from(["lobby", "dev", "Dev", "#dev", "\uff44\uff45\uff56", "bad room", "x\u202e", "r1"])
TEXT = st.text(
    st.characters(codec="utf-8") | st.sampled_from("\x1b\x00\x07\x7f\u009b\u202e\u2066\u2028\t\r/<>*"), max_size=40
)


TELNET_ANSWER = re.compile(rb"\xff[\xfb-\xfe][\x00-\xff]", re.DOTALL)


class ChatMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.chat = Chat("flood_rate = 0\nannounce_max = 3\nhistory = 4\nmax_line = 64")
        self.clients: list[Client] = []
        self.seen: dict[int, int] = {}

    def live(self) -> list[Client]:
        return [c for c in self.clients if not c.member.gone]

    @rule()
    @precondition(lambda self: len(self.clients) < 8)
    def connect(self) -> None:
        self.clients.append(self.chat.connect())

    def pick(self, i: int) -> Client | None:
        live = self.live()
        return live[i % len(live)] if live else None

    @rule(i=st.integers(0, 7), name=NAMES, command=st.booleans())
    def nick(self, i: int, name: str, command: bool) -> None:
        c = self.pick(i)
        if c is not None:
            c.send(("/nick " if command else "") + name.replace("\n", " "))

    @rule(i=st.integers(0, 7), room=ROOMS, upper=st.booleans())
    def join(self, i: int, room: str, upper: bool) -> None:
        c = self.pick(i)
        if c is not None:
            c.send(("/JOIN " if upper else "/join ") + room)

    @rule(i=st.integers(0, 7), text=TEXT, me=st.booleans())
    def say(self, i: int, text: str, me: bool) -> None:
        c = self.pick(i)
        if c is not None:
            c.raw((("/me " if me else "") + text).encode("utf-8", "surrogatepass") + b"\n")

    @rule(i=st.integers(0, 7), j=st.integers(0, 7), text=TEXT)
    def msg(self, i: int, j: int, text: str) -> None:
        c, d = self.pick(i), self.pick(j)
        if c is not None and d is not None:
            target = d.member.nick or "nobody"
            c.raw(f"/msg {target} {text}".encode("utf-8", "surrogatepass") + b"\n")

    @rule(i=st.integers(0, 7), data=st.binary(max_size=80))
    def raw(self, i: int, data: bytes) -> None:
        c = self.pick(i)
        if c is not None:
            c.raw(data)

    @rule(i=st.integers(0, 7), how=st.sampled_from(["quit", "lose", "half"]))
    def leave(self, i: int, how: str) -> None:
        c = self.pick(i)
        if c is None:
            return
        if how == "quit":
            c.send("/quit see you")
        elif how == "half":
            c.proto.readConnectionLost()
        c.lose(ConnectionLost())

    @rule(i=st.integers(0, 7))
    def who(self, i: int) -> None:
        c = self.pick(i)
        if c is not None:
            c.send("/who", "/rooms", "/topic")

    @invariant()
    def nicknames_unique(self) -> None:
        state = self.chat.state
        named = [c.member for c in self.live() if c.member.nick is not None]
        keys = [name_key(m.nick) for m in named]
        assert len(keys) == len(set(keys))
        assert set(state.nicks) == set(keys)
        assert state.looks == {look_key(m.nick): m for m in named}  # no two members look alike
        for m in named:
            assert m.room is not None
            assert m.room.members[m.key] is m
            assert state.rooms[m.room.key] is m.room
        assert sum(len(r.members) for r in state.rooms.values()) == len(named)

    @invariant()
    def delivered_lines_prefixed_and_clean(self) -> None:
        for c in self.clients:
            data = c.transport.value()
            start = self.seen.get(id(c), 0)
            # Telnet answers (IAC WILL/WONT/DONT x) come between whole lines; UTF-8 never holds 0xFF.
            new = TELNET_ANSWER.sub(b"", data[start:])
            self.seen[id(c)] = len(data)
            if not new:
                continue
            assert new.endswith(b"\r\n")
            for line in new.decode("utf-8").split("\r\n")[:-1]:
                assert LINE.match(line), line
                assert not UNSAFE.search(line), line


ChatMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30)
TestChatMachine = ChatMachine.TestCase
