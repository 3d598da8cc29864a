"""
socksvc.daemon.reactor: Twisted's epoll reactor with a lean read dispatch.

Twisted's own reactor conformance suites (TCP, UDP, UNIX, system events) run
against L{SocksvcReactor} here, so the fast path must behave as the stock
reactor does for every connection state those suites cover. The one
difference by design (the legacy logging context during a plain read) has
its own tests below instead of Twisted's C{test_logPrefix}.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from typing import Any

import pytest
from twisted.internet import protocol
from twisted.internet.test import test_core, test_tcp, test_udp, test_unix
from twisted.python import log

from socksvc import tap
from socksvc.daemon.reactor import SocksvcReactor
from tests.support import daemon

LOG_PREFIX_DIFFERS = (
    "by design: a plain read skips the legacy log context, so log.msg from inside dataReceived has "
    "system '-' (test_read_keeps_no_legacy_context covers it; errors keep the prefix)"
)


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Twisted's suites make their files (UNIX sockets among them) under the working directory."""
    monkeypatch.chdir(tmp_path)


def _conformance(module: Any, name: str) -> dict[str, type]:
    base = getattr(module, name)
    attrs: dict[str, Any] = {"_reactors": ["socksvc.daemon.reactor.SocksvcReactor"]}
    if hasattr(base, "test_logPrefix"):

        def test_logPrefix(self: Any) -> None:
            raise pytest.skip.Exception(LOG_PREFIX_DIFFERS)

        attrs["test_logPrefix"] = test_logPrefix
    classes: dict[str, type] = type(name, (base,), attrs).makeTestCaseClasses()
    return classes


for _module, _names in [
    (
        test_tcp,
        [
            "TCP4ClientTestsBuilder",
            "TCPPortTestsBuilder",
            "TCPFDPortTestsBuilder",
            "TCPConnectionTestsBuilder",
            "TCPTransportTestsBuilder",
            "AdoptStreamConnectionTestsBuilder",
            "AbortConnectionTests",
        ],
    ),
    (test_udp, ["UDPServerTestsBuilder", "UDPFDServerTestsBuilder"]),
    (test_unix, ["UNIXTestsBuilder", "UNIXPortTestsBuilder", "UnixClientTestsBuilder"]),
    (test_core, ["SystemEventTestsBuilder"]),
]:
    for _name in _names:
        globals().update(_conformance(_module, _name))


# -- socksvc's own -----------------------------------------------------------------


class _Recorder(protocol.Protocol):
    def __init__(self, on_data: Any) -> None:
        self.on_data = on_data
        self.lost: list[Any] = []

    def dataReceived(self, data: bytes) -> None:
        self.on_data(self, data)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.append(reason)


def _adopted(on_data: Any) -> tuple[SocksvcReactor, _Recorder, socket.socket]:
    """A fresh SocksvcReactor (not the global one) serving one end of a socket pair."""
    reactor = SocksvcReactor()
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    proto = _Recorder(on_data)
    factory = protocol.Factory.forProtocol(lambda: proto)
    reactor.adoptStreamConnection(ours.fileno(), socket.AF_UNIX, factory)
    ours.close()  # adoptStreamConnection duplicated it
    return reactor, proto, theirs


def _spin(reactor: SocksvcReactor, until: Any, turns: int = 50) -> None:
    for _ in range(turns):
        if until():
            return
        reactor.runUntilCurrent()
        reactor.doIteration(0.1)
    raise AssertionError("condition not reached")


def _close(reactor: SocksvcReactor, *socks: socket.socket) -> None:
    for s in socks:
        s.close()
    reactor.disconnectAll()
    reactor._poller.close()


def test_read_is_delivered_and_eof_closes() -> None:
    got: list[bytes] = []
    reactor, proto, peer = _adopted(lambda p, data: got.append(data))
    try:
        peer.sendall(b"hello")
        _spin(reactor, lambda: got)
        assert got == [b"hello"]
        peer.shutdown(socket.SHUT_WR)
        _spin(reactor, lambda: proto.lost)
        assert "ConnectionDone" in repr(proto.lost[0])
    finally:
        _close(reactor, peer)


def test_error_in_read_is_logged_with_prefix_and_disconnects() -> None:
    events: list[dict[str, Any]] = []

    def boom(p: _Recorder, data: bytes) -> None:
        raise ValueError("broken protocol")

    reactor, proto, peer = _adopted(boom)
    log.addObserver(events.append)
    try:
        peer.sendall(b"x")
        _spin(reactor, lambda: proto.lost)
    finally:
        log.removeObserver(events.append)
        _close(reactor, peer)
    errors = [e for e in events if e.get("isError")]
    assert len(errors) == 1
    assert errors[0]["failure"].check(ValueError)
    assert errors[0]["system"] == "_Recorder,0,"  # the transport's logPrefix, as the stock reactor logs it
    assert proto.lost[0].check(ValueError)


def test_read_keeps_no_legacy_context() -> None:
    """The documented difference: log.msg during a plain read is not tagged with the transport."""
    events: list[dict[str, Any]] = []
    reactor, _proto, peer = _adopted(lambda p, data: log.msg("inside a read"))
    log.addObserver(events.append)
    try:
        peer.sendall(b"x")
        _spin(reactor, lambda: any(e.get("message") == ("inside a read",) for e in events))
    finally:
        log.removeObserver(events.append)
        _close(reactor, peer)
    [event] = [e for e in events if e.get("message") == ("inside a read",)]
    assert event["system"] == "-"


def test_choose_reactor_installs_socksvc_reactor_when_none_chosen() -> None:
    code = (
        "import sys; from socksvc.tap import choose_reactor; choose_reactor(); "
        "from twisted.internet import reactor; print(type(reactor).__module__, type(reactor).__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["socksvc.daemon.reactor", "SocksvcReactor"]


def test_choose_reactor_keeps_an_installed_reactor() -> None:
    from twisted.internet import reactor

    before = reactor
    tap.choose_reactor()
    from twisted.internet import reactor as after

    assert after is before


# Port 0, never the embedded default: a developer's `./dev serve` may hold 7007 and the rest.
ECHO = '[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1"]\n'


def test_twistd_uses_socksvc_reactor_by_default() -> None:
    with daemon(ECHO) as d:
        assert "services on" in d.output, d.output
    assert "reactor class: socksvc.daemon.reactor.SocksvcReactor." in d.output


@pytest.mark.parametrize(
    ("name", "expected"),
    [("epoll", "twisted.internet.epollreactor.EPollReactor"), ("socksvc", "socksvc.daemon.reactor.SocksvcReactor")],
)
def test_twistd_reactor_option_is_honoured(name: str, expected: str) -> None:
    with daemon(ECHO, twistd_args=["--reactor", name]) as d:
        port = d.port("echo")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"ping\n")
            assert s.recv(100) == b"ping\n"
    assert f"reactor class: {expected}." in d.output
