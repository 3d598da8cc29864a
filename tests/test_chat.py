"""
Chat service unit tests: every command, line format, nickname rule and limit,
over StringTransport with a fake clock (see tests/test_chat_support.py).
"""

from __future__ import annotations

import re
import unicodedata

import pytest
from twisted.internet.error import ConnectionLost

from socksvc.config.loader import DEFAULT_CONFIG, ConfigError
from socksvc.services.catalogue import loads
from socksvc.services.chat.service import ChatSettings
from tests.support.chat import LINE, UNSAFE, Chat

# -- connecting and nicknames ------------------------------------------------


def test_welcome_motd_and_nick_prompt() -> None:
    chat = Chat('motd = "Be nice.\\n\\nLunch at 12 \\u001b[5m"')
    c = chat.connect()
    assert c.lines() == [
        "-!- Welcome to socksvc chat",
        "-!- Be nice.",
        "-!- Lunch at 12 ^[[5m",
        "-!- Choose a nickname: letters, digits, _ - . (at most 24 characters)",
    ]


def test_welcome_waits_a_moment_for_the_nickname_to_share_one_write() -> None:
    from socksvc.services.chat.state import WELCOME_HOLD

    chat = Chat()
    c = chat.connect(release=False)
    assert c.output() == b""
    c.send("alice")
    assert c.transport.writes == 1
    assert c.lines() == [
        "-!- Welcome to socksvc chat",
        "-!- Choose a nickname: letters, digits, _ - . (at most 24 characters)",
        "-!- You are now known as alice",
        "-!- You are now in lobby (1 member)",
    ]
    slow = chat.connect(release=False)
    chat.clock.advance(WELCOME_HOLD / 2)
    assert slow.output() == b""
    chat.clock.advance(WELCOME_HOLD / 2)
    assert slow.lines()[0] == "-!- Welcome to socksvc chat"


def test_quit_as_the_first_line_still_gets_the_welcome() -> None:
    chat = Chat()
    c = chat.connect(release=False)
    c.send("/quit")
    assert c.lines()[0] == "-!- Welcome to socksvc chat"
    assert c.lines() == [] and c.all_lines()[-1] == "-!- Disconnected: quit"
    assert c.transport.disconnecting


def test_first_plain_line_is_the_nickname_and_joins_the_first_room() -> None:
    chat = Chat('rooms = ["main", "dev"]')
    a = chat.connect("alice")
    b = chat.connect()
    b.lines()
    b.send("bob")
    assert b.lines() == ["-!- You are now known as bob", "-!- You are now in main (2 members)"]
    assert a.lines() == ["-!- bob has joined main"]


def test_alone_in_a_room_says_one_member() -> None:
    c = Chat().connect()
    c.send("solo")
    assert c.lines()[-1] == "-!- You are now in lobby (1 member)"


def test_refused_nickname_gets_one_line_and_the_next_line_is_tried() -> None:
    chat = Chat()
    chat.connect("bob")
    c = chat.connect()
    c.lines()
    c.send("BOB")
    assert c.lines() == ["-!- error: nickname refused: BOB is taken"]
    c.send("carol")
    assert c.lines()[0] == "-!- You are now known as carol"


