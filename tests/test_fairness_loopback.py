"""
Slow clients against the real daemon on loopback (port 0): tricklers from
many addresses of one /24 can neither fill reverse nor hold it, and a
client over its input budget is slowed, then cut off with a reason.
"""

from __future__ import annotations

import socket
import time

from tests.support import daemon

DEADLINE = 20.0


def config(extra: str) -> str:
    return f'[services.reverse]\nlisten = ["tcp:0:interface=127.0.0.1"]\nidle_timeout = 0\n{extra}\n'


def connect_from(source: str, port: int) -> socket.socket:
    """A connection from C{source} (any 127.0.0.0/8 address is this host's)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.settimeout(DEADLINE)
    s.connect(("127.0.0.1", port))
    return s


def read_until_closed(sock: socket.socket) -> bytes:
    got = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return got
        if not chunk:
            return got
        got += chunk


def round_trip(sock: socket.socket, line: bytes) -> bytes:
    sock.sendall(line + b"\n")
    got = b""
    while not got.endswith(b"\n"):
        chunk = sock.recv(4096)
        assert chunk, got
        got += chunk
    return got


def test_tricklers_from_one_subnet_neither_fill_nor_hold_reverse() -> None:
    with daemon(config("max_per_source = 2\nmax_per_subnet = 4\nline_timeout = 2")) as d:
        port = d.port("reverse")
        # Four addresses' worth of tricklers (two each) from 127.0.0.0/24: a line begun, never ended.
        held = [connect_from(f"127.0.0.{10 + i // 2}", port) for i in range(4)]
        for s in held:
            s.sendall(b"a")
        refused = connect_from("127.0.0.99", port)  # a fresh address, the same /24
        assert read_until_closed(refused) == b"socksvc: too many connections from your network\r\n"
        elsewhere = connect_from("127.0.1.1", port)  # another /24 is served
        assert round_trip(elsewhere, b"abc") == b"cba\n"
        started = time.monotonic()
        for s in held:
            s.sendall(b"b")  # still trickling
        for s in held:
            assert read_until_closed(s) == b"error: line not finished within 2s\r\n"
        assert time.monotonic() - started < 10
        again = connect_from("127.0.0.99", port)  # the subnet's slots are free again
        assert round_trip(again, b"xy") == b"yx\n"
        for s in [*held, refused, elsewhere, again]:
            s.close()
    assert "Traceback" not in d.output


def test_a_flooding_client_is_slowed_then_cut_off_and_others_are_served() -> None:
    extra = "input_byte_rate = 4096\ninput_burst = 1\nthrottle_kick = 2"
    with daemon(config(extra)) as d:
        port = d.port("reverse")
        flood = connect_from("127.0.0.20", port)
        flood.setblocking(False)
        honest = connect_from("127.0.0.21", port)
        line = b"z" * 1023 + b"\n"
        sent = 0
        end = time.monotonic() + 6
        cut = False
        honest_at = 0.0  # ten honest round trips a second: well within its own budget
        while time.monotonic() < end and not cut:
            try:
                sent += flood.send(line * 64)
            except BlockingIOError:
                time.sleep(0.01)  # a pacing loop for the sender, not synchronisation
            except (BrokenPipeError, ConnectionResetError):
                cut = True
            if time.monotonic() >= honest_at:
                assert round_trip(honest, b"ok") == b"ko\n"
                honest_at = time.monotonic() + 0.1
        flood.setblocking(True)
        tail = b""
        if not cut:
            tail = read_until_closed(flood)
        assert cut or tail.endswith(b"error: sending too fast\r\n")
        # The daemon took at most what the budget allows (4 KiB a second, 1 s saved up,
        # plus what the kernel buffers hold); unthrottled it would take hundreds of MB.
        assert sent < 64 << 20
        honest.close()
        flood.close()
    assert "(sending too fast)" in d.output
