"""
The chat bus (issue 14) across hosts: network namespaces on one bridge
(L{tests.support.netns.Lab}); host 0 runs redis-server, hosts 1 to 3 each
run a socksvc daemon whose chat uses it as its bus (node_timeout 3 s).
Clients are plain sockets of this process reaching the hosts over the
lab's bridge (one, in the link-cut case, is a socket made inside the cut
host's namespace, so it can still type while the host is cut off).

The lab and the Redis are shared by the module; each test starts its own
nodes on a cluster name of its own (so keys left in Redis by another test
are not its keys), and its nodes are checked (running, no traceback) and
stopped at its end.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import time
from collections.abc import Iterator

import pytest

from tests.support.chathosts import Chatter, Node, netns_socket, pump, running_nodes, wait_until
from tests.support.netns import Lab
from tests.support.redis import RedisServer, installed, pick_port, redis

NODE_TIMEOUT = 3
NICKS = ["alice", "bob", "carol"]
MISSED = re.compile(r"-!- You may have missed up to (\d+) lines")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if not installed():
        pytest.skip("redis-server not installed")
    with Lab(4) as lab:  # skips when namespaces cannot be made here
        yield lab


@pytest.fixture(scope="module")
def shared_bus(lab: Lab) -> Iterator[RedisServer]:
    with redis(prefix=lab.exec_prefix(0), bind=lab.address(0)) as server:
        yield server


@pytest.fixture
def bus(shared_bus: RedisServer) -> RedisServer:
    """The shared Redis on host 0, running (a failed test may have left it stopped)."""
    if not shared_bus.running():
        shared_bus.restart()
    return shared_bus


@pytest.fixture
def cluster() -> str:
    return "t" + secrets.token_hex(5)


@pytest.fixture
def chatters() -> Iterator[list[Chatter]]:
    made: list[Chatter] = []
    yield made
    for c in made:
        c.close()


def join(made: list[Chatter], node: Node, nick: str, drains: list[Node]) -> Chatter:
    c = Chatter(node, drains=drains)
    made.append(c)
    c.register(nick)
    return c


def all_see(chatters: list[Chatter], nicks: list[str], timeout: float = 15.0) -> None:
    """Every chatter's /who lists exactly C{nicks} (asked again until it does)."""
    want = sorted(nicks)
    for c in chatters:
        deadline = time.monotonic() + timeout
        while (got := c.who()) != want:
            if time.monotonic() > deadline:
                raise AssertionError(f"{c.nick}'s /who is {got}, not {want}")
            pump([c], 0.2)


def said(c: Chatter, nick: str) -> list[str]:
    """The texts of C{nick}'s room lines C{c} got, in order."""
    prefix = f"<{nick}> "
    return [line[len(prefix) :] for line in c.lines if line.startswith(prefix)]


def room_lines(c: Chatter, nicks: list[str]) -> list[str]:
    prefixes = tuple(f"<{n}> " for n in nicks)
    return [line for line in c.lines if line.startswith(prefixes)]


def test_three_nodes_one_room_one_order(lab: Lab, bus: RedisServer, cluster: str, chatters: list[Chatter]) -> None:
    with running_nodes(lab, [1, 2, 3], bus.url, cluster) as nodes:
        talkers = [join(chatters, n, f"talk{n.host}", nodes) for n in nodes]
        hearers = [join(chatters, n, f"hear{n.host}", nodes) for n in nodes]
        everyone = talkers + hearers
        all_see(everyone, [c.nick for c in everyone])
        count = 15
        for k in range(count):
            for t in talkers:  # interleaved: each node publishes while the others do
                t.send(f"{t.nick} {k}")
        names = [t.nick for t in talkers]
        wait_until(
            lambda: (
                all(len(room_lines(h, names)) >= 3 * count for h in hearers)
                and all(len(room_lines(t, names)) >= 2 * count for t in talkers)
            ),
            "every line to reach every member",
            everyone,
        )
        order = room_lines(hearers[0], names)
        assert len(order) == 3 * count and len(set(order)) == 3 * count
        for t in talkers:
            assert said(hearers[0], t.nick) == [f"{t.nick} {k}" for k in range(count)]
        for h in hearers[1:]:
            assert room_lines(h, names) == order, f"{h.nick} saw another order than {hearers[0].nick}"
        for t in talkers:
            others = [line for line in order if not line.startswith(f"<{t.nick}> ")]
            assert room_lines(t, names) == others, f"{t.nick} saw another order"


