"""
The chat bus (issue 14): two socksvc chat nodes on one Redis against one
node without a bus, in the same run, on a redis-server this benchmark
starts (persistence off, a UNIX socket; skipped with one line when there is
no redis-server). Fresh daemons for every run; lines are chat.LINE_SIZE bytes.

- "chat bus fan-out": N listeners in #lobby split over nodes A and B (two
  daemons, C{bus = ...}), one sender on A sends M lines as fast as the
  daemon reads them (flood control raised to 10,000 lines/s, burst 10,000,
  so it drops none); delivered lines a second summed over the listeners,
  against the same N listeners and sender on one node without a bus. Runs
  alternate (no bus, bus, no bus, bus); the best of each counts and every
  pair's ratio is noted (target: the bus at least 0.8x).
- "chat bus fan-out cpu": the daemons' CPU (schedstat, both nodes summed) per
  delivered line; Redis's own CPU is in the row's C{redis_cpu_us}.
- "chat bus latency": a sender on A paced at 1,000 lines/s, a receiver on
  B; each line carries its sequence number and send time (CLOCK_MONOTONIC,
  one process), the receiver stamps its arrival: p50 and p99 in ms (the
  first 5% are left out as warm-up), against both members on one node
  without a bus (target: p99 under 10 ms); the daemons' CPU per line sent
  is in a note.
- "chat bus redis": Redis commands (INFO total_commands_processed) and
  bytes in and out (total_net_input_bytes, total_net_output_bytes) per
  chat line, over the paced run and over a fan-out run; and used_memory
  per 10,000 lines retained (bus_retention far above what the run sends).

    python -m bench --only bus [--quick]
"""

from __future__ import annotations

import contextlib
import re
import socket
import statistics
import time
from collections.abc import Iterator
from typing import Any

from bench import chat, harness
from bench.busredis import Redis, redis, server_path

HOST = chat.HOST
MARKER = chat.MARKERS["socksvc"].encode()
NOTES: list[str] = []
BUS = "socksvc"
"""The server name of the bus figures (the table's first column), against NO_BUS."""
NO_BUS = "no bus"
RATE = 1000
"""Lines a second of the latency run."""

CONFIG = f"""
[daemon]
log_format = "text"

[services.chat]
listen = ["tcp:0:interface={HOST}:backlog=4096"]
max_connections = 0
max_per_source = 0
max_per_subnet = 0
idle_timeout = 0
flood_rate = 10000
flood_burst = 10000
input_line_rate = 0
input_byte_rate = 0
send_queue_max = 16777216
stall_timeout = 600
log_connections = false
"""
BUS_CONFIG = 'bus = "{url}"\ncluster = "{cluster}"\nbus_retention = 10000000\n'


class BenchError(Exception):
    pass


