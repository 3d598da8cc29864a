"""
What a scrape of the admin listener costs, with 10,000 chat members and every
service busy (docs/observability.md). Not part of `./dev bench`:

    .venv/bin/python -m bench.scrape [--members 10000] [--scrapes 40] [--seconds 20]

1. In process, no network: a daemon on a fake reactor holding MEMBERS chat
   members (registered, in one room); the CPU time of one /metrics body
   (Prometheus text) and one /status.json body, best and median of SCRAPES.
2. The real daemon (`twistd -n socksvc`, port 0 everywhere) with MEMBERS idle
   chat clients while echo (TCP, 4 clients), UDP echo (2) and greeting (2)
   load runs: the wall time of GET /metrics and GET /status.json from here,
   median and 90th percentile, next to the same with no load and no members.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = """
[daemon]
http = ["tcp:0:interface=127.0.0.1"]
[defaults]
max_connections = 0
max_per_source = 0
idle_timeout = 0
[services.echo]
listen = ["tcp:0:interface=127.0.0.1:backlog=4096", "udp:0:interface=127.0.0.1"]
[services.greeting]
listen = ["tcp:0:interface=127.0.0.1:backlog=4096"]
[services.reverse]
listen = ["tcp:0:interface=127.0.0.1"]
[services.chat]
listen = ["tcp:0:interface=127.0.0.1:backlog=4096"]
flood_rate = 0
"""


def in_process(members: int, scrapes: int) -> dict[str, float]:
    from twisted.internet.testing import StringTransport

    from socksvc.daemon import metrics
    from socksvc.daemon.service import DaemonService
    from socksvc.daemon.systemd import Notifier
    from socksvc.services.catalogue import loads
    from tests.support import peer
    from tests.test_systemd import PortsReactor

    daemon = DaemonService(loads(CONFIG, "<bench>"), PortsReactor(), notifier=Notifier(None), handle_signals=False)
    daemon.privilegedStartService()
    daemon.startService()
    factory = daemon.instance("chat").factory()
    for n in range(members):
        proto = factory.buildProtocol(peer("127.0.0.1", 1024 + n % 60000))
        proto.makeConnection(StringTransport())
        proto.dataReceived(b"m%d\n" % n)
    assert daemon.admin is not None
    site = daemon.admin.factory()
    out: dict[str, float] = {}
    for name, make in (
        ("metrics", lambda: metrics.render(site.registry, None)[0]),
        ("status.json", lambda: json.dumps(site.status()).encode()),
    ):
        times = []
        for _ in range(scrapes):
            t0 = time.process_time()
            make()
            times.append(time.process_time() - t0)
        out[f"{name} best ms"] = min(times) * 1000
        out[f"{name} median ms"] = statistics.median(times) * 1000
    return out


def get_ms(url: str) -> float:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as r:
        r.read()
    return (time.perf_counter() - t0) * 1000


def timed_gets(base: str, scrapes: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for path in ("metrics", "status.json"):
        times = sorted(get_ms(base + path) for _ in range(scrapes))
        out[f"{path} median ms"] = statistics.median(times)
        out[f"{path} p90 ms"] = times[int(len(times) * 0.9) - 1]
    return out


def live(members: int, scrapes: int, seconds: float) -> dict[str, Any]:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    fd, path = tempfile.mkstemp(suffix=".toml")
    with os.fdopen(fd, "w") as f:
        f.write(CONFIG)
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    log = tempfile.NamedTemporaryFile("w+", suffix=".log")  # noqa: SIM115  # closed in finally; a pipe would fill and block the daemon
    daemon = subprocess.Popen(
        [twistd, "-n", "--pidfile=", "socksvc", "--config", path], stdout=log, stderr=subprocess.STDOUT
    )
    ports: dict[str, int] = {}
    loads: list[subprocess.Popen[str]] = []
    try:
        deadline = time.monotonic() + 60
        text = ""
        while "services on" not in text:
            if time.monotonic() > deadline or daemon.poll() is not None:
                raise SystemExit(f"the daemon did not start:\n{text}")
            time.sleep(0.1)
            log.seek(0)
            text = log.read()
        for m in re.finditer(r"\] (\S+): listening on (tcp|udp) \S+:(\d+)", text):
            ports[f"{m.group(1)}/{m.group(2)}"] = int(m.group(3))
        base = f"http://127.0.0.1:{ports['admin/http/tcp']}/"
        result: dict[str, Any] = {"idle, no members": timed_gets(base, scrapes)}
        sys.path.insert(0, HERE)
        from bench.chat import MARKERS, Load

        holders = []
        for j in range(4):
            holder = Load("idle", "127.0.0.1", str(ports["chat/tcp"]), str(members // 4), f"c{j}x", MARKERS["socksvc"])
            holder.expect("ready")
            holders.append(holder)
        for holder in holders:
            holder.tell("go")
        registered = sum(h.read(600)["registered"] for h in holders)
        result["members registered"] = registered
        load = os.path.join(HERE, "load.py")
        for kind, port, sockets in (
            ("echo", ports["echo/tcp"], 4),
            ("udp", ports["echo/udp"], 2),
            ("greet", ports["greeting/tcp"], 2),
        ):
            p = subprocess.Popen(
                [
                    sys.executable,
                    load,
                    kind,
                    "127.0.0.1",
                    str(port),
                    "--sockets",
                    str(sockets),
                    "--duration",
                    str(seconds),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert p.stdout is not None and p.stdin is not None
            assert p.stdout.readline().strip() == "ready"
            loads.append(p)
        for p in loads:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        time.sleep(1.0)
        result[f"{registered} members, echo+udp+greeting busy"] = timed_gets(base, scrapes)
        for p in loads:
            assert p.stdout is not None
            result.setdefault("load", []).append(json.loads(p.stdout.readline()))
        for holder in holders:
            holder.stop()
        return result
    finally:
        for p in loads:
            p.kill()
        daemon.terminate()
        daemon.wait(30)
        os.unlink(path)
        log.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--members", type=int, default=10000)
    p.add_argument("--scrapes", type=int, default=40)
    p.add_argument("--seconds", type=float, default=20.0)
    a = p.parse_args()
    print(json.dumps({"in process": in_process(a.members, a.scrapes)}, indent=2), flush=True)
    print(json.dumps({"live": live(a.members, a.scrapes, a.seconds)}, indent=2), flush=True)


if __name__ == "__main__":
    main()
