"""
The policy layer against the real daemon on loopback (port 0): deny, the
per-source cap, the connection rate, the idle timeout, bounded memory for
peers that never read, and running out of file descriptors.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import select
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import psutil
import pytest

from tests.support import TWISTD, Daemon, daemon, recv_exactly

DEADLINE = 20.0


def echo_config(extra: str = "", service: str = "echo") -> str:
    return f"""
[services.{service}]
type = "echo"
listen = ["tcp:0:interface=127.0.0.1"]
{extra}
"""


def closed_with(sock: socket.socket, timeout: float = DEADLINE) -> bytes | None:
    """
    Read until the server closes: what it said, or None if the connection
    is still open at the deadline.
    """
    got = b""
    end = time.monotonic() + timeout
    sock.setblocking(False)
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([sock], [], [], min(left, 0.5))
        if not ready:
            continue
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return got
        if not chunk:
            return got
        got += chunk


def echoes(sock: socket.socket, data: bytes = b"ping\n", timeout: float = 5.0) -> bool:
    """Does C{sock} get C{data} echoed back?"""
    sock.settimeout(timeout)
    try:
        sock.sendall(data)
        return recv_exactly(sock, len(data)) == data
    except OSError:
        return False


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def wait_for(predicate: object, timeout: float = DEADLINE) -> bool:
    """Poll C{predicate()} until it is true or the deadline passes (no sleeping: select on nothing)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():  # type: ignore[operator]
            return True
        select.select([], [], [], 0.05)
    return bool(predicate())  # type: ignore[operator]


def test_denied_peer_reads_one_line_and_others_are_served() -> None:
    config = echo_config('deny = ["127.0.0.0/8"]') + echo_config(service="open")
    with daemon(config) as d:
        with socket.create_connection(("127.0.0.1", d.port("echo")), timeout=5) as s:
            assert closed_with(s) == b"socksvc: access denied\r\n"
        with socket.create_connection(("127.0.0.1", d.port("open")), timeout=5) as s:
            assert echoes(s)
        d.read(until="refused 127.0.0.1:")
        assert "echo: refused 127.0.0.1:" in d.output and ": access denied" in d.output
        assert "Traceback" not in d.output


def test_refused_peer_that_sends_first_still_reads_the_line() -> None:
    with daemon(echo_config('deny = ["127.0.0.0/8"]')) as d:
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", d.port("echo")), timeout=5) as s:
                s.sendall(b"hello\n" * 100)  # like `echo hello | nc`: data before the first read
                assert closed_with(s) == b"socksvc: access denied\r\n"


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_mapped_ipv4_peers_on_an_ipv6_listener_are_unwrapped() -> None:
    if not _ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    config = """
[services.echo]
listen = ['tcp6:0:interface=\\:\\:']
deny = ["127.0.0.0/8"]
"""
    with daemon(config) as d:
        port = d.port("echo")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:  # arrives as ::ffff:127.0.0.1
            assert closed_with(s) == b"socksvc: access denied\r\n"
        with socket.create_connection(("::1", port), timeout=5) as s:
            assert echoes(s)
        d.read(until="refused [::ffff:127.0.0.1]:")


def test_unix_peers_skip_address_rules() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "echo.sock")
        config = f"""
[services.echo]
listen = ["unix:{path}", "tcp:0:interface=127.0.0.1"]
deny = ["0.0.0.0/0", "::/0"]
max_per_source = 1
"""
        with daemon(config) as d:
            with socket.create_connection(("127.0.0.1", d.port("echo")), timeout=5) as s:
                assert closed_with(s) == b"socksvc: access denied\r\n"
            clients = []
            try:
                for _ in range(3):  # per-source limits do not group UNIX peers either
                    u = socket.socket(socket.AF_UNIX)
                    clients.append(u)
                    u.connect(path)
                    assert echoes(u)
            finally:
                for u in clients:
                    u.close()


def test_per_source_cap() -> None:
    with daemon(echo_config("max_per_source = 2")) as d:
        port = d.port("echo")
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
        try:
            assert all(echoes(s) for s in held)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                assert closed_with(s) == b"socksvc: too many connections from your address\r\n"
            held.pop().close()
            # The daemon sees the close a moment later: retry until the slot is free.
            assert wait_for(lambda: _served_once(port))
        finally:
            for s in held:
                s.close()