def test_a_private_message_crosses_nodes(lab: Lab, bus: RedisServer, cluster: str, chatters: list[Chatter]) -> None:
    with running_nodes(lab, [1, 2, 3], bus.url, cluster) as nodes:
        alice, bob, carol = (join(chatters, node, nick, nodes) for node, nick in zip(nodes, NICKS, strict=True))
        all_see([alice, bob, carol], ["alice", "bob", "carol"])
        alice.send("/msg bob psst, across hosts")
        bob.wait_for("*alice* psst, across hosts")
        alice.wait_for("-> *bob* psst, across hosts")
        bob.send("/msg alice got it")
        alice.wait_for("*bob* got it")
        bob.wait_for("-> *alice* got it")
        alice.send("/msg nobody hello?")
        alice.wait_for("-!- error: no such nick: nobody")
        alice.send("in the room now")
        carol.wait_for("<alice> in the room now")
        assert not [line for line in carol.lines if "psst" in line or "got it" in line]


def test_a_nickname_taken_on_one_node_is_refused_on_another(
    lab: Lab, bus: RedisServer, cluster: str, chatters: list[Chatter]
) -> None:
    with running_nodes(lab, [1, 2, 3], bus.url, cluster) as nodes:
        dana = join(chatters, nodes[0], "dana", nodes)
        other = Chatter(nodes[1], drains=nodes)
        chatters.append(other)
        for attempt in ("dana", "DANA", "d\u0430na"):  # the same name, another case, a look-alike (Cyrillic a)
            other.send(attempt)
            refused = other.wait_for("-!- error: nickname refused: *")
            assert attempt in refused and ("is taken" in refused or "in use" in refused), refused
        third = Chatter(nodes[2], drains=nodes)
        chatters.append(third)
        third.send("dana")
        assert "dana" in third.wait_for("-!- error: nickname refused: *")
        assert not [line for line in other.lines + third.lines if line.startswith("-!- You are now known as")]
        third.register("dino")
        all_see([dana, third], ["dana", "dino"])
        assert dana.who() == ["dana", "dino"]  # the refused tries left nothing behind

        dana.send("/quit bye")
        deadline = time.monotonic() + 15
        while True:  # the name is free once dana's quit has gone round
            other.send("dana")
            line = other.wait_for(lambda s: s.startswith(("-!- error: nickname refused", "-!- You are now known as")))
            if line == "-!- You are now known as dana":
                break
            assert time.monotonic() < deadline, f"dana never became free: {line}"
            pump([other], 0.3)
        other.nick = "dana"
        other.wait_for("-!- You are now in lobby*")
        all_see([other, third], ["dana", "dino"])


def test_a_killed_node_members_time_out(lab: Lab, bus: RedisServer, cluster: str, chatters: list[Chatter]) -> None:
    with running_nodes(lab, [1, 2, 3], bus.url, cluster, node_timeout=NODE_TIMEOUT) as nodes:
        a, b, c = nodes
        alice, bob, bert, carol = (
            join(chatters, a, "alice", nodes),
            join(chatters, b, "bob", nodes),
            join(chatters, b, "bert", nodes),
            join(chatters, c, "carol", nodes),
        )
        all_see([alice, bob, bert, carol], ["alice", "bert", "bob", "carol"])
        with open(f"/proc/{b.pid}/cmdline", "rb") as f:
            assert b"twistd" in f.read()  # ip netns exec execs it: this pid is the node itself
        b.killed = True
        os.kill(b.pid, signal.SIGKILL)
        killed = time.monotonic()
        b.daemon.proc.wait()
        for who in (alice, carol):
            who.wait_for("-!- bob has quit (node timed out)", NODE_TIMEOUT + 10)
            who.wait_for("-!- bert has quit (node timed out)", 5)
        took = time.monotonic() - killed
        assert took <= NODE_TIMEOUT + 2.5, f"the dead node's members went after {took:.1f}s"
        for who in (alice, carol):
            listed = who.who()
            assert "bob" not in listed and "bert" not in listed and who.nick in listed, listed
        assert "carol" in alice.who() and "alice" in carol.who()  # the living stay
        alice.send("still here")
        carol.wait_for("<alice> still here")


