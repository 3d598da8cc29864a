"""
A node that stops cleanly (SIGTERM) tells the cluster at once: its members
quit everywhere with "server shutting down", long before node_timeout.
"""

from __future__ import annotations

import time

from tests.support import daemon
from tests.support.netclients import ChatClient
from tests.support.redis import RedisServer


def config(bus: str) -> str:
    return f'[services.chat]\nlisten = ["tcp:0:interface=127.0.0.1"]\nbus = "{bus}"\nnode_timeout = 60\n'


def test_a_stopped_node_s_members_quit_at_once(redis_server: RedisServer) -> None:
    with daemon(config(redis_server.unix_url)) as a:
        a.read(until="chat bus connected")
        alice = ChatClient(a.port("chat"))
        try:
            alice.register("alice")
            with daemon(config(redis_server.unix_url)) as b:
                b.read(until="chat bus connected")
                bob = ChatClient(b.port("chat"))
                bob.register("bob")
                alice.wait_for("-!- bob has joined lobby")
                stopped = time.monotonic()
                b.stop()
                alice.wait_for("-!- bob has quit (server shutting down)", 10)
                assert time.monotonic() - stopped < 10  # not node_timeout (60 s) later
                bob.close()
            alice.send("/who")
            assert alice.wait_for("-!- Members of lobby (*")[-1] == "-!- Members of lobby (1): alice"
        finally:
            alice.close()
