"""
What every benchmark shares: starting one server at a time (socksvc or a
reference), driving it from separate client processes, and turning the
samples into rows.

A row is C{{"bench", "case", "server", "value", "unit", "higher_is_better"}}
(plus C{"samples"}, every run's figure); the runner in C{bench/__main__.py}
groups rows by (bench, case) and prints socksvc against each other server.

Only one server is under load at a time (there are only 2 cores); see
L{measure} for how the runs are interleaved so that noise from other work on
the machine hits every server alike.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
LOAD = os.path.join(HERE, "load.py")
REFSERVER = os.path.join(HERE, "refserver.py")
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
HOST = "127.0.0.1"

SOCKSVC = "socksvc"
REFERENCES = ("twisted", "asyncio", "uvloop")
SERVERS = (SOCKSVC, *REFERENCES)

MAX_CLIENT_PROCS = 4  # client processes per cell; more clients share a process in lockstep
START_TIMEOUT = 20.0

# Lines for the runner to print after the table (skipped columns, failed cells).
NOTES: list[str] = []


class BenchError(Exception):
    """A server or a client could not do its part; the message is one line."""


class Skipped(Exception):
    """A benchmark cannot run here (a system tool is missing): one line why; not a failure."""


def note(line: str) -> None:
    if line not in NOTES:
        NOTES.append(line)


def uvloop_missing() -> str | None:
    """Why the uvloop column cannot run, or None when it can."""
    try:
        import uvloop  # noqa: F401
    except ImportError as e:
        return f"uvloop: not importable ({e}); install the bench extra (pip install -e '.[bench]'); column skipped"
    return None


def available_servers() -> list[str]:
    servers = list(SERVERS)
    why = uvloop_missing()
    if why is not None:
        note(why)
        servers.remove("uvloop")
    return servers


# -- servers --------------------------------------------------------------------


@dataclass
class Running:
    """A server process, the port it bound, and where its output goes."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: str

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 5) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])


def socksvc_config(service: str, kind: str, workers: int = 1) -> str:
    """
    The daemon's config for one benchmark: default settings, one listener on
    a free port; C{[daemon] workers} when more than one.
    """
    table = "echo" if service in ("echo", "udp") else service
    daemon = f"[daemon]\nworkers = {workers}\n" if workers > 1 else ""
    return f'{daemon}[services.{table}]\nlisten = ["{kind}:0:interface={HOST}"]\n'


def socksvc_workers(name: str) -> int | None:
    """
    How many workers the socksvc server called C{name} runs: C{socksvc} as
    C{--workers} says (1 without it), C{socksvc-1} one process, C{socksvc-wN}
    N workers; None when C{name} is not socksvc.
    """
    if name == SOCKSVC:
        return overrides.workers or 1
    prefix, _, rest = name.partition("-")
    if prefix != SOCKSVC:
        return None
    if rest == "1":
        return 1
    if rest.startswith("w") and rest[1:].isdigit():
        return int(rest[1:])
    return None


