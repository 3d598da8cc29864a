"""
Chat over real loopback sockets: the daemon as a subprocess on port 0, plain
socket clients (what `nc` would do: tests.support.netclients.ChatClient).
"""

from __future__ import annotations

import socket
import time

import pytest

from tests.support import Daemon, daemon
from tests.support.netclients import ChatClient


def config(extra: str = "") -> str:
    return f'[services.chat]\nlisten = ["tcp:0:interface=127.0.0.1"]\n{extra}\n'


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_two_plain_socket_clients_chat() -> None:
    with daemon(config('motd = "LAN chat"')) as d:
        port = d.port("chat")
        a = ChatClient(port)
        b = ChatClient(port)
        try:
            assert a.wait_for("-!- Choose a nickname: *")[:2] == ["-!- Welcome to socksvc chat", "-!- LAN chat"]
            a.send("alice")
            a.wait_for("-!- You are now in lobby (1 member)")
            b.wait_for("-!- Choose a nickname: *")
            b.send("ALICE", "bob")
            got = b.wait_for("-!- You are now in lobby (2 members)")
            assert got[0] == "-!- error: nickname refused: ALICE is taken"
            a.wait_for("-!- bob has joined lobby")
            b.send("hello \x1b[2J alice")
            assert a.wait_for("<bob> hello ^[[2J alice") == ["<bob> hello ^[[2J alice"]
            a.send("/msg bob hi there", "/me waves")
            a.wait_for("-> *bob* hi there")
            assert b.wait_for("* alice waves") == ["*alice* hi there", "* alice waves"]
            b.send("/quit later")
            b.wait_for("-!- Disconnected: quit")
            a.wait_for("-!- bob has quit (later)")
            b.pump(5)
            assert b.closed or b.wait_for("never*", timeout=5) == []
        finally:
            a.close()
            b.close()


def _rss_or_skip(d: Daemon) -> int:
    try:
        return rss_kib(d.proc.pid)
    except OSError:
        pytest.skip("no /proc to read the daemon's memory")


def test_a_member_that_never_reads_neither_slows_nor_grows_the_server() -> None:
    cfg = config(
        "flood_rate = 0\nsend_queue_max = 65536\nstall_timeout = 2\nidle_timeout = 0\n"
        "input_line_rate = 0\ninput_byte_rate = 0"  # the talker sends 4 MB as fast as it can
    )
    with daemon(cfg) as d:
        port = d.port("chat")
        sink = ChatClient(port, rcvbuf=4096)
        sink.send("sink")
        talker = ChatClient(port)
        talker.send("talker")
        listener = ChatClient(port)
        listener.send("listener")
        listener.wait_for("-!- You are now in lobby (3 members)")
        before = _rss_or_skip(d)
        line = "x" * 200
        total = 0
        for _batch in range(40):
            talker.send(*[f"{total + i} {line}" for i in range(500)])
            total += 500
            # The listener keeps up while the sink reads nothing at all.
            listener.wait_for(f"<talker> {total - 1} *")
        after = _rss_or_skip(d)
        # 8 MB went out to the listener; had the server kept the sink's copy, it would show.
        assert after - before < 6 * 1024, (before, after)
        listener.wait_for("-!- sink has quit (not reading)")
        talker.send("/who")
        assert talker.wait_for("-!- Members of lobby *")[-1] == "-!- Members of lobby (2): listener, talker"
        talker.close()
        listener.close()
        sink.close()


def test_resets_and_half_closes_mid_broadcast_affect_nobody() -> None:
    import struct

    with daemon(config("flood_rate = 0")) as d:
        port = d.port("chat")
        a = ChatClient(port)
        a.send("alice")
        a.wait_for("-!- You are now in *")
        for i in range(5):
            v = ChatClient(port)
            v.send(f"v{i}", *[f"burst {n}" for n in range(200)])
            if i % 2:
                v.sock.shutdown(socket.SHUT_WR)  # half-close: it has left
            else:
                v.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            v.close()  # with linger 0: a reset
        deadline = time.monotonic() + 15
        while True:  # the daemon sees the resets and closes in its own time
            a.send("/who")
            if a.wait_for("-!- Members of lobby *")[-1] == "-!- Members of lobby (1): alice":
                break
            assert time.monotonic() < deadline, "the vanished clients stayed members"
            a.pump(0.2)
        b = ChatClient(port)
        b.send("bob", "still works")
        a.wait_for("<bob> still works")
        a.close()
        b.close()
    assert "Traceback" not in d.output
    assert "Unhandled" not in d.output


def test_reload_keeps_members_and_applies_new_settings() -> None:
    import signal

    with daemon(config('rooms = ["lobby"]')) as d:
        port = d.port("chat")
        a = ChatClient(port)
        a.send("alice", "before the reload")
        a.wait_for("-!- You are now in *")
        assert d.config_path is not None
        with open(d.config_path) as f:
            text = f.read().replace('rooms = ["lobby"]', 'rooms = ["lobby", "news"]\ntimestamps = true')
        text = text.replace('"tcp:0:interface=127.0.0.1"', f'"tcp:{port}:interface=127.0.0.1"')
        with open(d.config_path, "w") as f:
            f.write(text)
        d.signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while True:
            a.send("/rooms")
            last = a.wait_for("-!- Rooms: ", search=True)[-1]
            if last.endswith("-!- Rooms: lobby (1), news (0)"):
                break
            assert time.monotonic() < deadline, f"the reload did not apply: {last!r} {d.read(timeout=0.1)[-500:]}"
            a.pump(0.3)
        assert last.startswith("[")  # timestamps are on now
        b = ChatClient(port)
        b.send("bob")
        got = b.wait_for(r"^\[history ", search=True)
        assert got[-1].endswith("<alice> before the reload")
        a.close()
        b.close()
