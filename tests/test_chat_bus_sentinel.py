"""
The chat bus through a Redis Sentinel failover (docs/chat-bus.md, "Sentinel
for failover"): a real primary, a replica and one Sentinel on loopback, two
socksvc daemons with C{bus = "redis+sentinel://..."}, a member typing a
line every 0.3 s while C{SENTINEL FAILOVER} promotes the replica.

Every line typed during the failover reaches the member on the other node,
or someone is told: the sender (C{not sent}), or the receiver (the bus
C{lost its data} / C{missed} lines: writes the old primary took before it
was demoted are gone). Nothing is lost silently; the daemons reconnect to
the new primary and say so.
"""

from __future__ import annotations

import re
import select
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from tests.support import Daemon, daemon
from tests.support.netclients import wait_until
from tests.support.redis import RedisServer, installed
from tests.support.sentinel import Sentinel

pytestmark = pytest.mark.skipif(not installed(), reason="redis-server not installed")

SERVICE = "mym"
REFUSED = "-!- error: nickname refused: the chat bus is unreachable; try again shortly"
TOLD_LOST = ("the chat bus restarted and lost its data", "You may have missed up to")


def until(check: Callable[[], bool], what: str, timeout: float = 30.0, poll: Callable[[], None] | None = None) -> None:
    """L{wait_until}, with the longer wait a failover may take."""
    wait_until(check, what, timeout, poll)


def config(sentinel_port: int, service: str = SERVICE) -> str:
    return (
        '[services.chat]\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
        f'bus = "redis+sentinel://127.0.0.1:{sentinel_port}/{service}"\nnode_timeout = 3\n'
        "flood_rate = 10\n"  # a line every 0.3 s is over the default 2 a second: flood control is not under test
    )


class Member:
    """A line client that keeps every line it got (nothing consumed by a wait)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setblocking(False)
        self.buf = b""
        self.lines: list[str] = []

    def send(self, line: str) -> None:
        self.sock.setblocking(True)
        self.sock.sendall(line.encode() + b"\n")
        self.sock.setblocking(False)

    def pump(self, timeout: float = 0.05) -> None:
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if ready:
            with_data = self.sock.recv(65536)
            self.buf += with_data
            *done, self.buf = self.buf.split(b"\r\n")
            self.lines += [x.decode("utf-8", "replace") for x in done]

    def has(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        until(lambda: self.has(text), f"{text!r} (last lines {self.lines[-5:]!r})", timeout, self.pump)

    def join(self, nick: str) -> None:
        self.send(nick)
        self.wait_for("-!- You are now in lobby")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def cluster() -> Iterator[tuple[RedisServer, RedisServer, Sentinel]]:
    """A primary, its replica (in sync) and a Sentinel that knows both; all stopped after."""
    primary = RedisServer()
    replica: RedisServer | None = None
    sentinel: Sentinel | None = None
    try:
        primary.start()
        replica = RedisServer(extra=["--replicaof", "127.0.0.1", str(primary.port)])
        replica.start()
        r = replica
        until(lambda: r.info("replication").get("master_link_status") == "up", "the replica to sync")
        sentinel = Sentinel(SERVICE, primary.port)
        sentinel.start()
        s = sentinel
        until(lambda: s.replicas_ok() == 1, f"the Sentinel to find the replica:\n{s.log()[-2000:]}")
        yield primary, replica, sentinel
    finally:
        for server in (sentinel, replica, primary):
            if server is not None:
                server.close()


def reconnected(d: Daemon) -> bool:
    """Has the daemon logged a connection to the bus after losing it?"""
    d.read(timeout=0.05)
    _, lost, after = d.output.partition("chat bus unreachable")
    return bool(lost) and ("chat bus connected" in after or "more such events" in after)


def test_members_keep_talking_through_a_sentinel_failover(
    cluster: tuple[RedisServer, RedisServer, Sentinel],
) -> None:
    primary, replica, sentinel = cluster
    with daemon(config(sentinel.port)) as d1, daemon(config(sentinel.port)) as d2:
        for d in (d1, d2):
            d.read(until="chat bus connected")
        alice, bob = Member(d1.port("chat")), Member(d2.port("chat"))
        try:
            alice.join("alice")
            bob.join("bob")
            alice.wait_for("-!- bob has joined lobby")
            bob.send("ready")
            alice.wait_for("<bob> ready")

            assert sentinel.cli("SENTINEL", "FAILOVER", SERVICE) == "OK"
            sent: list[str] = []
            deadline = time.monotonic() + 90

            def failed_over() -> bool:
                demoted = primary.info("replication").get("role") == "slave"
                return sentinel.primary() == ("127.0.0.1", replica.port) and demoted

            while not (failed_over() and reconnected(d1) and reconnected(d2)):
                assert time.monotonic() < deadline, f"no failover and reconnect:\n{sentinel.log()[-2000:]}"
                sent.append(f"during {len(sent)}")
                alice.send(sent[-1])
                step = time.monotonic() + 0.3
                while time.monotonic() < step:  # 0.3 s of reading what comes, between two lines
                    alice.pump(max(0.0, step - time.monotonic()))
                    bob.pump(0)
            assert len(sent) >= 3, "the failover was over before a member could type"

            alice.send("after from alice")
            bob.send("after from bob")
            bob.wait_for("<alice> after from alice")
            alice.wait_for("<bob> after from bob")
            for _ in range(5):
                alice.pump(0.05)
                bob.pump(0.05)

            missing = [line for line in sent if f"<alice> {line}" not in bob.lines]
            print(f"failover: {len(sent)} lines typed, {len(missing)} lost and told")  # shown with -s
            assert not alice.has("flooding")
            told = any(t in line for t in TOLD_LOST for line in bob.lines) or alice.has("-!- error: not sent")
            assert not missing or told, f"lost silently: {missing}; bob heard {bob.lines[-40:]!r}"
            # what bob heard of alice's lines is in the order she typed them
            heard = [line.removeprefix("<alice> ") for line in bob.lines if re.fullmatch(r"<alice> during \d+", line)]
            assert heard == [line for line in sent if line in heard]

            assert d1.proc.poll() is None and d2.proc.poll() is None
            for d in (d1, d2):
                until(lambda d=d: reconnected(d), f"the reconnect in the log:\n{d.output[-3000:]}")  # type: ignore[misc]
        finally:
            alice.close()
            bob.close()


def test_a_sentinel_that_does_not_know_the_service() -> None:
    sentinel = Sentinel(SERVICE, None)
    try:
        sentinel.start()
        with daemon(config(sentinel.port, "nosuch")) as d:
            member = Member(d.port("chat"))
            try:
                member.send("alice")
                member.wait_for(REFUSED)
            finally:
                member.close()
            d.read(until=f"Sentinel 127.0.0.1:{sentinel.port} does not know 'nosuch'")
            assert "chat bus unreachable" in d.output and d.proc.poll() is None
    finally:
        sentinel.close()
