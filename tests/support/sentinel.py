"""
A real Redis Sentinel for tests (C{redis-server sentinel.conf --sentinel}),
beside tests/support/redis.py's L{RedisServer} (primary and replicas).

- L{Sentinel}: one Sentinel in its own temp dir (its conf is written there:
  a Sentinel rewrites its conf, so it must be writable), on a TCP port of
  127.0.0.1 picked free and checked (retried when another process took it
  first); monitors C{service} at a primary (quorum 1), or nothing.
  start() returns once it answers PING; close() stops it and removes its dir.
- L{Sentinel.primary}: where it says the service's primary is now;
  L{Sentinel.replicas_ok}: how many replicas it knows with a working link.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from typing import Any

from bench.busredis import read_log, wait_answering
from bench.harness import stop as stop_process
from tests.support.redis import CLI, ReplyError, _server_path, command, pick_port


class Sentinel:
    def __init__(
        self, service: str, primary_port: int | None, *, down_after_ms: int = 1000, failover_timeout_ms: int = 5000
    ) -> None:
        self.service = service
        self.primary_port = primary_port
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.dir = tempfile.mkdtemp(prefix="svsentinel-")
        self.conf = os.path.join(self.dir, "sentinel.conf")
        self.log_path = os.path.join(self.dir, "sentinel.log")
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def _write_conf(self) -> None:
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            "protected-mode no",
            "daemonize no",
            f"dir {self.dir}",
            f"logfile {self.log_path}",
        ]
        if self.primary_port is not None:
            s = self.service
            lines += [
                f"sentinel monitor {s} 127.0.0.1 {self.primary_port} 1",
                f"sentinel down-after-milliseconds {s} {self.down_after_ms}",
                f"sentinel failover-timeout {s} {self.failover_timeout_ms}",
            ]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def log(self) -> str:
        return read_log(self.log_path)

    def start(self, timeout: float = 15.0) -> None:
        """Start it on a fresh free port (another one if that was taken meanwhile); return once it answers PING."""
        for attempt in range(5):
            self.port = pick_port()
            self._write_conf()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.log_path)
            self.proc = subprocess.Popen(
                [_server_path(), self.conf, "--sentinel"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                if wait_answering(self.proc, self.ping, timeout):
                    return
            except TimeoutError:
                self.stop()
                raise RuntimeError(
                    f"the Sentinel did not answer PING within {timeout}s:\n{self.log()[-3000:]}"
                ) from None
            if attempt == 4 or "Address already in use" not in self.log():
                raise RuntimeError(f"the Sentinel exited ({self.proc.returncode}):\n{self.log()[-3000:]}")

    def call(self, *args: str | bytes | int, timeout: float = 10.0) -> Any:
        return command(("127.0.0.1", self.port), *args, timeout=timeout)

    def ping(self) -> bool:
        try:
            return bool(self.call("PING", timeout=2.0) == "PONG")
        except (OSError, ReplyError):
            return False

    def cli(self, *args: str, timeout: float = 30.0) -> str:
        """Run redis-cli against it; its stdout without the last newline."""
        done = subprocess.run(
            [CLI, "-h", "127.0.0.1", "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return done.stdout.removesuffix("\n")

    def primary(self) -> tuple[str, int] | None:
        """Where it says the service's primary is now (None: it does not know the service)."""
        reply = self.call("SENTINEL", "get-master-addr-by-name", self.service)
        if not isinstance(reply, list) or len(reply) != 2:
            return None
        return reply[0].decode(), int(reply[1])

    def replicas_ok(self) -> int:
        """How many replicas of the service it knows whose link to the primary is up."""
        count = 0
        for flat in self.call("SENTINEL", "replicas", self.service):
            fields = {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat) - 1, 2)}
            if fields.get("flags") == "slave" and fields.get("master-link-status") == "ok":
                count += 1
        return count

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout)

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
