"""
Shared pytest set-up for the socksvc test suite.

- The C{slow} marker (the packaging test builds a wheel and a fresh venv): it
  runs by default; C{pytest -m "not slow"} leaves it out.
- A hypothesis profile for this shared 2-core machine: no per-example
  deadline (a busy machine makes timings meaningless), modest example counts.
- Helpers for real-socket tests: L{port_in_use}, L{refused}, L{until}, L{Loopback}.
- The C{redis_server} fixture (tests/support/redis.py): a real redis-server.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.support.redis import redis_server  # noqa: F401 (the fixture, for every test module)

settings.register_profile(
    "socksvc",
    deadline=None,
    max_examples=100,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("socksvc")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", 'slow: builds wheels or venvs; deselect with -m "not slow"')


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """
    Run plain (synchronous) hypothesis tests ourselves, as pytest would.

    pytest-twisted's own hook replaces C{test.hypothesis.inner_test} with a
    wrapper bound to the current test item; a parametrized @given test shares
    one function object between its items, so the second item calls the first
    item's wrapper, whose fixtures are gone ("'NoneType' object has no
    attribute 'items'"). Tests marked with pytest_twisted.ensureDeferred or
    inlineCallbacks still go to pytest-twisted.
    """
    hyp = getattr(pyfuncitem.obj, "hypothesis", None)
    if hyp is None or getattr(hyp.inner_test, "_pytest_twisted_mark", None) is not None:
        return None
    funcargs = pyfuncitem.funcargs
    pyfuncitem.obj(**{name: funcargs[name] for name in pyfuncitem._fixtureinfo.argnames})
    return True


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Is something accepting connections (or holding the port) on host:port?"""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def refused(port: int, host: str = "127.0.0.1") -> bool:
    """Does a connection to host:port get refused (nothing listening)?"""
    try:
        with socket.create_connection((host, port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


# -- real loopback connections inside the test process (pytest-twisted) ---------


async def until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    """Let the reactor run until C{predicate()} is true; fail after C{timeout} seconds."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await deferLater(reactor, 0.002, lambda: None)  # type: ignore[arg-type]


class Loopback:
    """
    A real listening port on 127.0.0.1:0 (or ::1, or a UNIX path) serving
    C{factory}, and plain non-blocking client sockets connected to it: the
    server protocols built are kept in C{protocols}, in order.
    """

    def __init__(self, factory: Any, family: str = "tcp", path: str = "") -> None:
        from twisted.internet import reactor

        self.protocols: list[Any] = []
        self.sockets: list[socket.socket] = []
        build = factory.buildProtocol

        def capture(addr: Any) -> Any:
            proto = build(addr)
            self.protocols.append(proto)
            return proto

        factory.buildProtocol = capture
        self.family = family
        if family == "unix":
            self.port = reactor.listenUNIX(path, factory)  # type: ignore[attr-defined]
            self.address: Any = path
        elif family == "tcp6":
            self.port = reactor.listenTCP(0, factory, interface="::1")  # type: ignore[attr-defined]
            self.address = ("::1", self.port.getHost().port)
        else:
            self.port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
            self.address = ("127.0.0.1", self.port.getHost().port)

    async def connect(self) -> tuple[Any, socket.socket]:
        """A connected non-blocking client socket and the server protocol for it."""
        kind = {"unix": socket.AF_UNIX, "tcp6": socket.AF_INET6}.get(self.family, socket.AF_INET)
        sock = socket.socket(kind, socket.SOCK_STREAM)
        sock.connect(self.address)  # loopback: the kernel completes it before accept()
        sock.setblocking(False)
        self.sockets.append(sock)
        wanted = len(self.sockets)
        await until(lambda: len(self.protocols) >= wanted, what="the server to accept")
        return self.protocols[wanted - 1], sock

    async def recv_until(self, sock: socket.socket, size: int, timeout: float = 10.0) -> bytes:
        """Read from C{sock} (letting the reactor run) until C{size} bytes or EOF."""
        got = bytearray()

        def more() -> bool:
            try:
                chunk = sock.recv(1 << 20)
            except BlockingIOError:
                return False
            if not chunk:
                return True  # EOF: the caller compares what came
            got.extend(chunk)
            return len(got) >= size

        await until(more, timeout, what=f"{size} bytes (have {len(got)})")
        return bytes(got)

    async def recv_to_eof(self, sock: socket.socket, timeout: float = 10.0) -> bytes:
        """Read from C{sock} until the server closes it."""
        got = bytearray()

        def more() -> bool:
            while True:
                try:
                    chunk = sock.recv(1 << 20)
                except BlockingIOError:
                    return False
                except ConnectionResetError:
                    return True
                if not chunk:
                    return True
                got.extend(chunk)

        await until(more, timeout, what="the server to close")
        return bytes(got)

    async def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        await self.port.stopListening()
        await until(lambda: all(not p.transport or not p.transport.connected for p in self.protocols), what="close")
