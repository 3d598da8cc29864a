"""
A real redis-server for tests (Debian's /usr/bin/redis-server, 7.x).

- L{RedisServer}: one instance in its own temp dir, persistence off
  (C{--save "" --appendonly no}), listening on a UNIX socket and, unless
  C{tcp=False}, on a TCP port of C{bind} (127.0.0.1 by default). C{prefix}
  runs it under a command prefix, e.g. C{Lab.exec_prefix(host)} for a
  network namespace (bind it to that host's address). C{password} sets
  C{--requirepass}. start() returns once it answers PING on its socket.
- L{redis}: a context manager around one; L{redis_server}: the pytest
  fixture (function scope) that skips with C{redis-server not installed};
  tests/conftest.py imports it, so any test just takes a C{redis_server}
  argument.
- L{command} / L{RedisServer.call} / L{RedisServer.call_tcp}: one command
  with a tiny blocking RESP client (no redis-cli process; for checks outside
  the reactor); L{RedisServer.cli}: through redis-cli, its output as text;
  L{RedisServer.info} / L{RedisServer.stats}: INFO fields.

TCP ports are picked below the kernel's ephemeral range (checked free by a
bind), so outgoing connections never take the port between stop() and a
restart() that must listen on it again. Launching, waiting and stopping
are bench/busredis.py's pytest-free helpers (a benchmark runs the same server).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from bench.busredis import encode, read_log, server_args, server_path, wait_answering
from bench.harness import stop as stop_process

SERVER = "/usr/bin/redis-server"
CLI = "redis-cli"
STATS = ("used_memory", "total_commands_processed", "total_net_input_bytes")


def installed() -> bool:
    return server_path() is not None


def _server_path() -> str:
    return server_path() or SERVER


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def pick_port(host: str = "127.0.0.1") -> int:
    """A port below the ephemeral range that nothing holds on C{host} now."""
    high = max(_ephemeral_low(), 12000)
    for _ in range(200):
        port = random.randrange(10000, high)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port found")


# -- a minimal RESP client on a blocking socket ------------------------------------


class ReplyError(Exception):
    """A Redis error reply (-ERR ...)."""


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("redis closed the connection")
        self.buf += chunk

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2 :]
        return data

    def reply(self) -> Any:
        line = self.line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return ReplyError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            return None if int(rest) < 0 else self.exactly(int(rest))
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise ConnectionError(f"not RESP: {line!r}")


def command(
    address: str | tuple[str, int], *args: str | bytes | int, password: str | None = None, timeout: float = 10.0
) -> Any:
    """
    One command on a new connection to C{address} (a UNIX path or (host,
    port)), AUTH first with a password: str for +status, int, bytes for
    bulk, list, None; raises L{ReplyError} for an error reply, OSError
    (TimeoutError among them) when it cannot connect or read.
    """
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family) as s:
        s.settimeout(timeout)
        s.connect(address)
        reader = _Reader(s)
        if password is not None:
            s.sendall(encode("AUTH", password))
            auth = reader.reply()
            if isinstance(auth, ReplyError):
                raise auth
        s.sendall(encode(*args))
        reply = reader.reply()
    if isinstance(reply, ReplyError):
        raise reply
    return reply


# -- the server --------------------------------------------------------------------


class RedisServer:
    """One redis-server process (and its successors after restart()) on fixed addresses."""

    def __init__(
        self,
        *,
        tcp: bool = True,
        bind: str = "127.0.0.1",
        prefix: Sequence[str] = (),
        password: str | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        self.dir = tempfile.mkdtemp(prefix="svredis-")
        self.unix_path = os.path.join(self.dir, "redis.sock")
        self.host = bind
        self.port: int | None = None
        self.tcp = tcp
        self.prefix = list(prefix)
        self.password = password
        self.extra = list(extra)
        self.log_path = os.path.join(self.dir, "redis.log")
        self.proc: subprocess.Popen[bytes] | None = None

    # addresses, for the code under test
    @property
    def url(self) -> str:
        """redis://HOST:PORT (TCP), or unix:///path when it has no TCP port."""
        if self.port is None:
            return f"unix://{self.unix_path}"
        return f"redis://{self.host}:{self.port}"

    @property
    def unix_url(self) -> str:
        return f"unix://{self.unix_path}"

    def _command(self) -> list[str]:
        cmd = [
            *self.prefix,
            _server_path(),
            *server_args(self.dir, self.unix_path, self.log_path),
            "--dbfilename",
            "dump.rdb",
            "--port",
            str(self.port or 0),
        ]
        if self.port:
            cmd += ["--bind", self.host, "--protected-mode", "no"]
        if self.password is not None:
            cmd += ["--requirepass", self.password]
        return cmd + self.extra

    def log(self) -> str:
        return read_log(self.log_path)

    def start(self, timeout: float = 15.0) -> None:
        """Start it (a fresh TCP port on the first start) and wait until it answers PING."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        attempts = 5 if self.tcp and self.port is None else 1
        for attempt in range(attempts):
            if self.tcp and (self.port is None or attempt > 0):
                self.port = pick_port(self.host if not self.prefix else "127.0.0.1")
            self._spawn()
            try:
                self._wait_ready(timeout)
                return
            except RuntimeError as e:
                if attempt + 1 < attempts and "Address already in use" in str(e):
                    continue
                raise

    def _spawn(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.log_path)
        self.proc = subprocess.Popen(
            self._command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        try:
            up = wait_answering(self.proc, self.ping, timeout)
        except TimeoutError:
            self.kill()
            raise RuntimeError(f"redis-server did not answer PING within {timeout}s:\n{self.log()[-3000:]}") from None
        if not up:
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            raise RuntimeError(f"redis-server exited ({self.proc.returncode}):\n{err}{self.log()[-3000:]}")

    def ping(self) -> bool:
        """Does it answer PING (after AUTH when it has a password) on its UNIX socket now?"""
        try:
            return bool(self.call("PING", timeout=2.0) == "PONG")
        except (OSError, ReplyError):
            return False

    def call(self, *args: str | bytes | int, timeout: float = 10.0) -> Any:
        """One command over its UNIX socket (see L{command})."""
        return command(self.unix_path, *args, password=self.password, timeout=timeout)

    def call_tcp(self, *args: str | bytes | int, timeout: float = 10.0) -> Any:
        """One command over its TCP port (from this namespace)."""
        assert self.port is not None, "no TCP port"
        return command((self.host, self.port), *args, password=self.password, timeout=timeout)

    def cli(self, *args: str, timeout: float = 30.0) -> str:
        """Run redis-cli against its UNIX socket; its stdout without the last newline."""
        env = dict(os.environ)
        if self.password is not None:
            env["REDISCLI_AUTH"] = self.password
        done = subprocess.run(
            [CLI, "-s", self.unix_path, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        return done.stdout.removesuffix("\n")

    def info(self, section: str = "all") -> dict[str, str]:
        """INFO as field -> value (text)."""
        text = self.call("INFO", section).decode()
        fields: dict[str, str] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.partition(":")
                fields[key] = value
        return fields

    def stats(self, *names: str) -> dict[str, int]:
        """INFO number fields as ints: used_memory, total_commands_processed, total_net_input_bytes by default."""
        fields = self.info()
        return {n: int(fields[n]) for n in names or STATS}

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (no save: persistence is off) and wait; SIGKILL if it lingers."""
        if self.proc is None:
            return
        stop_process(self.proc, timeout)
        self._reap()

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown of any kind."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reap()

    def _reap(self) -> None:
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.unix_path)  # a killed server leaves it; the next one binds it again anyway

    def restart(self, keep_data: bool = False, timeout: float = 15.0) -> None:
        """
        A new process on the same socket and port. keep_data=False: it starts
        empty (a Redis that lost everything); True: SAVE first, the new one
        loads that dump (needs a running server).
        """
        dump = os.path.join(self.dir, "dump.rdb")
        if keep_data:
            self.call("SAVE")
        self.stop()
        if not keep_data:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(dump)
        self._spawn()
        self._wait_ready(timeout)

    def close(self) -> None:
        """Stop it and remove its directory."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def redis(**kw: Any) -> Iterator[RedisServer]:
    """A started L{RedisServer} (keywords as its constructor) for a with block; always stopped."""
    server = RedisServer(**kw)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server on a UNIX socket and 127.0.0.1:PORT; skipped when it is not installed."""
    if not installed():
        pytest.skip("redis-server not installed")
    with redis() as server:
        yield server
