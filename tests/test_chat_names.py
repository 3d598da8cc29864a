"""
Chat names by the standards (socksvc.services.chat.names): PRECIS Nickname (RFC
8266) for what a name may contain, UTS #39 skeletons and restriction levels
for what it may look like. The impersonation attacks of the hardening issue
(item 14), one by one and generated (hypothesis), against a live chat state.
"""

from __future__ import annotations

import subprocess
import sys
import unicodedata

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from precis_i18n import get_profile

from socksvc.services.catalogue import loads
from socksvc.services.chat import names
from socksvc.services.chat.names import Level, look_key, restriction_level, skeleton
from socksvc.services.chat.sanitize import nick_check, room_check
from socksvc.services.chat.service import DEFAULT_RESERVED, parse_rooms
from tests.support.chat import Chat

NICKNAME = get_profile("NicknameCasePreserved")
REFUSED = "-!- error: nickname refused: "

# -- the data and the algorithms ----------------------------------------------


def test_the_data_is_unicode_17_and_complete() -> None:
    assert names.UNICODE_VERSION == "17.0.0"
    assert len(names._DATA.prototypes) > 6000
    assert names.script("a") == "Latn" and names.script("\u0430") == "Cyrl" and names.script("1") == "Zyyy"
    assert names.script_extensions("\u30fc") == {"Hira", "Kana"}  # a Common character used by two scripts
    assert names.default_ignorable("\u3164") and names.default_ignorable("\u034f") and not names.default_ignorable("a")


def test_the_rules_load_without_a_reactor() -> None:
    code = "import sys, socksvc.services.chat.names; assert 'twisted.internet.reactor' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("aIice", "alice"),  # capital I and small l: one class in UTS #39
        ("a1ice", "alice"),
        ("\u0430lice", "alice"),  # Cyrillic a
        ("\u0251lice", "alice"),  # Latin alpha
        ("\u03b1lice", "alice"),  # Greek alpha
        ("r\u043e\u043et", "root"),
        ("\u0455erver", "server"),
        ("m", "rn"),
        ("ali\u034fce", "alice"),  # default ignorables are dropped
        ("\uff41\uff4c\uff49\uff43\uff45", "alice"),  # fullwidth
    ],
)
def test_skeletons_meet(a: str, b: str) -> None:
    assert skeleton(a) == skeleton(b)
    assert look_key(a) == look_key(b)


def test_skeleton_is_case_sensitive_and_the_look_key_is_not() -> None:
    assert skeleton("Alice") != skeleton("alice")
    assert look_key("Alice") == look_key("alice") == look_key("\u0430lice")
    assert skeleton("aIice") == "alice"


@pytest.mark.parametrize(
    ("text", "level"),
    [
        ("alice", Level.ASCII),
        ("Jos\u00e9", Level.SINGLE_SCRIPT),
        ("\u0414\u043c\u0438\u0442\u0440\u0438\u0439", Level.SINGLE_SCRIPT),
        ("\u0430lice", Level.MINIMALLY_RESTRICTIVE),  # Latin + Cyrillic
        ("\u03b1lice", Level.MINIMALLY_RESTRICTIVE),  # Latin + Greek
        ("\u13aalice", Level.MINIMALLY_RESTRICTIVE),  # Latin + Cherokee (not a Recommended script)
        ("\u7530\u4e2dTaro", Level.HIGHLY_RESTRICTIVE),  # Latin + Han
        ("\u3072\u3089\u304c\u306a\u30ab\u30bf\u30ab\u30ca\u6f22\u5b57abc", Level.HIGHLY_RESTRICTIVE),
        ("\ud55c\uad6dabc", Level.HIGHLY_RESTRICTIVE),  # Latin + Hangul
        ("abc\u0627\u0628", Level.MODERATELY_RESTRICTIVE),  # Latin + Arabic
        ("\u0430\u03b1", Level.MINIMALLY_RESTRICTIVE),  # Cyrillic + Greek
        ("\u30fc\u30ab", Level.SINGLE_SCRIPT),  # Script_Extensions: the prolonged sound mark is Katakana too
    ],
)
def test_restriction_levels(text: str, level: Level) -> None:
    assert restriction_level(text) == level


def test_skeleton_of_every_input_is_bounded() -> None:
    worst = max(len(look_key(chr(cp))) for cp in range(0x10000) if not 0xD800 <= cp <= 0xDFFF)
    assert worst <= 18
    assert len(look_key("\ufdfa" * 64)) <= 18 * 64


