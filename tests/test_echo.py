"""Echo (RFC 862) over StringTransport, iosim, and real loopback TCP."""

from __future__ import annotations

import socket
from typing import Any

import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from tests.conftest import Loopback, until
from tests.support import connect, context, peer, pumped


def test_every_byte_comes_back() -> None:
    proto, transport = connect(context("echo"))
    everything = bytes(range(256))
    proto.dataReceived(everything)
    proto.dataReceived(b"\r\n\x00")
    assert transport.value() == everything + b"\r\n\x00"
    assert (proto.bytes_in, proto.bytes_out) == (259, 259)
    assert proto.touched


@given(st.lists(st.binary(max_size=64), max_size=20))
def test_any_chunks_come_back_in_order(chunks: list[bytes]) -> None:
    proto, transport = connect(context("echo"))
    for chunk in chunks:
        proto.dataReceived(chunk)
    assert transport.value() == b"".join(chunks)
    assert proto.bytes_in == proto.bytes_out == sum(map(len, chunks))


def test_the_transport_is_its_own_streaming_producer() -> None:
    _proto, transport = connect(context("echo"))
    assert transport.producer is transport
    assert transport.streaming
    # When the consumer (the transport's write buffer) is full, it pauses
    # its producer: itself, so it stops reading from the client.
    transport.producer.pauseProducing()
    assert transport.producerState == "paused"
    transport.producer.resumeProducing()
    assert transport.producerState == "producing"


def test_half_close_delivers_then_closes() -> None:
    proto, transport = connect(context("echo"))
    proto.dataReceived(b"owed")
    proto.readConnectionLost()
    assert transport.value() == b"owed"
    assert transport.producer is None
    assert transport.disconnecting
    assert not transport.disconnected  # lose, not abort: the buffer still goes out


def test_a_peer_that_stops_reading_for_good_is_aborted() -> None:
    proto, transport = connect(context("echo"))
    proto.writeConnectionLost()
    assert transport.disconnected


def test_close_is_logged_with_counts_and_duration() -> None:
    clock = Clock()
    ctx = context("echo", clock=clock, name="lab-echo")
    proto, _transport = connect(ctx, peer("192.0.2.9", 5555))
    proto.dataReceived(b"12345")
    clock.advance(2.5)
    with capturedLogs() as events:
        proto.connectionLost(_done())
    [event] = [e for e in events if e.get("event") == "close"]
    assert event["service"] == "lab-echo"
    assert event["peer"] == "192.0.2.9:5555"
    assert (event["bytes_in"], event["bytes_out"]) == (5, 5)
    assert event["duration"] == 2.5
    assert ctx.policy.connections == set()


def _done() -> Any:
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure

    return Failure(ConnectionDone())


# -- iosim: both ends as protocols, bytes pumped between them ----------------


@given(st.lists(st.binary(min_size=1, max_size=100), max_size=10))
def test_iosim_round_trips(chunks: list[bytes]) -> None:
    server, client, pump = pumped(context("echo"))
    for chunk in chunks:
        assert client.transport is not None
        client.transport.write(chunk)
        pump.flush()
    assert client.received == b"".join(chunks)
    assert server.bytes_out == len(client.received)


def test_iosim_client_close_ends_the_connection() -> None:
    ctx = context("echo")
    _server, client, pump = pumped(ctx)
    assert client.transport is not None
    client.transport.write(b"last words")
    client.transport.loseConnection()
    with capturedLogs() as events:
        pump.flush()
    assert client.received == b"last words"
    assert ctx.policy.connections == set()
    assert [e["bytes_in"] for e in events if e.get("event") == "close"] == [10]


def test_iosim_half_close_flushes_everything_first() -> None:
    server, client, pump = pumped(context("echo"))
    assert client.transport is not None
    client.transport.write(b"a" * 1000)
    pump.pump()  # the server got it and queued the echo
    server.readConnectionLost()
    pump.flush()
    assert client.received == b"a" * 1000
    assert client.lost


# -- real loopback TCP -------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_tcp_nodelay_and_half_close_on_real_tcp() -> None:
    from twisted.internet import reactor

    from socksvc.services.echo import make_factory

    loop = Loopback(make_factory(context("echo", clock=reactor)))  # type: ignore[arg-type]
    try:
        server, sock = await loop.connect()
        assert server.transport.getTcpNoDelay()
        assert server.transport.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        sock.sendall(b"hello\x00")
        sock.shutdown(socket.SHUT_WR)
        assert await loop.recv_to_eof(sock) == b"hello\x00"
    finally:
        await loop.close()


@pytest_twisted.ensureDeferred
async def test_a_client_that_never_reads_is_paused_not_buffered() -> None:
    from twisted.internet import reactor

    from socksvc.services.echo import make_factory

    loop = Loopback(make_factory(context("echo", clock=reactor)))  # type: ignore[arg-type]
    try:
        server, sock = await loop.connect()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        chunk = b"x" * 65536
        sent = 0

        def pushed_until_blocked() -> bool:
            nonlocal sent
            try:
                while True:
                    sent += sock.send(chunk)
            except BlockingIOError:
                # Blocked: but only done once the server has stopped reading.
                return bool(server.transport.producerPaused)

        await until(pushed_until_blocked, what="the server to pause reading")
        buffered = len(server.transport.dataBuffer) + sum(map(len, server.transport._tempDataBuffer))
        # The daemon holds about one socket buffer's worth, not what the client pushed.
        assert buffered <= 4 * 1024 * 1024
        assert server.bytes_in <= sent
        # Reading again resumes the flow and everything comes back in order.
        sock.shutdown(socket.SHUT_WR)
        echoed = await loop.recv_to_eof(sock, timeout=30)
        assert len(echoed) == sent
        assert echoed == b"x" * sent
    finally:
        await loop.close()
