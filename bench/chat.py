"""
Chat benchmarks: socksvc's chat against the textbook Twisted chat
(bench/textbook_chat.py), each started as a subprocess in the same run, one
at a time, driven by client processes (bench/chat_load.py).

- "chat fan-out": N listeners in one room, one sender sends M lines as fast
  as it can; delivered lines a second (N x M over the time from the first
  byte sent to the last line received by the last listener).
- "chat capacity": C idle clients, each registered with a nickname, in one
  room: the time to register them all, the daemon's RSS per client, and how
  long a new client then waits for its registration to be confirmed.

    python -c 'import bench.chat as c; print(c.run(True))'
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from bench import harness

HERE = os.path.dirname(os.path.abspath(__file__))
LOAD = os.path.join(HERE, "chat_load.py")
TEXTBOOK = os.path.join(HERE, "textbook_chat.py")
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
HOST = "127.0.0.1"
SERVERS = ("socksvc", "textbook twisted")
MARKERS = {"socksvc": "-!- You are now in", "textbook twisted": "Welcome, "}
LINE_SIZE = 60
NOTES: list[str] = []

SOCKSVC_CONFIG = f"""
[daemon]
log_format = "text"

[services.chat]
listen = ["tcp:0:interface={HOST}:backlog=4096"]
max_connections = 0
max_per_source = 0
max_per_subnet = 0
idle_timeout = 0
flood_rate = 0
input_line_rate = 0
input_byte_rate = 0
"""


class BenchError(Exception):
    pass


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def rss_kib(pid: int) -> int:
    try:
        import psutil

        return int(psutil.Process(pid).memory_info().rss // 1024)
    except ImportError:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    raise BenchError("cannot read RSS")


def cpu_seconds(pid: int) -> float:
    """The server's CPU time so far (L{harness.cpu_seconds}); a server gone is an error here."""
    got = harness.cpu_seconds(pid)
    if got is None:
        raise BenchError(f"cannot read the CPU time of process {pid}")
    return got


@contextlib.contextmanager
def server(name: str) -> Iterator[harness.Running]:
    if name == "socksvc":
        cmd = [TWISTD, "--nodaemon", "--pidfile=", "socksvc", "--config", "{config}"]
        pattern = re.compile(rf"chat: listening on tcp {re.escape(HOST)}:(\d+)")
        config: str | None = SOCKSVC_CONFIG
    else:
        cmd = [sys.executable, TEXTBOOK, HOST]
        pattern = re.compile(rf"textbook-chat: listening on {re.escape(HOST)}:(\d+)")
        config = None
    with harness.launch(name, cmd, pattern, config, start_timeout=30, stop_timeout=20) as running:
        yield running