# -- the attacks of the issue ------------------------------------------------

ATTACKS = [
    "\u0430lice",  # Cyrillic a
    "\u0251lice",  # Latin alpha
    "\u03b1lice",  # Greek alpha
    "aIice",  # capital I
    "a1ice",
    "alice\u3164",  # HANGUL FILLER
    "ali\u034fce",  # COMBINING GRAPHEME JOINER
    "ali\ufe0fce",  # variation selectors
    "ali\ufe00ce",
    "ali\U000e0100ce",
    "ali\u180bce",  # Mongolian free variation selector
    "ali\u180ece",  # Mongolian vowel separator
    "ali\u17b4ce",  # Khmer inherent vowels (invisible)
    "ali\u17b5ce",
    "\u3164",  # nothing but a filler
    "\u3164\u3164",
    "alice\u115f",
    "alice\uffa0",
    "ALICE",
    "Alice",
    "\uff41lice",
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_each_attack_is_refused_while_alice_is_present(attack: str) -> None:
    chat = Chat()
    chat.connect("alice")
    c = chat.connect()
    c.lines()
    c.send(attack)
    lines = c.lines()
    assert len(lines) == 1 and lines[0].startswith(REFUSED), lines
    assert c.member.nick is None
    assert set(chat.state.nicks) == {"alice"}


def test_the_refusal_says_which_name_it_looks_like() -> None:
    chat = Chat()
    chat.connect("alice")
    c = chat.connect()
    c.lines()
    c.send("\u0430lice", "aIice")
    assert c.lines() == [
        REFUSED + '"\u0430lice" looks like "alice", which is in use',
        REFUSED + '"aIice" looks like "alice", which is in use',
    ]
    c.send("ali\u034fce")
    assert c.lines() == [REFUSED + "character U+034F COMBINING GRAPHEME JOINER is not allowed (invisible)"]
    c.send("\u3164")
    assert c.lines() == [REFUSED + "character U+3164 HANGUL FILLER is not allowed (a Hangul filler or old jamo)"]


def test_the_witness_never_sees_a_second_alice() -> None:
    chat = Chat("flood_rate = 0")
    alice = chat.connect("alice")
    witness = chat.connect("witness")
    mallory = chat.connect()
    for attack in ATTACKS:
        mallory.send(attack)
    mallory.send("mallory", "hi everyone, it's me")
    seen = witness.lines()
    assert "<mallory> hi everyone, it's me" in seen
    assert not any(line.startswith("<") and not line.startswith("<mallory>") for line in seen), seen
    assert alice.member.nick == "alice"


@pytest.mark.parametrize(
    ("attack", "like"),
    [
        ("\u0430dmin", "admin"),
        ("\u0455erver", "server"),
        ("r\u043e\u043et", "root"),
        ("adrnin", "admin"),
        ("r00t", "root"),
        ("R00T", "root"),
        ("\u0455y\u0455op", "sysop"),
    ],
)
def test_look_alikes_of_reserved_names_are_refused(attack: str, like: str) -> None:
    c = Chat().connect()
    c.lines()
    c.send(attack)
    assert c.lines() == [REFUSED + f'"{attack}" looks like "{like}", which is reserved']


def test_reserved_names_from_the_config_are_compared_by_skeleton_too() -> None:
    c = Chat('reserved_nicks = ["Boss"]').connect()
    c.lines()
    c.send("B0SS", "b\u043ess", "admin")
    assert c.lines() == [
        REFUSED + '"B0SS" looks like "Boss", which is reserved',
        REFUSED + '"b\u043ess" looks like "Boss", which is reserved',
        "-!- You are now known as admin",
        "-!- You are now in lobby (1 member)",
    ]


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("x\u0430y", '"x\u0430y" mixes the Latin and Cyrillic scripts'),
        ("\u0430\u03b1", "mixes the Cyrillic and Greek scripts"),
        ("ab\u0663\u0031", "mixes digits of different number systems"),
        ("a\u0301\u0301", "repeats the mark U+0301 COMBINING ACUTE ACCENT"),
        ("a\u0300\u0301\u0302\u0303\u0304", "more than 4 marks on one letter"),
    ],
)
def test_uts39_section5_checks_refuse_with_one_line(name: str, why: str) -> None:
    c = Chat().connect()
    c.lines()
    c.send(name)
    lines = c.lines()
    assert len(lines) == 1 and lines[0].startswith(REFUSED) and why in lines[0], lines


