"""
The log file (twistd --logfile): appended to, created with log_mode, and
reopened by path on SIGUSR1, so logrotate's move-then-signal (and
copytruncate) work; real twistd and real logrotate at the end.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import LogLevel, capturedLogs

from socksvc.daemon.logs import reopen_logs, reopen_on_sigusr1
from socksvc.daemon.logsink import LineSink, LogFile
from tests.support import Daemon, daemon, echo_round_trip


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_file_gets_log_mode_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)  # twistd's daemon default
    try:
        for octal in (0o644, 0o640, 0o600, 0o666):
            path = tmp_path / f"{octal:o}.log"
            LogFile(str(path), octal).close()
            assert mode(path) == octal
    finally:
        os.umask(old)


def test_an_existing_file_keeps_its_mode_and_is_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_text("before\n")
    path.chmod(0o600)
    log = LogFile(str(path), 0o644)
    log.write("after\n")
    log.flush()
    assert path.read_text() == "before\nafter\n"
    assert mode(path) == 0o600  # logrotate's "create 0600 ..." made it so: left alone
    log.close()


def test_reopen_starts_a_fresh_file_at_the_path(tmp_path: Path) -> None:
    path, moved = tmp_path / "a.log", tmp_path / "a.log.1"
    log = LogFile(str(path), 0o640)
    log.write("one\n")
    log.flush()
    path.rename(moved)
    log.write("two\n")  # still the moved file: that is what logrotate's postrotate is for
    log.flush()
    log.reopen()
    log.write("three\n")
    log.flush()
    assert moved.read_text() == "one\ntwo\n"
    assert path.read_text() == "three\n"
    assert mode(path) == 0o640
    log.close()


def test_copytruncate_needs_no_signal(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    log = LogFile(str(path))
    log.write("x" * 1000 + "\n")
    log.flush()
    os.truncate(path, 0)
    log.write("after\n")
    log.flush()
    assert path.read_bytes() == b"after\n"  # O_APPEND: no hole of NULs where the old data was
    log.close()


class Calls:
    """A reactor that only records callFromThread."""

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        self.calls.append((f, args))


@pytest.fixture
def sigusr1() -> Any:
    before = signal.getsignal(signal.SIGUSR1)
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGUSR1, before)


def test_sigusr1_reopens_on_the_reactor_and_says_so(tmp_path: Path, sigusr1: None) -> None:
    path = tmp_path / "a.log"
    sink = LineSink(LogFile(str(path)))
    reactor = Calls()
    assert reopen_on_sigusr1(sink, reactor)
    assert not reopen_on_sigusr1(sink, reactor)  # a handler is set: left alone
    sink.emit("one\n")
    path.rename(tmp_path / "a.log.1")
    os.kill(os.getpid(), signal.SIGUSR1)
    [(f, args)] = reactor.calls  # the handler ran (Python runs it before the next bytecode)
    with capturedLogs() as events:
        f(*args)
    sink.emit("two\n")
    assert path.read_text() == "two\n"
    assert (tmp_path / "a.log.1").read_text() == "one\n"
    [said] = [e for e in events if e.get("event") == "log_reopen"]
    assert said["log_level"] == LogLevel.info and said["path"] == str(path)


def test_a_path_that_cannot_be_reopened_keeps_the_old_file(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    path = logs / "a.log"
    sink = LineSink(LogFile(str(path)))
    sink.emit("one\n")
    path.rename(tmp_path / "a.log.1")
    logs.rmdir()
    with capturedLogs() as events:
        reopen_logs(sink)
    [said] = [e for e in events if e.get("event") == "log_reopen"]
    assert said["log_level"] == LogLevel.error and said["error"] == "No such file or directory"
    sink.emit("two\n")
    assert (tmp_path / "a.log.1").read_text() == "one\ntwo\n"


def test_sigusr1_on_a_stream_only_flushes(sigusr1: None) -> None:
    class Out:
        text = ""

        def write(self, s: str) -> None:
            self.text += s

        def flush(self) -> None:
            pass

    from twisted.internet.task import Clock

    out = Out()
    sink = LineSink(out, buffer=1 << 20, flush_after=60, clock=Clock())
    sink.emit("held\n")
    with capturedLogs() as events:
        reopen_logs(sink)
    assert out.text == "held\n"
    assert events == []


# -- a real twistd, a real logrotate --------------------------------------------------

ECHO = '[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
_PORT = re.compile(r"echo: listening on tcp 127\.0\.0\.1:(\d+)")


def wait_for(d: Daemon, path: Path, text: str, timeout: float = 20.0) -> str:
    """The file's content once C{text} is in it (polling while waiting on the daemon's stdout)."""
    deadline = time.monotonic() + timeout
    while True:
        content = path.read_text(errors="replace") if path.exists() else ""
        if text in content:
            return content
        assert d.proc.poll() is None, f"twistd exited {d.proc.returncode}:\n{d.read(timeout=1)}"
        assert time.monotonic() < deadline, f"{text!r} never reached {path}:\n{content}\nstdout:\n{d.output}"
        d.read(timeout=0.1)  # waits up to 0.1 s on the daemon's stdout


def echo_once(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        assert echo_round_trip(s, b"ping") == b"ping"
        return int(s.getsockname()[1])


def start(tmp_path: Path, extra: str = "") -> tuple[Any, Path]:
    path = tmp_path / "socksvc.log"
    return daemon(extra + ECHO, ready=False, twistd_args=["--logfile", str(path)]), path


def test_twistd_reopens_its_logfile_on_sigusr1(tmp_path: Path) -> None:
    """logrotate's move-then-signal, by hand: rename, SIGUSR1, new lines in a fresh file."""
    managed, path = start(tmp_path, '[daemon]\nlog_mode = "0640"\n')
    moved = tmp_path / "socksvc.log.1"
    with managed as d:
        content = wait_for(d, path, "services on")
        assert mode(path) == 0o640
        match = _PORT.search(content)
        assert match, content
        port = int(match.group(1))
        path.rename(moved)
        d.signal(signal.SIGUSR1)
        wait_for(d, path, "reopened (SIGUSR1)")
        me = echo_once(port)
        wait_for(d, path, f"127.0.0.1:{me} closed after")
        assert mode(path) == 0o640
    assert "reopened" not in moved.read_text()
    assert f"127.0.0.1:{me}" not in moved.read_text()
    assert "services on" in moved.read_text() and "services on" not in path.read_text()
    assert d.proc.returncode == -signal.SIGTERM  # stopped by the test, not by SIGUSR1
    assert d.output == ""  # nothing on stdout: the log is the file


