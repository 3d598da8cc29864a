"""
socksvc.daemon.quickport: a TCP port whose factory may finish a connection before
any transport exists, and falls back to Twisted's own accept loop for the
rest. Real loopback sockets throughout; the greeting's use of it is below.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import tcp
from twisted.internet.protocol import Factory, Protocol, ServerFactory
from twisted.logger import globalLogPublisher

from socksvc.core import writethrough
from socksvc.daemon import quickport
from socksvc.daemon.quickport import QuickPort, quicken
from socksvc.services.catalogue import types
from tests.conftest import until
from tests.support import context, has_ipv6_loopback


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


class Broken(Protocol):
    def connectionMade(self) -> None:
        raise RuntimeError("a protocol that fails at once")


class QuickFactory(ServerFactory):
    """quick() does what the test says: 'bye' (answer and close), 'serve' (echo the usual way) or 'boom'."""

    protocol = Echo

    def __init__(self, mode: str = "bye") -> None:
        self.mode = mode
        self.calls: list[tuple[Any, Any]] = []

    def quick(self, sock: socket.socket, addr: Any) -> Protocol | None:
        self.calls.append((addr, sock.getblocking()))
        if self.mode == "boom":
            raise RuntimeError("a broken quick path")
        if self.mode == "serve":
            return self.buildProtocol(addr)
        if self.mode == "bad protocol":
            return Broken()
        writethrough.send_and_drain(sock, b"bye\r\n")
        sock.close()
        return None


def _listen(factory: Any, interface: str = "127.0.0.1") -> Any:
    from twisted.internet import reactor

    port = reactor.listenTCP(0, factory, interface=interface)  # type: ignore[attr-defined]
    assert quicken(port)
    return port


def _client(port: Any, host: str = "127.0.0.1") -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect((host, port.getHost().port))
    sock.setblocking(False)
    return sock


async def _read_to_eof(sock: socket.socket) -> bytes:
    got = bytearray()

    def more() -> bool:
        while True:
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                return False
            if not chunk:
                return True
            got.extend(chunk)

    await until(more, what="the server to close")
    return bytes(got)


def test_quicken_only_takes_plain_tcp_ports_whose_factory_has_quick() -> None:
    from twisted.internet import reactor

    ports = []
    try:
        plain = reactor.listenTCP(0, Factory.forProtocol(Echo), interface="127.0.0.1")  # type: ignore[attr-defined]
        ports.append(plain)
        assert quicken(plain) is False and type(plain) is tcp.Port  # no quick(): Twisted's port as it was
        quick = reactor.listenTCP(0, QuickFactory(), interface="127.0.0.1")  # type: ignore[attr-defined]
        ports.append(quick)
        assert quicken(quick) is True and type(quick) is QuickPort
        assert quicken(quick) is False  # already done
        assert quick.getHost().port > 0  # everything Twisted set up is still there
        assert quicken(object()) is False
    finally:
        for p in ports:
            p.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_connection_finished_in_quick_never_gets_a_transport() -> None:
    factory = QuickFactory("bye")
    built: list[Any] = []
    factory.buildProtocol = lambda addr: built.append(addr)  # type: ignore[method-assign,assignment,func-returns-value]
    port = _listen(factory)
    try:
        socks = [_client(port) for _ in range(3)]
        for s in socks:
            assert await _read_to_eof(s) == b"bye\r\n"
        assert len(factory.calls) == 3 and built == []
        addr, blocking = factory.calls[0]
        assert addr.type == "TCP" and addr.host == "127.0.0.1" and addr.port == socks[0].getsockname()[1]
        assert blocking is True  # as accepted: quick() must not block on it (send_and_drain does not)
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_protocol_from_quick_is_served_the_usual_way() -> None:
    factory = QuickFactory("serve")
    port = _listen(factory)
    try:
        sock = _client(port)
        sock.sendall(b"round trip")

        got = bytearray()

        def echoed() -> bool:
            try:
                got.extend(sock.recv(100))
            except BlockingIOError:
                pass
            return bytes(got) == b"round trip"

        await until(echoed, what="the echo")
        sock.close()
    finally:
        await port.stopListening()


@pytest.mark.parametrize("mode", ["boom", "bad protocol"])
@pytest_twisted.ensureDeferred
async def test_a_failure_serving_one_peer_is_logged_and_the_port_goes_on(mode: str) -> None:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    factory = QuickFactory(mode)  # quick() raises, or returns a protocol whose connectionMade raises
    port = _listen(factory)
    try:
        sock = _client(port)
        await until(
            lambda: any(
                e.get("log_failure") is not None and "new connection failed" in e["log_format"] for e in events
            ),
            what="the failure to be logged",
        )
        if mode == "boom":
            assert await _read_to_eof(sock) == b""  # quick() failed: its socket was closed
        sock.close()  # (a failed protocol keeps its transport, as in Twisted's own loop)
        factory.mode = "bye"
        assert await _read_to_eof(_client(port)) == b"bye\r\n"
    finally:
        globalLogPublisher.removeObserver(events.append)
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_descriptor_that_cannot_be_wrapped_is_closed_and_the_port_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failed: list[int] = []

    def broken(family: int, kind: int, proto: int, fd: int) -> socket.socket:
        if not failed:
            failed.append(fd)
            raise OSError(errno.ENOTSOCK, "not a socket")
        return socket.socket(family, kind, proto, fd)

    monkeypatch.setattr(quickport, "_socket", broken)
    factory = QuickFactory("bye")
    port = _listen(factory)
    try:
        assert await _read_to_eof(_client(port)) == b""  # its descriptor was closed: the peer sees the end
        assert failed and factory.calls == []
        assert await _read_to_eof(_client(port)) == b"bye\r\n"
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_an_accept_error_goes_to_twisteds_own_loop() -> None:
    class Listener:
        """The port's socket, whose first _accept fails as at the descriptor limit."""

        def __init__(self, real: socket.socket) -> None:
            self.real = real
            self.failed = 0

        def _accept(self) -> Any:
            if not self.failed:
                self.failed += 1
                raise OSError(errno.EMFILE, "Too many open files")
            return self.real._accept()  # type: ignore[attr-defined]

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

    factory = QuickFactory("bye")
    served: list[Any] = []
    build = factory.buildProtocol
    factory.buildProtocol = lambda addr: served.append(addr) or build(addr)  # type: ignore[method-assign]
    port = _listen(factory)
    listener = Listener(port.socket)
    port.socket = listener
    try:
        sock = _client(port)
        await until(lambda: served, what="Twisted's accept loop to take the connection")
        assert listener.failed == 1 and factory.calls == []  # Twisted's loop: buildProtocol, a transport
        sock.sendall(b"echo")
        await until(lambda: _try_recv(sock) == b"echo", what="the echo")
        sock.close()
    finally:
        port.socket = listener.real
        await port.stopListening()