def test_names_are_kept_as_precis_enforced() -> None:
    chat = Chat()
    a = chat.connect("\uff22\uff4f\uff42")  # fullwidth: NFKC makes it Bob
    assert a.member.nick == "Bob"
    chat.connect("\u7530\u4e2dTaro")
    a.send("/who")
    assert a.lines()[-1] == "-!- Members of lobby (2): Bob, \u7530\u4e2dTaro"


def test_changing_to_a_look_alike_of_ones_own_name_is_fine() -> None:
    chat = Chat()
    a = chat.connect("alice")
    a.send("/nick aIice")
    assert a.lines() == ["-!- You are now known as aIice"]
    b = chat.connect()
    b.lines()
    b.send("alice")
    assert b.lines() == [REFUSED + '"alice" looks like "aIice", which is in use']
    a.send("/nick someone")
    b.send("alice")
    assert b.lines()[0] == "-!- You are now known as alice"
    assert set(chat.state.looks) == {look_key("someone"), look_key("alice")}


def test_a_quit_frees_the_look_alikes() -> None:
    chat = Chat()
    a = chat.connect("alice")
    a.send("/quit")
    assert chat.state.looks == {}
    chat.connect("aIice")


# -- rooms -------------------------------------------------------------------


def test_look_alike_rooms_are_refused_and_case_variants_join() -> None:
    chat = Chat('rooms = ["lobby", "dev"]')
    c = chat.connect("bob")
    c.send("/join #l\u043ebby", "/join L0BBY", "/join d\u0435v", "/join DEV")
    assert c.lines() == [
        '-!- error: bad room name: "l\u043ebby" looks like "lobby", which exists',
        '-!- error: bad room name: "L0BBY" looks like "lobby", which exists',
        '-!- error: bad room name: "d\u0435v" looks like "dev", which exists',
        "-!- You are now in dev (1 member)",
    ]
    c.send("/join x\u0430y")
    assert c.lines() == ['-!- error: bad room name: "x\u0430y" mixes the Latin and Cyrillic scripts']
    c.send("/join news", "/join lobby")
    c.lines()
    assert "news" not in chat.state.rooms and look_key("news") not in chat.state.room_looks
    c.send("/join new5")
    assert c.lines()[0] == "-!- You are now in new5 (1 member)"


def test_a_reload_may_add_a_room_that_looks_like_a_live_one() -> None:
    chat = Chat('rooms = ["main"]')
    a = chat.connect("alice")
    a.send("/join l0bby")
    new = loads('[services.chat]\nlisten = ["tcp:0"]\nrooms = ["main", "lobby"]')
    chat.ctx.settings = new.service("chat").settings
    chat.state.reconfigure(chat.ctx.settings)  # the configuration wins; both rooms work
    b = chat.connect("bob")
    b.lines()
    b.send("/join lobby", "/join l0bby", "/join LOBBY", "/join main", "/join l0bby")
    lines = b.lines()
    assert [x for x in lines if x.startswith("-!- You are now in")] == [
        "-!- You are now in lobby (1 member)",
        "-!- You are now in l0bby (2 members)",
        "-!- You are now in lobby (1 member)",
        "-!- You are now in main (1 member)",
        "-!- You are now in l0bby (2 members)",
    ]
    a.send("/quit")
    b.send("/join main")
    assert "l0bby" not in chat.state.rooms and chat.state.room_looks[look_key("lobby")].name == "lobby"


def test_configured_rooms_may_not_look_alike() -> None:
    with pytest.raises(ValueError, match="look alike"):
        parse_rooms(["lobby", "l0bby"])
    with pytest.raises(ValueError, match="mixes the Latin and Cyrillic scripts"):
        parse_rooms(["l\u043ebby"])
    assert parse_rooms(["#\uff44\uff45\uff56", "lobby"]) == ("dev", "lobby")


# -- properties --------------------------------------------------------------


def _look_alike_groups() -> dict[str, list[str]]:
    """Every character with a confusables.txt mapping (and each prototype), by its skeleton."""
    groups: dict[str, set[str]] = {}
    for src, proto in names._DATA.prototypes.items():
        for ch in (src, *([proto] if len(proto) == 1 else [])):
            groups.setdefault(skeleton(ch), set()).add(ch)
    return {k: sorted(v) for k, v in groups.items()}


