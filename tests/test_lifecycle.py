"""
The daemon's life cycle as a process: a daemonized start (twistd without
-n) that fails or succeeds, then SIGTERM; a SIGHUP that comes during
start-up. Real processes, ports the kernel picks (port 0) or the test holds.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from socksvc.daemon.errors import StartupError, StartupFailed
from socksvc.daemon.service import DaemonService
from socksvc.services.catalogue import loads
from tests.conftest import refused
from tests.support import TWISTD, daemon, echo_round_trip


@contextlib.contextmanager
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def wait_for_exit(pid: int, timeout: float = 20.0) -> bool:
    """Wait until C{pid} (not our child: a daemon) has exited; False on timeout."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def daemonized(tmp_path: Path, config: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], float]:
    """twistd without -n, as an init script would run it; gives the launcher's result and how long it took."""
    path = tmp_path / "socksvc.toml"
    path.write_text(config)
    cmd = [TWISTD, "--pidfile", "socksvc.pid", "--logfile", "socksvc.log", "socksvc", "--config", str(path)]
    started = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tmp_path, stdin=subprocess.DEVNULL)
    return out, time.monotonic() - started


# -- daemonized -------------------------------------------------------------------


def test_a_daemonized_start_on_a_busy_port_exits_1_with_one_line(tmp_path: Path) -> None:
    """Once the launcher waited for ever (twistd's status pipe never heard of a SystemExit) and left its pidfile."""
    with busy_port() as port:
        config = '[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
        config += f'[services.rev]\ntype = "reverse"\nlisten = ["tcp:{port}:interface=127.0.0.1"]\n'
        out, took = daemonized(tmp_path, config)
    assert out.returncode == 1, out
    assert out.stderr == (
        f"socksvc: service 'rev' cannot listen on 'tcp:{port}:interface=127.0.0.1': Address already in use\n"
    )
    assert out.stdout == ""
    assert not (tmp_path / "socksvc.pid").exists()
    print(f"daemonized start on a busy port: exit 1 after {took:.2f} s")


def test_a_daemonized_start_serves_then_stops_on_sigterm(tmp_path: Path) -> None:
    out, took = daemonized(tmp_path, '[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1"]\n')
    assert out.returncode == 0, out
    assert (out.stdout, out.stderr) == ("", "")
    pid = int((tmp_path / "socksvc.pid").read_text())
    try:
        log = (tmp_path / "socksvc.log").read_text()
        assert "socksvc: 1 services on 1 listeners" in log, log
        port = int(log.split("echo: listening on tcp 127.0.0.1:")[1].split()[0])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            assert echo_round_trip(s, b"daemonized") == b"daemonized"
    finally:
        os.kill(pid, signal.SIGTERM)
        assert wait_for_exit(pid), "the daemon did not stop on SIGTERM"
    assert not (tmp_path / "socksvc.pid").exists()
    assert refused(port)
    assert "Traceback" not in (tmp_path / "socksvc.log").read_text()
    print(f"daemonized start: the launcher returned 0 after {took:.2f} s")


def test_a_startup_error_after_the_fork_goes_through_twistds_status_pipe() -> None:
    """
    Were a listener to fail after twistd forked (its status pipe open), the
    error must be an Exception, which twistd reports to the launcher (exit 1,
    pidfile removed); a SystemExit left the launcher waiting for ever.
    """
    from socksvc.daemon.listener import Listener

    svc = DaemonService(loads('[services.echo]\nlisten = ["tcp:0"]\n', "t.toml"), Clock(), handle_signals=False)
    svc.twistd_options = {"statusPipe": 99, "nodaemon": False}

    def fail(self: Listener) -> None:
        raise StartupError("service 'echo' cannot listen on 'tcp:0': no")

    listener = svc.instance("echo").listeners()[0]
    listener.bind = fail.__get__(listener)  # type: ignore[method-assign]
    with capturedLogs() as events, pytest.raises(StartupFailed) as e:
        svc.privilegedStartService()
    assert not isinstance(e.value, SystemExit)
    assert str(e.value) == "socksvc: service 'echo' cannot listen on 'tcp:0': no"
    assert [ev["line"] for ev in events if ev.get("event") == "startup_failed"] == [
        "service 'echo' cannot listen on 'tcp:0': no"
    ]
    # In the foreground (no status pipe) it stays the one-line SystemExit.
    svc.twistd_options = None
    with pytest.raises(StartupError):
        svc.privilegedStartService()