def test_one_readable_event_serves_at_most_max_accepts_peers() -> None:
    from twisted.internet import reactor

    pairs = [socket.socketpair() for _ in range(QuickPort.MAX_ACCEPTS + 30)]

    class Waiting:
        """A listening socket with a queue of peers (socket pairs stand in for TCP connections)."""

        def __init__(self) -> None:
            self.queue = [(ours.detach(), ("127.0.0.1", 40000 + i)) for i, (ours, _) in enumerate(pairs)]

        def _accept(self) -> Any:
            if not self.queue:
                raise BlockingIOError(errno.EAGAIN, "no one waiting")
            return self.queue.pop(0)

    factory = QuickFactory("bye")
    port = QuickPort(0, factory, interface="127.0.0.1", reactor=reactor)
    port.socket = Waiting()  # never listening: doRead is driven by hand
    port.numberAccepts = QuickPort.MAX_ACCEPTS
    try:
        port.doRead()
        assert len(factory.calls) == QuickPort.MAX_ACCEPTS  # the rest wait for the next event
        assert port.numberAccepts == QuickPort.MAX_ACCEPTS  # not raised past the limit
        port.doRead()
        assert len(factory.calls) == QuickPort.MAX_ACCEPTS + 30
        assert port.numberAccepts == 30  # Twisted's rule when fewer came
        assert all(theirs.recv(100) == b"bye\r\n" for _, theirs in pairs)
    finally:
        for _, theirs in pairs:
            theirs.close()


def _try_recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(100)
    except BlockingIOError:
        return b""


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback here")
@pytest_twisted.ensureDeferred
async def test_ipv6_peers_get_an_ipv6_address() -> None:
    factory = QuickFactory("bye")
    port = _listen(factory, interface="::1")
    try:
        assert await _read_to_eof(_client(port, "::1")) == b"bye\r\n"
        addr, _ = factory.calls[0]
        assert addr.type == "TCP" and addr.host == "::1"
    finally:
        await port.stopListening()


# -- the greeting's quick path ------------------------------------------------------


def _greeting(body: str = 'message = "hello there"') -> tuple[Any, Any]:
    from twisted.internet import reactor

    ctx = context("greeting", body, clock=reactor)  # type: ignore[arg-type]
    return ctx, types()["greeting"].stream(ctx)  # type: ignore[misc]


@pytest_twisted.ensureDeferred
async def test_the_greeting_is_sent_from_the_accept_loop_with_its_books_kept() -> None:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    ctx, factory = _greeting()
    port = _listen(factory)
    try:
        sock = _client(port)
        sock.sendall(b"sent before reading\n")  # read away: the close is a FIN, not a reset
        assert await _read_to_eof(sock) == b"hello there\r\n"
        await until(lambda: [e for e in events if e.get("event") == "close"], what="the close line")
    finally:
        globalLogPublisher.removeObserver(events.append)
        await port.stopListening()
    [close] = [e for e in events if e.get("event") == "close"]
    assert close["service"] == "greeting" and close["bytes_out"] == len(b"hello there\r\n")
    assert close["peer"] == f"127.0.0.1:{sock.getsockname()[1]}" and close["reason"] == ""
    assert ctx.policy.accepted == 1 and ctx.policy.connections == set() and ctx.policy.per_source == {}


@pytest_twisted.ensureDeferred
async def test_a_refused_peer_gets_its_reason_the_usual_way() -> None:
    ctx, factory = _greeting('deny = ["127.0.0.0/8"]')
    port = _listen(factory)
    try:
        got = await _read_to_eof(_client(port))
        assert got.startswith(b"socksvc: ") and b"denied" in got
        assert ctx.policy.accepted == 0 and sum(ctx.policy.refused.values()) == 1  # admitted once, not twice
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_what_the_kernel_did_not_take_is_sent_the_usual_way(monkeypatch: pytest.MonkeyPatch) -> None:
    def part(sock: socket.socket, data: bytes, more: bool = True) -> int:
        return sock.send(data[:4])

    monkeypatch.setattr(writethrough, "send_and_drain", part)
    ctx, factory = _greeting()
    port = _listen(factory)
    try:
        sock = _client(port)
        assert await _read_to_eof(sock) == b"hello there\r\n"
        await until(lambda: not ctx.policy.connections, what="the close")
        assert ctx.policy.accepted == 1  # opened once, by the transport's connectionMade
    finally:
        await port.stopListening()