GROUPS = _look_alike_groups()
INVISIBLES = sorted(
    chr(cp)
    for start, end in zip(names._DATA.di_start, names._DATA.di_end, strict=True)
    for cp in range(start, min(end, start + 64) + 1)
)


@st.composite
def look_alikes(draw: st.DrawFn, target: str) -> str:
    """
    A string with C{target}'s UTS #39 skeleton: each character swapped for
    one that looks like it, invisible characters strewn in between.
    """
    out = []
    for ch in target:
        if draw(st.booleans()):
            out.append(draw(st.sampled_from(INVISIBLES)))
        out.append(draw(st.sampled_from(GROUPS.get(skeleton(ch), [ch]))))
    if draw(st.booleans()):
        out.append(draw(st.sampled_from(INVISIBLES)))
    return "".join(out)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_generated_look_alikes_are_refused_while_the_name_is_present(data: st.DataObject) -> None:
    target = data.draw(st.sampled_from(["alice", "bob", "Mallory", "\u0434\u0438\u043c\u0430", *DEFAULT_RESERVED]))
    attack = data.draw(look_alikes(target))
    assert skeleton(attack) == skeleton(target)
    chat = Chat()
    if target not in DEFAULT_RESERVED:
        chat.connect(target)
    c = chat.connect()
    c.lines()
    c.send(attack.replace("\n", ""))
    lines = c.lines()
    assert len(lines) == 1 and lines[0].startswith(REFUSED), (attack, lines)
    assert c.member.nick is None


NAMES = st.one_of(
    st.sampled_from(["carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "\u0434\u0438\u043c\u0430"]),
    st.sampled_from(["alice", "Alice", "bob", "b0b", "rn", "m", "\u7530\u4e2d", "Jos\u00e9", "Jose\u0301"]),
    st.sampled_from(["alice", "bob", "admin", "mallory", "dima"]).flatmap(look_alikes),
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=10),
    st.sampled_from(["alice", "bob", "admin", "mallory", "dima"]).flatmap(look_alikes),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 5), NAMES | st.just("/quit")), min_size=10, max_size=40))
def test_no_two_present_members_share_a_skeleton(steps: list[tuple[int, str]]) -> None:
    chat = Chat("flood_rate = 0")
    clients = [chat.connect() for _ in range(6)]
    for i, name in steps:
        c = clients[i]
        if c.member.gone:
            c = clients[i] = chat.connect()
        c.send(name if name == "/quit" else "/nick " + name.replace("\n", " "))
        named = [x.member for x in clients if not x.member.gone and x.member.nick is not None]
        nicks = [m.nick for m in named]
        event(f"{min(len(nicks), 3)}+ members named")
        assert len({skeleton(n) for n in nicks}) == len(nicks), nicks
        assert len({look_key(n) for n in nicks}) == len(nicks), nicks
        assert chat.state.looks == {look_key(m.nick): m for m in named}
        for n in nicks:
            assert NICKNAME.enforce(n) == n  # PRECIS-valid, and kept as enforced
            assert restriction_level(n) <= Level.MODERATELY_RESTRICTIVE


NAMELIKE = st.text(st.characters(categories=["L", "M", "Nd"]) | st.sampled_from("_-."), min_size=1, max_size=30)


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=30) | NAMELIKE)
def test_every_accepted_name_is_precis_valid(name: str) -> None:
    form, problem = nick_check(name, 24)
    event("accepted" if problem is None else "refused")
    if problem is None:
        assert NICKNAME.enforce(name) == form == NICKNAME.enforce(form)
        assert 1 <= len(form) <= 24
        assert names.look_problem(form) is None
        assert unicodedata.is_normalized("NFKC", form)
    else:
        assert "\n" not in problem and "Traceback" not in problem
    _room, why = room_check(name)
    assert (why is None) == (nick_check(name, 32)[1] is None)


def test_the_look_index_costs_one_short_string_per_member_at_most() -> None:
    chat = Chat("flood_rate = 0\nmax_per_source = 0\nmax_per_subnet = 0")
    members = [chat.connect(f"user{i}").member for i in range(300)]
    looks = chat.state.looks
    assert len(looks) == 300
    extra = sum(sys.getsizeof(m.look) for m in members if m.look is not m.key)
    assert extra <= 300 * 64
    assert all(looks[m.look] is m for m in members)
