"""
Chat load clients for bench/chat.py: many plain sockets in one process,
driven over stdin/stdout (one command or one JSON result a line).

    chat_load.py listen HOST PORT COUNT PREFIX MARKER
        connect COUNT members named PREFIX0..; "ready" once each saw MARKER
        (its registration confirmed); then on "reset": drop what came so
        far, answer "reset"; on "expect M": count lines until every socket
        has M, answer {"first": t, "last": t, "lines": n}.
    chat_load.py send HOST PORT NICK MARKER
        one member; "ready" once registered; on "go M SIZE": send M lines
        of SIZE bytes as fast as the socket takes them, answer {"t0", "t1"}.
    chat_load.py idle HOST PORT COUNT PREFIX MARKER
        "ready"; on "go": connect COUNT members (at most 256 connecting at
        once), answer {"done": t, "registered": n, "failed": k} once every
        one is registered; then hold them, reading, until "quit".

Times are time.monotonic() (CLOCK_MONOTONIC: the same clock in every process).
Lines are sent with CRLF (the textbook server's LineReceiver needs it).
"""

from __future__ import annotations

import errno
import json
import os
import resource
import selectors
import socket
import sys
import time
from typing import Any

TIMEOUT = 300.0
IN_FLIGHT = 256


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def say(obj: object) -> None:
    sys.stdout.write((obj if isinstance(obj, str) else json.dumps(obj)) + "\n")
    sys.stdout.flush()


def command() -> list[str]:
    line = sys.stdin.readline()
    if not line:
        sys.exit(0)
    return line.split()


class Conn:
    __slots__ = ("attempts", "lines", "nick", "registered", "sock", "tail")

    def __init__(self, nick: bytes) -> None:
        self.nick = nick
        self.sock: socket.socket | None = None
        self.tail = b""
        self.registered = False
        self.lines = 0
        self.attempts = 0


class Members:
    """Non-blocking sockets that connect, register and read."""

    def __init__(self, host: str, port: int, nicks: list[bytes], marker: bytes) -> None:
        self.addr = (host, port)
        self.marker = marker
        self.sel = selectors.DefaultSelector()
        self.todo = [Conn(n) for n in reversed(nicks)]
        self.connecting = 0
        self.conns: list[Conn] = []
        self.registered = 0
        self.failed = 0
        self.counting = False
        self.expect = 0
        self.complete = 0
        self.first = 0.0
        self.last = 0.0
        self.lines = 0

    def start_some(self) -> None:
        while self.todo and self.connecting < IN_FLIGHT:
            c = self.todo.pop()
            c.attempts += 1
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex(self.addr)
            if err not in (0, errno.EINPROGRESS):
                s.close()
                self.retry(c)
                continue
            c.sock = s
            self.connecting += 1
            self.sel.register(s, selectors.EVENT_WRITE, c)

    def retry(self, c: Conn) -> None:
        if c.attempts < 5:
            self.todo.insert(0, c)
        else:
            self.failed += 1

    def on_writable(self, c: Conn) -> None:
        assert c.sock is not None
        self.connecting -= 1
        err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        self.sel.unregister(c.sock)
        if err:
            c.sock.close()
            self.retry(c)
            return
        self.connecting += 1  # until registered: bounds the server's accept queue
        c.sock.setblocking(True)
        c.sock.sendall(self.hello(c))
        c.sock.setblocking(False)
        self.conns.append(c)
        self.sel.register(c.sock, selectors.EVENT_READ, c)

    def hello(self, c: Conn) -> bytes:
        """What a member sends once connected: its nickname."""
        return c.nick + b"\r\n"

    def on_readable(self, c: Conn) -> None:
        assert c.sock is not None
        try:
            data = c.sock.recv(1 << 18)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.sel.unregister(c.sock)
            c.sock.close()
            if not c.registered:
                self.connecting -= 1
                self.failed += 1
            return
        if not c.registered:
            seen = c.tail + data
            if self.marker in seen:
                c.registered = True
                self.registered += 1
                self.connecting -= 1
                c.tail = b""
            else:
                c.tail = seen[-len(self.marker) :]
            return
        if self.counting:
            n = self.newlines(c, data)
            if n:
                now = time.monotonic()
                if not self.lines:
                    self.first = now
                self.lines += n
                before = c.lines
                c.lines += n
                if before < self.expect <= c.lines:
                    self.complete += 1
                    self.last = now

    def newlines(self, c: Conn, data: bytes) -> int:
        """Lines in C{data}, received by C{c}."""
        return data.count(b"\n")

    def poll(self, timeout: float) -> None:
        self.start_some()
        for key, events in self.sel.select(timeout):
            c: Conn = key.data
            if key.events & selectors.EVENT_WRITE:
                self.on_writable(c)
            elif events & selectors.EVENT_READ:
                self.on_readable(c)

    def run_until(self, done: object, timeout: float = TIMEOUT) -> bool:
        deadline = time.monotonic() + timeout
        while not done():  # type: ignore[operator]
            if time.monotonic() > deadline:
                return False
            self.poll(0.05)
        return True

    def drain(self) -> None:
        """Read whatever is waiting and forget it."""
        for _ in range(50):
            events = self.sel.select(0)
            if not events:
                return
            for key, _ev in events:
                c: Conn = key.data
                c.tail = b""  # what waited is forgotten (a WebSocket frame counter starts afresh)
                try:
                    assert c.sock is not None
                    c.sock.recv(1 << 20)
                except OSError:
                    pass


