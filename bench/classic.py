"""
Classic services: socksvc against xinetd's internal services, both started
in the same run, the runs of each cell alternating between them.

- "chargen download": one TCP connection read as fast as the client can
  for the run's duration: MB/s.
- "discard upload": one TCP connection written as fast as the client can
  for the run's duration, then half-closed; the run ends when the server
  closes, so every byte counted was taken by the server: MB/s.
- "time tcp": connect, read the 4 bytes until the server closes, repeat
  (bench/load.py's greet): connections a second, 1 and 4 clients.
- "time udp": an empty datagram (as rdate -u sends), the 4-byte reply,
  repeat: requests a second, 1 and 4 clients.

socksvc is the real daemon with default settings (every safety feature on,
a log line per connection); xinetd is a private instance (bench/xinetd.py)
logging each connection to a file, its connection-rate throttle lifted.
xinetd forks a process for each chargen and discard connection, and that
process's CPU is not the one measured, so those cells have no CPU rows.

    python -c 'import bench.classic as c; print(c.run(True))'
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from typing import Any

from bench import harness
from bench.xinetd import XinetdError, missing, xinetd

SOCKSVC = harness.SOCKSVC
XINETD = "xinetd"
HOST = harness.HOST

CONFIG = f"""
[services.discard]
listen = ["tcp:0:interface={HOST}"]
[services.chargen]
listen = ["tcp:0:interface={HOST}"]
[services.time]
listen = ["tcp:0:interface={HOST}", "udp:0:interface={HOST}"]
"""

# (case, endpoint (service, kind), bench/load.py kind, clients, operation, throughput?)
CELLS: list[tuple[str, tuple[str, str], str, int, str, bool]] = [
    ("chargen download, 1 connection", ("chargen", "tcp"), "download", 1, "byte", True),
    ("discard upload, 1 connection", ("discard", "tcp"), "upload", 1, "byte", True),
    ("time tcp, 1 client", ("time", "tcp"), "greet", 1, "connection", False),
    ("time tcp, 4 clients", ("time", "tcp"), "greet", 4, "connection", False),
    ("time udp, 1 client", ("time", "udp"), "ask", 1, "request", False),
    ("time udp, 4 clients", ("time", "udp"), "ask", 4, "request", False),
]
QUICK = {"chargen download, 1 connection", "discard upload, 1 connection", "time tcp, 4 clients", "time udp, 4 clients"}


@contextlib.contextmanager
def socksvc() -> Iterator[dict[tuple[str, str], harness.Running]]:
    """The daemon on CONFIG; its endpoints by (service, kind)."""
    if not os.path.exists(harness.TWISTD):
        raise harness.BenchError(f"socksvc: {harness.TWISTD} not found (run from the project's venv)")
    cmd = [harness.TWISTD, "--nodaemon", "--pidfile=", "socksvc", "--config", "{config}"]
    last = re.compile(rf"\] time: listening on udp {re.escape(HOST)}:(\d+)")
    with harness.launch(SOCKSVC, cmd, last, CONFIG) as running:
        with open(running.log_path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        found = re.findall(rf"\] (\w+): listening on (tcp|udp) {re.escape(HOST)}:(\d+)", text)
        yield {
            (svc, kind): harness.Running(SOCKSVC, running.proc, int(port), running.log_path)
            for svc, kind, port in found
        }


@contextlib.contextmanager
def reference() -> Iterator[dict[tuple[str, str], harness.Running]]:
    """xinetd's internal services; their endpoints by (service, kind)."""
    wanted = {"discard": ("stream",), "chargen": ("stream",), "time": ("stream", "dgram")}
    try:
        with xinetd(wanted) as x:
            yield {
                (svc, "tcp" if kind == "stream" else "udp"): harness.Running(XINETD, x.proc, port, x.log)
                for (svc, kind), port in x.ports.items()
            }
    except XinetdError as e:
        raise harness.BenchError(f"xinetd: {e}") from None


def _megabytes(rows: list[dict[str, Any]], throughput: set[str]) -> list[dict[str, Any]]:
    """Byte rates as MB/s; no CPU rows for the streams (xinetd's work is in a forked child)."""
    out = []
    for row in rows:
        if row["case"] not in throughput:
            out.append(row)
            continue
        if row["bench"].endswith(" cpu"):
            continue
        row = dict(row, value=row["value"] / 1e6, unit="MB/s")
        row["samples"] = [round(x / 1e6, 1) for x in row.get("samples", [])]
        out.append(row)
    return out


def run(quick: bool) -> list[dict[str, Any]]:
    rounds, duration = harness.plan_timing(quick)
    cells = [c for c in CELLS if not quick or c[0] in QUICK]
    servers = [s for s in (SOCKSVC, XINETD) if not harness.overrides.servers or s in harness.overrides.servers]
    why = missing()
    if why is not None and XINETD in servers:
        harness.note(f"classic: {why}; xinetd column skipped")
        servers.remove(XINETD)
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        endpoints: dict[str, dict[tuple[str, str], harness.Running]] = {}
        for name in servers:
            try:
                endpoints[name] = stack.enter_context(socksvc() if name == SOCKSVC else reference())
            except harness.BenchError as e:
                harness.note(f"classic: {e}; {name} skipped")
        up = [name for name in servers if name in endpoints]
        for case, endpoint, load, clients, op, _throughput in cells:
            plan = harness.Plan("classic", endpoint[0], op, [harness.Case(case, load, clients)], rounds, duration)
            samples = harness.Samples(plan)
            for r in range(rounds):
                for name in harness._rotate(up, r):
                    samples.run(plan.cases[0], endpoints[name][endpoint])
            rows += samples.rows(up)
    return _megabytes(rows, {c[0] for c in cells if c[5]})


if __name__ == "__main__":
    for row in run("--quick" in sys.argv):
        print(row)