@pytest.mark.parametrize("taken", ["bob", "Bob", "BOB", "\uff22\uff2f\uff22", "\uff42\uff4f\uff42"])
@pytest.mark.parametrize("attempt", ["bob", "Bob", "\uff22\uff2f\uff22"])
def test_nicknames_compare_nfkc_casefolded(taken: str, attempt: str) -> None:
    chat = Chat()
    chat.connect(taken)
    c = chat.connect()
    c.lines()
    c.send(attempt)
    assert c.lines() == [f"-!- error: nickname refused: {attempt} is taken"]


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("a" * 25, "too long (at most 24 characters)"),
        ("admin", "admin is reserved"),
        ("ADMIN", "ADMIN is reserved"),
        ("\uff41\uff44\uff4d\uff49\uff4e", "is reserved"),
        ("Server", "Server is reserved"),
        ("bo\u200bb", "U+200B ZERO WIDTH SPACE"),
        ("bo\u202eb", "U+202E RIGHT-TO-LEFT OVERRIDE"),
        ("bo\u2066b", "U+2066"),
        ("bo\x1bb", "U+001B"),
        ("bo\x7fb", "U+007F"),
        ("bo\u0085b", "U+0085"),
        ("<bob>", "'<'"),
        ("*bob*", "'*'"),
        ("bob!", "'!'"),
        ("\u0301bob", "U+0301"),
        ("bo\u00a0b", "no spaces"),
        ("\u2460", "U+2460"),
    ],
)
def test_bad_nicknames(name: str, why: str) -> None:
    c = Chat().connect()
    c.lines()
    c.send(name)
    lines = c.lines()
    assert len(lines) == 1
    assert lines[0].startswith("-!- error: nickname refused: ")
    assert why in lines[0]
    assert c.member.nick is None


def test_space_in_nick_command() -> None:
    c = Chat().connect()
    c.lines()
    c.send("/nick bob smith")
    assert c.lines() == ["-!- error: nickname refused: no spaces in a nickname"]


@pytest.mark.parametrize("name", ["José", "Дмитрий", "李小龍", "o'k"[:1], "a.b-c_d", "x9", "e\u0301", "_", "नमस्ते"])
def test_good_nicknames(name: str) -> None:
    c = Chat().connect()
    c.lines()
    c.send(name)
    # kept as its PRECIS enforcement (NFKC): e + U+0301 is shown as é
    assert c.lines()[0] == f"-!- You are now known as {unicodedata.normalize('NFKC', name)}"


def test_nick_max_and_reserved_are_settings() -> None:
    chat = Chat('nick_max = 4\nreserved_nicks = ["boss"]')
    c = chat.connect()
    assert "(at most 4 characters)" in c.lines()[-1]
    c.send("BOSS")
    assert c.lines() == ["-!- error: nickname refused: BOSS is reserved"]
    c.send("admin")
    assert c.lines() == ["-!- error: nickname refused: too long (at most 4 characters)"]
    c.send("adm")
    assert c.lines()[0] == "-!- You are now known as adm"


def test_nick_change_is_announced_and_frees_the_old_name() -> None:
    chat = Chat()
    a = chat.connect("alice")
    b = chat.connect("bob")
    a.lines()
    b.send("/nick robert")
    assert b.lines() == ["-!- You are now known as robert"]
    assert a.lines() == ["-!- bob is now known as robert"]
    c = chat.connect("bob")
    b.lines()
    c.send("/NICK Robert")
    assert c.lines() == ["-!- error: nickname refused: Robert is taken"]
    b.send("/nick Robert")  # a change of case of one's own name is fine
    assert b.lines() == ["-!- You are now known as Robert"]
    b.send("/who")
    assert b.lines() == ["-!- Members of lobby (3): alice, bob, Robert"]


def test_nick_command_usage() -> None:
    c = Chat().connect("al")
    c.send("/nick")
    assert c.lines() == ["-!- error: usage: /nick NAME"]


def test_commands_before_a_nickname() -> None:
    c = Chat().connect()
    c.lines()
    c.send("/who", "/join x", "/msg a b", "/me x", "/topic", "/rooms")
    assert c.lines() == ["-!- error: choose a nickname first"] * 5 + ["-!- Rooms: lobby (0)"]
    c.send("/nick al")
    assert c.lines()[0] == "-!- You are now known as al"


# -- messages ----------------------------------------------------------------


