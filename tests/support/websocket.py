"""
A minimal WebSocket client side for tests (RFC 6455): the opening request,
masked client frames, and a parser for the server's frames. Enough to drive
the chat's web listener over a StringTransport or a real socket, and to send
what a browser never would.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG = 1, 2, 8, 9, 10


def request(path: str = "/ws", host: str = "127.0.0.1:7080", origin: str | None = None, extra: str = "") -> bytes:
    """A WebSocket opening request (the key is fixed: tests compare the accept value)."""
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def accept_value(key: bytes = b"dGhlIHNhbXBsZSBub25jZQ==") -> str:
    return base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()


def frame(payload: bytes | str, opcode: int = TEXT, fin: bool = True, mask: bool = True) -> bytes:
    """One client frame (masked, as a browser sends it)."""
    data = payload.encode() if isinstance(payload, str) else payload
    head = bytes([(0x80 if fin else 0) | opcode])
    size = len(data)
    bit = 0x80 if mask else 0
    if size < 126:
        head += bytes([bit | size])
    elif size < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", size)
    if not mask:
        return head + data
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(data))


def parse(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Server frames in C{data}: ([(opcode, payload)], what is left over)."""
    out: list[tuple[int, bytes]] = []
    while len(data) >= 2:
        opcode, size = data[0] & 0x0F, data[1] & 0x7F
        offset = 2
        if size == 126:
            if len(data) < 4:
                break
            size, offset = struct.unpack("!H", data[2:4])[0], 4
        elif size == 127:
            if len(data) < 10:
                break
            size, offset = struct.unpack("!Q", data[2:10])[0], 10
        if len(data) < offset + size:
            break
        out.append((opcode, data[offset : offset + size]))
        data = data[offset + size :]
    return out, data


class SocketClient:
    """A WebSocket client on a real socket (a browser stand-in for the load benchmarks and raw tests)."""

    def __init__(self, port: int, origin: str | None = None, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.sendall(request(host=f"127.0.0.1:{port}", origin=origin))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"closed during the handshake: {head!r}")
            head += chunk
        self.status = head.split(b"\r\n", 1)[0].decode()
        self.buf = head.split(b"\r\n\r\n", 1)[1]
        self.events: list[str] = []

    def send(self, line: str) -> None:
        self.sock.sendall(frame(line))

    def read(self, timeout: float = 10.0) -> list[tuple[int, bytes]]:
        """Frames that came (waiting up to C{timeout} for at least one)."""
        deadline = time.monotonic() + timeout
        while True:
            frames, self.buf = parse(self.buf)
            if frames:
                return frames
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                return []
            self.buf += chunk

    def close(self) -> None:
        self.sock.close()