def _wait_port(
    proc: subprocess.Popen[bytes],
    log_path: str,
    pattern: re.Pattern[str],
    name: str,
    timeout: float,
    ready: str | None = None,
) -> int:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        m = pattern.search(text)
        if m and (ready is None or ready in text):
            return int(m.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    last = " | ".join(text.strip().splitlines()[-3:])
    raise BenchError(f"{name} did not start listening: {last or 'no output'}")


@contextlib.contextmanager
def launch(
    name: str,
    cmd: list[str],
    pattern: re.Pattern[str],
    config: str | None = None,
    start_timeout: float = START_TIMEOUT,
    stop_timeout: float = 10.0,
    ready: str | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Running]:
    """
    Run a server process, its output in a temporary log, until C{pattern}
    (whose group 1 is the port) shows up in that log (and C{ready}, when
    given); yield it, then stop it and remove its files. C{config}, if
    given, is written to a temporary file whose path replaces the
    C{"{config}"} item of C{cmd}. C{env}: more environment variables.
    """
    fd, log_path = tempfile.mkstemp(prefix=f"socksvc-bench-{name}-", suffix=".log")
    config_path = None
    if config is not None:
        cfd, config_path = tempfile.mkstemp(prefix="socksvc-bench-", suffix=".toml")
        with os.fdopen(cfd, "w") as f:
            f.write(config)
        cmd = [config_path if part == "{config}" else part for part in cmd]
    try:
        proc = subprocess.Popen(
            cmd,
            stdout=fd,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=tempfile.gettempdir(),
            env={**os.environ, **env} if env else None,
        )
    except BaseException:
        remove(log_path, config_path)
        raise
    finally:
        os.close(fd)
    try:
        port = _wait_port(proc, log_path, pattern, name, start_timeout, ready)
        yield Running(name, proc, port, log_path)
    finally:
        stop(proc, stop_timeout)
        remove(log_path, config_path)


@contextlib.contextmanager
def server(name: str, service: str, env: dict[str, str] | None = None) -> Iterator[Running]:
    """
    Start one server for C{service} ("echo", "greeting" or "udp") and yield it
    once it serves; stop it after. socksvc is the real daemon, C{twistd -n
    socksvc} on a generated config (with workers: L{socksvc_workers}); the
    others are L{bench.refserver}.
    """
    kind = "udp" if service == "udp" else "tcp"
    workers = socksvc_workers(name)
    if workers is not None:
        if not os.path.exists(TWISTD):
            raise BenchError(f"socksvc: {TWISTD} not found (run from the project's venv)")
        table = "echo" if service in ("echo", "udp") else service
        pattern = re.compile(rf"\] {re.escape(table)}: listening on {kind} {re.escape(HOST)}:(\d+)")
        reactor = ["--reactor", overrides.reactor] if overrides.reactor else []
        cmd = [TWISTD, "--nodaemon", "--pidfile=", *reactor, "socksvc", "--config", "{config}"]
        config = socksvc_config(service, kind, workers)
        # With workers the supervisor binds first and says "services on" once every worker serves.
        ready = "services on" if workers > 1 else None
        with launch(name, cmd, pattern, config, ready=ready, env=env) as running:
            yield running
    else:
        # uvloop-wN: N uvloop processes on one listening socket (the workers benchmark's control).
        impl, _, processes = name.partition("-w")
        extra = ["--processes", processes] if processes.isdigit() else []
        pattern = re.compile(rf"bench-ref: listening on {kind} {re.escape(HOST)}:(\d+)")
        with launch(name, [sys.executable, REFSERVER, impl, service, *extra], pattern, env=env) as running:
            yield running


def stop(proc: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM a server process, then SIGKILL it if it is still there after C{timeout}."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def remove(*paths: str | None) -> None:
    """Delete temporary files, ignoring ones already gone."""
    for path in paths:
        if path:
            with contextlib.suppress(OSError):
                os.unlink(path)


# -- load -------------------------------------------------------------------------


def split_clients(clients: int, procs: int | None = None) -> list[int]:
    """Clients per process: at most C{procs} processes, as even as can be."""
    n = max(1, min(clients, procs or MAX_CLIENT_PROCS))
    return [clients // n + (1 if i < clients % n else 0) for i in range(n)]


def _readline(proc: subprocess.Popen[str], deadline: float) -> str:
    assert proc.stdout is not None
    left = deadline - time.monotonic()
    ready, _, _ = select.select([proc.stdout], [], [], max(0.0, left))
    if not ready:
        return ""
    return proc.stdout.readline()


def user_system_seconds(pid: int) -> tuple[float, float] | None:
    """
    (user, system) CPU seconds a process and its children have used so far,
    from /proc/PID/stat (clock ticks: 10 ms here, so only a run of seconds
    splits finely).
    """
    own = _user_system_seconds(pid)
    if own is None:
        return None
    user, system = own
    for child in children(pid):
        more = _user_system_seconds(child)
        if more is not None:
            user, system = user + more[0], system + more[1]
    return user, system


def _user_system_seconds(pid: int) -> tuple[float, float] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick  # utime, stime: fields 14 and 15 of the line
    except (OSError, ValueError, IndexError):
        return None


def children(pid: int) -> list[int]:
    """The child processes of C{pid} (socksvc's workers, when it runs some), from /proc."""
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as f:
                out += [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        pass
    return out


def cpu_seconds(pid: int) -> float | None:
    """
    CPU time a process and its children (socksvc's workers) have used so far
    (all their threads; nanosecond schedstat where there is one).
    """
    own = _cpu_seconds(pid)
    if own is None:
        return None
    return own + sum(_cpu_seconds(child) or 0.0 for child in children(pid))


def _cpu_seconds(pid: int) -> float | None:
    try:
        total = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat", encoding="ascii") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class LoadResult:
    rate: float  # operations a second, summed over the client processes
    ops: int  # operations done in all
    errors: int  # errors (greeting) or lost datagrams (udp)
    server_cpu: float | None  # seconds of CPU the server used meanwhile
    client_cpu: float  # seconds of CPU the client processes used meanwhile
    server_split: tuple[float, float] | None = None  # of which (user, system) seconds, at clock-tick resolution


def run_load(kind: str, port: int, clients: int, duration: float, size: int = 0, pid: int | None = None) -> LoadResult:
    """
    Drive a server from separate client processes for C{duration} seconds,
    all starting together; with C{pid}, also measure the server's CPU time.
    """
    procs: list[subprocess.Popen[str]] = []
    try:
        for k in split_clients(clients):
            cmd = [sys.executable, LOAD, kind, HOST, str(port), "--sockets", str(k), "--duration", str(duration)]
            if size:
                cmd += ["--size", str(size)]
            procs.append(
                subprocess.Popen(
                    cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
                )
            )
        deadline = time.monotonic() + START_TIMEOUT
        for p in procs:
            line = _readline(p, deadline).strip()
            if line != "ready":
                raise BenchError(f"client: {_client_error(line)}")
        cpu_before = cpu_seconds(pid) if pid is not None else None
        split_before = user_system_seconds(pid) if pid is not None else None
        for p in procs:  # go, all together
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        rate = 0.0
        ops = errors = 0
        client_cpu = 0.0
        deadline = time.monotonic() + duration + START_TIMEOUT
        for p in procs:
            line = _readline(p, deadline).strip()
            try:
                result: dict[str, Any] = json.loads(line)
            except ValueError:
                raise BenchError(f"client: {_client_error(line)}") from None
            if "error" in result:
                raise BenchError(f"client: {result['error']}")
            rate += result["count"] / max(result["elapsed"], 1e-9)
            ops += int(result["count"])
            errors += int(result["errors"])
            client_cpu += float(result.get("cpu", 0.0))
        cpu_after = cpu_seconds(pid) if pid is not None else None
        split_after = user_system_seconds(pid) if pid is not None else None
        cpu = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
        split = None
        if split_before is not None and split_after is not None:
            split = (split_after[0] - split_before[0], split_after[1] - split_before[1])
        return LoadResult(rate, ops, errors, cpu, client_cpu, split)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            for stream in (p.stdin, p.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()


def _client_error(line: str) -> str:
    try:
        return str(json.loads(line)["error"])
    except (ValueError, KeyError, TypeError):
        return line or "no answer (timed out or crashed)"


# -- cells ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One cell of a benchmark: what the clients do, how many, with how big a message."""

    name: str
    load: str  # a bench/load.py KIND
    clients: int
    size: int = 0


@dataclass(frozen=True)
class Plan:
    bench: str
    service: str  # what the servers serve: echo, greeting, udp
    op: str  # one operation, for units: "round trip", "connection"
    cases: Sequence[Case]
    rounds: int
    duration: float


@dataclass
class Overrides:
    """Set by the runner's --servers, --rounds, --duration, --one-at-a-time, --reactor and --workers."""

    servers: list[str] | None = None
    rounds: int | None = None
    duration: float | None = None
    one_at_a_time: bool = False
    reactor: str | None = None
    workers: int | None = None
    """--workers N: the socksvc server runs N worker processes."""


overrides = Overrides()


def plan_timing(quick: bool) -> tuple[int, float]:
    """(rounds, seconds per run): best of 7 short runs in full mode, one very short run in quick mode."""
    rounds, duration = (1, 0.2) if quick else (7, 0.7)
    return overrides.rounds or rounds, overrides.duration or duration


class Samples:
    """Every run's figures, by (case, server)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.rates: dict[tuple[str, str], list[float]] = {}
        self.cpus: dict[tuple[str, str], list[float]] = {}
        self.client_cpus: dict[tuple[str, str], list[float]] = {}
        self.splits: dict[tuple[str, str], list[tuple[float, float]]] = {}  # (user, system) s, per run
        self.errors: dict[tuple[str, str], int] = {}
        self.idle_cpu = 0.0  # CPU seconds used by the servers not under load, meanwhile
        self.busy_cpu = 0.0  # CPU seconds used by the server under load

    def run(self, case: Case, running: Running, idle: Sequence[Running] = ()) -> None:
        """One run of C{case} against C{running}; a failure becomes a note."""
        before = [cpu_seconds(r.proc.pid) or 0.0 for r in idle]
        try:
            got = run_load(case.load, running.port, case.clients, self.plan.duration, case.size, running.proc.pid)
        except BenchError as e:
            why = f" (server: {running.tail(2)})" if not running.alive() else ""
            note(f"{self.plan.bench} [{case.name}] {running.name}: {e}{why}")
            return
        self.idle_cpu += sum((cpu_seconds(r.proc.pid) or 0.0) - b for r, b in zip(idle, before, strict=True))
        key = (case.name, running.name)
        self.rates.setdefault(key, []).append(got.rate)
        if got.server_cpu is not None and got.ops:
            self.busy_cpu += got.server_cpu
            self.cpus.setdefault(key, []).append(got.server_cpu / got.ops * 1e6)
            if got.server_split is not None:
                self.splits.setdefault(key, []).append(got.server_split)
        if got.ops:
            self.client_cpus.setdefault(key, []).append(got.client_cpu / got.ops * 1e6)
        self.errors[key] = self.errors.get(key, 0) + got.errors

    def rows(self, servers: Sequence[str]) -> list[dict[str, Any]]:
        plan = self.plan
        rows: list[dict[str, Any]] = []
        cpu_rows: list[dict[str, Any]] = []
        for case in plan.cases:
            for name in servers:
                key = (case.name, name)
                if key not in self.rates:
                    continue
                errs = self.errors.get(key, 0)
                if errs:
                    note(f"{plan.bench} [{case.name}] {name}: {errs} errors or lost datagrams")
                base = {"bench": plan.bench, "case": case.name, "server": name}
                rows.append(
                    {
                        **base,
                        "value": max(self.rates[key]),
                        "unit": f"{plan.op}s/s",
                        "higher_is_better": True,
                        "samples": [round(x, 1) for x in self.rates[key]],
                        "errors": errs,
                        # the load's own cost, to see whether the clients could keep up
                        "client_cpu_us": round(min(self.client_cpus.get(key, [0.0])), 2),
                    }
                )
                if key in self.cpus:
                    cpu_rows.append(
                        {
                            **base,
                            "bench": f"{plan.bench} cpu",
                            "value": min(self.cpus[key]),
                            "unit": f"server CPU us/{plan.op}",
                            "higher_is_better": False,
                            "samples": [round(x, 2) for x in self.cpus[key]],
                            # over all runs, since one short run holds few clock ticks
                            "user_share": user_share(self.splits.get(key, [])),
                        }
                    )
        return rows + cpu_rows


def user_share(splits: Sequence[tuple[float, float]]) -> float | None:
    """Of the server's CPU in these runs, the share spent in user space (the rest is the kernel's), or None."""
    user = sum(u for u, _ in splits)
    total = user + sum(s for _, s in splits)
    return round(user / total, 3) if total > 0 else None


def _rotate(items: Sequence[Any], r: int) -> list[Any]:
    """A different one first each round."""
    k = r % len(items) if items else 0
    return list(items[k:]) + list(items[:k])


def measure(plan: Plan, servers: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """
    Run every case against every server, C{plan.rounds} times; two rows per
    cell: operations a second (the best run) under C{plan.bench}, and the
    server's CPU time per operation (the least) under C{plan.bench + " cpu"}.

    Only one server is ever under load. By default every server is started
    first and left idle (blocked in its event loop, using no CPU: checked,
    and noted if not) while another is measured, and the runs of one cell
    alternate between the servers, a different one first each round: runs
    compared with each other are seconds apart, so a slow spell on a shared
    machine hits them alike. With C{overrides.one_at_a_time}, only one server
    process exists at a time instead: each round starts each server in turn
    and runs every cell against it.
    """
    if servers is None:
        servers = available_servers()
        if overrides.servers:
            servers = [s for s in servers if s in overrides.servers]
    servers = list(servers)
    samples = Samples(plan)
    if overrides.one_at_a_time:
        failed: set[str] = set()
        for r in range(plan.rounds):
            for name in _rotate(servers, r):
                if name in failed:
                    continue
                try:
                    with server(name, plan.service) as running:
                        for case in plan.cases:
                            samples.run(case, running)
                except BenchError as e:
                    note(f"{plan.bench}: {e}; {name} skipped")
                    failed.add(name)
        return samples.rows(servers)
    with contextlib.ExitStack() as stack:
        up: list[Running] = []
        for name in servers:
            try:
                up.append(stack.enter_context(server(name, plan.service)))
            except BenchError as e:
                note(f"{plan.bench}: {e}; {name} skipped")
        for case in plan.cases:
            for r in range(plan.rounds):
                for running in _rotate(up, r):
                    samples.run(case, running, [x for x in up if x is not running])
    if samples.busy_cpu > 0 and samples.idle_cpu > 0.02 * samples.busy_cpu:
        note(
            f"{plan.bench}: the idle servers used {samples.idle_cpu:.2f} s of CPU while others were measured "
            f"({100 * samples.idle_cpu / samples.busy_cpu:.0f}% of the measured servers' {samples.busy_cpu:.1f} s); "
            "try --one-at-a-time"
        )
    return samples.rows(servers)


def size_name(size: int) -> str:
    if size >= 1024 and size % 1024 == 0:
        return f"{size // 1024} KiB"
    return f"{size} B"


def clients_name(clients: int) -> str:
    return f"{clients} client" + ("" if clients == 1 else "s")
