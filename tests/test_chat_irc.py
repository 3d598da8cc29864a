"""
The chat's IRC listener over StringTransport with a fake clock: registration,
channels, messages both ways with line clients, the limits line clients
have (flood control, slow readers, idle), pings, and hostile input.
"""

from __future__ import annotations

import re

import pytest

from socksvc.services.chat import irc
from socksvc.services.chat.ircview import MAX_LINE, split_text
from tests.support.chat import Chat
from tests.support.irc import IrcClient, irc_client

SERVER = "chat.socksvc"


def numerics(lines: list[str]) -> list[str]:
    return [line.split(" ")[1] for line in lines if line.startswith(f":{SERVER} ")]


# -- registration --------------------------------------------------------------


def test_registration_welcome_isupport_motd() -> None:
    chat = Chat('motd = "Be nice.\\nLunch at 12"\nnick_max = 20')
    c = IrcClient(chat)
    c.send("NICK alice")
    assert c.lines() == []  # USER still missing
    c.send("USER alice 0 * :Alice Example")
    got = c.lines()
    assert numerics(got) == ["001", "002", "003", "004", "005", "251", "375", "372", "372", "376"]
    assert got[0] == f":{SERVER} 001 alice :Welcome to socksvc chat, alice"
    isupport = got[4].split(" ")[3:]
    for token in ("CASEMAPPING=rfc7613", "CHANTYPES=#", "CHANNELLEN=33", "NICKLEN=20", "TOPICLEN=200", "UTF8ONLY"):
        assert token in isupport
    assert got[7] == f":{SERVER} 372 alice :- Be nice."
    assert chat.state.nicks["alice"] is c.member
    assert c.member.room is None  # an IRC client chooses its channels


def test_cap_ls_holds_registration_until_cap_end() -> None:
    chat = Chat()
    c = IrcClient(chat)
    c.send("CAP LS 302", "NICK bob", "USER bob 0 * :Bob")
    assert c.lines() == [f":{SERVER} CAP * LS :"]
    c.send("CAP REQ :multi-prefix sasl")
    assert c.lines() == [f":{SERVER} CAP * NAK :multi-prefix sasl"]
    c.send("CAP END")
    assert numerics(c.lines())[0] == "001"


def test_taken_and_bad_nicknames_433_432() -> None:
    chat = Chat()
    chat.connect("alice")
    c = IrcClient(chat)
    c.send("NICK alice")
    assert c.lines() == [f":{SERVER} 433 * alice :alice is taken"]
    c.send("NICK \u0430lice")  # Cyrillic a: looks like alice
    assert c.lines()[0].startswith(f":{SERVER} 433 * \u0430lice :")
    c.send("NICK admin")
    assert c.lines() == [f":{SERVER} 432 * admin :admin is reserved"]
    c.send("NICK bo$b")
    assert c.lines()[0].startswith(f":{SERVER} 432 * bo$b :character")
    c.send("NICK bob", "USER bob 0 * :Bob")
    assert numerics(c.lines())[0] == "001"


def test_nick_taken_between_nick_and_user() -> None:
    chat = Chat()
    c = IrcClient(chat)
    c.send("NICK carol")
    chat.connect("carol")
    c.send("USER carol 0 * :Carol")
    assert c.lines() == [f":{SERVER} 433 * carol :nickname refused: carol is taken"]
    c.send("NICK carol2")
    assert numerics(c.lines())[0] == "001"


def test_commands_before_registration_get_451() -> None:
    chat = Chat()
    c = IrcClient(chat)
    c.send("JOIN #lobby", "PRIVMSG #lobby :hi")
    assert numerics(c.lines()) == ["451", "451"]
    c.send("PING :tok")
    assert c.lines() == [f":{SERVER} PONG {SERVER} :tok"]


# -- channels and messages, both ways -------------------------------------------