def test_message_action_private_formats() -> None:
    chat = Chat()
    a = chat.connect("alice")
    b = chat.connect("bob")
    a.lines()
    b.send("hello there", "/me waves", "/msg alice  psst  ", "//slash")
    assert a.lines() == ["<bob> hello there", "* bob waves", "*bob* psst  ", "<bob> /slash"]
    assert b.lines() == ["-> *alice* psst  "]


def test_own_room_lines_are_not_echoed() -> None:
    chat = Chat()
    a = chat.connect("alice")
    a.send("hi", "/me sighs")
    assert a.lines() == []


def test_private_message_reaches_other_rooms_and_errors() -> None:
    chat = Chat()
    a = chat.connect("alice")
    b = chat.connect("bob")
    b.send("/join dev")
    b.lines()
    a.lines()
    a.send("/MSG BOB hi", "/msg nobody x", "/msg bob", "/msg")
    assert b.lines() == ["*alice* hi"]
    assert a.lines() == [
        "-> *bob* hi",
        "-!- error: no such nick: nobody",
        "-!- error: usage: /msg NICK TEXT",
        "-!- error: usage: /msg NICK TEXT",
    ]


def test_me_usage_and_blank_lines_ignored() -> None:
    chat = Chat()
    a = chat.connect("alice")
    b = chat.connect("bob")
    a.lines()
    b.send("", "   ", "/me", "\t")
    assert a.lines() == []
    assert b.lines() == ["-!- error: usage: /me TEXT"]


def test_commands_are_case_insensitive_and_unknown_points_at_help() -> None:
    c = Chat().connect("al")
    c.send("/WhO", "/frobnicate now", "/")
    assert c.lines() == [
        "-!- Members of lobby (1): al",
        "-!- error: unknown command /frobnicate; type /help for the list",
        "-!- error: unknown command /; type /help for the list",
    ]


def test_help_lists_every_command() -> None:
    c = Chat().connect("al")
    c.send("/HELP")
    text = "\n".join(c.lines())
    for cmd in ("/nick", "/join", "/rooms", "/who", "/msg", "/me", "/topic", "/help", "/quit"):
        assert cmd in text
    assert all(line.startswith("-!- ") for line in text.split("\n"))


def test_quit_with_reason() -> None:
    chat = Chat()
    a = chat.connect("alice")
    b = chat.connect("bob")
    a.lines()
    b.send("/quit  gone fishing ", "this is never said")
    assert b.lines() == ["-!- Disconnected: quit"]
    assert b.transport.disconnecting and not b.transport.disconnected  # a clean close, output flushed
    assert b.proto.close_reason == "quit"
    assert a.lines() == ["-!- bob has quit (gone fishing)"]
    b.lose()
    assert a.lines() == []
    c = chat.connect("bob")  # the name is free again
    assert c.member.nick == "bob"


def test_quit_without_reason() -> None:
    chat = Chat()
    a = chat.connect("alice")
    b = chat.connect("bob")
    a.lines()
    b.send("/Quit")
    assert a.lines() == ["-!- bob has quit"]


def test_timestamps() -> None:
    chat = Chat("timestamps = true")
    chat.clock.advance(3600 * 5 + 7 * 60)
    a = chat.connect()
    assert all(re.match(r"^\[\d\d:\d\d\] -!- ", line) for line in a.lines())
    a.send("alice")
    b = chat.connect()
    b.send("bob")
    a.lines()
    b.send("hi", "/me hops", "/msg alice x")
    stamp = chat.state.fmt.stamp()
    assert a.lines() == [f"[{stamp}] <bob> hi", f"[{stamp}] * bob hops", f"[{stamp}] *bob* x"]
    assert b.lines()[-1] == f"[{stamp}] -> *alice* x"


# -- rooms -------------------------------------------------------------------


