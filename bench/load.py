"""
One load-generating client process (stdlib only, run as a script).

    python bench/load.py KIND HOST PORT --sockets K [--size BYTES] --duration SECONDS

KIND is C{echo} (TCP round trips), C{greet} (connect, read until close),
C{udp} (datagram round trips), C{ask} (an empty datagram, any reply: UDP
time), C{download} (bytes read from one stream: chargen), C{upload}
(bytes sent on one stream and taken by the server: discard; the count is
bytes then, not operations) or C{smtp} (messages of about C{--size} bytes
over one SMTP connection each: MAIL, RCPT, DATA and the text, each waiting
for its reply, as a client without PIPELINING does). The process opens its K clients, checks one
exchange on each (the reply must be right), prints C{ready}, waits for a
line on stdin (the runner's "go", so every process starts together), runs
for the duration and prints one JSON object: C{{"count": N, "elapsed": S,
"errors": E, "cpu": S}} (cpu: this process's CPU seconds meanwhile).

Blocking sockets, no event loop: the cheapest client Python can be, so the
client side takes as little as possible of the CPU the server also needs.
With K > 1 the clients of one process run in lockstep (send on each, then
read each reply in full): every client still has exactly one message in
flight, as K separate processes would, with fewer context switches.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import sys
import time

RECV_TIMEOUT = 10.0  # seconds: a stalled server fails the run instead of hanging it
UDP_TIMEOUT = 1.0  # seconds before a datagram counts as lost and is sent again


def _timeout(sock: socket.socket, seconds: float) -> None:
    """A kernel receive timeout: the socket stays blocking (no poll() per recv, as settimeout would add)."""
    whole = int(seconds)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", whole, int((seconds - whole) * 1e6)))


def _recv_exactly(sock: socket.socket, buf: bytearray, view: memoryview, size: int) -> None:
    got = sock.recv_into(buf)
    while got < size:
        if got == 0:
            raise ConnectionError("server closed the connection")
        n = sock.recv_into(view[got:], size - got)
        if n == 0:
            raise ConnectionError("server closed the connection")
        got += n


def _tcp(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=RECV_TIMEOUT)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _timeout(sock, RECV_TIMEOUT)
    return sock


class Echo:
    def __init__(self, host: str, port: int, sockets: int, size: int) -> None:
        self.socks = [_tcp(host, port) for _ in range(sockets)]
        self.size = size
        self.message = os.urandom(size)
        self.bufs = [bytearray(size) for _ in self.socks]
        for sock, buf in zip(self.socks, self.bufs, strict=True):
            sock.sendall(self.message)
            _recv_exactly(sock, buf, memoryview(buf), size)
            if bytes(buf) != self.message:
                raise ValueError("echo reply differs from the message sent")

    def run(self, deadline: float) -> tuple[int, int]:
        socks, msg, size = self.socks, self.message, self.size
        pairs = [(s, b, memoryview(b)) for s, b in zip(socks, self.bufs, strict=True)]
        count = 0
        now = time.monotonic
        if len(socks) == 1:
            sock, buf, view = pairs[0]
            while True:
                sock.sendall(msg)
                _recv_exactly(sock, buf, view, size)
                count += 1
                if now() >= deadline:
                    return count, 0
        while True:
            for sock in socks:
                sock.sendall(msg)
            for sock, buf, view in pairs:
                _recv_exactly(sock, buf, view, size)
            count += len(socks)
            if now() >= deadline:
                return count, 0


class Greet:
    """Connect, read until the server closes, close (with RST: no TIME_WAIT piles up on a shared machine)."""

    LINGER = struct.pack("ii", 1, 0)

    def __init__(self, host: str, port: int, sockets: int) -> None:
        self.addr = (host, port)
        self.sockets = sockets
        self.message = self.greet()
        if not self.message:
            raise ValueError("the greeting server sent nothing")

    def greet(self) -> bytes:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            _timeout(sock, RECV_TIMEOUT)
            sock.connect(self.addr)
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, self.LINGER)
        finally:
            sock.close()
        return data

    def run(self, deadline: float) -> tuple[int, int]:
        count = errors = 0
        now = time.monotonic
        addr, linger = self.addr, self.LINGER
        family, stype = socket.AF_INET, socket.SOCK_STREAM
        sol, so_linger, so_rcvtimeo = socket.SOL_SOCKET, socket.SO_LINGER, socket.SO_RCVTIMEO
        rcvtimeo = struct.pack("ll", int(RECV_TIMEOUT), 0)
        # K clients in lockstep: K connects in flight, then each read to the end.
        k = self.sockets
        while True:
            socks = []
            for _ in range(k):
                s = socket.socket(family, stype)
                s.setsockopt(sol, so_rcvtimeo, rcvtimeo)
                try:
                    s.connect(addr)
                except OSError:
                    errors += 1
                    s.close()
                    continue
                socks.append(s)
            for s in socks:
                try:
                    while s.recv(4096):
                        pass
                    count += 1
                except OSError:
                    errors += 1
                s.setsockopt(sol, so_linger, linger)
                s.close()
            if now() >= deadline:
                return count, errors


class UDP:
    def __init__(self, host: str, port: int, sockets: int, size: int) -> None:
        self.socks = []
        for _ in range(sockets):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.connect((host, port))  # connected: send/recv, and only the server's replies arrive
            _timeout(sock, UDP_TIMEOUT)
            self.socks.append(sock)
        self.size = size
        self.message = os.urandom(size)
        for sock in self.socks:
            for _attempt in range(5):
                sock.send(self.message)
                try:
                    reply = sock.recv(65536)
                except BlockingIOError:
                    continue
                if reply != self.message:
                    raise ValueError("UDP echo reply differs from the datagram sent")
                break
            else:
                raise ConnectionError("no UDP echo reply in 5 tries")

    def run(self, deadline: float) -> tuple[int, int]:
        socks, msg = self.socks, self.message
        count = lost = 0
        now = time.monotonic
        while True:
            for sock in socks:
                sock.send(msg)
            for sock in socks:
                try:
                    sock.recv(65536)
                    count += 1
                except BlockingIOError:  # SO_RCVTIMEO expired: lost (or not answered)
                    lost += 1
            if now() >= deadline:
                return count, lost


class Ask:
    """UDP request/reply where the reply is not the request: send an empty datagram, take any reply (RFC 868 time)."""

    def __init__(self, host: str, port: int, sockets: int) -> None:
        self.socks = []
        for _ in range(sockets):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.connect((host, port))
            _timeout(sock, UDP_TIMEOUT)
            self.socks.append(sock)
        for sock in self.socks:
            for _attempt in range(5):
                sock.send(b"")
                try:
                    if sock.recv(65536):
                        break
                except BlockingIOError:
                    continue
            else:
                raise ConnectionError("no UDP reply in 5 tries")

    def run(self, deadline: float) -> tuple[int, int]:
        socks = self.socks
        count = lost = 0
        now = time.monotonic
        while True:
            for sock in socks:
                sock.send(b"")
            for sock in socks:
                try:
                    sock.recv(65536)
                    count += 1
                except BlockingIOError:
                    lost += 1
            if now() >= deadline:
                return count, lost


class Stream:
    """
    One TCP stream, connected when the run starts. C{download}: read until
    the deadline (chargen). C{upload}: send until the deadline, then
    half-close and wait for the server's close, so that every byte counted
    was taken by the server (discard). The count is bytes.
    """

    def __init__(self, host: str, port: int, upload: bool) -> None:
        self.addr = (host, port)
        self.upload = upload
        with socket.create_connection(self.addr, timeout=RECV_TIMEOUT):
            pass  # it is there

    def run(self, deadline: float) -> tuple[int, int]:
        sock = socket.create_connection(self.addr, timeout=RECV_TIMEOUT)
        sock.settimeout(None)
        _timeout(sock, RECV_TIMEOUT)
        now = time.monotonic
        total = 0
        try:
            if self.upload:
                block = b"\xa5" * (1 << 20)
                while now() < deadline:
                    sock.sendall(block)
                    total += len(block)
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(65536):
                    pass
            else:
                buf = bytearray(1 << 20)
                while now() < deadline:
                    n = sock.recv_into(buf)
                    if not n:
                        raise ConnectionError("server closed the connection")
                    total += n
        finally:
            sock.close()
        return total, 0


class SMTP:
    """One message after another on each connection; every reply must be the right one."""

    def __init__(self, host: str, port: int, sockets: int, size: int) -> None:
        self.socks = [_tcp(host, port) for _ in range(sockets)]
        self.bufs = [b"" for _ in self.socks]
        head = b"From: bench@example.org\r\nTo: sink@example.org\r\nSubject: bench\r\n\r\n"
        line = b"x" * 76 + b"\r\n"
        body = line * max(1, (size - len(head)) // len(line))
        self.text = head + body + b".\r\n"
        for n, sock in enumerate(self.socks):
            self.expect(n, b"220")
            sock.sendall(b"EHLO bench\r\n")
            self.expect(n, b"250")
        self.run(0.0)  # one message each, checked

    def expect(self, n: int, code: bytes) -> None:
        """Read one whole reply on connection C{n}; it must start with C{code}."""
        buf = self.bufs[n]
        while True:
            end = buf.find(b"\r\n")
            while end >= 0:
                line, buf = buf[:end], buf[end + 2 :]
                if line[3:4] != b"-":
                    self.bufs[n] = buf
                    if not line.startswith(code):
                        raise ValueError(f"expected {code.decode()}, got {line[:80]!r}")
                    return
                end = buf.find(b"\r\n")
            chunk = self.socks[n].recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            buf += chunk

    def run(self, deadline: float) -> tuple[int, int]:
        steps = (
            (b"MAIL FROM:<bench@example.org>\r\n", b"250"),
            (b"RCPT TO:<sink@example.org>\r\n", b"250"),
            (b"DATA\r\n", b"354"),
            (self.text, b"250"),
        )
        count = 0
        now = time.monotonic
        socks = self.socks
        numbers = range(len(socks))
        while True:
            for data, code in steps:
                for sock in socks:
                    sock.sendall(data)
                for n in numbers:
                    self.expect(n, code)
            count += len(socks)
            if now() >= deadline:
                return count, 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("kind", choices=("echo", "greet", "udp", "ask", "download", "upload", "smtp"))
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--sockets", type=int, default=1)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--duration", type=float, default=1.0)
    a = p.parse_args(argv)
    try:
        client: Echo | Greet | UDP | Ask | Stream | SMTP
        if a.kind == "echo":
            client = Echo(a.host, a.port, a.sockets, a.size)
        elif a.kind == "smtp":
            client = SMTP(a.host, a.port, a.sockets, a.size)
        elif a.kind == "greet":
            client = Greet(a.host, a.port, a.sockets)
        elif a.kind == "ask":
            client = Ask(a.host, a.port, a.sockets)
        elif a.kind in ("download", "upload"):
            client = Stream(a.host, a.port, a.kind == "upload")
        else:
            client = UDP(a.host, a.port, a.sockets, a.size)
    except (OSError, ValueError) as e:
        print(json.dumps({"error": f"setup: {e}"}), flush=True)
        return 1
    print("ready", flush=True)
    if not sys.stdin.readline():
        return 1
    start = time.monotonic()
    cpu = time.process_time()
    try:
        count, errors = client.run(start + a.duration)
    except (OSError, ValueError) as e:
        print(json.dumps({"error": f"run: {e}"}), flush=True)
        return 1
    elapsed = time.monotonic() - start
    cpu = time.process_time() - cpu
    print(json.dumps({"count": count, "elapsed": elapsed, "errors": errors, "cpu": cpu}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