def cpu(pid: int) -> float:
    """
    CPU seconds of a process so far: its threads' schedstat (nanoseconds;
    L{harness.cpu_seconds}), else psutil's user + system (clock ticks).
    """
    got = harness.cpu_seconds(pid)
    if got is not None:
        return got
    import psutil

    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def member(port: int, nick: str, timeout: float = 30.0) -> socket.socket:
    """A registered line member (TCP_NODELAY); retried while the node's bus is not up yet."""
    deadline = time.monotonic() + timeout
    while True:
        s = socket.create_connection((HOST, port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(nick.encode() + b"\r\n")
        got = b""
        while MARKER not in got and b"unreachable" not in got:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        if MARKER in got:
            return s
        s.close()
        if time.monotonic() > deadline:
            raise BenchError(f"{nick} could not register: {got[-200:]!r}")
        time.sleep(0.1)


@contextlib.contextmanager
def node(name: str, bus: str | None = None, cluster: str = "") -> Iterator[harness.Running]:
    """One chat daemon; with C{bus}, a node of C{cluster}, yielded once a member can register on it."""
    cmd = [chat.TWISTD, "--nodaemon", "--pidfile=", "socksvc", "--config", "{config}"]
    pattern = re.compile(rf"chat: listening on tcp {re.escape(HOST)}:(\d+)")
    config = CONFIG + (BUS_CONFIG.format(url=bus, cluster=cluster) if bus else "")
    ready = "chat bus connected" if bus else None
    with harness.launch(name, cmd, pattern, config, start_timeout=30, stop_timeout=20, ready=ready) as running:
        if bus:
            member(running.port, f"probe{running.proc.pid}").close()
        yield running


@contextlib.contextmanager
def nodes(bus: Redis | None, cluster: str) -> Iterator[list[harness.Running]]:
    """[A, B] on the bus, or [one node] without one."""
    with contextlib.ExitStack() as stack:
        if bus is None:
            yield [stack.enter_context(node(NO_BUS))]
        else:
            yield [stack.enter_context(node(f"{cluster}-{k}", bus.url, cluster)) for k in "AB"]


def fanout(targets: list[harness.Running], listeners: int, lines: int, bus: Redis | None) -> dict[str, float]:
    """Delivered lines a second, daemon (and Redis) CPU per delivered line, Redis stats per line."""
    loads: list[chat.Load] = []
    try:
        for j, count in enumerate(harness.split_clients(listeners, 4)):
            port = targets[j % len(targets)].port
            loads.append(chat.Load("listen", HOST, str(port), str(count), f"l{j}x", MARKER.decode()))
        for load in loads:
            load.expect("ready", 300)
        sender = chat.Load("send", HOST, str(targets[0].port), "sender", MARKER.decode())
        sender.expect("ready")
        listening, loads = loads, [*loads, sender]
        time.sleep(1.0)  # join notices settle (the bus's reach the other node a little later)
        for load in listening:
            load.tell("reset")
        for load in listening:
            load.expect("reset")
        for load in listening:
            load.tell(f"expect {lines}")
        pids = [t.proc.pid for t in targets]
        cpu0 = sum(cpu(p) for p in pids)
        redis0 = cpu(bus.pid) if bus else 0.0
        info0 = bus.info() if bus else {}
        sender.tell(f"go {lines} {chat.LINE_SIZE}")
        sent = sender.read()
        results = [load.read(600) for load in listening]
        cpu1 = sum(cpu(p) for p in pids)
        redis1 = cpu(bus.pid) if bus else 0.0
        info1 = bus.info() if bus else {}
        delivered = sum(r["lines"] for r in results)
        elapsed = max(r["last"] for r in results) - sent["t0"]
        got = {
            "rate": delivered / elapsed,
            "cpu_us": (cpu1 - cpu0) / max(1, delivered) * 1e6,
            "redis_cpu_us": (redis1 - redis0) / max(1, delivered) * 1e6,
        }
        got.update(per_line(info0, info1, lines))
        return got
    finally:
        for load in loads:
            load.stop()


STATS = {
    "commands": "total_commands_processed",
    "bytes_in": "total_net_input_bytes",
    "bytes_out": "total_net_output_bytes",
}


def per_line(before: dict[str, int], after: dict[str, int], lines: int) -> dict[str, float]:
    return {k: (after[f] - before[f]) / lines for k, f in STATS.items() if f in before and f in after}


def paced(sender: socket.socket, receiver: socket.socket, count: int, rate: int = RATE) -> list[float]:
    """Send C{count} lines at C{rate} a second; each one's latency to C{receiver}, in ms, in order."""
    import selectors

    sel = selectors.DefaultSelector()
    for s in (sender, receiver):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    line = re.compile(rb"L (\d+) (\d+\.\d+)\r?\n")
    arrived: dict[int, float] = {}
    tail = b""
    start = time.monotonic() + 0.05
    deadline = start + count / rate + 30
    i = 0
    while len(arrived) < count and time.monotonic() < deadline:
        now = time.monotonic()
        while i < count and start + i / rate <= now:
            sender.setblocking(True)
            sender.sendall(b"L %d %.6f\r\n" % (i, time.monotonic()))
            sender.setblocking(False)
            i += 1
        wait = max(0.0, start + i / rate - time.monotonic()) if i < count else 0.1
        for key, _ in sel.select(wait):
            s: socket.socket = key.fileobj  # type: ignore[assignment]
            try:
                data = s.recv(1 << 18)
            except BlockingIOError:
                continue
            if s is not receiver:
                continue  # the sender's own lines, echoed to it
            now = time.monotonic()
            tail += data
            for m in line.finditer(tail):
                arrived[int(m.group(1))] = (now - float(m.group(2))) * 1000
            tail = tail[tail.rfind(b"\n") + 1 :]
    sel.close()
    if len(arrived) < count:
        raise BenchError(f"latency: {len(arrived)} of {count} lines arrived")
    return [arrived[k] for k in range(count)]


def percentiles(ms: list[float]) -> tuple[float, float]:
    """(p50, p99) after the first 5% (warm-up)."""
    s = sorted(ms[len(ms) // 20 :])
    return statistics.median(s), s[min(len(s) - 1, int(len(s) * 0.99))]


def latency(targets: list[harness.Running], count: int, bus: Redis | None) -> dict[str, float]:
    sender = member(targets[0].port, "pacer")
    receiver = member(targets[-1].port, "timer")
    try:
        time.sleep(0.5)  # the other node learns of both
        pids = [t.proc.pid for t in targets]
        info0, cpu0 = (bus.info() if bus else {}), sum(cpu(p) for p in pids)
        ms = paced(sender, receiver, count)
        info1, cpu1 = (bus.info() if bus else {}), sum(cpu(p) for p in pids)
    finally:
        sender.close()
        receiver.close()
    p50, p99 = percentiles(ms)
    got = {"p50": p50, "p99": p99, "max": max(ms), "cpu_us": (cpu1 - cpu0) / count * 1e6}
    return {**got, **per_line(info0, info1, count)}


def memory(targets: list[harness.Running], bus: Redis, cluster: str, lines: int) -> float:
    """Redis used_memory per 10,000 lines added to the stream (bytes)."""
    key = f"socksvc:{{{cluster}}}:log"
    sender = member(targets[0].port, "filler")
    try:
        time.sleep(0.3)
        n0, used0 = bus.call("XLEN", key), bus.info()["used_memory"]
        body = b"x" * (chat.LINE_SIZE - 10)
        sender.sendall(b"".join(b"%08d %s\r\n" % (i, body) for i in range(lines)))
        deadline = time.monotonic() + 120
        while bus.call("XLEN", key) < n0 + lines:
            if time.monotonic() > deadline:
                raise BenchError(f"memory: the stream took {bus.call('XLEN', key) - n0} of {lines} lines")
            time.sleep(0.05)
        time.sleep(0.5)  # the readers' replies leave the output buffers
        used1 = bus.info()["used_memory"]
    finally:
        sender.close()
    return (used1 - used0) * 10_000 / lines


def row(bench: str, case: str, server: str, value: float, unit: str, higher: bool, **extra: Any) -> dict[str, Any]:
    return chat.row(bench, case, server, value, unit, higher, **extra)


def redis_rows(case: str, got: dict[str, float]) -> list[dict[str, Any]]:
    units = {"commands": "commands/line", "bytes_in": "bytes in/line", "bytes_out": "bytes out/line"}
    return [row("chat bus redis", f"{unit}, {case}", BUS, got[k], unit, False) for k, unit in units.items() if k in got]


def fanout_rows(listeners: int, lines: int, runs: dict[str, list[dict[str, float]]]) -> list[dict[str, Any]]:
    case = f"{listeners} listeners, {lines} lines"
    rows: list[dict[str, Any]] = []
    for name, got in runs.items():
        if not got:
            continue
        best = max(got, key=lambda g: g["rate"])
        samples = [round(g["rate"]) for g in got]
        rows.append(row("chat bus fan-out", case, name, best["rate"], "delivered lines/s", True, samples=samples))
        extra: dict[str, Any] = {"samples": [round(g["cpu_us"], 2) for g in got]}
        if name == BUS:
            extra["redis_cpu_us"] = [round(g["redis_cpu_us"], 3) for g in got]
        value = min(g["cpu_us"] for g in got)
        rows.append(row("chat bus fan-out cpu", case, name, value, "daemon CPU us/line", False, **extra))
    if runs[BUS]:
        rows += redis_rows("fan-out burst", runs[BUS][-1])
    return rows


def run(quick: bool) -> list[dict[str, Any]]:
    path = server_path()
    if path is None:
        raise harness.Skipped("redis-server is not installed")
    chat.raise_nofile()
    listeners, lines, rounds, paced_lines, memory_lines = (
        (20, 200, 1, 200, 1000) if quick else (500, 3000, 2, 3000, 10_000)
    )
    runs: dict[str, list[dict[str, float]]] = {BUS: [], NO_BUS: []}
    rows: list[dict[str, Any]] = []
    errors = (BenchError, harness.BenchError, chat.BenchError)
    with redis(path) as bus:
        for k in range(rounds * 2):  # no bus, bus, no bus, bus...
            name = NO_BUS if k % 2 == 0 else BUS
            link = bus if name == BUS else None
            try:
                with nodes(link, f"fan{k}") as targets:
                    runs[name].append(fanout(targets, listeners, lines, link))
            except errors as e:
                NOTES.append(f"bus: fan-out {name}: {e}")
        pairs = [b["rate"] / a["rate"] for a, b in zip(runs[NO_BUS], runs[BUS], strict=False)]
        if pairs:
            NOTES.append("bus: fan-out, bus/no bus per pair: " + ", ".join(f"{r:.2f}x" for r in pairs))
        rows += fanout_rows(listeners, lines, runs)
        for name in (NO_BUS, BUS):
            link = bus if name == BUS else None
            try:
                with nodes(link, "paced") as targets:
                    lat = latency(targets, paced_lines, link)
                    mem = memory(targets, bus, "paced", memory_lines) if link else None
            except errors as e:
                NOTES.append(f"bus: latency {name}: {e}")
                continue
            for p in ("p50", "p99"):
                case = f"{p}, {RATE} lines/s"
                rows.append(row("chat bus latency", case, name, lat[p], "ms", False, max_ms=round(lat["max"], 2)))
            where = "A to B" if link else "one node"
            NOTES.append(
                f"bus: latency {name} ({where}): max {lat['max']:.2f} ms over {paced_lines} lines; "
                f"daemon CPU {lat['cpu_us']:.0f} us/line sent"
            )
            rows += redis_rows(f"{RATE} lines/s", lat)
            if mem is not None:
                rows.append(
                    row("chat bus redis", "used_memory per 10,000 lines retained", BUS, mem / 1024, "KiB", False)
                )
    return rows


if __name__ == "__main__":
    import sys

    for r in run("--quick" in sys.argv):
        print(r)
    for n in NOTES:
        print("note:", n)