def test_join_creates_rooms_and_announces() -> None:
    chat = Chat()
    a = chat.connect("alice")
    b = chat.connect("bob")
    a.lines()
    b.send("/join #Dev")
    assert b.lines() == ["-!- You are now in Dev (1 member)"]
    assert a.lines() == ["-!- bob has left lobby"]
    a.send("/join dev")
    assert a.lines() == ["-!- You are now in Dev (2 members)"]
    assert b.lines() == ["-!- alice has joined Dev"]
    a.send("in dev")
    assert b.lines() == ["<alice> in dev"]
    a.send("/rooms")
    assert a.lines() == ["-!- Rooms: lobby (0), Dev (2)"]
    a.send("/join dev")
    assert a.lines() == ["-!- error: you are already in Dev"]


def test_join_errors() -> None:
    chat = Chat()
    a = chat.connect("alice")
    a.send("/join", "/join a b", "/join bad!name", "/join " + "x" * 33)
    lines = a.lines()
    assert lines[:2] == ["-!- error: usage: /join ROOM"] * 2
    assert lines[2].startswith("-!- error: bad room name: character '!'")
    assert lines[3] == "-!- error: bad room name: too long (at most 32 characters)"


def test_allow_create_false() -> None:
    chat = Chat('rooms = ["lobby", "#ops"]\nallow_create = false')
    a = chat.connect("alice")
    a.send("/join new", "/join OPS")
    lines = a.lines()
    assert lines[0].startswith("-!- error: no such room: new")
    assert lines[1] == "-!- You are now in ops (1 member)"


def test_max_rooms() -> None:
    chat = Chat("max_rooms = 2")
    a = chat.connect("alice")
    a.send("/join two", "/join three")
    lines = a.lines()
    assert lines[0] == "-!- You are now in two (1 member)"
    assert lines[1] == "-!- error: too many rooms (at most 2); join one of /rooms"


def test_empty_created_rooms_vanish_configured_ones_stay() -> None:
    chat = Chat()
    a = chat.connect("alice")
    a.send("/join tmp", "/topic temporary", "/join lobby")
    a.lines()
    a.send("/rooms")
    assert a.lines() == ["-!- Rooms: lobby (1)"]
    a.send("/join tmp", "/topic")
    assert a.lines()[-1] == "-!- No topic is set for tmp"


def test_who_and_rooms_wrap_long_lists() -> None:
    chat = Chat("announce_max = 5\nflood_rate = 0")
    clients = [chat.connect(f"member{i:03d}xxxxxxxxxxxxx") for i in range(60)]
    c = clients[0]
    c.lines()
    c.send("/who")
    lines = c.lines()
    assert len(lines) > 1
    assert all(line.startswith("-!- Members of lobby (60): ") for line in lines)
    names = ", ".join(line.split(": ", 1)[1] for line in lines).split(", ")
    assert len(names) == 60
    assert all(len(line.encode()) < 600 for line in lines)


def test_topic() -> None:
    chat = Chat()
    a = chat.connect("alice")
    b = chat.connect("bob")
    a.lines()
    a.send("/topic")
    assert a.lines() == ["-!- No topic is set for lobby"]
    a.send("/topic  release \x1b[2J friday ")
    expected = "-!- alice set the topic of lobby to: release ^[[2J friday"
    assert a.lines() == [expected]
    assert b.lines() == [expected]
    b.send("/topic")
    assert b.lines() == ["-!- Topic of lobby: release ^[[2J friday"]
    c = chat.connect()
    c.send("carol")
    assert "-!- Topic of lobby: release ^[[2J friday" in c.lines()
    b.send("/topic -")
    assert a.lines()[-1] == "-!- bob cleared the topic of lobby"


def test_history_replay_marked_and_bounded() -> None:
    chat = Chat("history = 3")
    a = chat.connect("alice")
    a.send("one", "two", "/me three", "/msg alice private", "four")
    chat.connect("bob")
    b = chat.connect()
    b.lines()
    b.send("/nick carol")
    lines = b.lines()
    assert lines[0] == "-!- You are now known as carol"
    assert lines[1] == "-!- You are now in lobby (3 members)"
    stamp = chat.state.fmt.stamp()
    assert lines[2:] == [
        f"[history {stamp}] <alice> two",
        f"[history {stamp}] * alice three",
        f"[history {stamp}] <alice> four",
    ]


