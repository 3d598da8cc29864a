"""
The chat bus (issue 14) against a real redis-server on loopback: socksvc
daemons as subprocesses, one Redis, plain socket members on each.

Every wait is for a line (or a Redis key) with a deadline; a line that must
not arrive is checked against a later line that must (the bus delivers in
stream order), never by sleeping.
"""

from __future__ import annotations

import contextlib
import re
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import Daemon, daemon, start_daemon
from tests.support.netclients import UNREACHABLE, ChatClient, wait_until
from tests.support.redis import RedisServer, installed

LOG = "socksvc:{socksvc}:log"
NODES = "socksvc:{socksvc}:nodes"
CONNECTED = "chat bus connected"


def config(bus: str, extra: str = "") -> str:
    return f'[services.chat]\nlisten = ["tcp:0:interface=127.0.0.1"]\nbus = "{bus}"\n{extra}\n'


@contextlib.contextmanager
def node(bus: str, extra: str = "", *, connected: bool = True) -> Iterator[Daemon]:
    """A daemon whose chat is a node of the bus at C{bus} (connected to it, unless told not to wait)."""
    with daemon(config(bus, extra)) as d:
        if connected:
            d.read(until=CONNECTED)
        yield d


def assert_taken(d: Daemon, nick: str) -> None:
    """A newcomer on C{d} is refused C{nick}: the bus holds it for a member elsewhere."""
    other = ChatClient(d.port("chat"))
    try:
        other.wait_for("-!- Choose a nickname: *")
        other.send(nick)
        other.wait_for(f"-!- error: nickname refused: {nick} is taken")
    finally:
        other.close()


@contextlib.contextmanager
def members(*pairs: tuple[Daemon, str]) -> Iterator[list[ChatClient]]:
    """One member per (daemon, nickname), registered in that order; all closed after."""
    clients: list[ChatClient] = []
    try:
        for d, nick in pairs:
            c = ChatClient(d.port("chat"))
            clients.append(c)
            c.register(nick)
        yield clients
    finally:
        for c in clients:
            c.close()


def said(r: RedisServer, key: str = LOG) -> list[tuple[str, str]]:
    """The (nick, text) of every say entry in the stream, in its order."""
    out = []
    for _rid, flat in r.call("XRANGE", key, "-", "+"):
        f = {flat[i].decode(): flat[i + 1].decode("utf-8", "replace") for i in range(0, len(flat), 2)}
        if f.get("t") == "say":
            out.append((f.get("nick", ""), f.get("text", "")))
    return out


def clean(*daemons: Daemon) -> None:
    for d in daemons:
        out = d.read(timeout=0.1)
        assert "Traceback" not in out and "Unhandled" not in out, out[-3000:]


@pytest.fixture
def redis_unix() -> Iterator[RedisServer]:
    """A redis-server on a UNIX socket only."""
    if not installed():
        pytest.skip("redis-server not installed")
    server = RedisServer(tcp=False)
    try:
        server.start()
        yield server
    finally:
        server.close()


# -- 1. two daemons on one Redis -----------------------------------------------------


def test_two_daemons_share_rooms_names_and_history(redis_server: RedisServer) -> None:
    r = redis_server
    with node(r.unix_url, "node_timeout = 3") as a, members((a, "alice")) as (alice,):
        alice.send("said before bob's server started")
        wait_until(lambda: ("alice", "said before bob's server started") in said(r), "alice's line in the stream")
        with node(r.url, "node_timeout = 3") as b, members((b, "bob")) as (bob,):
            history = [x for x in bob.seen if x.startswith("[history ")]
            assert any(x.endswith("<alice> said before bob's server started") for x in history), bob.seen
            alice.wait_for("-!- bob has joined lobby")
            bob.send("hello from b")
            alice.wait_for("<bob> hello from b")
            alice.send("hello from a")
            bob.wait_for("<alice> hello from a")
            bob.send("/who")
            assert bob.wait_for("-!- Members of lobby *")[-1] == "-!- Members of lobby (2): alice, bob"
            alice.send("/who", "/rooms")
            assert alice.wait_for("-!- Rooms: *")[-2:] == [
                "-!- Members of lobby (2): alice, bob",
                "-!- Rooms: lobby (2)",
            ]
            alice.send("/msg bob psst")
            alice.wait_for("-> *bob* psst")
            bob.wait_for("*alice* psst")
            bob.send("/me waves")
            alice.wait_for("* bob waves")
            alice.send("/topic plans for today")
            bob.wait_for("-!- alice set the topic of lobby to: plans for today")
            assert_taken(b, "alice")
            assert not any("has quit" in x for x in alice.seen + bob.seen)  # nobody took a new node for dead
            clean(a, b)


