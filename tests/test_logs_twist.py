"""
Under twist, log_format decides too. twist picks its own observer (JSON
whenever its log file is not a terminal, text otherwise) and ignores the
Application's; socksvc sets twist's observer factory instead, unless
twist's --log-format was given on its command line.
"""

from __future__ import annotations

import io
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.application.twist._options import TwistOptions
from twisted.logger import LogLevel, capturedLogs

from socksvc.config.schema import DaemonSettings
from socksvc.daemon.logformat import FastTextObserver, JsonObserver
from socksvc.daemon.logs import is_twist, observer_for, twist_log_format

TWIST = os.path.join(os.path.dirname(sys.executable), "twist")


@pytest.mark.parametrize(
    ("argv", "found"),
    [
        (["twist", "socksvc"], None),
        (["twist", "--log-format", "json", "socksvc"], "json"),
        (["twist", "--log-format=TEXT", "socksvc"], "text"),
        (["twist", "--log-fo=json", "socksvc"], "json"),  # getopt's abbreviations
        (["twist", "--log-f=json", "socksvc"], None),  # ambiguous (log-file): twist refuses it
        (["twist", "--log-file", "x.log", "--log-format", "json", "socksvc"], "json"),
        (["twist", "--log-file", "--log-format", "socksvc"], None),  # a log file named --log-format
        (["twist", "--reactor=poll", "--log-level", "debug", "--log-format", "text", "socksvc"], "text"),
        (["twist", "socksvc", "--log-format", "json"], None),  # socksvc's, not twist's
        (["twist", "--log-format", "xml", "socksvc"], None),
        (["twist", "--log-format"], None),
    ],
)
def test_twists_own_log_format_is_read_from_its_command_line(argv: list[str], found: str | None) -> None:
    assert twist_log_format(argv) == found


def twist_options(*args: str) -> TwistOptions:
    options = TwistOptions()
    options.parseOptions([*args, "socksvc"])
    return options


def test_log_format_decides_twists_observer() -> None:
    for log_format, kind in (("text", FastTextObserver), ("json", JsonObserver)):
        options = twist_options()
        assert is_twist(options)
        result = observer_for(DaemonSettings(log_format=log_format), options, None, argv=["twist", "socksvc"])
        assert result is None  # nothing for the Application: twist does not look there
        assert options["logFormat"] == log_format
        out = io.StringIO()
        observer = options["fileLogObserverFactory"](out)
        assert isinstance(observer, kind)
        observer({"log_namespace": "socksvc", "log_level": LogLevel.info, "log_time": 1e9, "log_format": "hi"})
        assert ("[socksvc#info] hi" in out.getvalue()) is (log_format == "text")


def test_twists_explicit_log_format_wins_with_one_warning() -> None:
    options = twist_options("--log-format", "json")
    with capturedLogs() as events:
        observer_for(DaemonSettings(), options, None, argv=["twist", "--log-format", "json", "socksvc"])
    assert isinstance(options["fileLogObserverFactory"](io.StringIO()), JsonObserver)
    [warning] = [e for e in events if e.get("event") == "log_format"]
    assert warning["option"] == "--log-format json" and warning["tool"] == "twist"
    with capturedLogs() as events:  # the same choice twice: nothing to say
        observer_for(DaemonSettings(log_format="json"), twist_options(), None, argv=["twist", "--log-format=json"])
    assert [e for e in events if e.get("event") == "log_format"] == []


def test_twists_log_file_is_reopened_by_path(tmp_path: Path) -> None:
    path = tmp_path / "twist.log"
    options = twist_options("--log-file", str(path))
    observer_for(DaemonSettings(log_mode="0600"), options, None, signals=False, argv=["twist"])
    twists_file = options["logFile"]
    observer: Any = options["fileLogObserverFactory"](twists_file)
    assert twists_file.closed  # socksvc holds its own, by path
    observer({"log_namespace": "socksvc", "log_level": LogLevel.info, "log_time": 1e9, "log_format": "one"})
    path.rename(tmp_path / "twist.log.1")
    observer.sink.reopen()
    observer({"log_namespace": "socksvc", "log_level": LogLevel.info, "log_time": 1e9, "log_format": "two"})
    assert path.read_text().endswith("[socksvc#info] two\n") and "one" not in path.read_text()
    assert (path.stat().st_mode & 0o777) == 0o600


# -- a real twist, its stdout a pipe (twist's own choice there is JSON) ------------

CONFIG = '[daemon]\nlog_format = "{fmt}"\n[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1"]\n'


def run_twist(tmp_path: Path, fmt: str, *twist_args: str) -> str:
    config = tmp_path / "socksvc.toml"
    config.write_text(CONFIG.format(fmt=fmt))
    proc = subprocess.Popen(
        [TWIST, *twist_args, "socksvc", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=tempfile.gettempdir(),
    )
    assert proc.stdout is not None
    output = b""
    deadline = time.monotonic() + 30
    try:
        while b"Starting reactor" not in output:  # twist's own line, after socksvc's ready line
            left = deadline - time.monotonic()
            assert left > 0, output
            if not select.select([proc.stdout], [], [], left)[0]:
                continue
            chunk = proc.stdout.read1(65536)
            assert chunk, f"twist exited {proc.wait()}:\n{output.decode()}"
            output += chunk
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=20)
    return (output + rest).decode()


def test_twist_to_a_pipe_writes_text_with_log_format_text(tmp_path: Path) -> None:
    output = run_twist(tmp_path, "text")
    lines = output.splitlines()
    assert any("[socksvc#info] echo: listening on tcp 127.0.0.1:" in line for line in lines), output
    assert not [line for line in lines if line.startswith("{")], output
    assert "starting on" not in output


def test_twist_to_a_pipe_writes_socksvcs_json_with_log_format_json(tmp_path: Path) -> None:
    output = run_twist(tmp_path, "json")
    records = [json.loads(line) for line in output.splitlines()]
    assert any(r["event"] == "ready" and r["namespace"] == "socksvc" for r in records)
    assert all(set(r) >= {"time", "level", "namespace", "event", "message"} for r in records)
    assert not any("log_format" in r or "log_flattened" in r for r in records)


def test_twist_log_format_on_its_command_line_wins(tmp_path: Path) -> None:
    output = run_twist(tmp_path, "text", "--log-format", "json")
    records = [json.loads(line) for line in output.splitlines()]
    [warning] = [r for r in records if r["event"] == "log_format"]
    assert warning["message"] == 'socksvc: log_format = "text" ignored: twist was told to log with --log-format json'