def nicks(prefix: str, count: int) -> list[bytes]:
    return [f"{prefix}{i}".encode() for i in range(count)]


def listen(host: str, port: int, count: int, prefix: str, marker: bytes, make: Any = None) -> None:
    m = (make or Members)(host, port, nicks(prefix, count), marker)
    if not m.run_until(lambda: m.registered + m.failed >= count, 120):
        say({"error": f"only {m.registered} of {count} listeners registered"})
        return
    if m.failed:
        say({"error": f"{m.failed} listeners could not connect"})
        return
    say("ready")
    while True:
        cmd = command()
        if cmd[0] == "reset":
            m.drain()
            say("reset")
        elif cmd[0] == "expect":
            m.expect = int(cmd[1])
            m.counting = True
            if m.run_until(lambda: m.complete >= len(m.conns)):
                say({"first": m.first, "last": m.last, "lines": m.lines})
            else:
                say({"error": f"{m.complete} of {len(m.conns)} listeners got all lines", "lines": m.lines})
            return
        elif cmd[0] == "quit":
            return


def send(host: str, port: int, nick: str, marker: bytes) -> None:
    m = Members(host, port, [nick.encode()], marker)
    if not m.run_until(lambda: m.registered >= 1, 60):
        say({"error": "sender could not register"})
        return
    say("ready")
    cmd = command()
    count, size = int(cmd[1]), int(cmd[2])
    body = b"x" * max(0, size - 10)
    data = b"".join(b"%08d %s\r\n" % (i, body) for i in range(count))
    sock = m.conns[0].sock
    assert sock is not None
    sock.setblocking(True)
    t0 = time.monotonic()
    view = memoryview(data)
    step = 64 * 1024
    for i in range(0, len(data), step):
        sock.sendall(view[i : i + step])
    t1 = time.monotonic()
    say({"t0": t0, "t1": t1})
    command()  # hold the connection until told


def idle(host: str, port: int, count: int, prefix: str, marker: bytes, make: Any = None) -> None:
    say("ready")
    command()
    m = (make or Members)(host, port, nicks(prefix, count), marker)
    ok = m.run_until(lambda: m.registered + m.failed >= count, 120)
    say({"done": time.monotonic(), "registered": m.registered, "failed": m.failed, "complete": ok})
    os.set_blocking(sys.stdin.fileno(), False)
    m.sel.register(sys.stdin, selectors.EVENT_READ, None)
    while True:
        for key, _ev in m.sel.select(1.0):
            if key.data is None:
                if not sys.stdin.read():
                    return
                return
            m.on_readable(key.data)


def main() -> None:
    raise_nofile()
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    try:
        if mode == "listen":
            listen(host, port, int(sys.argv[4]), sys.argv[5], sys.argv[6].encode())
        elif mode == "send":
            send(host, port, sys.argv[4], sys.argv[5].encode())
        elif mode == "idle":
            idle(host, port, int(sys.argv[4]), sys.argv[5], sys.argv[6].encode())
        else:
            say({"error": f"unknown mode {mode}"})
    except Exception as e:  # one line for the bench to show
        say({"error": f"{type(e).__name__}: {e}"})


if __name__ == "__main__":
    main()