def test_a_node_cut_off_catches_up_and_loses_nothing(
    lab: Lab, bus: RedisServer, cluster: str, chatters: list[Chatter]
) -> None:
    """
    Host 2 (node B) loses its link for 5 s while alice on node A says a line
    every half second. ben reaches B from the root namespace, over the same
    link: his TCP connection stays open and stalls, and TCP retransmits after
    link_up. bea's socket was made in B's own namespace, so she reaches B
    throughout and types during the cut (the node holds or resends her lines).
    """
    with running_nodes(lab, [1, 2], bus.url, cluster, node_timeout=NODE_TIMEOUT) as nodes:
        a, b = nodes
        alice = join(chatters, a, "alice", nodes)
        ben = join(chatters, b, "ben", nodes)
        bea = Chatter(b, netns_socket(lab.name(b.host)), drains=nodes)
        chatters.append(bea)
        bea.register("bea")
        everyone = [alice, ben, bea]
        all_see(everyone, ["alice", "bea", "ben"])

        alice_says = [f"a{k}" for k in range(12)]
        bea_says: list[str] = []
        lab.link_down(b.host)
        try:
            for k in range(10):
                alice.send(alice_says[k])
                if k in (2, 5, 8):
                    bea.send(f"b{k}")
                    bea_says.append(f"b{k}")
                pump(everyone, 0.5)
        finally:
            lab.link_up(b.host)
        for text in alice_says[10:]:
            alice.send(text)
            pump(everyone, 0.5)

        def caught_up(c: Chatter) -> bool:
            return said(c, "alice")[-1:] == alice_says[-1:]

        wait_until(lambda: caught_up(ben) and caught_up(bea), "B's members to get alice's last line", everyone, 30)
        for c in (ben, bea):
            got = said(c, "alice")
            assert got == sorted(set(got), key=alice_says.index), f"{c.nick} got alice's lines out of order: {got}"
            missed = [int(m.group(1)) for line in c.lines if (m := MISSED.match(line))]
            assert got == alice_says or sum(missed) >= len(alice_says) - len(got), (
                f"{c.nick} lost lines without being told: {got}, {missed}"
            )

        def not_sent() -> list[str]:
            return [line for line in bea.lines if line.startswith("-!- error: not sent:")]

        wait_until(lambda: len(said(alice, "bea")) + len(not_sent()) >= len(bea_says), "bea's lines at A", everyone, 30)
        got = said(alice, "bea")
        assert got == [t for t in bea_says if t in got] and len(got) + len(not_sent()) == len(bea_says), (
            f"alice got {got} of bea's {bea_says}; bea was told {not_sent()}"
        )
        listed = alice.who()
        assert "ben" in listed and "bea" in listed, listed  # B's members are back (or never went)
        bea.send("after the cut")
        alice.wait_for("<bea> after the cut", 20)


def test_redis_restarted_empty(lab: Lab, bus: RedisServer, cluster: str, chatters: list[Chatter]) -> None:
    with running_nodes(lab, [1, 2], bus.url, cluster) as nodes:
        alice, bob = join(chatters, nodes[0], "alice", nodes), join(chatters, nodes[1], "bob", nodes)
        all_see([alice, bob], ["alice", "bob"])
        alice.send("before")
        bob.wait_for("<alice> before")
        assert bus.call("EXISTS", f"socksvc:{{{cluster}}}:log") == 1
        bus.restart(keep_data=False)

        alice.send("after the restart")
        bob.wait_for("<alice> after the restart", 30)
        bob.send("bob too")
        alice.wait_for("<bob> bob too", 30)
        all_see([alice, bob], ["alice", "bob"], timeout=20)
        for c in (alice, bob):
            assert any(line.startswith("-!- the chat bus restarted and lost its data") for line in c.lines), c.lines
        newcomer = join(chatters, nodes[0], "newcomer", nodes)
        all_see([newcomer, bob], ["alice", "bob", "newcomer"])


def test_redis_absent_at_start(lab: Lab, cluster: str, chatters: list[Chatter]) -> None:
    late = RedisServer(prefix=lab.exec_prefix(0), bind=lab.address(0))
    late.port = pick_port()
    try:
        with running_nodes(lab, [1, 2], late.url, cluster, connected=False) as nodes:
            early = Chatter(nodes[0], drains=nodes)
            chatters.append(early)
            early.send("early")
            early.wait_for("-!- error: nickname refused: the chat bus is unreachable; try again shortly")
            other = Chatter(nodes[1], drains=nodes)
            chatters.append(other)
            other.send("other")
            other.wait_for("-!- error: nickname refused: the chat bus is unreachable; try again shortly")

            late.start()
            early.register("early", timeout=20)  # asked again while still refused
            other.register("other", timeout=20)
            all_see([early, other], ["early", "other"])
            early.send("made it")
            other.wait_for("<early> made it")
    finally:
        late.close()
