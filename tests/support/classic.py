"""
Helpers for the classic services' tests (test_classic*.py, test_client_classic.py):
RFC 864's pattern written out from the RFC's text, plain UDP sockets with
deadlines, and running the client in-process.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator

import pytest

from tests.support import Daemon

TIMEOUT = 5.0


def rfc864_lines(count: int) -> bytes:
    """The RFC's pattern, written out from its text: 95 printing characters, line k from character k."""
    chars = [chr(c) for c in range(32, 127)]
    assert len(chars) == 95
    out = []
    for k in range(count):
        out.append("".join(chars[(k + i) % 95] for i in range(72)) + "\r\n")
    return "".join(out).encode("ascii")


# -- UDP ----------------------------------------------------------------------------


def udp(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.bind((host, port))
    return s


def recv(s: socket.socket, timeout: float = TIMEOUT) -> bytes | None:
    """One datagram, or None when none comes within C{timeout}."""
    ready, _, _ = select.select([s], [], [], timeout)
    if not ready:
        return None
    return s.recvfrom(70000)[0]


def drain(s: socket.socket) -> list[bytes]:
    """Every datagram already waiting on C{s}."""
    got = []
    while (data := recv(s, 0)) is not None:
        got.append(data)
    return got


def udp_ports(d: Daemon, service: str) -> list[int]:
    return [int(p) for kind, _h, p in d.listening.get(service, []) if kind == "udp"]


# -- the client, in this process ----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent() -> Iterator[socket.socket]:
    """A listener that accepts (the kernel does) and never says or answers anything."""
    s = socket.create_server(("127.0.0.1", 0))
    yield s
    s.close()
