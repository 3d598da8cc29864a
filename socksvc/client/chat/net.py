"""
Where the chat client connects to, and what it says when it cannot.

Shared by the interactive console (asyncio streams) and the plain line mode
(a blocking-then-nonblocking socket): one way to name a target, one way to
turn a failed connect into a single plain line.
"""

from __future__ import annotations

import asyncio
import errno
import socket

import attrs


@attrs.frozen
class Target:
    """A chat server: TCP C{host}:C{port}, or a UNIX socket C{path}."""

    host: str = "localhost"
    port: int = 7070
    path: str | None = None

    @classmethod
    def parse(cls, host: str, port: int) -> Target:
        """C{host} may be ``unix:PATH`` (then C{port} is ignored)."""
        if host.startswith("unix:"):
            return cls(host, port, host[len("unix:") :])
        return cls(host, port)

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def describe(exc: BaseException, timeout: float | None = None) -> str:
    """A failed connect or a lost connection in a few plain words."""
    if isinstance(exc, socket.gaierror):
        if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
            return "unknown host"
        return f"cannot resolve host ({exc.strerror})"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"timed out after {timeout:g}s" if timeout else "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the server"
    if isinstance(exc, FileNotFoundError):
        return "no such socket"
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return "host unreachable"
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__


def connect_socket(target: Target, timeout: float) -> socket.socket:
    """A connected blocking socket to C{target}; raises OSError/TimeoutError."""
    if target.path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(target.path)
        except BaseException:
            sock.close()
            raise
    else:
        sock = socket.create_connection((target.host, target.port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(None)
    return sock


async def open_stream(target: Target, timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """asyncio streams to C{target}; raises OSError/TimeoutError."""
    if target.path is not None:
        coro = asyncio.open_unix_connection(target.path, limit=1 << 20)
    else:
        coro = asyncio.open_connection(target.host, target.port, limit=1 << 20)
    reader, writer = await asyncio.wait_for(coro, timeout)
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer
