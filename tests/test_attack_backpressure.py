"""
Hostile clients against the real daemon on port 0: a peer that pipelines
requests and never reads its answers must cost the daemon a bounded buffer
(the POP3 service and the admin HTTP listener once answered without end:
1 GB of RSS from 16 MB of CAPA, a reactor blocked for minutes by pipelined
GET /metrics).
"""

from __future__ import annotations

import socket
from pathlib import Path

import psutil

from tests.support import daemon, recv_all

GROWTH_LIMIT = 48 << 20


def pipeline_without_reading(port: int, request: bytes, total: int) -> socket.socket:
    """Send C{total} bytes of C{request} over and over, never reading; stop where the daemon stops reading."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(3)  # ends the sending only: a daemon that pauses reading makes sendall block
    chunk = request * (65536 // len(request))
    sent = 0
    try:
        while sent < total:
            sent += sock.send(chunk)
    except TimeoutError:
        pass
    return sock


def test_pop3_pipelining_without_reading_keeps_memory_flat(tmp_path: Path) -> None:
    config = f'[services.pop3]\nlisten = ["tcp:0:interface=127.0.0.1"]\nmaildir = "{tmp_path / "mail"}"\n'
    config += '[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
    with daemon(config) as d:
        proc = psutil.Process(d.proc.pid)
        before = proc.memory_info().rss
        hostile = pipeline_without_reading(d.port("pop3"), b"CAPA\r\n", 8 << 20)
        with socket.create_connection(("127.0.0.1", d.port("echo")), timeout=30) as other:
            other.sendall(b"ping\n")
            other.shutdown(socket.SHUT_WR)
            assert recv_all(other) == b"ping\n"
        grown = proc.memory_info().rss - before
        hostile.close()
        assert grown < GROWTH_LIMIT, f"RSS grew {grown >> 20} MiB"


def test_admin_pipelining_without_reading_keeps_memory_flat() -> None:
    config = '[daemon]\nhttp = ["tcp:0:interface=127.0.0.1"]\n'
    config += '[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
    with daemon(config) as d:
        proc = psutil.Process(d.proc.pid)
        before = proc.memory_info().rss
        port = d.port("admin/http")
        hostile = pipeline_without_reading(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 256 << 10)
        for _ in range(3):  # each answer needs a reactor turn after the pipelined bytes were read
            with socket.create_connection(("127.0.0.1", port), timeout=60) as other:
                other.sendall(b"GET /status.json HTTP/1.0\r\n\r\n")
                assert recv_all(other).startswith(b"HTTP/1.0 200")
        grown = proc.memory_info().rss - before
        hostile.close()
        assert grown < GROWTH_LIMIT, f"RSS grew {grown >> 20} MiB"
