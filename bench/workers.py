"""
Workers: what N worker processes buy over one process, and what they cost.

    python -m bench --workers N     (./dev bench --workers 2)

- scaling: echo 1 KiB with 4 clients and greetings with 4 clients against
  socksvc with N workers (the column "socksvc"), socksvc as one process
  ("socksvc-1"), one uvloop process and, as the control of what N
  processes can gain on this machine at all, N uvloop processes on one
  listening socket ("uvloop-wN"); the runs alternate as in every
  benchmark; a ratio above 1 means the N workers did better; server CPU
  per operation counts the supervisor and every worker;
- balance: 16 echo clients (4 client processes of 4, each connection
  answered once before the next, as bench/load.py opens them); which worker
  holds each connection is read from /proc; the figure is the busiest
  worker's connections over the least busy one's, the worst of the rounds,
  with the accept balancer (socksvc) and without it
  (socksvc-unbalanced, C{SOCKSVC_ACCEPT_BALANCE=0});
- cost: RSS of the supervisor and of an idle worker, and of the whole idle
  daemon against one socksvc process and one uvloop process.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from bench import harness
from bench.harness import Case, Plan, measure, plan_timing

SERVING = re.compile(r"worker (\d+) \(pid (\d+)\) serving")
BALANCE_CLIENTS = 16


def servers() -> list[str]:
    """socksvc with N workers, socksvc as one process, one uvloop process and N uvloop processes on one socket."""
    out = [harness.SOCKSVC, "socksvc-1"]
    why = harness.uvloop_missing()
    if why is None:
        out += ["uvloop", f"uvloop-w{harness.overrides.workers or 2}"]
    else:
        harness.note(why)
    return out


def worker_pids(running: harness.Running) -> dict[int, int]:
    with open(running.log_path, encoding="utf-8", errors="replace") as f:
        return {int(slot): int(pid) for slot, pid in SERVING.findall(f.read())}


def held(pid: int, port: int) -> int:
    """Established TCP connections to local C{port} that process C{pid} holds."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table, encoding="ascii") as f:
            for line in list(f)[1:]:
                parts = line.split()
                if parts[3] == "01" and parts[9] in inodes and int(parts[1].rsplit(":", 1)[1], 16) == port:
                    n += 1
    return n


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@contextlib.contextmanager
def clients_held(port: int, clients: int) -> Iterator[list[subprocess.Popen[str]]]:
    """bench/load.py echo clients connected and answered once, waiting for "go" (then 0.2 s of load)."""
    procs: list[subprocess.Popen[str]] = []
    try:
        for k in harness.split_clients(clients):
            cmd = [sys.executable, harness.LOAD, "echo", harness.HOST, str(port), "--sockets", str(k)]
            cmd += ["--duration", "0.2", "--size", "1024"]
            procs.append(
                subprocess.Popen(
                    cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
                )
            )
        for p in procs:
            line = harness._readline(p, time.monotonic() + harness.START_TIMEOUT).strip()
            if line != "ready":
                raise harness.BenchError(f"client: {line or 'no answer'}")
        yield procs
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            json.loads(harness._readline(p, time.monotonic() + harness.START_TIMEOUT) or "{}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            for stream in (p.stdin, p.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()


def balance(rounds: int) -> list[dict[str, Any]]:
    """The busiest worker's connections over the least busy one's, with 16 echo clients, worst of C{rounds}."""
    rows = []
    for name, env in ((harness.SOCKSVC, None), ("socksvc-unbalanced", {"SOCKSVC_ACCEPT_BALANCE": "0"})):
        spreads: list[list[int]] = []
        try:
            with harness.server(harness.SOCKSVC, "echo", env=env) as running:
                pids = worker_pids(running)
                for _ in range(rounds):
                    # The previous round's connections first closed, so only this round's are counted.
                    deadline = time.monotonic() + 10
                    while any(held(pid, running.port) for pid in pids.values()) and time.monotonic() < deadline:
                        time.sleep(0.05)
                    with clients_held(running.port, BALANCE_CLIENTS):
                        spreads.append([held(pids[slot], running.port) for slot in sorted(pids)])
        except harness.BenchError as e:
            harness.note(f"workers balance {name}: {e}")
            continue
        if not spreads:
            continue
        worst = max(max(s) / max(1, min(s)) for s in spreads)
        rows.append(
            {
                "bench": "workers balance",
                "case": f"{BALANCE_CLIENTS} echo clients",
                "server": name,
                "value": round(worst, 3),
                "unit": "busiest/least",
                "higher_is_better": False,
                "samples": [round(max(s) / max(1, min(s)), 3) for s in spreads],
                "spreads": spreads,
            }
        )
    return rows


def cost() -> list[dict[str, Any]]:
    """RSS of the idle daemon: the supervisor, a worker, all of it; one socksvc process and one uvloop."""
    rows = []

    def row(case: str, server: str, kib: float) -> dict[str, Any]:
        return {
            "bench": "workers cost",
            "case": case,
            "server": server,
            "value": round(kib),
            "unit": "KiB RSS",
            "higher_is_better": False,
        }

    for name in servers():
        try:
            with harness.server(name, "echo") as running:
                pid = running.proc.pid
                total = rss_kib(pid)
                kids = harness.children(pid)
                if kids and harness.socksvc_workers(name):
                    rows.append(row("supervisor, idle", name, total))
                    per = [rss_kib(k) for k in kids]
                    rows.append(row("one worker, idle", name, sum(per) / len(per)))
                    total += sum(per)
                rows.append(row("every process, idle", name, total))
        except (harness.BenchError, OSError) as e:
            harness.note(f"workers cost {name}: {e}")
    return rows


def run(quick: bool) -> list[dict[str, Any]]:
    if not harness.overrides.workers or harness.overrides.workers < 2:
        harness.overrides.workers = 2
    rounds, duration = plan_timing(quick)
    names = servers()
    rows = measure(
        Plan("workers echo", "echo", "round trip", [Case("1 KiB, 4 clients", "echo", 4, 1024)], rounds, duration),
        names,
    )
    rows += measure(
        Plan("workers greeting", "greeting", "connection", [Case("4 clients", "greet", 4)], rounds, duration), names
    )
    rows += balance(1 if quick else max(3, rounds))
    rows += cost()
    return rows
