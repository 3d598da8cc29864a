"""
The chat node logic over the in-memory bus: order, private messages,
nicknames across nodes, presence, outages, collisions, bad entries. What
crosses a real Redis is in test_chat_bus_redis.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from socksvc.services.chat.busentries import encode
from socksvc.services.chat.names import look_key
from tests.support.chatbus import Node, cluster, settle
from tests.support.irc import IrcClient, WebClient
from tests.support.memorybus import MemoryBus


def said(lines: list[str]) -> list[str]:
    return [x for x in lines if x.startswith("<")]


def test_three_nodes_one_order() -> None:
    hub, (a, b, c) = cluster(3)
    alice, bob, carol = a.connect("alice"), b.connect("bob"), c.connect("carol")
    dave = a.connect("dave")
    for x in (alice, bob, carol, dave):
        x.lines()
    # lines from three nodes, sent in the same turn, before any is delivered
    alice.send("a1")
    bob.send("b1")
    carol.send("c1")
    alice.send("a2")
    bob.send("b2")
    settle(hub.clock)
    everything = said(dave.lines())  # the stream's order: each node's lines of a turn go in one step
    assert sorted(everything) == sorted(["<alice> a1", "<bob> b1", "<carol> c1", "<alice> a2", "<bob> b2"])
    assert everything.index("<alice> a1") < everything.index("<alice> a2")
    assert everything.index("<bob> b1") < everything.index("<bob> b2")
    assert said(alice.lines()) == [x for x in everything if not x.startswith("<alice>")]
    assert said(bob.lines()) == [x for x in everything if not x.startswith("<bob>")]
    assert said(carol.lines()) == [x for x in everything if not x.startswith("<carol>")]


def test_joins_and_who_across_nodes() -> None:
    hub, (a, b) = cluster(2)
    alice = a.connect("alice")
    bob = b.connect("bob")
    assert "-!- bob has joined lobby" in alice.lines()
    assert a.who(alice) == ["alice", "bob"]
    assert b.who(bob) == ["alice", "bob"]
    bob.send("/join attic")
    settle(hub.clock)
    assert "-!- bob has left lobby" in alice.lines()
    assert "-!- You are now in attic (1 member)" in bob.lines()
    alice.send("/rooms")
    settle(hub.clock)
    assert any("attic (1)" in x and "lobby (1)" in x for x in alice.lines())


def test_lines_right_after_join_go_to_the_new_room() -> None:
    hub, (a, b) = cluster(2)
    alice = a.connect("alice")
    bob = b.connect("bob")
    alice.send("/join attic")
    settle(hub.clock)
    alice.lines()
    bob.send("/join attic", "hello attic")  # one read: the line waits for the join
    settle(hub.clock)
    assert "<bob> hello attic" in alice.lines()


def test_nick_and_first_line_in_one_read() -> None:
    hub, (a, b) = cluster(2)
    alice = a.connect("alice")
    alice.lines()
    bob = b.connect()
    bob.send("bob", "hi all")
    settle(hub.clock)
    assert "<bob> hi all" in alice.lines()
    assert "-!- You are now known as bob" in bob.lines()


def test_private_message_crosses_nodes() -> None:
    hub, (a, b) = cluster(2)
    alice, bob = a.connect("alice"), b.connect("bob")
    alice.lines()
    bob.lines()
    alice.send("/msg bob psst", "/msg nobody hey")
    settle(hub.clock)
    assert "*alice* psst" in bob.lines()
    mine = alice.lines()
    assert "-> *bob* psst" in mine
    assert "-!- error: no such nick: nobody" in mine


def test_action_and_topic_across_nodes() -> None:
    hub, (a, b) = cluster(2)
    alice, bob = a.connect("alice"), b.connect("bob")
    alice.lines()
    bob.send("/me waves", "/topic plans")
    settle(hub.clock)
    lines = alice.lines()
    assert "* bob waves" in lines
    assert "-!- bob set the topic of lobby to: plans" in lines
    carol = a.connect("carol")
    assert "-!- Topic of lobby: plans" in carol.lines()


def test_history_replayed_from_the_stream_on_a_new_node() -> None:
    hub, (a,) = cluster(1)
    alice = a.connect("alice")
    alice.send("one", "two")
    settle(hub.clock)
    late = Node(hub, "late")
    carol = late.connect("carol")
    lines = carol.lines()
    assert [x.partition("] ")[2] for x in lines if x.startswith("[history")] == ["<alice> one", "<alice> two"]
    assert late.who(carol) == ["alice", "carol"]


def test_nickname_taken_on_one_node_is_refused_on_another() -> None:
    _hub, (a, b) = cluster(2)
    a.connect("alice")
    x = b.connect("Alice")
    assert "-!- error: nickname refused: Alice is taken" in x.lines()
    y = b.connect("\u0430lice")  # Cyrillic a
    assert any("looks like" in line for line in y.lines())


def test_lease_refuses_a_name_the_replica_has_not_seen_yet() -> None:
    hub, (a, b) = cluster(2)
    x = a.connect()
    y = b.connect()
    x.send("sam")
    y.send("sam")  # both before either node has read the other's entry: the lease decides
    settle(hub.clock)
    got = [("-!- You are now known as sam" in c.lines()) for c in (x, y)]
    assert got == [True, False]


def test_a_dead_node_s_members_quit_within_node_timeout() -> None:
    hub, (a, b) = cluster(2)
    alice = a.connect("alice")
    b.connect("bob")
    alice.lines()
    b.replica.stop()  # node b stops beating (kill -9)
    b.link.cut()
    beat = a.state.settings.node_timeout / 5
    for _ in range(6):  # node_timeout, then the heartbeat that notices
        hub.clock.advance(beat + 0.01)
        settle(hub.clock)
    assert "-!- bob has quit (node timed out)" in alice.lines()
    assert a.who(alice) == ["alice"]
    # and its lease went with it: the name is free
    carol = a.connect("bob")
    assert "-!- You are now known as bob" in carol.lines()


def test_outage_lines_are_held_and_delivered_in_order() -> None:
    hub, (a, b) = cluster(2)
    alice, bob = a.connect("alice"), b.connect("bob")
    alice.lines()
    bob.lines()
    b.link.cut()
    bob.send("held one", "held two")
    settle(hub.clock)
    notice = bob.lines()
    assert any("your lines are held" in x for x in notice)
    alice.send("while you were out")
    settle(hub.clock)
    assert said(alice.lines()) == []
    b.link.mend()
    settle(hub.clock)
    assert said(bob.lines()) == ["<alice> while you were out"]
    assert said(alice.lines()) == ["<bob> held one", "<bob> held two"]


def test_outage_queue_full_says_not_sent() -> None:
    hub, (a, b) = cluster(2, bus_queue=2)
    alice, bob = a.connect("alice"), b.connect("bob")
    alice.lines()
    bob.lines()
    b.link.cut()
    bob.send("1", "2", "3")
    settle(hub.clock)
    assert any("not sent: the chat bus is unreachable and 2 lines are waiting" in x for x in bob.lines())
    b.link.mend()
    settle(hub.clock)
    assert said(alice.lines()) == ["<bob> 1", "<bob> 2"]
    assert b.cluster.lines_not_sent == 1


def test_nickname_and_join_refused_while_the_bus_is_down() -> None:
    hub, (_a, b) = cluster(2)
    bob = b.connect("bob")
    b.link.cut()
    newcomer = b.connect("zed")
    assert any("nickname refused: the chat bus is unreachable" in x for x in newcomer.lines())
    bob.lines()
    bob.send("/join attic")
    settle(hub.clock)
    assert any("not joined: the chat bus is unreachable" in x for x in bob.lines())


def test_missed_lines_are_counted_when_the_stream_no_longer_has_them() -> None:
    hub, (a, b) = cluster(2)
    hub.keep = 3
    alice, bob = a.connect("alice"), b.connect("bob")
    bob.lines()
    b.link.cut()
    alice.send(*[f"line {i}" for i in range(9)])  # within the flood burst (the nickname took one)
    settle(hub.clock)
    b.link.mend()
    settle(hub.clock)
    lines = bob.lines()
    assert said(lines) == ["<alice> line 6", "<alice> line 7", "<alice> line 8"]
    assert any("You may have missed up to 6 lines" in x for x in lines)


def test_collision_after_failover_renames_the_newer_holder() -> None:
    hub, (a, b) = cluster(2)
    b.link.cut()
    before = (list(hub.log), hub.seq, dict(hub.values), dict(hub.expiry), {k: dict(v) for k, v in hub.members.items()})
    old = a.connect("bob")
    old.lines()
    # failover: the new primary lost the last writes (the entry and the lease)
    hub.log[:], hub.seq, hub.values, hub.expiry, hub.members = before[0], before[1], before[2], before[3], before[4]
    hub.clock.advance(1)
    b.link.mend()
    settle(hub.clock)
    new = b.connect("bob")
    assert "-!- You are now known as bob" in new.lines()  # b never heard of a's bob
    for _ in range(3):  # a's heartbeat takes its lease back, b's renames b's bob, a's tells b about a's bob
        hub.clock.advance(a.state.settings.node_timeout / 5 + 0.01)
        settle(hub.clock)
    assert "-!- You are now known as bob-2 (nickname collision)" in new.lines()
    assert old.member.nick == "bob"
    assert new.member.nick == "bob-2"
    assert sorted(a.who(old)) == sorted(b.who(new)) == ["bob", "bob-2"]


def test_bad_entries_are_dropped_and_counted() -> None:
    hub, (a,) = cluster(1)
    alice = a.connect("alice")
    alice.lines()
    hub.add(["t", "say", "n", "evil", "m", "1", "s", "1", "nick", "x\x1b[2J", "room", "lobby", "text", "hi"])
    hub.add(["t", "bogus"])
    hub.add(encode("say", "evil", 1, 2, nick="mallory", room="lobby", text="\x1b]0;pwned\x07 hi"))
    settle(hub.clock)
    lines = alice.lines()
    assert a.cluster.entries_bad == 2
    assert lines == ["<mallory> ^[]0;pwned^G hi"]


def test_redis_losing_its_data_is_survived() -> None:
    hub, (a, b) = cluster(2)
    alice, bob = a.connect("alice"), b.connect("bob")
    alice.send("before")
    settle(hub.clock)
    bob.lines()
    hub.flush()
    hub.clock.advance(a.state.settings.node_timeout / 5 + 0.01)
    settle(hub.clock)
    alice.send("after")
    settle(hub.clock)
    alice.lines()
    for _ in range(8):  # more heartbeats than node_timeout: every node beats again, nobody is taken for dead
        hub.clock.advance(a.state.settings.node_timeout / 5 + 0.01)
        settle(hub.clock)
    lines = bob.lines()
    assert "<alice> after" in lines
    assert any("lost its data" in x for x in lines)
    noise = [x for x in lines + alice.lines() if "has quit" in x or "has joined" in x or "known as" in x]
    assert noise == []  # nodes announce their members again, silently for those who still know them
    assert a.who(alice) == ["alice", "bob"]
    # the lease was re-taken: bob's name is still his
    zed = a.connect("bob")
    assert any("nickname refused" in x for x in zed.lines())


def test_quit_is_seen_everywhere_and_frees_the_name() -> None:
    hub, (a, b) = cluster(2)
    alice, bob = a.connect("alice"), b.connect("bob")
    alice.lines()
    bob.send("/quit bye")
    settle(hub.clock)
    assert "-!- bob has quit (bye)" in alice.lines()
    assert a.who(alice) == ["alice"]
    again = a.connect("bob")
    assert "-!- You are now known as bob" in again.lines()


def test_disconnect_mid_registration_leaves_nothing() -> None:
    hub, (a, b) = cluster(2)
    x = b.connect()
    x.send("ghost")
    x.lose()
    settle(hub.clock)
    assert b.state.members == set()
    assert not b.cluster.leases
    alice = a.connect("ghost")
    assert "-!- You are now known as ghost" in alice.lines()


def test_a_new_node_s_members_are_not_taken_for_a_dead_node_s(monkeypatch: pytest.MonkeyPatch) -> None:
    hub, (a,) = cluster(1)
    alice = a.connect("alice")
    hub.clock.advance(a.state.settings.node_timeout / 10)  # b comes up between two of a's heartbeats
    connect = MemoryBus.start

    def takes_a_moment(link: MemoryBus, handler: Any) -> None:  # as Redis does: not up on the first turn
        hub.clock.callLater(0.01, connect, link, handler)

    monkeypatch.setattr(MemoryBus, "start", takes_a_moment)
    b = Node(hub, "node1")
    hub.clock.advance(0.01)
    settle(hub.clock)
    b.connect("bob")
    for _ in range(3):
        hub.clock.advance(a.state.settings.node_timeout / 5)
        settle(hub.clock)
    lines = alice.lines()
    assert "-!- bob has joined lobby" in lines
    assert not [x for x in lines if "bob has quit" in x]
    assert a.who(alice) == ["alice", "bob"]


def test_irc_and_web_members_across_nodes() -> None:
    hub, (a, b) = cluster(2)
    irc = IrcClient(a.chat)
    irc.send("NICK ivy", "USER ivy 0 * :Ivy", "JOIN #lobby", "PRIVMSG #lobby :hello from irc")
    settle(hub.clock)  # registration waits for the cluster; the JOIN and the line wait for it
    got = irc.lines()
    assert any(" 001 ivy " in x for x in got), got
    assert any(x.startswith(":ivy!") and " JOIN " in x for x in got), got
    web = WebClient(b.chat)
    web.send("walt")
    settle(hub.clock)
    events = web.events()
    room = next(e for e in events if e["t"] == "room")
    assert room["members"] == ["ivy", "walt"]
    bob = b.connect("bob")
    bob.lines()
    bob.send("hi ivy", "/msg ivy psst")
    settle(hub.clock)
    got = irc.lines()
    assert any(x.startswith(":bob!") and x.endswith("PRIVMSG #lobby :hi ivy") for x in got), got
    assert any(x.startswith(":bob!") and x.endswith("PRIVMSG ivy :psst") for x in got), got
    irc.send("PRIVMSG #lobby :back at you", "WHOIS bob")
    settle(hub.clock)
    assert "<ivy> back at you" in bob.lines()
    assert any("remote client" in x for x in irc.lines())
    assert any(e.get("text") == "back at you" for e in web.events())


def test_local_members_see_nothing_of_held_lines_until_the_bus_is_back() -> None:
    hub, (a, b) = cluster(2)
    alice, bob, bea = a.connect("alice"), b.connect("bob"), b.connect("bea")
    for x in (alice, bob, bea):
        x.lines()
    b.link.cut()
    bob.send("while cut")
    settle(hub.clock)
    assert said(bea.lines()) == []  # one order for everyone: not shown here before it is in the stream
    b.link.mend()
    settle(hub.clock)
    assert said(bea.lines()) == said(alice.lines()) == ["<bob> while cut"]


def test_a_member_whose_entry_redis_lost_is_not_stuck() -> None:
    hub, (a,) = cluster(1)
    alice = a.connect("alice")
    add = hub.add
    hub.add = lambda fields: "0-0"  # type: ignore[method-assign]  # Redis takes the join and loses it
    alice.send("/join attic", "hello")
    settle(hub.clock)
    hub.add = add  # type: ignore[method-assign]
    assert said(alice.lines()) == []
    for _ in range(6):  # node_timeout and a heartbeat
        hub.clock.advance(a.state.settings.node_timeout / 5 + 0.01)
        settle(hub.clock)
    assert any("did not confirm your last change" in x for x in alice.lines())
    bob = a.connect("bob")
    bob.lines()
    alice.send("still here")
    settle(hub.clock)
    assert "<alice> still here" in bob.lines()


def test_room_limits_are_the_cluster_s_even_when_two_nodes_race() -> None:
    hub, (a, b) = cluster(2, max_rooms=2)  # lobby and one more
    alice, bob = a.connect("alice"), b.connect("bob")
    alice.lines()
    bob.lines()
    alice.send("/join attic")
    bob.send("/join cellar")  # both before either join came back: each node allowed its own
    settle(hub.clock)
    got = alice.lines() + bob.lines()
    assert sum("You are now in" in x for x in got) == 1, got
    assert sum("too many rooms (at most 2)" in x for x in got) == 1, got
    assert sorted(a.state.rooms) == sorted(b.state.rooms) and len(a.state.rooms) == 2
    late = Node(hub, "late")
    carol = late.connect("carol")
    carol.send("/rooms")
    settle(hub.clock)
    assert len(next(x for x in carol.lines() if x.startswith("-!- Rooms:")).split(", ")) == 2


def test_a_collision_rename_skips_a_name_whose_lease_another_holds() -> None:
    hub, (a, b) = cluster(2)
    b.link.cut()
    before = (list(hub.log), hub.seq, dict(hub.values), dict(hub.expiry), {k: dict(v) for k, v in hub.members.items()})
    old = a.connect("bob")
    hub.log[:], hub.seq, hub.values, hub.expiry, hub.members = before[0], before[1], before[2], before[3], before[4]
    hub.clock.advance(1)
    b.link.mend()
    settle(hub.clock)
    new = b.connect("bob")
    # bob-2 is leased by a live member no replica knows of (it registered on the old primary too)
    hub.set("node:elsewhere", "1", 1000)
    hub.set("nick:" + look_key("bob-2"), "elsewhere|7|1|bob-2", 1000)
    for _ in range(3):
        hub.clock.advance(a.state.settings.node_timeout / 5 + 0.01)
        settle(hub.clock)
    assert "-!- You are now known as bob-3 (nickname collision)" in new.lines()
    assert (old.member.nick, new.member.nick) == ("bob", "bob-3")
