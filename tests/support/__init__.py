"""
Shared test helpers (the tests/support package; no test module imports
another test module, tests/test_architecture.py checks):

- this module: contexts, protocols on StringTransports, iosim pumps, the real
  daemon as a subprocess;
- L{tests.support.chat}: a chat state with fake connections;
- L{tests.support.irc}: IRC and WebSocket members of that chat, over StringTransports;
- L{tests.support.websocket}: a minimal WebSocket client side (request, frames);
- L{tests.support.netclients}: real-socket chat users, WeeChat and ii driven through their files;
- L{tests.support.browser}: Debian's chromium through Playwright, a fresh profile per run;
- L{tests.support.client}: the client run in-process, a console on a pipe;
- L{tests.support.policy}: contexts with policy keys, log events by kind;
- L{tests.support.systemd}: a notify socket, a memory reactor whose ports listen;
- L{tests.support.resolver}: keeps client tests off the system's resolver;
- L{tests.support.mail}: SMTP and POP3 sessions on string transports, a
  certificate, a users file, a plain SMTP client;
- L{tests.support.reload}: a daemon on a memory reactor, reloaded to the end;
- L{tests.support.tls}: a self-signed key and certificate.
- L{tests.support.redis}: a real redis-server (temp dir, no persistence), the
  C{redis_server} fixture, a tiny blocking RESP client for checks;
- L{tests.support.netns}: a L{Lab} of hosts in network namespaces on one bridge;
- L{tests.support.chathosts}: chat nodes on a lab's hosts (bus set), line clients, a socket made in a namespace.

- L{context}: a ServiceContext for unit tests, on a fake clock.
- L{connect}: a service protocol wired to a StringTransport, as the factory would.
- L{pumped}: a service protocol and a L{Client} joined by twisted.test.iosim.
- L{has_ipv6_loopback}: can this host bind ::1?
- L{Daemon} / L{daemon}: the real daemon as a subprocess (twistd -n socksvc) on
  ephemeral ports, with the ports it actually bound, its output, and a stop().

Tests always bind port 0 (let the kernel choose), never the default ports:
several test runs and a developer's own daemon may be running at once.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.test import iosim

from bench.harness import stop as stop_process
from socksvc.config.schema import PolicySettings
from socksvc.core.policy import Policy
from socksvc.core.service import ServiceContext
from socksvc.services.catalogue import loads, types

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def context(type_name: str, body: str = "", *, clock: Clock | None = None, name: str | None = None) -> ServiceContext:
    """
    A context for one service of C{type_name}, its settings and policy
    checked from C{body} (TOML lines for its table, e.g. 'max_line = 10').
    """
    name = name or type_name
    spec = "udp:0" if type_name == "udp" else "tcp:0"
    text = f'[services.{name}]\ntype = "{type_name}"\nlisten = ["{spec}"]\n{body}\n'
    cfg = loads(text, "<test>").service(name)
    clock = clock or Clock()
    return types()[type_name].context(name, cfg.settings, Policy(name, cfg.policy, clock), clock, set())


def policy_context(type_name: str, policy: PolicySettings, clock: Clock | None = None) -> ServiceContext:
    ctx = context(type_name, clock=clock)
    ctx.policy.reconfigure(policy)
    return ctx


def peer(host: str = "127.0.0.1", port: int = 40000) -> IPv4Address | IPv6Address | UNIXAddress:
    if host == "unix":
        return UNIXAddress(None)
    if ":" in host:
        return IPv6Address("TCP", host, port)
    return IPv4Address("TCP", host, port)


def connect(ctx: ServiceContext, addr: Any = None) -> tuple[Any, StringTransport]:
    """Build the service's protocol for a peer and connect it to a StringTransport."""
    stype = types()[ctx.type]
    assert stype.stream is not None
    factory = stype.stream(ctx)
    addr = addr if addr is not None else peer()
    proto = factory.buildProtocol(addr)
    transport = StringTransport(peerAddress=addr)
    proto.makeConnection(transport)
    return proto, transport


class Client(Protocol):
    """The far end of L{pumped}: keeps what it received, and whether it was closed."""

    def __init__(self) -> None:
        self.received = b""
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True