# -- SIGHUP during start-up -----------------------------------------------------------

EARLY_HUP = """
import os, signal, sys
from socksvc import tap  # from here on SIGHUP is held
service = tap.makeService({"config": sys.argv[1]})
os.kill(os.getpid(), signal.SIGHUP)  # nothing bound or started yet; the default action would end us
from twisted.internet import reactor
from twisted.logger import globalLogBeginner, textFileLogObserver
globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
service.privilegedStartService()
service.startService()
reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
reactor.run()
"""


def read_until(proc: subprocess.Popen[bytes], marker: str, timeout: float = 30.0) -> str:
    assert proc.stdout is not None
    out = ""
    deadline = time.monotonic() + timeout
    while marker not in out:
        left = deadline - time.monotonic()
        assert left > 0 and proc.poll() is None, f"no {marker!r}; exit {proc.poll()}; output:\n{out}"
        if select.select([proc.stdout], [], [], min(left, 0.5))[0]:
            chunk = os.read(proc.stdout.fileno(), 65536)
            out += chunk.decode("utf-8", "replace")
    return out


def test_a_sighup_before_start_up_completes_is_held_then_reloads(tmp_path: Path) -> None:
    path = tmp_path / "socksvc.toml"
    path.write_text('[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1"]\n')
    proc = subprocess.Popen(
        [sys.executable, "-c", EARLY_HUP, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    try:
        out = read_until(proc, "socksvc: reloaded")
        assert "SIGHUP during start-up: reloading now" in out
        assert out.index("services on") < out.index("socksvc: reloaded")
        port = int(out.split("echo: listening on tcp 127.0.0.1:")[1].split()[0])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            assert echo_round_trip(s, b"still here") == b"still here"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        assert proc.stdout is not None
        proc.stdout.close()
    assert "Traceback" not in out


def sighup_caught(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)))
    return False


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc/PID/status")
def test_twistd_sent_sighup_as_soon_as_it_takes_one_survives_and_serves() -> None:
    """
    The real daemon, sent SIGHUP the moment its handler is in (before its
    listeners are bound: the handler comes with the socksvc plugin's code):
    it lives, serves, and reloads once started.
    """
    with daemon('[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1"]\n', ready=False) as d:
        spawned = time.monotonic()
        while not sighup_caught(d.proc.pid):
            assert d.proc.poll() is None, d.read(timeout=1)
            assert time.monotonic() - spawned < 60, "SIGHUP never caught"
        caught = time.monotonic() - spawned
        d.signal(signal.SIGHUP)
        d.read(until="services on", timeout=60)
        ready = time.monotonic() - spawned
        d.read(until="socksvc: reloaded", timeout=30)
        assert d.proc.poll() is None
        with socket.create_connection(("127.0.0.1", d.port("echo")), timeout=10) as s:
            assert echo_round_trip(s, b"after SIGHUP") == b"after SIGHUP"
    assert "Traceback" not in d.output
    print(f"SIGHUP caught {caught:.3f} s after spawn; ready after {ready:.3f} s")


EARLY_TERM = """
import os, signal, sys
from twisted.internet import reactor
from twisted.logger import globalLogBeginner, textFileLogObserver
from socksvc import tap
service = tap.makeService({"config": sys.argv[1]}, None)
os.kill(os.getpid(), signal.SIGTERM)  # before the reactor runs: held by makeService
globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
service.privilegedStartService()
service.startService()
reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
reactor.run()
print("exited cleanly", flush=True)
"""


def test_a_sigterm_before_the_reactor_runs_stops_the_usual_way(tmp_path: Path) -> None:
    """Not killed on the spot: the daemon starts, then stops in order (STOPPING=1, listeners closed)."""
    path = tmp_path / "socksvc.toml"
    path.write_text('[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1"]\n')
    out = subprocess.run(
        [sys.executable, "-c", EARLY_TERM, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out
    assert "SIGTERM during start-up: stopping" in out.stdout
    assert out.stdout.index("services on") < out.stdout.index("socksvc: stopping")
    assert out.stdout.rstrip().endswith("exited cleanly")
