"""
systemd test helpers: a notify socket for sd_notify messages, a memory
reactor whose ports know they listen, and the daemon under
systemd-socket-activate.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from twisted.internet.testing import MemoryReactorClock

from tests.support import TWISTD


class NotifySocket:
    """The systemd end: an AF_UNIX datagram socket the test reads messages from."""

    def __init__(self, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"socksvc-test-{os.getpid()}-{id(self)}"
            self.sock.bind("\0" + name)
            self.env = "@" + name
        else:
            self.dir = tempfile.mkdtemp(prefix="socksvc-notify-")
            path = os.path.join(self.dir, "notify")
            self.sock.bind(path)
            self.env = path
        self.messages: list[str] = []

    def receive(self, until: str, timeout: float = 15.0) -> list[str]:
        """Read messages until one contains the line C{until}; all of them so far."""
        deadline = time.monotonic() + timeout
        while not any(until in m.split("\n") for m in self.messages):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {until!r} among {self.messages}")
            ready, _, _ = select.select([self.sock], [], [], left)
            if ready:
                self.messages.append(self.sock.recv(4096).decode())
        return self.messages

    def pending(self) -> list[str]:
        """Messages already waiting (no blocking)."""
        while select.select([self.sock], [], [], 0)[0]:
            self.messages.append(self.sock.recv(4096).decode())
        return self.messages

    def close(self) -> None:
        self.sock.close()
        if not self.env.startswith("@"):
            shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def notify_socket(abstract: bool = False) -> Iterator[NotifySocket]:
    ns = NotifySocket(abstract)
    try:
        yield ns
    finally:
        ns.close()


def fields(message: str) -> dict[str, str]:
    return dict(line.partition("=")[::2] for line in message.split("\n") if line)


class PortsReactor(MemoryReactorClock):
    """A memory reactor whose ports know whether they still listen."""

    def __init__(self) -> None:
        super().__init__()
        self.listening: set[Any] = set()
        self.next_port = 40000

    def _port(self, kind: str, interface: str) -> Any:
        from twisted.internet.address import IPv4Address

        reactor = self
        self.next_port += 1
        address = IPv4Address(kind, interface or "0.0.0.0", self.next_port)

        class Port:
            def getHost(self) -> Any:
                return address

            def stopListening(self) -> None:
                reactor.listening.discard(self)

        port = Port()
        self.listening.add(port)
        return port

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        super().listenTCP(port, factory, backlog, interface)
        return self._port("TCP", interface)

    def listenUDP(self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192) -> Any:
        return self._port("UDP", interface)


# -- socket activation end to end (systemd-socket-activate) ------------------------

ACTIVATE = shutil.which("systemd-socket-activate")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def activated(config: str, *listen: str) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """systemd-socket-activate ... twistd socksvc: it execs the daemon on the first connection."""
    with tempfile.TemporaryDirectory(prefix="socksvc-act-") as tmp:
        path = Path(tmp) / "socksvc.toml"
        path.write_text(config)
        log = Path(tmp) / "out.txt"
        cmd = [ACTIVATE or "", *listen, TWISTD, "--nodaemon", "--pidfile=", "socksvc", "--config", str(path)]
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID")}
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        try:
            yield proc, log
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def wait_for_text(path: Path, text: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        got = path.read_text(errors="replace") if path.exists() else ""
        if text in got or time.monotonic() > deadline:
            return got
        select.select([], [], [], 0.05)


def connect_retry(port: int, timeout: float = 10.0) -> socket.socket:
    """Connect once systemd-socket-activate is listening."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=5)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            select.select([], [], [], 0.05)
