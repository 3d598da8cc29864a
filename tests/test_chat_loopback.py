"""
Chat over real loopback sockets: the daemon as a subprocess on port 0, plain
socket clients (what `nc` would do).
"""

from __future__ import annotations

import re
import select
import socket
import time

import pytest

from tests.support import Daemon, daemon


def config(extra: str = "") -> str:
    return f'[services.chat]\nlisten = ["tcp:0:interface=127.0.0.1"]\n{extra}\n'


class LineClient:
    """A plain socket chat client that reads lines with a deadline."""

    def __init__(self, port: int, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", port))
        self.sock.setblocking(False)
        self.buf = b""
        self.lines: list[str] = []
        self.closed = False

    def send(self, *lines: str) -> None:
        data = "".join(line + "\n" for line in lines).encode()
        self.sock.setblocking(True)
        self.sock.sendall(data)
        self.sock.setblocking(False)

    def pump(self, timeout: float) -> None:
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return
        try:
            chunk = self.sock.recv(1 << 16)
        except BlockingIOError:
            return
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.closed = True
            return
        self.buf += chunk
        *done, self.buf = self.buf.split(b"\r\n")
        self.lines.extend(x.decode("utf-8") for x in done)

    def wait_for(self, text: str, timeout: float = 15.0, *, search: bool = False) -> list[str]:
        """
        Read until a line equal to C{text} (or starting with it, if it ends
        with '*'; or, with C{search}, where the regex C{text} matches).
        """
        deadline = time.monotonic() + timeout
        prefix = text[:-1] if text.endswith("*") else None
        while True:
            for i, line in enumerate(self.lines):
                if (
                    line == text
                    or (search and re.search(text, line))
                    or (not search and prefix is not None and line.startswith(prefix))
                ):
                    got, self.lines = self.lines[: i + 1], self.lines[i + 1 :]
                    return got
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                raise AssertionError(f"never got {text!r}; got {self.lines[-5:]!r}")
            self.pump(min(left, 0.5))

    def close(self) -> None:
        self.sock.close()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_two_plain_socket_clients_chat() -> None:
    with daemon(config('motd = "LAN chat"')) as d:
        port = d.port("chat")
        a = LineClient(port)
        b = LineClient(port)
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
        sink = LineClient(port, rcvbuf=4096)
        sink.send("sink")
        talker = LineClient(port)
        talker.send("talker")
        listener = LineClient(port)
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
        a = LineClient(port)
        a.send("alice")
        a.wait_for("-!- You are now in *")
        for i in range(5):
            v = LineClient(port)
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
        b = LineClient(port)
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
        a = LineClient(port)
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
        b = LineClient(port)
        b.send("bob")
        got = b.wait_for(r"^\[history ", search=True)
        assert got[-1].endswith("<alice> before the reload")
        a.close()
        b.close()