def test_join_names_history_then_messages_both_ways() -> None:
    chat = Chat("history = 5")
    alice = chat.connect("alice")
    alice.send("anyone here?", "/topic lunch at 12")
    alice.lines()
    bob = irc_client(chat, "bob")
    bob.send("JOIN #lobby")
    got = bob.lines()
    assert got[0] == f":bob!bob@{SERVER} JOIN #lobby"
    assert got[1] == f":{SERVER} 332 bob #lobby :lunch at 12"
    assert got[2].startswith(f":{SERVER} 333 bob #lobby alice ")
    assert got[3] == f":{SERVER} 353 bob = #lobby :alice bob"
    assert got[4] == f":{SERVER} 366 bob #lobby :End of /NAMES list"
    assert re.fullmatch(rf":{SERVER} NOTICE #lobby :\[history \d\d:\d\d\] <alice> anyone here\?", got[5])
    assert alice.lines() == ["-!- bob has joined lobby"]

    alice.send("hi bob", "/me waves", "/msg bob psst")
    assert bob.lines() == [
        f":alice!alice@{SERVER} PRIVMSG #lobby :hi bob",
        f":alice!alice@{SERVER} PRIVMSG #lobby :\x01ACTION waves\x01",
        f":alice!alice@{SERVER} PRIVMSG bob :psst",
    ]
    assert alice.lines() == ["-> *bob* psst"]
    bob.send("PRIVMSG #lobby :hello alice", "PRIVMSG #lobby :\x01ACTION dances\x01", "PRIVMSG alice :secret")
    assert alice.lines() == ["<bob> hello alice", "* bob dances", "*bob* secret"]
    assert bob.lines() == []  # IRC clients show their own lines themselves


def test_part_quit_topic_nick_reach_line_clients_and_back() -> None:
    chat = Chat()
    alice = chat.connect("alice")
    bob = irc_client(chat, "bob", "#lobby")
    alice.lines()
    bob.send("TOPIC #lobby :new topic")
    assert bob.lines() == [f":bob!bob@{SERVER} TOPIC #lobby :new topic"]
    assert alice.lines() == ["-!- bob set the topic of lobby to: new topic"]
    alice.send("/topic -")
    assert bob.lines() == [f":alice!alice@{SERVER} TOPIC #lobby :"]
    assert alice.lines() == ["-!- alice cleared the topic of lobby"]
    bob.send("NICK robert")
    assert bob.lines() == [f":bob!bob@{SERVER} NICK :robert"]
    assert alice.lines() == ["-!- bob is now known as robert"]
    alice.send("/nick alicia")
    assert bob.lines() == [f":alice!alice@{SERVER} NICK :alicia"]
    assert alice.lines() == ["-!- You are now known as alicia"]
    bob.send("PART #lobby :lunch")
    assert bob.lines() == [f":robert!robert@{SERVER} PART #lobby :lunch"]
    assert alice.lines() == ["-!- robert has left lobby (lunch)"]
    bob.send("JOIN #lobby")
    bob.lines()
    alice.send("/join dev")
    assert bob.lines() == [f":alicia!alicia@{SERVER} PART #lobby"]
    bob.send("QUIT :bye now")
    assert bob.lines() == ["ERROR :Disconnected: quit"]
    assert bob.transport.disconnecting


def test_several_channels_quit_and_rename_reach_each_member_once() -> None:
    chat = Chat('rooms = ["lobby", "dev"]')
    bob = irc_client(chat, "bob", "#lobby", "#dev")
    carol = irc_client(chat, "carol", "#lobby", "#dev")
    line = chat.connect("alice")  # in lobby only
    line.lines()
    bob.lines()
    carol.lines()
    assert [r.name for r in bob.member.rooms()] == ["lobby", "dev"]
    bob.send("PRIVMSG #dev :in dev")
    assert carol.lines() == [f":bob!bob@{SERVER} PRIVMSG #dev :in dev"]
    assert line.lines() == []
    bob.send("NICK bobby")
    assert carol.lines() == [f":bob!bob@{SERVER} NICK :bobby"]
    assert line.lines() == ["-!- bob is now known as bobby"]
    bob.lose()
    assert carol.lines() == [f":bobby!bobby@{SERVER} QUIT :connection closed"]
    assert line.lines() == ["-!- bobby has quit (connection closed)"]
    assert "bobby" not in chat.state.nicks
    assert all("bobby" not in r.members for r in chat.state.rooms.values())


def test_join_zero_parts_everything_and_created_rooms_vanish() -> None:
    chat = Chat()
    bob = irc_client(chat, "bob", "#lobby", "#new")
    assert "new" in chat.state.rooms
    bob.send("JOIN 0")
    assert bob.lines() == [
        f":bob!bob@{SERVER} PART #lobby :Left all channels",
        f":bob!bob@{SERVER} PART #new :Left all channels",
    ]
    assert "new" not in chat.state.rooms and bob.member.rooms() == []