def test_history_zero_replays_nothing() -> None:
    chat = Chat("history = 0")
    a = chat.connect("alice")
    a.send("one")
    b = chat.connect()
    b.lines()
    b.send("bob")
    assert b.lines() == ["-!- You are now known as bob", "-!- You are now in lobby (2 members)"]


def test_announce_max_auditorium() -> None:
    chat = Chat("announce_max = 2")
    a = chat.connect("alice")
    chat.connect("bob")
    a.lines()
    c = chat.connect("carol")  # 3 members > 2: not announced
    assert a.lines() == []
    c.send("/nick caroline", "hello")
    assert a.lines() == ["<caroline> hello"]
    c.lose()
    assert a.lines() == []
    a.send("/who")
    assert a.lines() == ["-!- Members of lobby (2): alice, bob"]
    d = chat.connect("dave")
    d.send("/who")
    assert d.lines() == ["-!- Members of lobby (3): alice, bob, dave"]


def test_announce_max_zero_always_announces() -> None:
    chat = Chat("announce_max = 0\nflood_rate = 0")
    a = chat.connect("alice")
    for i in range(5):
        chat.connect(f"m{i}")
    assert len([x for x in a.lines() if x.endswith("has joined lobby")]) == 5


# -- sanitising --------------------------------------------------------------


def test_controls_are_shown_visibly_never_delivered() -> None:
    chat = Chat()
    a = chat.connect("alice")
    b = chat.connect("bob")
    a.lines()
    b.raw(
        b"esc \x1b]0;pwned\x07 bel\r\n"
        b"c1 \xc2\x9b31m del \x7f nul \x00 tab\tok\n"
        b"bidi \xe2\x80\xae evil \xe2\x81\xa6 iso \xe2\x80\xa8 sep\n"
        b"bad utf8 \xfe\xc3 end\n"
        b"lone\rcr\n"
    )
    assert a.lines() == [
        "<bob> esc ^[]0;pwned^G bel",
        "<bob> c1 \\x9b31m del ^? nul ^@ tab\tok",
        "<bob> bidi \\u202e evil \\u2066 iso \\u2028 sep",
        "<bob> bad utf8 \ufffd\ufffd end",
        "<bob> lonecr",
    ]


def test_every_line_gets_its_own_prefix() -> None:
    chat = Chat()
    a = chat.connect("alice")
    b = chat.connect("bob")
    a.lines()
    b.raw(b"hi\n<alice> I owe bob money\r\n* alice agrees\rreally\n")
    lines = a.lines()
    assert lines == ["<bob> hi", "<bob> <alice> I owe bob money", "<bob> * alice agreesreally"]
    assert all(LINE.match(line) for line in lines)


def test_telnet_negotiation_is_ignored_even_split_across_reads() -> None:
    chat = Chat()
    a = chat.connect("alice")
    b = chat.connect()
    b.raw(b"\xff\xfd\x03\xff\xfb")
    b.raw(b"\x01bo")
    b.raw(b"b\r\n\xff\xfa\x18\x00xterm\nstill sb\xff")
    b.raw(b"\xf0he\xff\xf1llo\xff\xff\n")
    assert b.member.nick == "bob"
    assert a.lines()[-1] == "<bob> hello\ufffd"


# -- limits ------------------------------------------------------------------