def test_a_buffered_log_is_flushed_by_sigusr1_and_at_stop(tmp_path: Path) -> None:
    sock = tmp_path / "echo.sock"
    path = tmp_path / "socksvc.log"
    config = f'[daemon]\nlog_buffer = 1048576\nlog_flush = 60\n[services.echo]\nlisten = ["unix:{sock}"]\n'
    with daemon(config, ready=False, twistd_args=["--logfile", str(path)]) as d:
        deadline = time.monotonic() + 20
        while True:  # the ready line is held in the buffer: wait for the socket instead
            with socket.socket(socket.AF_UNIX) as s:
                if sock.exists() and s.connect_ex(str(sock)) == 0:
                    break
            assert d.proc.poll() is None and time.monotonic() < deadline, d.read(timeout=1)
            d.read(timeout=0.1)
        assert "services on" not in (path.read_text() if path.exists() else "")  # held
        d.signal(signal.SIGUSR1)
        wait_for(d, path, "services on")
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(sock))
            assert echo_round_trip(s, b"ping") == b"ping"
        d.read(timeout=0.3)
        assert "echo: unix closed after" not in path.read_text()  # held again, for up to 60 s
    content = path.read_text()  # stopped: everything was written
    assert "echo: unix closed after" in content
    assert content.rstrip().endswith("Server Shut Down.")


LOGROTATE = shutil.which("logrotate") or (os.path.exists("/usr/sbin/logrotate") and "/usr/sbin/logrotate") or None
needs_logrotate = pytest.mark.skipif(not LOGROTATE, reason="logrotate is not installed")


def rotate(tmp_path: Path, path: Path, directives: str) -> None:
    conf = tmp_path / "logrotate.conf"
    conf.write_text(f"{path} {{\n    rotate 3\n    missingok\n    nocompress\n{directives}}}\n")
    conf.chmod(0o644)
    state = tmp_path / "logrotate.state"
    done = subprocess.run(
        [str(LOGROTATE), "--force", "--state", str(state), str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


@needs_logrotate
def test_the_documented_logrotate_recipe_with_postrotate(tmp_path: Path) -> None:
    managed, path = start(tmp_path)
    with managed as d:
        content = wait_for(d, path, "services on")
        match = _PORT.search(content)
        assert match, content
        # docs/logging.md's recipe, with the test daemon's pid for the pid file's.
        rotate(tmp_path, path, f"    postrotate\n        kill -USR1 {d.proc.pid}\n    endscript\n")
        wait_for(d, path, "reopened (SIGUSR1)")
        me = echo_once(int(match.group(1)))
        wait_for(d, path, f"127.0.0.1:{me} closed after")
        assert mode(path) == 0o644
    rotated = (tmp_path / "socksvc.log.1").read_text()
    assert "services on" in rotated and f"127.0.0.1:{me}" not in rotated


@needs_logrotate
def test_the_documented_logrotate_recipe_with_copytruncate(tmp_path: Path) -> None:
    managed, path = start(tmp_path)
    with managed as d:
        content = wait_for(d, path, "services on")
        match = _PORT.search(content)
        assert match, content
        rotate(tmp_path, path, "    copytruncate\n")
        me = echo_once(int(match.group(1)))
        content = wait_for(d, path, f"127.0.0.1:{me} closed after")
    assert "\x00" not in content and "services on" not in content
    assert "services on" in (tmp_path / "socksvc.log.1").read_text()