def test_channel_errors() -> None:
    chat = Chat("allow_create = false\nflood_rate = 0")
    bob = irc_client(chat, "bob")
    bob.send("JOIN lobby", "JOIN #nope", "JOIN #c++", "PART #lobby", "PRIVMSG #lobby :hi", "PRIVMSG nobody :hi")
    got = bob.lines()
    assert numerics(got) == ["403", "403", "403", "442", "404", "401"]
    assert "only the server's rooms can be joined" in got[1]
    bob.send("NOTICE #lobby :x", "NOTICE nobody :x")  # a NOTICE never gets an error back
    assert bob.lines() == []
    bob.send("PRIVMSG a,b,c,d,e :hi", "PRIVMSG", "PRIVMSG #lobby", "FROB x")
    assert numerics(bob.lines()) == ["407", "411", "412", "421"]


def test_notice_and_other_ctcp() -> None:
    chat = Chat()
    alice = chat.connect("alice")
    bob = irc_client(chat, "bob", "#lobby")
    carol = irc_client(chat, "carol", "#lobby")
    alice.lines()
    bob.lines()
    bob.send("NOTICE #lobby :a notice", "PRIVMSG alice :\x01VERSION\x01", "PRIVMSG #lobby :\x01PING 1\x01")
    assert carol.lines() == [f":bob!bob@{SERVER} NOTICE #lobby :a notice"]
    assert alice.lines() == ["<bob> a notice"]  # CTCP other than ACTION is not relayed


def test_who_whois_names_list_mode_ison_userhost_away() -> None:
    chat = Chat("flood_rate = 0")
    chat.connect("alice")
    bob = irc_client(chat, "bob", "#lobby")
    bob.send("WHO #lobby")
    assert bob.lines() == [
        f":{SERVER} 352 bob #lobby alice {SERVER} {SERVER} alice H :0 line client",
        f":{SERVER} 352 bob #lobby bob {SERVER} {SERVER} bob H :0 Bob Example",
        f":{SERVER} 315 bob #lobby :End of /WHO list",
    ]
    bob.send("WHOIS alice", "NAMES #lobby", "LIST", "MODE #lobby", "MODE #lobby +o alice", "MODE #lobby b")
    assert numerics(bob.lines()) == [
        "311",
        "319",
        "312",
        "318",
        "353",
        "366",
        "321",
        "322",
        "323",
        "324",
        "329",
        "482",
        "368",
    ]
    bob.send("MODE bob", "MODE alice +i", "ISON alice nobody bob", "USERHOST alice", "AWAY :lunch", "AWAY")
    got = bob.lines()
    assert numerics(got) == ["221", "502", "303", "302", "306", "305"]
    assert got[2] == f":{SERVER} 303 bob :alice bob"


# -- limits, the same as for line clients ------------------------------------------------


def test_lines_over_512_bytes_are_split_at_characters() -> None:
    chat = Chat("max_line = 4096")
    alice = chat.connect("alice")
    bob = irc_client(chat, "bob", "#lobby")
    text = "é" * 300 + " " + "word " * 200
    alice.send(text)
    got = bob.lines()  # IrcClient.lines checks every line is at most 512 bytes
    assert len(got) > 2
    prefix = f":alice!alice@{SERVER} PRIVMSG #lobby :"
    assert all(line.startswith(prefix) for line in got)
    assert "".join("".join(line[len(prefix) :] for line in got).split()) == "".join(text.split())
    for size in range(4, 40):
        for part in split_text("aé€😀" * 20, size):
            assert len(part.encode()) <= size


def test_byte_level_lines_split_utf8_and_invalid_bytes() -> None:
    chat = Chat()
    alice = chat.connect("alice")
    bob = irc_client(chat, "bob", "#lobby")
    alice.lines()
    data = "PRIVMSG #lobby :naïve 😀\r\n".encode()
    for i in range(len(data)):  # one byte a read: a character split across reads
        bob.raw(data[i : i + 1])
    bob.raw(b"PRIVMSG #lobby :bad \xff\xfe bytes\r\nPRIVMSG #lobby :\x1b[31mred \xe2\x80\xae\r\n")
    assert alice.lines() == ["<bob> naïve 😀", "<bob> bad \ufffd\ufffd bytes", "<bob> ^[[31mred \\u202e"]


def test_line_client_text_cannot_inject_irc() -> None:
    chat = Chat()
    alice = chat.connect("alice")
    bob = irc_client(chat, "bob", "#lobby")
    alice.send("\x01ACTION fake\x01 \x02bold \x03colour \r:evil!x@y PRIVMSG #lobby :hi")
    (line,) = bob.lines()
    assert line == f":alice!alice@{SERVER} PRIVMSG #lobby :^AACTION fake^A ^Bbold ^Ccolour :evil!x@y PRIVMSG #lobby :hi"