def test_flood_control_drops_with_one_notice_then_kicks() -> None:
    chat = Chat("flood_burst = 3\nflood_rate = 1\nflood_kick = 10")
    a = chat.connect("alice")
    b = chat.connect("bob")
    a.lines()
    chat.clock.advance(10)  # the nickname line took a token
    b.send(*[f"line {i}" for i in range(6)])
    assert a.lines() == ["<bob> line 0", "<bob> line 1", "<bob> line 2"]
    assert b.lines() == ["-!- error: flooding: lines are being dropped (limit 1 lines/s)"]
    for _ in range(9):
        chat.clock.advance(1)
        b.send("x", "y")
    assert b.lines() == []  # one notice per flood
    assert a.lines() == ["<bob> x"] * 9
    assert not b.transport.disconnected
    chat.clock.advance(1)
    b.send("x", "y")
    assert b.transport.disconnected  # aborted
    assert b.proto.close_reason == "flooding"  # for the policy layer's close log line
    assert b.lines()[-1] == "-!- Disconnected: flooding"
    assert a.lines() == ["<bob> x", "-!- bob has quit (flooding)"]


def test_flood_episode_ends_when_quiet() -> None:
    chat = Chat("flood_burst = 2\nflood_rate = 1\nflood_kick = 5")
    b = chat.connect("bob")
    b.send("a", "b", "c")
    assert len(b.lines()) == 1
    chat.clock.advance(4)
    b.send("a", "b", "c")  # a new flood after a quiet spell: told again, not kicked
    assert len(b.lines()) == 1
    chat.clock.advance(4)
    b.send("a", "b", "c")
    assert not b.transport.disconnected


def test_flood_rate_zero_is_off() -> None:
    chat = Chat("flood_rate = 0\ninput_line_rate = 0")
    a = chat.connect("alice")
    b = chat.connect("bob")
    a.lines()
    b.send(*["x"] * 500)
    chat.clock.advance(0)  # whatever did not fit in one slice comes on the next turn
    assert len(a.lines()) == 500
    assert b.lines() == []


def test_max_line_refuses_long_lines() -> None:
    chat = Chat("max_line = 20")
    a = chat.connect("alice")
    b = chat.connect("bob")
    a.lines()
    b.send("x" * 21, "y" * 20)
    assert b.lines() == ["-!- error: line too long (over 20 bytes); not sent"]
    assert a.lines() == ["<bob> " + "y" * 20]


def test_no_line_end_beyond_8x_max_line_aborts() -> None:
    chat = Chat("max_line = 20")
    a = chat.connect("alice")
    b = chat.connect("bob")
    a.lines()
    b.raw(b"z" * 160)
    assert not b.transport.disconnected
    b.raw(b"z")
    assert b.transport.disconnected
    assert b.lines()[-1] == "-!- Disconnected: line too long (no line end in 160 bytes)"
    assert a.lines() == ["-!- bob has quit (line too long (no line end in 160 bytes))"]


def test_batching_one_read_one_write_per_recipient() -> None:
    chat = Chat("flood_rate = 0")
    a = chat.connect("alice")
    c = chat.connect("carol")
    b = chat.connect("bob")
    before_a, before_c, before_b = a.transport.writes, c.transport.writes, b.transport.writes
    b.send("one", "two", "/me three", "/msg alice four", "/who", "five")
    assert a.transport.writes == before_a + 1
    assert c.transport.writes == before_c + 1
    assert b.transport.writes == before_b + 1
    assert a.lines()[-5:] == ["<bob> one", "<bob> two", "* bob three", "*bob* four", "<bob> five"]
    assert c.lines()[-4:] == ["<bob> one", "<bob> two", "* bob three", "<bob> five"]
    assert b.lines()[-2:] == ["-> *alice* four", "-!- Members of lobby (3): alice, bob, carol"]


def test_batch_order_across_a_join() -> None:
    chat = Chat()
    a = chat.connect("alice")
    d = chat.connect("dave")
    d.send("/join dev")
    b = chat.connect("bob")
    a.lines()
    d.lines()
    b.send("bye lobby", "/join dev", "hi dev")
    assert a.lines() == ["<bob> bye lobby", "-!- bob has left lobby"]
    assert d.lines() == ["-!- bob has joined dev", "<bob> hi dev"]