def pumped(ctx: ServiceContext, addr: Any = None) -> tuple[Any, Client, iosim.IOPump]:
    """The service's protocol for a peer, connected to a L{Client} through iosim on the context's clock."""
    stype = types()[ctx.type]
    assert stype.stream is not None
    addr = addr if addr is not None else peer()
    server = stype.stream(ctx).buildProtocol(addr)
    client = Client()
    pump = iosim.connect(
        server,
        iosim.FakeTransport(server, isServer=True, peerAddress=addr),
        client,
        iosim.FakeTransport(client, isServer=False),
        clock=ctx.reactor,
    )
    return server, client, pump


def has_ipv6_loopback() -> bool:
    """Can a socket bind ::1 here (containers often have no IPv6)?"""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def recv_all(sock: socket.socket) -> bytes:
    """Everything until the peer closes."""
    got = b""
    while chunk := sock.recv(65536):
        got += chunk
    return got


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    """C{size} bytes, or fewer if the peer closes first."""
    got = b""
    while len(got) < size:
        chunk = sock.recv(size - len(got))
        if not chunk:
            break
        got += chunk
    return got


def echo_round_trip(sock: socket.socket, data: bytes) -> bytes:
    """Send C{data}, half-close, and read everything that comes back."""
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)
    return recv_all(sock)


_LISTEN = re.compile(r"\] (?P<service>\S+): listening on (?P<kind>tcp|udp|unix) (?P<where>\S+)")


class Daemon:
    """A running `twistd -n socksvc` and what it said."""

    def __init__(self, proc: subprocess.Popen[bytes], config_path: str | None) -> None:
        self.proc = proc
        self.config_path = config_path
        self.output = ""
        self.listening: dict[str, list[tuple[str, str, int | str]]] = {}

    def port(self, service: str, kind: str = "tcp") -> int:
        """The port number a service's (first) listener of that kind bound."""
        for k, _host, port in self.listening.get(service, []):
            if k == kind and isinstance(port, int):
                return port
        raise KeyError(f"{service} has no {kind} listener: {self.listening}")

    def read(self, until: str | None = None, timeout: float = 20.0) -> str:
        """Read output until C{until} appears (or the process ends, or timeout)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while until is None or until not in self.output:
            left = deadline - time.monotonic()
            if left <= 0:
                if until is None:
                    break
                raise TimeoutError(f"daemon did not say {until!r}; output so far:\n{self.output}")
            ready, _, _ = select.select([fd], [], [], min(left, 0.2))
            if not ready:
                if until is None:
                    break
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            self.output += chunk.decode("utf-8", "replace")
        self._parse()
        return self.output

    def _parse(self) -> None:
        self.listening = {}
        for m in _LISTEN.finditer(self.output):
            where = m.group("where")
            port: int | str
            if m.group("kind") == "unix":
                host, port = "", where
            else:
                host, _, p = where.rpartition(":")
                port = int(p)
            self.listening.setdefault(m.group("service"), []).append((m.group("kind"), host, port))

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int:
        stop_process(self.proc, timeout)
        self.read(timeout=0.5)
        return self.proc.returncode


def start_daemon(
    config_text: str | None,
    *args: str,
    ready: bool = True,
    env: dict[str, str] | None = None,
    twistd_args: Sequence[str] = (),
    prefix: Sequence[str] = (),
) -> Daemon:
    """
    Start `twistd -n socksvc` on C{config_text} (None: the embedded default);
    C{args} go after C{socksvc}, C{twistd_args} (e.g. C{--reactor}) before it;
    C{prefix} runs it under a command that execs it (e.g.
    L{tests.support.netns.Lab.exec_prefix}, so C{proc} is twistd itself).
    """
    cmd = [*prefix, TWISTD, "--nodaemon", "--pidfile=", *twistd_args, "socksvc"]
    path = None
    if config_text is not None:
        fd, path = tempfile.mkstemp(suffix=".toml", prefix="socksvc-test-")
        with os.fdopen(fd, "w") as f:
            f.write(config_text)
        cmd += ["--config", path]
    cmd += list(args)
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=tempfile.gettempdir(),
        env={**os.environ, **(env or {})},
    )
    d = Daemon(proc, path)
    if ready:
        try:
            d.read(until="services on")
        except TimeoutError:
            d.stop()
            raise
    return d


@contextlib.contextmanager
def daemon(config_text: str | None, *args: str, **kw: Any) -> Iterator[Daemon]:
    """A daemon for the length of a with block; stopped (and its config removed) after."""
    d = start_daemon(config_text, *args, **kw)
    try:
        yield d
    finally:
        d.stop()
        if d.config_path:
            with contextlib.suppress(OSError):
                os.unlink(d.config_path)