def test_flood_control_as_for_line_clients() -> None:
    chat = Chat("flood_burst = 3\nflood_rate = 1\nflood_kick = 5")
    alice = chat.connect("alice")
    bob = irc_client(chat, "bob", "#lobby")
    alice.lines()
    chat.clock.advance(3)  # the bucket is full again after the JOIN
    bob.send(*(f"PRIVMSG #lobby :{i}" for i in range(6)), "PING :x")
    assert alice.lines() == ["<bob> 0", "<bob> 1", "<bob> 2"]
    assert bob.lines() == [f":{SERVER} NOTICE bob :error: flooding: lines are being dropped (limit 1 lines/s)"]
    for _ in range(6):
        chat.clock.advance(1)
        bob.send("PRIVMSG #lobby :a", "PRIVMSG #lobby :b")
    assert bob.lines()[-1] == "ERROR :Disconnected: flooding"
    assert "bob has quit (flooding)" in alice.lines()[-1]


def test_free_commands_take_no_flood_token() -> None:
    chat = Chat("flood_burst = 2\nflood_rate = 1")
    bob = irc_client(chat, "bob")
    bob.send(*["PING :x"] * 20, "PRIVMSG bob :me")
    assert bob.lines()[-1] == f":bob!bob@{SERVER} PRIVMSG bob :me"


def test_slow_reader_stalls_and_is_cut_off_alone() -> None:
    chat = Chat("send_queue_max = 4096\nstall_timeout = 5\nflood_rate = 0")
    alice = chat.connect("alice")
    slow = IrcClient(chat, buffer=1000)
    slow.register("slow")
    slow.send("JOIN #lobby")
    for i in range(200):
        alice.send(f"line {i} " + "x" * 50)
    assert slow.member.stalled
    chat.clock.advance(5)
    assert slow.transport.disconnecting or not slow.transport.connected
    assert "slow has quit (not reading)" in alice.lines()[-1]


def test_pings_and_ping_timeout() -> None:
    chat = Chat("ping_interval = 60\nping_timeout = 20")
    alice = chat.connect("alice")
    bob = irc_client(chat, "bob", "#lobby")
    alice.lines()
    chat.clock.advance(59)
    assert bob.lines() == []
    chat.clock.advance(1)
    assert bob.lines() == [f"PING :{SERVER}"]
    bob.send(f"PONG :{SERVER}")
    chat.clock.advance(60)
    assert bob.lines() == [f"PING :{SERVER}"]
    chat.clock.advance(20)
    assert bob.lines() == ["ERROR :Disconnected: ping timeout: 20 seconds"]
    assert alice.lines() == ["-!- bob has quit (ping timeout: 20 seconds)"]


def test_idle_rules() -> None:
    chat = Chat()
    c = IrcClient(chat)
    assert not c.proto.idle_exempt  # idle_timeout applies until registered
    c.register("bob")
    assert c.proto.idle_exempt


def test_too_long_lines_and_garbage() -> None:
    chat = Chat("max_line = 600")
    bob = irc_client(chat, "bob")
    bob.raw(b"PRIVMSG bob :" + b"x" * 700 + b"\r\n")
    assert numerics(bob.lines()) == ["417"]
    bob.raw(b":\r\n:onlyprefix\r\n\x00\x01\r\n   \r\n@tag=1 PING :t\r\n")
    assert bob.lines()[-1] == f":{SERVER} PONG {SERVER} :t"


def test_max_line_without_line_end_disconnects() -> None:
    chat = Chat("max_line = 512")
    bob = irc_client(chat, "bob")
    bob.raw(b"x" * (9 * 512))
    assert bob.transport.disconnecting or not bob.transport.connected


def test_shutdown_says_error() -> None:
    chat = Chat()
    bob = irc_client(chat, "bob", "#lobby")
    chat.state.shutdown()
    assert bob.lines() == ["ERROR :server is shutting down"]


def test_split_text_keeps_every_byte() -> None:
    text = "x" * 1000
    assert "".join(split_text(text, 100)) == text
    assert all(len(p) <= MAX_LINE for p in split_text(text, MAX_LINE))


@pytest.mark.parametrize("command", ["NICK", "USER", "JOIN", "PART", "TOPIC", "MODE", "WHOIS", "KICK", "OPER"])
def test_commands_without_parameters_answer_one_line(command: str) -> None:
    chat = Chat()
    bob = irc_client(chat, "bob")
    bob.send(command)
    got = bob.lines()
    assert len(got) == 1 and got[0].startswith(f":{SERVER} 4"), got


# -- Twisted's own IRC client, in-process ---------------------------------------------