# -- 2. one order for everyone ------------------------------------------------------


def test_three_daemons_deliver_lines_in_the_stream_order(redis_server: RedisServer) -> None:
    r = redis_server
    n = 8
    fast = "flood_rate = 0"
    with (
        node(r.unix_url, fast) as a,
        node(r.unix_url, fast) as b,
        node(r.unix_url, fast) as c,
        members((a, "ann"), (b, "ben"), (c, "cat")) as clients,
    ):
        for cl in clients[:2]:
            cl.wait_for("-!- cat has joined lobby")
        for cl, nick in zip(clients, ("ann", "ben", "cat"), strict=True):
            cl.send(*[f"{nick} {i}" for i in range(n)])
        for cl, nick in zip(clients, ("ann", "ben", "cat"), strict=True):
            for other in {"ann", "ben", "cat"} - {nick}:
                if f"<{other}> {other} {n - 1}" not in cl.seen:
                    cl.wait_for(f"<{other}> {other} {n - 1}")
        order = [f"<{who}> {text}" for who, text in said(r)]
        assert len(order) == 3 * n
        for cl, nick in zip(clients, ("ann", "ben", "cat"), strict=True):
            got = [x for x in cl.seen if re.fullmatch(r"<(ann|ben|cat)> \w+ \d+", x)]
            theirs = [x for x in order if not x.startswith(f"<{nick}>")]
            assert [x for x in got if not x.startswith(f"<{nick}>")] == theirs
        clean(a, b, c)


# -- 3. a node killed ---------------------------------------------------------------


def test_a_killed_node_times_out_and_its_names_are_free(redis_server: RedisServer) -> None:
    r = redis_server
    with node(r.unix_url, "node_timeout = 3") as a:
        b = start_daemon(config(r.unix_url, "node_timeout = 3"))
        try:
            b.read(until=CONNECTED)
            with members((a, "alice"), (b, "bob")) as (alice, _bob):
                alice.wait_for("-!- bob has joined lobby")
                b.signal(signal.SIGKILL)
                b.proc.wait()
                started = time.monotonic()
                alice.wait_for("-!- bob has quit (node timed out)", timeout=3 + 6)
                assert time.monotonic() - started < 3 + 6
                alice.send("/who")
                assert alice.wait_for("-!- Members of lobby *")[-1] == "-!- Members of lobby (1): alice"
                with members((a, "bob")) as (bob2,):
                    alice.wait_for("-!- bob has joined lobby")
                    bob2.send("back")
                    alice.wait_for("<bob> back")
        finally:
            b.stop()
        clean(a)


# -- 4. Redis loses its data --------------------------------------------------------


def test_redis_restarted_empty_the_nodes_reconnect_and_announce_again(redis_server: RedisServer) -> None:
    r = redis_server
    lost = "-!- the chat bus restarted and lost its data: some lines may not have been delivered"
    with (
        node(r.unix_url, "node_timeout = 3") as a,
        node(r.unix_url, "node_timeout = 3") as b,
        members((a, "alice"), (b, "bob")) as (alice, bob),
    ):
        alice.wait_for("-!- bob has joined lobby")
        r.restart(keep_data=False)
        alice.wait_for(lost)
        bob.wait_for(lost)
        wait_until(
            lambda: r.call("EXISTS", "socksvc:{socksvc}:nick:alice") and r.call("EXISTS", "socksvc:{socksvc}:nick:bob"),
            "the nickname leases to come back",
        )
        bob.send("after the restart")
        alice.wait_for("<bob> after the restart")
        alice.send("/who")
        assert alice.wait_for("-!- Members of lobby *")[-1] == "-!- Members of lobby (2): alice, bob"
        assert_taken(b, "alice")
        assert a.proc.poll() is None and b.proc.poll() is None
        clean(a, b)