class Load:
    """One chat_load.py process."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, LOAD, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def read(self, timeout: float = 120.0) -> Any:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline().strip() if ready else ""
        if not line:
            raise BenchError("a load process did not answer (timed out or crashed)")
        if line.startswith("{"):
            obj = json.loads(line)
            if "error" in obj:
                raise BenchError(f"load: {obj['error']}")
            return obj
        return line

    def expect(self, word: str, timeout: float = 120.0) -> None:
        got = self.read(timeout)
        if got != word:
            raise BenchError(f"load said {got!r}, expected {word!r}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.tell("quit")
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def fanout(srv: harness.Running, listeners: int, lines: int, procs: int) -> tuple[float, float]:
    """Delivered lines a second, and server CPU microseconds per delivered line."""
    marker = MARKERS[srv.name]
    loads: list[Load] = []
    try:
        for j, count in enumerate(harness.split_clients(listeners, procs)):
            loads.append(Load("listen", HOST, str(srv.port), str(count), f"l{j}x", marker))
        for load in loads:
            load.expect("ready")
        sender = Load("send", HOST, str(srv.port), "sender", marker)
        loads.append(sender)
        sender.expect("ready")
        time.sleep(0.3)  # join notices settle
        for load in loads[:-1]:
            load.tell("reset")
        for load in loads[:-1]:
            load.expect("reset")
        for load in loads[:-1]:
            load.tell(f"expect {lines}")
        cpu0 = cpu_seconds(srv.proc.pid)
        sender.tell(f"go {lines} {LINE_SIZE}")
        sent = sender.read()
        results = [load.read(300) for load in loads[:-1]]
        cpu1 = cpu_seconds(srv.proc.pid)
        last = max(r["last"] for r in results)
        delivered = sum(r["lines"] for r in results)
        elapsed = last - sent["t0"]
        return delivered / elapsed, (cpu1 - cpu0) / max(1, delivered) * 1e6
    finally:
        for load in loads:
            load.stop()


def register_latency(port: int, marker: bytes, nick: str) -> float:
    """Seconds from connect to the registration confirmation, for one new client."""
    t0 = time.monotonic()
    with socket.create_connection((HOST, port), timeout=30) as s:
        s.sendall(nick.encode() + b"\r\n")
        got = b""
        while marker not in got:
            chunk = s.recv(65536)
            if not chunk:
                raise BenchError("new client: connection closed before registration")
            got += chunk
    return time.monotonic() - t0


def capacity(srv: harness.Running, clients: int, procs: int) -> dict[str, float]:
    marker = MARKERS[srv.name]
    loads: list[Load] = []
    try:
        time.sleep(0.2)
        rss0 = rss_kib(srv.proc.pid)
        for j, count in enumerate(harness.split_clients(clients, procs)):
            loads.append(Load("idle", HOST, str(srv.port), str(count), f"c{j}x", marker))
        for load in loads:
            load.expect("ready")
        t0 = time.monotonic()
        for load in loads:
            load.tell("go")
        results = [load.read(300) for load in loads]
        registered = sum(r["registered"] for r in results)
        if registered < clients:
            raise BenchError(f"only {registered} of {clients} clients registered")
        took = max(r["done"] for r in results) - t0
        time.sleep(1.0)
        rss1 = rss_kib(srv.proc.pid)
        waits = sorted(register_latency(srv.port, marker.encode(), f"newcomer{i}") for i in range(5))
        return {
            "register": took,
            "rss_per_client": (rss1 - rss0) / clients,
            "rss_total": rss1 / 1024,
            "new_client": waits[len(waits) // 2] * 1000,
        }
    finally:
        for load in loads:
            load.stop()


def row(bench: str, case: str, server: str, value: float, unit: str, higher: bool, **extra: Any) -> dict[str, Any]:
    return {
        "bench": bench,
        "case": case,
        "server": server,
        "value": round(value, 3),
        "unit": unit,
        "higher_is_better": higher,
        **extra,
    }


def run(quick: bool) -> list[dict[str, Any]]:
    """All chat rows: fan-out (best of the rounds) and capacity, socksvc and the textbook server."""
    raise_nofile()
    listeners, lines, rounds, procs = (20, 300, 1, 2) if quick else (500, 4000, 3, 4)
    clients = 200 if quick else 10000
    rows: list[dict[str, Any]] = []
    best: dict[str, tuple[float, float]] = {}
    samples: dict[str, list[float]] = {}
    for r in range(rounds):
        order = SERVERS if r % 2 == 0 else tuple(reversed(SERVERS))
        for name in order:
            try:
                with server(name) as srv:
                    rate, cpu = fanout(srv, listeners, lines, procs)
            except BenchError as e:
                NOTES.append(f"chat fan-out {name}: {e}")
                continue
            samples.setdefault(name, []).append(round(rate))
            if name not in best or rate > best[name][0]:
                best[name] = (rate, cpu)
    case = f"{listeners} listeners, {lines} lines"
    for name in SERVERS:
        if name in best:
            rate, cpu = best[name]
            rows.append(
                row(
                    "chat fan-out",
                    case,
                    name,
                    rate,
                    "delivered lines/s",
                    True,
                    samples=samples[name],
                    server_cpu_us_per_line=round(cpu, 3),
                )
            )
    for name in SERVERS:
        try:
            with server(name) as srv:
                got = capacity(srv, clients, procs)
        except BenchError as e:
            NOTES.append(f"chat capacity {name}: {e}")
            continue
        rows.append(row("chat capacity", f"register {clients} idle clients", name, got["register"], "s", False))
        rows.append(
            row(
                "chat capacity",
                f"RSS per client, {clients} clients",
                name,
                got["rss_per_client"],
                "KiB",
                False,
                rss_total_mib=round(got["rss_total"], 1),
            )
        )
        rows.append(row("chat capacity", f"new client after {clients}", name, got["new_client"], "ms", False))
    return rows


if __name__ == "__main__":
    for r in run("--quick" in sys.argv):
        print(r)
    for n in NOTES:
        print("note:", n)
