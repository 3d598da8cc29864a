"""
Soak: the daemon holding thousands of idle connections still serves a new
client promptly. Not run in CI.

    python -m bench.soak [--connections 5000] [--hold 10] [--samples 50]
    python bench/soak.py ...

It starts `twistd -n socksvc` on an ephemeral loopback port with a config
that lifts the per-service caps (max_connections, max_per_source) above the
number of connections held, raises RLIMIT_NOFILE to the hard limit in both
processes, then:

1. measures a fresh client's round trip (connect, 64 bytes echoed, close)
   with nothing held: the baseline;
2. opens the idle connections, checks every one with a round trip (so each
   was really accepted), and records the daemon's RSS before and after;
3. holds them for --hold seconds while measuring fresh clients again;
4. checks the held connections are all still open and answering.

It prints the figures and exits 1 if any check failed (a held connection
lost, a fresh client not served within --deadline seconds).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time

CONFIG = """
[services.echo]
listen = ["tcp:0:interface=127.0.0.1:backlog=1024"]
max_connections = {cap}
max_per_source = {cap}
idle_timeout = {idle}
"""

LISTEN = re.compile(r"echo: listening on tcp (\S+):(\d+)")


def raise_nofile(want: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(want, soft)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss(pid: int) -> int:
    """Resident set size in bytes, from /proc (no psutil needed)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Daemon:
    def __init__(self, config: str) -> None:
        fd, self.path = tempfile.mkstemp(suffix=".toml", prefix="socksvc-soak-")
        with os.fdopen(fd, "w") as f:
            f.write(config)
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        self.proc = subprocess.Popen(
            [twistd, "--nodaemon", "--pidfile=", "socksvc", "--config", self.path],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=tempfile.gettempdir(),
        )
        self.output = ""
        self.port = 0
        deadline = time.monotonic() + 30
        while not self.port:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise SystemExit(f"soak: the daemon did not start:\n{self.output}")
            self.drain(0.2)
            m = LISTEN.search(self.output)
            if m:
                self.port = int(m.group(2))

    def drain(self, timeout: float = 0.0) -> None:
        """Read what the daemon logged (its pipe must not fill up and block it)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while select.select([fd], [], [], timeout)[0]:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            self.output += chunk.decode("utf-8", "replace")
            self.output = self.output[-(1 << 20) :]
            timeout = 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        os.unlink(self.path)


def round_trip(sock: socket.socket, payload: bytes, deadline: float) -> bool:
    sock.settimeout(deadline)
    try:
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(len(payload) - len(got))
            if not chunk:
                return False
            got += chunk
        return got == payload
    except OSError:
        return False


def fresh_client(port: int, deadline: float) -> float | None:
    """Seconds for connect + one 64-byte echo + close, or None if not served in time."""
    payload = os.urandom(64)
    start = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=deadline) as s:
            if not round_trip(s, payload, deadline):
                return None
    except OSError:
        return None
    return time.perf_counter() - start


def sample(daemon: Daemon, count: int, deadline: float) -> tuple[list[float], int]:
    times: list[float] = []
    failures = 0
    for _ in range(count):
        t = fresh_client(daemon.port, deadline)
        daemon.drain()
        if t is None:
            failures += 1
        else:
            times.append(t)
    return times, failures


def describe(times: list[float]) -> str:
    if not times:
        return "no samples"
    ms = sorted(t * 1000 for t in times)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    return f"median {statistics.median(ms):.2f} ms, p95 {p95:.2f} ms, max {ms[-1]:.2f} ms (n={len(ms)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--connections", type=int, default=5000, help="idle connections to hold (5000)")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds to hold them while sampling (10)")
    parser.add_argument("--samples", type=int, default=50, help="fresh clients measured before and during (50)")
    parser.add_argument("--deadline", type=float, default=5.0, help="seconds a fresh client may wait (5)")
    parser.add_argument("--idle-timeout", type=float, default=3600.0, help="the daemon's idle_timeout (3600)")
    args = parser.parse_args(argv)

    need = args.connections + 200
    soft = raise_nofile(need)  # the daemon inherits the raised soft limit
    if soft < need:
        print(f"soak: RLIMIT_NOFILE hard limit {soft} is below {need}; lower --connections", file=sys.stderr)
        return 2
    cap = args.connections + 100
    daemon = Daemon(CONFIG.format(cap=cap, idle=args.idle_timeout))
    failed: list[str] = []
    held: list[socket.socket] = []
    try:
        pid = daemon.proc.pid
        base, base_fail = sample(daemon, args.samples, args.deadline)
        rss_before = rss(pid)
        fds_before = fd_count(pid)

        start = time.perf_counter()
        for i in range(args.connections):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.connect(("127.0.0.1", daemon.port))
            held.append(s)
            if i % 500 == 499:
                daemon.drain()
        opened = time.perf_counter() - start
        lost = sum(not round_trip(s, b"k", args.deadline) for s in held)
        checked = time.perf_counter() - start
        if lost:
            failed.append(f"{lost} of {len(held)} held connections did not echo")
        daemon.drain()
        rss_after = rss(pid)
        fds_after = fd_count(pid)

        during: list[float] = []
        during_fail = 0
        cpu_start = _cpu(pid)
        end = time.monotonic() + args.hold
        rounds = 0
        while time.monotonic() < end or rounds == 0:
            times, fails = sample(daemon, max(1, args.samples // 5), args.deadline)
            during += times
            during_fail += fails
            rounds += 1
            daemon.drain(0.2)
        cpu_used = _cpu(pid) - cpu_start

        still = sum(round_trip(s, b"s", args.deadline) for s in held)
        if still != len(held):
            failed.append(f"only {still} of {len(held)} held connections still echo after the hold")
        if base_fail or during_fail:
            failed.append(f"fresh clients not served within {args.deadline}s: {base_fail} before, {during_fail} during")
        if daemon.proc.poll() is not None:
            failed.append("the daemon exited")

        per_conn = (rss_after - rss_before) / max(1, len(held))
        print(f"socksvc soak: {len(held)} idle echo connections, RLIMIT_NOFILE {soft}")
        print(f"  open {len(held)}: {opened:.2f} s; echo-check all: {checked - opened:.2f} s")
        print(f"  daemon fds: {fds_before} -> {fds_after}")
        print(
            f"  daemon RSS: {rss_before / 2**20:.1f} MiB -> {rss_after / 2**20:.1f} MiB, "
            f"{per_conn / 1024:.2f} KiB per connection"
        )
        print(f"  fresh client round trip, nothing held: {describe(base)}")
        print(f"  fresh client round trip, {len(held)} held:  {describe(during)}")
        print(f"  daemon CPU while holding: {cpu_used:.2f} s over {args.hold:.0f} s (incl. serving the samples)")
        print(f"  result: {'FAIL: ' + '; '.join(failed) if failed else 'OK'}")
    finally:
        for s in held:
            s.close()
        daemon.stop()
    return 1 if failed else 0


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


if __name__ == "__main__":
    sys.exit(main())
