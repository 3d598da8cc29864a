"""Write-through: send at once when nothing is queued, else queue; order always kept."""

from __future__ import annotations

import select
import socket

import pytest_twisted
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.test import iosim

from socksvc.core import writethrough
from tests.conftest import Loopback


def test_falls_back_to_transport_write_for_test_transports() -> None:
    transport = StringTransport()
    writethrough.write(transport, b"one")
    writethrough.write(transport, b"")
    writethrough.send_now(transport, b"two")
    assert transport.value() == b"onetwo"
    fake = iosim.FakeTransport(Protocol(), isServer=True)
    writethrough.write(fake, b"three")
    assert fake.getOutBuffer() == b"three"


def _readable(sock: socket.socket, timeout: float = 5.0) -> bool:
    return bool(select.select([sock], [], [], timeout)[0])


def _queued(transport: object) -> int:
    return len(transport.dataBuffer) + sum(map(len, transport._tempDataBuffer))  # type: ignore[attr-defined]


@pytest_twisted.ensureDeferred
async def test_sends_immediately_on_an_idle_tcp_connection() -> None:
    loop = Loopback(Factory.forProtocol(Protocol))
    try:
        server, sock = await loop.connect()
        writethrough.write(server.transport, b"now")
        # Nothing was queued for a later reactor turn: the bytes are already
        # in the client's socket, and the reactor has not run since.
        assert _queued(server.transport) == 0
        assert _readable(sock)
        assert sock.recv(100) == b"now"
        writethrough.send_now(server.transport, b"again")
        assert _readable(sock)
        assert sock.recv(100) == b"again"
    finally:
        await loop.close()


@pytest_twisted.ensureDeferred
async def test_keeps_order_when_the_buffer_is_not_empty() -> None:
    loop = Loopback(Factory.forProtocol(Protocol))
    try:
        server, sock = await loop.connect()
        server.transport.write(b"first,")  # queued for the reactor
        writethrough.write(server.transport, b"second,")  # must queue behind it
        assert _queued(server.transport) == len(b"first,second,")
        writethrough.write(server.transport, b"third")
        assert await loop.recv_until(sock, 18) == b"first,second,third"
    finally:
        await loop.close()


@pytest_twisted.ensureDeferred
async def test_what_the_kernel_does_not_take_is_queued_in_order() -> None:
    loop = Loopback(Factory.forProtocol(Protocol))
    try:
        server, sock = await loop.connect()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        big = bytes(range(256)) * (16 * 1024)  # 4 MiB: more than the socket buffers hold
        writethrough.write(server.transport, big)
        assert 0 < _queued(server.transport) < len(big)
        writethrough.write(server.transport, b"tail")
        got = await loop.recv_until(sock, len(big) + 4, timeout=30)
        assert got == big + b"tail"
    finally:
        await loop.close()


@pytest_twisted.ensureDeferred
async def test_send_now_gets_a_last_word_out_before_an_abort() -> None:
    loop = Loopback(Factory.forProtocol(Protocol))
    try:
        server, sock = await loop.connect()
        writethrough.send_now(server.transport, b"bye\r\n")
        server.transport.abortConnection()
        assert await loop.recv_to_eof(sock) == b"bye\r\n"
    finally:
        await loop.close()


@pytest_twisted.ensureDeferred
async def test_unix_connections_write_through_too(tmp_path: object) -> None:
    import os

    path = os.path.join(str(tmp_path), "wt.sock")
    loop = Loopback(Factory.forProtocol(Protocol), family="unix", path=path)
    try:
        server, sock = await loop.connect()
        writethrough.write(server.transport, b"unix")
        assert _queued(server.transport) == 0
        assert _readable(sock)
        assert sock.recv(100) == b"unix"
    finally:
        await loop.close()


def test_send_last_leaves_other_transports_alone() -> None:
    transport = StringTransport()
    assert writethrough.send_last(transport, b"bye") == 0
    assert transport.value() == b"" and not transport.disconnecting


@pytest_twisted.ensureDeferred
async def test_send_last_closes_in_order_at_once_even_when_the_peer_sent_first() -> None:
    lost: list[object] = []

    class Watch(Protocol):
        def connectionLost(self, reason: object = None) -> None:
            lost.append(reason)

    loop = Loopback(Factory.forProtocol(Watch))
    try:
        server, sock = await loop.connect()
        sock.sendall(b"hello, unread\n")
        assert _readable_at_server(server)
        transport = server.transport
        assert writethrough.send_last(transport, b"last word\r\n") == len(b"last word\r\n")
        assert len(lost) == 1  # closed now, not on a later reactor turn
        assert transport._shouldShutdown is False  # our FIN went out in send_last: close() alone finishes
        # The input was read away first: the close is a FIN, not a reset.
        assert await loop.recv_to_eof(sock) == b"last word\r\n"
        sock.setblocking(True)
        sock.settimeout(5)
        assert sock.recv(100) == b""  # an orderly end of file, not ECONNRESET
    finally:
        await loop.close()


def _readable_at_server(server: Protocol) -> bool:
    fd = server.transport.socket  # type: ignore[union-attr]
    return bool(select.select([fd], [], [], 5.0)[0])


def test_send_and_drain_never_blocks_a_blocking_socket_and_never_raises() -> None:
    a, b = socket.socketpair()
    try:
        a.setblocking(True)
        b.sendall(b"unread")
        assert writethrough.send_and_drain(a, b"bye\r\n", more=False) == 5
        assert b.recv(100) == b"bye\r\n" and b.recv(100) == b""  # our FIN came after the data
        a.close()
        assert writethrough.send_and_drain(a, b"x") == 0  # a closed socket: 0, no OSError
    finally:
        a.close()
        b.close()


def test_send_and_drain_reports_a_partial_send_and_leaves_the_socket_open() -> None:
    a, b = socket.socketpair()
    try:
        a.setblocking(True)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        big = b"x" * (1 << 22)  # far more than the socket holds: MSG_DONTWAIT takes part, never blocks
        sent = writethrough.send_and_drain(a, big, more=False)
        assert 0 < sent < len(big)
        a.sendall(b"")  # still open for writing: no shutdown happened
        assert a.fileno() != -1
    finally:
        a.close()
        b.close()