# -- 5. Redis away for a while ------------------------------------------------------


def test_lines_said_while_redis_is_away_are_held_and_delivered_in_order(redis_server: RedisServer) -> None:
    r = redis_server
    with node(r.unix_url) as a, node(r.unix_url) as b, members((a, "alice"), (b, "bob")) as (alice, bob):
        alice.wait_for("-!- bob has joined lobby")
        r.call("SAVE")
        r.stop()
        b.read(until="chat bus unreachable")
        held = [f"held {i}" for i in range(5)]
        bob.send(*held)
        bob.wait_for(
            "-!- the chat bus is unreachable: your lines are held (at most 1000 in all) and sent when it is back"
        )
        r.start()  # the same socket; it loads the dump SAVE wrote
        bob.wait_for("-!- the chat bus is back: held lines are being delivered")
        got = alice.wait_for(f"<bob> {held[-1]}")
        assert [x for x in got if x.startswith("<bob> ")] == [f"<bob> {x}" for x in held]
        assert not any("timed out" in x for x in alice.seen)
        clean(a, b)


# -- 6. Redis not there yet ---------------------------------------------------------


def test_the_daemon_starts_without_redis_and_joins_it_when_it_comes() -> None:
    if not installed():
        pytest.skip("redis-server not installed")
    r = RedisServer(tcp=False)
    try:
        with node(r.unix_url, connected=False) as d:
            assert CONNECTED not in d.output
            c = ChatClient(d.port("chat"))
            try:
                c.wait_for("-!- Welcome to socksvc chat")
                c.wait_for("-!- Choose a nickname: *")
                c.send("alice")
                c.wait_for(UNREACHABLE)
                r.start()
                d.read(until=CONNECTED)
                c.register("alice")
                wait_until(lambda: r.call("EXISTS", "socksvc:{socksvc}:nick:alice"), "alice's lease")
            finally:
                c.close()
            clean(d)
    finally:
        r.close()


# -- 7. a password ------------------------------------------------------------------


def test_the_bus_password_right_and_wrong(tmp_path: Any) -> None:
    if not installed():
        pytest.skip("redis-server not installed")
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_text("right horse battery\n")
    bad.write_text("wrong\n")
    r = RedisServer(tcp=False, password="right horse battery")
    try:
        r.start()
        with node(r.unix_url, f'bus_password_file = "{good}"') as a, members((a, "alice")) as (alice,):
            wait_until(lambda: r.call("EXISTS", "socksvc:{socksvc}:nick:alice"), "alice's lease")
            alice.send("/who")
            alice.wait_for("-!- Members of lobby (1): alice")
        with node(r.unix_url, f'bus_password_file = "{bad}"', connected=False) as d:
            c = ChatClient(d.port("chat"))
            try:
                c.wait_for("-!- Choose a nickname: *")
                c.send("bob")
                c.wait_for(UNREACHABLE)
                seen = int(r.info("stats")["total_connections_received"])
                wait_until(
                    lambda: int(r.info("stats")["total_connections_received"]) >= seen + 6,
                    "the daemon to try again (three more times)",
                )
            finally:
                c.close()
            out = d.read(timeout=0.3)
            said_why = [x for x in out.splitlines() if "chat bus unreachable" in x]
            assert len(said_why) == 1, said_why
            assert re.search(r"(?i)auth|password|WRONGPASS", said_why[0]), said_why[0]
            assert "wrong" not in out.replace("WRONGPASS", "")
            assert r.call("EXISTS", "socksvc:{socksvc}:nick:bob") == 0
            clean(d)
    finally:
        r.close()


# -- 8. clusters --------------------------------------------------------------------


