"""
Cheap input against fairness: does one address's flood starve an honest
client, and is every attacking connection slowed or cut off?

One daemon (echo, chat and reverse with their default policy) is attacked,
one kind at a time, by 32 connections from 127.0.0.1 (bench/attack_load.py)
sending as fast as the daemon takes it:

- chat-blank: blank lines to chat (they take no flood token);
- chat-telnet: telnet IAC NOP to chat (no line at all);
- reverse-plain: 4 KiB ASCII lines to reverse;
- reverse-marks: 4 KiB lines of combining marks to reverse.

Meanwhile an honest client does echo round trips (64 bytes, one every 5 ms)
on the same daemon. Rows: the honest round trip's p50 and p99 (ms) with no
attack and under each kind; how many of the 32 were throttled or gone by
10 s (the daemon took at most twice input_byte_rate a second from it after
10 s, or closed it); the daemon's CPU share during the attack.

    python -m bench --only attack            # 15 s per kind
    python -m bench --only attack --quick    # 3 s per kind (figures mean little)

Not a test: nothing here asserts; the figures go in the bench table, and
docs/policy.md says what they were.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from typing import Any

from bench import harness

HERE = os.path.dirname(os.path.abspath(__file__))
LOAD = os.path.join(HERE, "attack_load.py")
HOST = harness.HOST
KINDS = ("chat-blank", "chat-telnet", "reverse-plain", "reverse-marks")
CONNECTIONS = 32
SETTLE = 10.0  # seconds by which every attacker should be throttled or gone
BYTE_RATE = 16384.0  # the default input_byte_rate
NOTES: list[str] = []

CONFIG = f"""
[daemon]
log_format = "text"

[services.echo]
listen = ["tcp:0:interface={HOST}"]

[services.chat]
listen = ["tcp:0:interface={HOST}"]

[services.reverse]
listen = ["tcp:0:interface={HOST}"]
"""


def row(case: str, value: float, unit: str, higher: bool) -> dict[str, Any]:
    return {
        "bench": "attack",
        "case": case,
        "server": harness.SOCKSVC,
        "value": round(value, 3),
        "unit": unit,
        "higher_is_better": higher,
    }


def ports(log_path: str, timeout: float = 20.0) -> dict[str, int]:
    pattern = re.compile(rf"\] (echo|chat|reverse): listening on tcp {re.escape(HOST)}:(\d+)")
    deadline = time.monotonic() + timeout
    while True:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            found = {m.group(1): int(m.group(2)) for m in pattern.finditer(f.read())}
        if len(found) == 3:
            return found
        if time.monotonic() > deadline:
            raise harness.BenchError(f"attack: the daemon did not say its ports: {found}")
        time.sleep(0.1)


def honest(port: int, seconds: float) -> list[float]:
    """Echo round trips (ms), one every 5 ms, for C{seconds}."""
    out: list[float] = []
    payload = b"p" * 63 + b"\n"
    with socket.create_connection((HOST, port), timeout=30) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t = time.perf_counter()
            s.sendall(payload)
            got = b""
            while len(got) < len(payload):
                chunk = s.recv(len(payload) - len(got))
                if not chunk:
                    raise harness.BenchError("attack: the echo server closed the honest client")
                got += chunk
            out.append((time.perf_counter() - t) * 1000)
            time.sleep(0.005)
    return out


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def attack(kind: str, target: int, echo_port: int, seconds: float, pid: int) -> dict[str, Any]:
    proc = subprocess.Popen(
        [sys.executable, LOAD, kind, HOST, str(target), str(CONNECTIONS), str(seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        if '"ready"' not in first:
            raise harness.BenchError(f"attack: {kind}: the load did not start: {first.strip()}")
        cpu0, t0 = harness.cpu_seconds(pid) or 0.0, time.monotonic()
        rtts = honest(echo_port, seconds - 0.5)
        cpu1, t1 = harness.cpu_seconds(pid) or 0.0, time.monotonic()
        out, _ = proc.communicate(timeout=seconds + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    result = json.loads(out.strip().splitlines()[-1])
    bucket = result["bucket"]
    settled = 0
    rates = []
    for sent, closed in zip(result["sent"], result["closed"], strict=True):
        if closed is not None and closed <= SETTLE:
            settled += 1
            continue
        after = sent[int(SETTLE / bucket) :]
        span = max(bucket, seconds - SETTLE)
        rate = sum(after) / span
        rates.append(rate)
        if rate <= 2 * BYTE_RATE:
            settled += 1
    return {
        "p50": percentile(rtts, 50),
        "p99": percentile(rtts, 99),
        "max": max(rtts),
        "samples": len(rtts),
        "settled": settled,
        "cpu": (cpu1 - cpu0) / max(1e-9, t1 - t0) * 100,
        "taken": max(rates) if rates else 0.0,
    }


def run(quick: bool) -> list[dict[str, Any]]:
    NOTES.clear()
    seconds = 3.0 if quick else 15.0
    global SETTLE
    SETTLE = 1.5 if quick else 10.0
    cmd = [harness.TWISTD, "--nodaemon", "--pidfile=", "socksvc", "--config", "{config}"]
    pattern = re.compile(rf"\] echo: listening on tcp {re.escape(HOST)}:(\d+)")
    rows: list[dict[str, Any]] = []
    with harness.launch("socksvc", cmd, pattern, CONFIG, start_timeout=30) as srv:
        where = ports(srv.log_path)
        base = honest(where["echo"], 1.0 if quick else 3.0)
        rows.append(row("no attack: honest echo p50", percentile(base, 50), "ms", False))
        rows.append(row("no attack: honest echo p99", percentile(base, 99), "ms", False))
        for kind in KINDS:
            target = where["chat" if kind.startswith("chat") else "reverse"]
            got = attack(kind, target, where["echo"], seconds, srv.proc.pid)
            rows.append(row(f"{kind}: honest echo p50", got["p50"], "ms", False))
            rows.append(row(f"{kind}: honest echo p99", got["p99"], "ms", False))
            rows.append(row(f"{kind}: throttled or gone by {SETTLE:g}s", got["settled"], f"of {CONNECTIONS}", True))
            rows.append(row(f"{kind}: daemon CPU", got["cpu"], "%", False))
            NOTES.append(
                f"attack {kind}: honest echo max {got['max']:.1f} ms over {got['samples']} round trips; "
                f"the most one attacker still got in after {SETTLE:g}s: {got['taken'] / 1024:.1f} KiB/s"
            )
            time.sleep(1.0)  # the closed attackers' sockets go away
    return rows
