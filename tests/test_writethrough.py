"""Write-through: send at once when nothing is queued, else queue; order always kept."""

from __future__ import annotations

import select
import socket

import pytest_twisted
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.test import iosim

from socksvc import writethrough
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
        assert writethrough.send_last(server.transport, b"last word\r\n") == len(b"last word\r\n")
        assert len(lost) == 1  # closed now, not on a later reactor turn
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


# -- LazyReadServer / lazy_reads ------------------------------------------------------


class _Lazy(Protocol):
    lazy_read = True


def test_lazy_reads_only_changes_plain_tcp_ports() -> None:
    from twisted.internet import reactor, tcp

    port = tcp.Port(0, Factory.forProtocol(Protocol), interface="127.0.0.1", reactor=reactor)
    assert writethrough.lazy_reads(port) is True
    assert port.transport is writethrough.LazyReadServer
    assert writethrough.lazy_reads(port) is False  # already done: left as it is

    class Custom(tcp.Server):
        pass

    other = tcp.Port(0, Factory.forProtocol(Protocol), interface="127.0.0.1", reactor=reactor)
    other.transport = Custom
    assert writethrough.lazy_reads(other) is False and other.transport is Custom
    assert writethrough.lazy_reads(object()) is False


@pytest_twisted.ensureDeferred
async def test_lazy_protocols_are_not_watched_for_input_until_they_ask() -> None:
    from twisted.internet import reactor

    lazy = Loopback(Factory.forProtocol(_Lazy))
    eager = Loopback(Factory.forProtocol(Protocol))
    for loop in (lazy, eager):
        assert writethrough.lazy_reads(loop.port)
    try:
        server, _sock = await lazy.connect()
        assert type(server.transport) is writethrough.LazyReadServer
        assert writethrough.idle_plain(server.transport)  # still a plain transport for write-through
        assert server.transport not in reactor.getReaders()
        server.transport.startReading()  # once connected, it reads when asked
        assert server.transport in reactor.getReaders()
        other, _ = await eager.connect()
        assert type(other.transport) is writethrough.LazyReadServer
        assert other.transport in reactor.getReaders()  # no lazy_read: read from at once
    finally:
        await lazy.close()
        await eager.close()


@pytest_twisted.ensureDeferred
async def test_send_last_on_a_lazy_transport_reads_away_and_closes_with_one_shutdown() -> None:
    lost: list[object] = []

    class LazyWatch(_Lazy):
        def connectionLost(self, reason: object = None) -> None:
            lost.append(reason)

    loop = Loopback(Factory.forProtocol(LazyWatch))
    writethrough.lazy_reads(loop.port)
    try:
        server, sock = await loop.connect()
        sock.sendall(b"sent before reading\n")
        assert _readable_at_server(server)
        transport = server.transport
        assert writethrough.send_last(transport, b"bye\r\n") == len(b"bye\r\n")
        assert len(lost) == 1
        assert transport._shouldShutdown is False  # our FIN went out in send_last; close() finishes
        assert await loop.recv_to_eof(sock) == b"bye\r\n"
        sock.setblocking(True)
        sock.settimeout(5)
        assert sock.recv(100) == b""  # an orderly end of file, not a reset
    finally:
        await loop.close()


@pytest_twisted.ensureDeferred
async def test_a_wrapper_around_a_lazy_protocol_is_read_from_at_once() -> None:
    # A wrapper (TLS is one) must be read from (a handshake) whatever it wraps.
    from twisted.internet import reactor
    from twisted.protocols.policies import WrappingFactory

    loop = Loopback(WrappingFactory(Factory.forProtocol(_Lazy)))
    writethrough.lazy_reads(loop.port)
    try:
        server, _sock = await loop.connect()
        assert isinstance(server.wrappedProtocol, _Lazy)
        assert server.transport in reactor.getReaders()
    finally:
        await loop.close()
