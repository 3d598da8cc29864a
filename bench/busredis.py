"""
A throwaway redis-server for bench/bus.py: Debian's /usr/bin/redis-server
(or the first on PATH), persistence off, on a UNIX socket in a temporary
directory (no TCP port), and a tiny blocking RESP client for INFO.

The tests have their own (tests/support/redis.py); a benchmark does not
import test code.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

SERVER = "/usr/bin/redis-server"


def server_path() -> str | None:
    """The redis-server to run, or None when there is none."""
    if os.access(SERVER, os.X_OK):
        return SERVER
    return shutil.which("redis-server")


def encode(*args: str | bytes | int) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def _reply(f: Any) -> Any:
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(f"redis: {rest.decode()}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_reply(f) for _ in range(n)]
    raise ConnectionError(f"not RESP: {line!r}")


class Redis:
    """One redis-server on a UNIX socket; L{call} and L{info} talk to it."""

    def __init__(self, path: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="socksvc-bench-redis-")
        self.sock = os.path.join(self.dir, "redis.sock")
        self.url = f"unix://{self.sock}"
        self.proc = subprocess.Popen(
            [
                path,
                "--port",
                "0",
                "--unixsocket",
                self.sock,
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--daemonize",
                "no",
                "--logfile",
                os.path.join(self.dir, "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def call(self, *args: str | bytes | int) -> Any:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(self.sock)
            s.sendall(encode(*args))
            with s.makefile("rb") as f:
                return _reply(f)

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            with contextlib.suppress(OSError, ConnectionError):
                if self.call("PING") == "PONG":
                    return
            time.sleep(0.02)
        raise RuntimeError("redis-server did not answer PING")

    def info(self) -> dict[str, int]:
        """INFO's number fields (the integer ones) by name."""
        out: dict[str, int] = {}
        for line in self.call("INFO", "all").decode().splitlines():
            key, sep, value = line.partition(":")
            if sep and value.isdigit():
                out[key] = int(value)
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def redis(path: str) -> Iterator[Redis]:
    r = Redis(path)
    try:
        r.wait_ready()
        yield r
    finally:
        r.close()