def _served_once(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        return echoes(s)


def test_connection_rate() -> None:
    # 0.001 a second: the bucket cannot refill during the test, however slow the machine.
    with daemon(echo_config("max_rate = 0.001\nmax_rate_burst = 2")) as d:
        port = d.port("echo")
        for _ in range(2):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                assert echoes(s)
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                assert closed_with(s) == b"socksvc: connection rate exceeded, try again later\r\n"
        d.read(until="connection rate exceeded")
        assert d.output.count("refused 127.0.0.1:") == 1  # one line per reason per 10 s


def test_idle_timeout_aborts_a_silent_peer() -> None:
    with daemon(echo_config("idle_timeout = 0.5")) as d:
        with socket.create_connection(("127.0.0.1", d.port("echo")), timeout=5) as s:
            assert echoes(s)
            assert closed_with(s) == b""
        d.read(until="disconnecting")
        assert re.search(r"echo: 127\.0\.0\.1:\d+ idle for \d+s, disconnecting", d.output)
        d.read(until="bytes out (idle for")


def _push_without_reading(port: int, pid: int, seconds: float = 4.0, limit: int = 256 << 20) -> tuple[int, int, bool]:
    """
    Send as much as the kernel takes for C{seconds} (at most C{limit}
    bytes) without reading; the bytes sent, the daemon's peak RSS growth,
    and whether the server closed the connection.
    """
    base = rss(pid)
    peak = base
    sent = 0
    chunk = b"x" * 65536
    closed = False
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.setblocking(False)
        end = time.monotonic() + seconds
        while sent < limit and time.monotonic() < end:
            _, writable, _ = select.select([], [s], [], 0.1)
            if writable:
                try:
                    sent += s.send(chunk)
                except BlockingIOError:
                    pass
                except OSError:
                    closed = True
                    break
            peak = max(peak, rss(pid))
    return sent, peak - base, closed


def test_non_reading_echo_client_does_not_grow_the_daemon() -> None:
    with daemon(echo_config()) as d:
        port = d.port("echo")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:  # warm up
            assert echoes(s, b"x" * 100000)
        sent, growth, closed = _push_without_reading(port, d.proc.pid)
        assert not closed
        assert sent > 1 << 20  # the kernel buffers took some, then echo paused its reader
        assert growth < 4 << 20, f"daemon RSS grew by {growth} bytes while a client pushed {sent}"
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            assert echoes(s)  # and everyone else is still served


def test_non_reading_greeting_client_is_closed() -> None:
    config = """
[services.greeting]
listen = ["tcp:0:interface=127.0.0.1"]
message = "hello"
send_timeout = 0.5
"""
    with daemon(config) as d:
        port = d.port("greeting")
        base = rss(d.proc.pid)
        for _ in range(3):
            _sent, growth, closed = _push_without_reading(port, d.proc.pid, seconds=2.0)
            assert closed  # the greeting was written and the connection closed, not left open
            assert growth < 4 << 20
        assert rss(d.proc.pid) - base < 4 << 20
        d.read(until="closed after")


# -- running out of file descriptors ---------------------------------------------


@contextlib.contextmanager
def limited_daemon(config: str, nofile: int) -> Iterator[Daemon]:
    """The daemon with RLIMIT_NOFILE lowered to C{nofile} (soft and hard)."""
    fd, path = tempfile.mkstemp(suffix=".toml", prefix="socksvc-test-")
    with os.fdopen(fd, "w") as f:
        f.write(config)

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    proc = subprocess.Popen(
        [TWISTD, "--nodaemon", "--pidfile=", "socksvc", "--config", path],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=tempfile.gettempdir(),
        preexec_fn=lower,
    )
    d = Daemon(proc, path)
    try:
        d.read(until="services on")
        yield d
    finally:
        d.stop()
        os.unlink(path)


EMFILE_CONFIG = echo_config("max_connections = 0\nmax_per_source = 0")


def _fill(port: int, most: int = 200) -> tuple[list[socket.socket], int]:
    """Open echo clients until the daemon cannot take one more; (the served ones, how many were turned away)."""
    served: list[socket.socket] = []
    turned_away = 0
    for _ in range(most):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            turned_away += 1
            break
        if echoes(s):
            served.append(s)
        else:
            s.close()
            turned_away += 1
            break
    return served, turned_away


def test_out_of_file_descriptors_keeps_serving_and_recovers() -> None:
    with limited_daemon(EMFILE_CONFIG, 48) as d:
        port = d.port("echo")
        served, turned_away = _fill(port)
        try:
            assert turned_away == 1 and 10 < len(served) < 48
            for _ in range(20):  # a few more at the limit: each turned away, none kills the daemon
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    assert not echoes(s, timeout=5)
            assert d.proc.poll() is None
            assert echoes(served[0]) and echoes(served[-1])  # existing clients are still served
            for s in served[:10]:
                s.close()
            assert wait_for(lambda: _served_once(port))  # accepting resumes
            assert echoes(served[-1])
            d.read(timeout=0.5)
            assert "Traceback" not in d.output
        finally:
            for s in served:
                s.close()


def test_out_of_file_descriptors_does_not_flood_the_log() -> None:
    with limited_daemon(EMFILE_CONFIG, 48) as d:
        port = d.port("echo")
        served, _ = _fill(port)
        try:
            for _ in range(100):
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    assert closed_with(s) is not None
            assert echoes(served[0])
            d.read(timeout=0.5)
            lines = [line for line in d.output.splitlines() if "EMFILE" in line or "out of file descriptors" in line]
            assert 1 <= len(lines) <= 4, "\n".join(lines)  # not three lines per closed peer
            assert "Closed socket from" not in d.output
        finally:
            for s in served:
                s.close()
