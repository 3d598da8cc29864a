"""
A throwaway redis-server for bench/bus.py: Debian's /usr/bin/redis-server
(or the first on PATH), persistence off, on a UNIX socket in a temporary
directory (no TCP port), and a tiny blocking RESP client for INFO.

The helpers (L{server_path}, L{server_args}, L{read_log}, L{wait_answering},
L{encode}; stopping is bench.harness.stop) import nothing of pytest's:
tests/support/redis.py and sentinel.py build their servers on them (tests
may import bench; a benchmark never imports test code).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from bench.harness import stop

SERVER = "/usr/bin/redis-server"


def server_path() -> str | None:
    """The redis-server to run, or None when there is none."""
    if os.access(SERVER, os.X_OK):
        return SERVER
    return shutil.which("redis-server")


def server_args(directory: str, unix_path: str, log_path: str) -> list[str]:
    """redis-server's options for a throwaway server: persistence off, in C{directory}, on a UNIX socket."""
    return [
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        directory,
        "--daemonize",
        "no",
        "--logfile",
        log_path,
        "--unixsocket",
        unix_path,
        "--unixsocketperm",
        "700",
    ]


def read_log(path: str) -> str:
    """A log file's text ("" when there is none yet)."""
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def wait_answering(proc: subprocess.Popen[bytes], answers: Callable[[], bool], timeout: float) -> bool:
    """
    Poll C{answers} until it holds (True) or C{proc} exits (False); raise
    TimeoutError after C{timeout} seconds. The pause between polls is a wait
    for the process to end (the other outcome), not a sleep.
    """
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if answers():
            return True
        if time.monotonic() > deadline:
            raise TimeoutError(f"no answer within {timeout}s")
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(0.02)
    return False


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
        self.log_path = os.path.join(self.dir, "redis.log")
        self.proc = subprocess.Popen(
            [path, "--port", "0", *server_args(self.dir, self.sock, self.log_path)],
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

    def ping(self) -> bool:
        try:
            return bool(self.call("PING") == "PONG")
        except (OSError, ConnectionError, RuntimeError):
            return False

    def wait_ready(self, timeout: float = 15.0) -> None:
        try:
            up = wait_answering(self.proc, self.ping, timeout)
        except TimeoutError:
            raise RuntimeError("redis-server did not answer PING") from None
        if not up:
            raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n{read_log(self.log_path)[-2000:]}")

    def info(self) -> dict[str, int]:
        """INFO's number fields (the integer ones) by name."""
        out: dict[str, int] = {}
        for line in self.call("INFO", "all").decode().splitlines():
            key, sep, value = line.partition(":")
            if sep and value.isdigit():
                out[key] = int(value)
        return out

    def close(self) -> None:
        stop(self.proc, 10.0)
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def redis(path: str) -> Iterator[Redis]:
    r = Redis(path)
    try:
        r.wait_ready()
        yield r
    finally:
        r.close()