# -- slow readers ------------------------------------------------------------


def test_slow_reader_queues_then_stalls_then_catches_up() -> None:
    chat = Chat("flood_rate = 0\nsend_queue_max = 2000\nstall_timeout = 30")
    slow = chat.connect("slow", buffer=1000)
    a = chat.connect("alice")
    slow.transport.drain()
    line = "m" * 90  # "<alice> " + 90 + CRLF = 100 bytes
    for _ in range(11):
        a.send(line)
    assert slow.transport.paused
    held = len(slow.output())
    assert held <= 1100
    for _ in range(30):
        a.send(line)
    member = slow.member
    assert member.stalled
    assert member.unsent() <= 2000
    assert len(slow.output()) == held  # nothing more written while paused
    got = b""
    for _ in range(10):  # the reader catches up, a buffer at a time
        got += slow.transport.drain()
    text = got.decode()
    lines = text.split("\r\n")[:-1]
    missed = int(re.search(r"You missed (\d+) lines", text).group(1))  # type: ignore[union-attr]
    assert len([x for x in lines if x.startswith("<alice>")]) + missed == 41
    assert lines[-1] == f"-!- You missed {missed} lines (you were not reading fast enough)"
    assert not member.stalled
    a.send("after")
    assert slow.transport.drain().endswith(b"<alice> after\r\n")


def test_stalled_reader_is_aborted_after_stall_timeout_others_unaffected() -> None:
    chat = Chat("flood_rate = 0\nsend_queue_max = 2000\nstall_timeout = 30")
    slow = chat.connect("slow", buffer=1000)
    a = chat.connect("alice")
    b = chat.connect("bob")
    b.lines()
    for i in range(100):
        a.send(f"line {i} " + "x" * 80)
    assert slow.member.stalled
    assert len(b.lines()) == 100  # bob got everything at once
    assert slow.member.unsent() <= 2000
    chat.clock.advance(29)
    assert not slow.transport.disconnected
    chat.clock.advance(1)
    assert slow.transport.disconnected
    assert b.lines() == ["-!- slow has quit (not reading)"]
    slow.lose(ConnectionLost())
    a.send("still here")
    assert b.lines() == ["<alice> still here"]


def test_never_reading_member_bounded_while_others_chat() -> None:
    chat = Chat("flood_rate = 0\nstall_timeout = 1000\ninput_byte_rate = 0\ninput_line_rate = 0")
    sink = chat.connect("sink", buffer=64 * 1024)
    talkers = [chat.connect(f"t{i}") for i in range(3)]
    for n in range(2000):
        talkers[n % 3].send(f"message {n} " + "q" * 200)
        if n % 100 == 0:
            for t in talkers:
                t.transport.clear()
    limit = chat.state.settings.send_queue_max
    assert sink.member.stalled
    assert sink.member.unsent() <= limit
    assert len(sink.output()) < 64 * 1024 + 300
    assert sink.member.missed > 0


# -- connections going away --------------------------------------------------


def test_vanished_client_mid_broadcast_affects_nobody() -> None:
    chat = Chat()
    a = chat.connect("alice")
    b = chat.connect("bob")
    c = chat.connect("carol")
    a.lines()
    b.lose(ConnectionLost("reset"))
    b.lose(ConnectionLost("reset"))  # twice: no error
    b.proto.dataReceived(b"late\n")  # a read after the loss is ignored
    c.send("hello")
    assert a.lines() == ["-!- bob has quit (connection closed)", "<carol> hello"]
    assert not chat.state.nicks.get("bob")


def test_half_close_leaves_and_closes_after_flushing() -> None:
    chat = Chat()
    a = chat.connect("alice")
    b = chat.connect("bob")
    a.lines()
    b.send("last words")
    b.proto.readConnectionLost()
    assert a.lines() == ["<bob> last words", "-!- bob has quit (connection closed)"]
    assert b.transport.disconnecting and not b.transport.disconnected
    chat.clock.advance(10)
    assert b.transport.disconnected  # a peer that never takes the rest is aborted