def test_twisted_ircclient_talks_with_a_line_client() -> None:
    from twisted.test import iosim
    from twisted.words.protocols import irc as twisted_irc

    from tests.support import peer

    class Tess(twisted_irc.IRCClient):
        nickname = "tess"
        heartbeatInterval = None  # its keepalive would run on the global reactor; we ping it instead

        def __init__(self) -> None:
            self.seen: list[tuple[str, ...]] = []
            self.supported_ = twisted_irc.ServerSupportedFeatures()

        def isupport(self, options: list[str]) -> None:
            self.supported_.parse(options)

        def signedOn(self) -> None:
            self.seen.append(("signedOn",))
            self.join("lobby")

        def joined(self, channel: str) -> None:
            self.seen.append(("joined", channel))

        def privmsg(self, user: str, channel: str, message: str) -> None:
            self.seen.append(("privmsg", user.split("!")[0], channel, message))

        def action(self, user: str, channel: str, data: str) -> None:
            self.seen.append(("action", user.split("!")[0], channel, data))

        def userRenamed(self, oldname: str, newname: str) -> None:
            self.seen.append(("renamed", oldname, newname))

        def userQuit(self, user: str, quitMessage: str) -> None:
            self.seen.append(("quit", user, quitMessage))

    chat = Chat()
    alice = chat.connect("alice")
    proto = irc.make_factory(chat.ctx).buildProtocol(peer(port=6667))
    tess = Tess()
    pump = iosim.connect(
        proto,
        iosim.FakeTransport(proto, isServer=True, peerAddress=peer(port=6667)),
        tess,
        iosim.FakeTransport(tess, isServer=False),
        clock=chat.clock,
    )
    pump.flush()
    assert ("signedOn",) in tess.seen and ("joined", "#lobby") in tess.seen
    assert tess.supported_.getFeature("CHANTYPES") == ("#",)
    assert tess.supported_.getFeature("NICKLEN") == 24
    assert alice.lines()[-1] == "-!- tess has joined lobby"
    alice.send("hello tess", "/me waves", "/msg tess psst", "/nick alicia")
    pump.flush()
    assert ("privmsg", "alice", "#lobby", "hello tess") in tess.seen
    assert ("action", "alice", "#lobby", "waves") in tess.seen
    assert ("privmsg", "alice", "tess", "psst") in tess.seen
    assert ("renamed", "alice", "alicia") in tess.seen
    tess.say("#lobby", "hi alicia")
    tess.describe("#lobby", "bows")
    tess.msg("alicia", "back at you")
    tess.setNick("tessa")
    pump.flush()
    assert alice.lines()[-4:] == [
        "<tess> hi alicia",
        "* tess bows",
        "*tess* back at you",
        "-!- tess is now known as tessa",
    ]
    tess.quit("bye")
    pump.flush()
    assert alice.lines() == ["-!- tessa has quit (bye)"]


def test_auditorium_join_lists_only_you_and_says_why() -> None:
    chat = Chat("announce_max = 2\nflood_rate = 0")
    for nick in ("a1", "a2", "a3"):
        chat.connect(nick)
    bob = irc_client(chat, "bob")
    bob.send("JOIN #lobby")
    got = bob.lines()
    assert got[1] == f":{SERVER} 353 bob = #lobby :bob"
    assert got[3].startswith(f":{SERVER} NOTICE bob :#lobby has 4 members; joins and parts are not announced here")
    bob.send("NAMES #lobby")
    assert bob.lines()[0] == f":{SERVER} 353 bob = #lobby :a1 a2 a3 bob"


def test_input_budget_slows_then_cuts_off_as_for_line_clients() -> None:
    chat = Chat("throttle_kick = 10")
    alice = chat.connect("alice")
    bob = irc_client(chat, "bob", "#lobby")
    alice.lines()
    bob.raw(b"PING :x\r\n" * 20000)  # free of flood tokens, but 20,000 lines against the input budget
    assert bob.transport.producerState == "paused"
    for _ in range(9):
        chat.clock.advance(1)
        assert bob.transport.producerState == "paused"
    chat.clock.advance(1.1)
    assert bob.proto.close_reason == "sending too fast"
    assert bob.transport.value().endswith(b"ERROR :Disconnected: sending too fast\r\n")
    assert alice.lines() == ["-!- bob has quit (sending too fast)"]


def test_an_unfinished_line_is_closed_at_line_timeout() -> None:
    chat = Chat("line_timeout = 5")
    bob = irc_client(chat, "bob")
    bob.raw(b"PRIVMSG bob :half a li")
    chat.clock.advance(5)
    assert bob.proto.close_reason.startswith("line not finished within 5")