def test_two_clusters_on_one_redis_do_not_meet(redis_server: RedisServer) -> None:
    r = redis_server
    with (
        node(r.unix_url, 'cluster = "one"') as a,
        node(r.unix_url, 'cluster = "two"') as b,
        members((a, "alice"), (b, "alice")) as (one, two),  # one name, twice: two clusters
    ):
        one.send("only in one")
        wait_until(lambda: ("alice", "only in one") in said(r, "socksvc:{one}:log"), "the line in cluster one")
        two.send("/who")
        assert two.wait_for("-!- Members of lobby *")[-1] == "-!- Members of lobby (1): alice"
        assert said(r, "socksvc:{two}:log") == []
        keys = {k.decode() for k in r.call("KEYS", "*")}
        assert all(k.startswith(("socksvc:{one}:", "socksvc:{two}:")) for k in keys), keys
        assert {"socksvc:{one}:nick:alice", "socksvc:{two}:nick:alice"} <= keys
        assert {"socksvc:{one}:log", "socksvc:{two}:log"} <= keys
        assert not any("only in one" in x for x in two.seen)
        clean(a, b)


# -- 9. what a node reads is checked ------------------------------------------------


def test_bad_entries_are_dropped_and_control_characters_escaped(redis_unix: RedisServer) -> None:
    r = redis_unix
    with node(r.unix_url) as a, members((a, "alice")) as (alice,):
        fake = ["n", "fake:1:x", "m", "1", "room", "lobby"]
        bad1 = r.call("XADD", LOG, "*", "t", "say", *fake, "s", "1", "nick", b"ev\x1bil", "text", "bad1")
        bad2 = r.call("XADD", LOG, "*", "t", "zap", *fake, "s", "2", "nick", "mallory", "text", "bad2")
        r.call("XADD", LOG, "*", "t", "say", *fake, "s", "3", "nick", "mallory", "text", b"hi \x1b[2J")
        got = alice.wait_for("<mallory> hi ^[[2J")
        assert not any("bad" in x for x in got), got
        a.read(until=f"dropped a bad chat bus entry {bad1.decode()}: bad nickname")  # the next: within the log's limit
        assert bad2 != bad1
        assert "\x1b" not in "".join(alice.seen)
        clean(a)


# -- 10. workers --------------------------------------------------------------------

WORKERS = config("{bus}") + "\n[daemon]\nworkers = 2\n"
WORKER_NODE = re.compile(r"\[socksvc#info w(\d+)\] chat: chat bus connected \((\S+)\)")


def worker_nodes(d: Daemon) -> set[str]:
    """The node ids of the workers' chats, once both said they connected."""
    found: set[str] = set()

    def both() -> bool:
        found.update(m[2] for m in WORKER_NODE.finditer(d.read(timeout=0.1)))
        return len(found) == 2

    wait_until(both, "both workers' chats to connect")
    return found


def test_two_workers_are_two_nodes_of_one_chat(redis_unix: RedisServer) -> None:
    r = redis_unix
    with daemon(WORKERS.replace("{bus}", r.unix_url)) as d:
        nodes = worker_nodes(d)
        wait_until(lambda: nodes <= {n.decode() for n in r.call("SMEMBERS", NODES)}, "both workers to beat")
        with members(*[(d, f"m{i}") for i in range(6)]) as clients:
            clients[0].wait_for("-!- m5 has joined lobby")
            clients[5].send("hello all")
            for c in clients[:5]:
                c.wait_for("<m5> hello all")
            clients[0].send("/who")
            who = clients[0].wait_for("-!- Members of lobby *")[-1]
            assert who == "-!- Members of lobby (6): " + ", ".join(f"m{i}" for i in range(6))
            ports = {c.local_port for c in clients}
        d.stop()
    closed = re.finditer(r"\[socksvc#info w(\d+)\] chat: 127\.0\.0\.1:(\d+) closed", d.output)
    served = {m[1] for m in closed if int(m[2]) in ports}
    assert served == {"0", "1"}, d.output[-3000:]  # the accept balancer shares them: members on both chatted
    clean(d)


def test_the_supervisor_of_workers_is_no_node(redis_unix: RedisServer) -> None:
    r = redis_unix
    with daemon(WORKERS.replace("{bus}", r.unix_url)) as d:
        nodes = worker_nodes(d)
        wait_until(lambda: nodes <= {n.decode() for n in r.call("SMEMBERS", NODES)}, "both workers to beat")
        assert {n.decode() for n in r.call("SMEMBERS", NODES)} == nodes
        assert CONNECTED not in re.sub(r"\[socksvc#info w\d+\] chat: chat bus connected", "", d.output)