def test_write_connection_lost_aborts() -> None:
    chat = Chat()
    b = chat.connect("bob")
    b.proto.writeConnectionLost()
    assert b.transport.disconnected


# -- idle, reload, stop ------------------------------------------------------


def test_idle_timeout_spares_members_not_nameless_connections() -> None:
    chat = Chat("idle_timeout = 10")
    chat.ctx.policy.start()
    a = chat.connect("alice")
    anon = chat.connect()
    for _ in range(50):
        chat.clock.advance(1)
    assert anon.transport.disconnected
    assert not a.transport.disconnected
    chat.ctx.policy.stop()


def test_reconfigure_applies_to_live_state() -> None:
    chat = Chat("history = 5")
    a = chat.connect("alice")
    a.send("1", "2", "3", "4")
    state = chat.state
    new = loads(
        '[services.chat]\nlisten = ["tcp:0"]\nrooms = ["lobby", "news"]\nhistory = 2\ntimestamps = true'
    ).service("chat")
    chat.ctx.reconfigure(new.settings)  # what the daemon does on a reload
    assert chat.ctx.state is state
    assert [(said.nick, said.text) for _, said in state.rooms["lobby"].history] == [("alice", "3"), ("alice", "4")]
    a.lines()
    a.send("/rooms")
    assert re.match(r"^\[\d\d:\d\d\] -!- Rooms: lobby \(1\), news \(0\)$", a.lines()[0])
    assert a.member.nick == "alice"


def test_stop_tells_everyone() -> None:
    chat = Chat()
    a = chat.connect("alice")
    anon = chat.connect()
    a.lines()
    anon.lines()
    chat.ctx.state.shutdown()  # what the daemon does on stop
    assert a.lines() == ["-!- server is shutting down"]
    assert anon.lines() == ["-!- server is shutting down"]
    assert a.transport.disconnecting
    a.lose()
    assert a.lines() == []


# -- config ------------------------------------------------------------------


def test_default_config_has_chat_on_7070() -> None:
    cfg = loads(DEFAULT_CONFIG)
    svc = cfg.service("chat")
    assert svc.listen[0].text == "tcp:7070:interface=127.0.0.1"
    assert svc.settings == ChatSettings()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("rooms = []", "services.chat.rooms = []: must not be empty"),
        ('rooms = ["a b"]', "no spaces in a room name"),
        ('rooms = ["dev", "DEV"]', "are the same name"),
        ("history = -1", "must be at least 0"),
        ("flood_burst = 0", "must be at least 1"),
        ('timestamps = "yes"', "expected true or false"),
        ("max_line = 2", "must be at least 16"),
        ("histroy = 3", 'did you mean "history"'),
    ],
)
def test_bad_settings(body: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        loads(f'[services.chat]\nlisten = ["tcp:0"]\n{body}\n', "x.toml")
    assert message in str(e.value)


def test_all_delivered_lines_match_the_grammar() -> None:
    chat = Chat("timestamps = false")
    a = chat.connect("alice")
    b = chat.connect("bob")
    b.send("x", "/me y", "/msg alice z", "/topic t", "/who", "/rooms", "/help", "/bogus", "/join d", "/join lobby")
    for line in a.all_lines() + b.all_lines():
        assert LINE.match(line), line
        assert not UNSAFE.search(line), line


def test_the_console_completes_exactly_the_servers_commands() -> None:
    """The command names the client completes (socksvc.wire) are the server's command surface."""
    from socksvc.services.chat.commands import COMMANDS
    from socksvc.wire import CHAT_COMMANDS

    assert {f"/{name}" for name in COMMANDS} == set(CHAT_COMMANDS)
