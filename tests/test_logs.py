"""
The fast text observer: the same lines as twistd's, and only where twistd
would write them to stdout. JSON logging: where twistd would write its log
(stdout or its --logfile), never instead of --syslog/--logger.
"""

from __future__ import annotations

import io
import json
import os
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.logger import LogLevel, capturedLogs, formatEvent, textFileLogObserver
from twisted.python.failure import Failure

from socksvc.config.schema import DaemonSettings
from socksvc.daemon.errors import StartupError
from socksvc.daemon.logs import (
    FastTextObserver,
    JsonObserver,
    LogDestination,
    LogFile,
    LogFileError,
    WithoutPortNoise,
    log_destination,
    observer_for,
)
from tests.support import TWISTD, daemon


def both(event: dict[str, Any]) -> tuple[str, str]:
    theirs, ours = io.StringIO(), io.StringIO()
    textFileLogObserver(theirs)(dict(event))
    FastTextObserver(ours)(dict(event))
    return theirs.getvalue(), ours.getvalue()


NOW = 1_763_700_000.25


def base(**kw: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"log_namespace": "socksvc", "log_level": LogLevel.info, "log_time": NOW}
    event.update(kw)
    return event


def _boom() -> Failure:
    return Failure(ZeroDivisionError("division by zero"))


class Explodes:
    def __format__(self, spec: str) -> str:
        raise RuntimeError("no")


@pytest.mark.parametrize(
    "event",
    [
        base(
            log_format="{service}: {peer} closed after {duration:.3f}s, {bytes_in} bytes in{why}",
            service="greeting",
            peer="127.0.0.1:5",
            duration=0.00123,
            bytes_in=3,
            why="",
        ),
        base(log_format="{service}: listening on {where}", service="echo", where="tcp 127.0.0.1:7007"),
        base(log_format="two\nlines {x}", x="and\nthree"),
        base(log_format="from a system", log_system="ServiceFactory,0,127.0.0.1"),
        base(log_format="no level", log_level=None),
        base(log_format="no time", log_time=None),
        base(log_format="{missing} field"),
        base(log_format="{x.real} attribute", x=3),
        base(log_format="{f()} called", f=lambda: "called!"),
        base(log_format="{x} explodes", x=Explodes()),
        base(log_format="{bad", x=1),
        base(log_format="a failure: {x}", x=1, log_failure=_boom()),
        base(log_format=None, log_failure=_boom()),
        base(log_format=None),
        base(log_format=""),
        base(log_format="{{literal}} {x!r}", x="q"),
        {"log_format": "bare {x}", "x": 1},
    ],
    ids=lambda e: repr(e.get("log_format"))[:30],
)
def test_lines_are_twistds_lines(event: dict[str, Any]) -> None:
    theirs, ours = both(event)
    assert ours == theirs


@settings(max_examples=150, deadline=None)
@given(
    st.text(alphabet=string.ascii_letters + " {}:.!\n\t[]0123456789_", max_size=40),
    st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=10)),
    st.floats(min_value=0, max_value=4e9),
)
def test_any_format_comes_out_as_twisted_formats_it(fmt: str, value: object, when: float) -> None:
    theirs, ours = both(base(log_format=fmt, log_time=when, a=value, x=value, _0=value))
    assert ours == theirs


def test_the_time_prefix_follows_the_clock() -> None:
    out = io.StringIO()
    observer = FastTextObserver(out)
    for when in (NOW, NOW + 0.5, NOW + 1.0, NOW + 3600.7, NOW - 86400):
        observer(base(log_format="x", log_time=when))
    reference = io.StringIO()
    plain = textFileLogObserver(reference)
    for when in (NOW, NOW + 0.5, NOW + 1.0, NOW + 3600.7, NOW - 86400):
        plain(base(log_format="x", log_time=when))
    assert out.getvalue() == reference.getvalue()
    assert len(set(line.split(" ")[0] for line in out.getvalue().splitlines())) == 4


def test_the_line_matches_what_the_tests_parse() -> None:
    out = io.StringIO()
    event = base(log_format="{service}: listening on {where}", service="echo", where="tcp 127.0.0.1:1")
    FastTextObserver(out)(dict(event, log_time=time.time()))
    assert "[socksvc#info] echo: listening on tcp 127.0.0.1:1\n" in out.getvalue()


@pytest.mark.parametrize(
    ("argv", "default"),
    [
        (["twistd", "-n", "socksvc"], False),
        (["twistd", "--nodaemon", "--pidfile=", "socksvc", "--config", "x"], False),
        (["twistd", "--noda", "socksvc"], False),
        (["twistd", "-no", "socksvc"], False),
        (["twistd", "socksvc"], True),  # a daemon logs to twistd.log
        (["twistd", "-n", "--logfile", "/tmp/x.log", "socksvc"], True),
        (["twistd", "-n", "--logfile=-", "socksvc"], False),  # "-" is stdout
        (["twistd", "--logfile=-", "socksvc"], True),  # which twistd refuses a daemon
        (["twistd", "-n", "--logfile=", "socksvc"], False),  # empty: no log file
        (["twistd", "-n", "-lx.log", "socksvc"], True),
        (["twistd", "-n", "-l", "x.log", "socksvc"], True),
        (["twistd", "-nl", "x.log", "socksvc"], True),
        (["twistd", "-n", "--syslog", "socksvc"], True),
        (["twistd", "-n", "--sys", "socksvc"], True),
        (["twistd", "-n", "--logger", "x.y", "socksvc"], True),
        (["twistd", "-n", "socksvc", "-l"], False),  # after the subcommand: not twistd's
        (["twistd", "-n", "-r", "poll", "socksvc"], False),
        (["twistd", "-n", "-rl", "socksvc"], False),  # -r's value is "l"
    ],
)
def test_argv_decides_when_twistd_options_are_not_at_hand(argv: list[str], default: bool) -> None:
    # default: twistd's own observer, not stdout, is where the log goes
    assert (log_destination(None, argv).kind != "stdout") is default


DAEMON = DaemonSettings()
JSON = DaemonSettings(log_format="json")


def chosen(
    options: dict[str, Any] | None, daemon: DaemonSettings = DAEMON, out: Any = None, argv: list[str] | None = None
) -> Any:
    """observer_for without a reactor (unbuffered, no signals), on C{out} for stdout."""
    return observer_for(daemon, options, None, signals=False, out=out or io.StringIO(), argv=argv or ["twistd"])


def test_the_daemon_chooses_the_observer_for_every_destination_twistd_can_pick(tmp_path: Path) -> None:
    out = io.StringIO()
    for options in ({"nodaemon": True, "logfile": None}, {"nodaemon": True, "logfile": "-"}):
        observer = chosen(options, out=out)
        assert isinstance(observer, FastTextObserver) and observer.sink.out is out
    observer = chosen({"nodaemon": True, "logfile": str(tmp_path / "x.log")})
    assert isinstance(observer, FastTextObserver) and isinstance(observer.sink.out, LogFile)
    assert isinstance(chosen({"nodaemon": True, "syslog": True}), WithoutPortNoise)
    assert chosen({"nodaemon": True, "logger": "a.b"}) is None  # the admin's own observer, untouched
    assert isinstance(chosen(None, argv=["twistd", "-n", "socksvc"]), FastTextObserver)
    assert isinstance(chosen({"nodaemon": True}, JSON, out=out), JsonObserver)


def _application_observer(options: dict[str, Any] | None, log_format: str = "text") -> object:
    from twisted.application.service import Application
    from twisted.internet.testing import MemoryReactorClock
    from twisted.logger import ILogObserver

    from socksvc.daemon.service import DaemonService
    from socksvc.services.catalogue import loads

    config = loads(f'[daemon]\nlog_format = "{log_format}"\n[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1"]\n')
    service = DaemonService(config, MemoryReactorClock(), handle_signals=False)
    service.twistd_options = options
    app = Application("socksvc")
    service.setServiceParent(app)
    return app.getComponent(ILogObserver, None)


def test_the_daemon_gives_twistd_its_observer(tmp_path: Path) -> None:
    assert isinstance(_application_observer({"nodaemon": True, "logfile": None}), FastTextObserver)
    assert isinstance(_application_observer({"nodaemon": True, "logfile": str(tmp_path / "a.log")}), FastTextObserver)
    assert isinstance(_application_observer({"nodaemon": True, "syslog": True}), WithoutPortNoise)
    assert isinstance(_application_observer({"nodaemon": True}, "json"), JsonObserver)


# -- where twistd logs --------------------------------------------------------


def test_the_destination_follows_twistds_own_order() -> None:
    assert log_destination({"nodaemon": True, "logfile": None}) == LogDestination("stdout")
    assert log_destination({"nodaemon": True, "logfile": "-"}) == LogDestination("stdout")
    assert log_destination({"nodaemon": False, "logfile": "-"}).kind == "other"  # twistd refuses it
    assert log_destination({"nodaemon": True, "logfile": "a.log"}) == LogDestination("file", "a.log", "--logfile")
    assert log_destination({"nodaemon": False, "logfile": None}) == LogDestination("file", "twistd.log")
    syslog = {"nodaemon": True, "logfile": "a.log", "syslog": True}
    assert log_destination(syslog) == LogDestination("syslog", option="--syslog")
    assert log_destination(dict(syslog, logger="a.b")) == LogDestination("logger", option="--logger")
    # Not twistd's options (twist's have no nodaemon): not ours to place.
    assert log_destination({"logFile": sys.stdout}).kind == "other"
    # Options at hand win over argv.
    assert log_destination({"nodaemon": True}, ["twistd", "--syslog", "socksvc"]).kind == "stdout"
    assert log_destination(None, ["twistd", "-n", "-l", "b.log", "socksvc"]) == LogDestination(
        "file", "b.log", "--logfile"
    )


_PATHS = st.sampled_from(["x.log", "-", "/tmp/a b.log", "sub/y.log"])
_OPTION = st.one_of(
    st.sampled_from([["-n"], ["--nodaemon"], ["--noda"], ["-no"], ["-o"], ["--syslog"], ["--sys"], ["--pidfile="]]),
    st.sampled_from([["--logger", "os.getcwd"], ["--logger=os.getcwd"], ["--logg=os.getcwd"]]),
    _PATHS.map(lambda p: ["--logfile", p]),
    _PATHS.map(lambda p: ["--logfile=" + p]),
    _PATHS.map(lambda p: ["--logf", p]),
    _PATHS.map(lambda p: ["-l", p]),
    _PATHS.map(lambda p: ["-l" + p]),
    _PATHS.map(lambda p: ["-nl", p]),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_OPTION, max_size=5))
def test_argv_reads_as_twistd_parses_it(options: list[list[str]]) -> None:
    from twisted.scripts.twistd import ServerOptions

    args = [arg for option in options for arg in option] + ["socksvc"]
    parsed = ServerOptions()
    parsed.parseOptions(args)
    assert log_destination(None, ["twistd", *args]) == log_destination(parsed)


# -- JSON where twistd would log -----------------------------------------------


def _event() -> dict[str, Any]:
    return base(log_format="{service}: listening on {where}", service="echo", where="tcp 127.0.0.1:1")


def test_json_goes_to_stdout_where_twistd_would_write_there() -> None:
    out = io.StringIO()
    observer = chosen({"nodaemon": True, "logfile": None}, JSON, out=out)
    observer(_event())
    [line] = out.getvalue().splitlines()
    assert json.loads(line)["service"] == "echo"
    assert json.loads(line)["namespace"] == "socksvc"


def test_the_logfile_is_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "socksvc.log"
    path.write_text("an older line\n")
    out = io.StringIO()
    for settings_ in (JSON, DAEMON):
        observer = chosen({"nodaemon": True, "logfile": str(path)}, settings_, out=out)
        observer(_event())
        observer.sink.out.close()
    lines = path.read_text().splitlines()
    assert lines[0] == "an older line"
    assert json.loads(lines[1])["where"] == "tcp 127.0.0.1:1"
    assert lines[2].endswith("[socksvc#info] echo: listening on tcp 127.0.0.1:1")
    assert out.getvalue() == ""


def test_a_daemon_without_logfile_writes_twistd_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    observer = chosen({"nodaemon": False, "logfile": None}, JSON)
    observer(_event())
    assert json.loads((tmp_path / "twistd.log").read_text())["service"] == "echo"


def test_a_logfile_that_cannot_be_opened_is_one_line(tmp_path: Path) -> None:
    missing = str(tmp_path / "no" / "such.log")
    with pytest.raises(LogFileError) as e:
        chosen({"nodaemon": True, "logfile": missing}, JSON)
    assert str(e.value) == f"{missing}: cannot open log file: No such file or directory"
    with pytest.raises(LogFileError) as e:
        chosen({"nodaemon": True, "logfile": str(tmp_path)})
    assert str(e.value) == f"{tmp_path}: cannot open log file: Is a directory"


def test_syslog_stays_twistds_minus_the_port_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    from twisted.python.syslog import SyslogObserver

    said: list[tuple[int, str]] = []
    monkeypatch.setattr(SyslogObserver, "openlog", staticmethod(lambda *a, **k: None))
    monkeypatch.setattr(SyslogObserver, "syslog", staticmethod(lambda priority, text: said.append((priority, text))))
    observer = chosen({"nodaemon": True, "syslog": True, "prefix": "socksvc"}, JSON)
    observer(_event())
    observer(_port_noise())
    assert [text for _priority, text in said] == ["[-] echo: listening on tcp 127.0.0.1:1"]


def _port_noise() -> dict[str, Any]:
    """What tcp.Port.startListening's log.msg looks like by the time it reaches an observer."""
    text = "ServiceFactory starting on 7007"
    return {
        "message": (text,),
        "system": "-",
        "isError": 0,
        "time": NOW,
        "log_time": NOW,
        "log_text": text,
        "log_format": "{log_text}",
        "log_level": LogLevel.info,
        "log_namespace": "log_legacy",
        "log_system": "-",
    }


def test_the_daemon_warns_once_when_json_cannot_be_honoured() -> None:
    with capturedLogs() as events:
        observer = _application_observer({"nodaemon": True, "syslog": True}, "json")
    assert isinstance(observer, WithoutPortNoise)  # twistd's syslog observer, text
    [warning] = [e for e in events if e.get("event") == "log_format"]
    assert warning["log_level"] == LogLevel.warn
    assert warning["option"] == "--syslog"
    assert formatEvent(warning) == 'socksvc: log_format = "json" ignored: twistd was told to log with --syslog'
    with capturedLogs() as events:
        assert _application_observer({"nodaemon": True, "logger": "a.b"}, "json") is None
    assert [e["option"] for e in events if e.get("event") == "log_format"] == ["--logger"]
    with capturedLogs() as events:
        assert _application_observer({"nodaemon": True}, "json") is not None
    assert not [e for e in events if e.get("event") == "log_format"]


def test_the_daemon_turns_a_bad_logfile_into_a_start_up_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "no" / "x.log")
    with pytest.raises(StartupError) as e:
        _application_observer({"nodaemon": True, "logfile": missing}, "json")
    assert e.value.code == f"socksvc: {missing}: cannot open log file: No such file or directory"
    with pytest.raises(StartupError):
        _application_observer({"nodaemon": True, "logfile": missing}, "text")  # text too, now socksvc opens it


# -- Twisted's own listening lines (defect: every listener logged twice) ------------


def test_the_ports_start_lines_are_dropped_by_every_observer() -> None:
    for make in (FastTextObserver, JsonObserver):
        out = io.StringIO()
        observer = make(out)
        observer(_port_noise())
        assert out.getvalue() == ""
        observer(dict(_port_noise(), log_text="(TCP Port 7007 Closed)", message=("(TCP Port 7007 Closed)",)))
        observer(dict(_port_noise(), log_namespace="x", log_text="a starting on b"))  # not legacy: kept
        assert len(out.getvalue().splitlines()) == 2


# -- a real twistd --------------------------------------------------------------

JSON_CONFIG = '[daemon]\nlog_format = "json"\n[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1"]\n'


def stdout_text_observer() -> Any:
    """A --logger factory for the test below: twistd's text observer on stdout."""
    return textFileLogObserver(sys.stdout)


def _json_lines(text: str) -> list[dict[str, Any]]:
    found = []
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            found.append(obj)
    return found


def test_twistd_logfile_gets_the_json(tmp_path: Path) -> None:
    path = tmp_path / "socksvc.log"
    with daemon(JSON_CONFIG, ready=False, twistd_args=["--logfile", str(path)]) as d:
        deadline = time.monotonic() + 20
        events: list[dict[str, Any]] = []
        while not any(e.get("event") == "ready" for e in events):
            assert time.monotonic() < deadline, f"no ready event in {path}; stdout:\n{d.output}"
            assert d.proc.poll() is None, f"twistd exited {d.proc.returncode}:\n{d.read(timeout=1)}"
            d.read(timeout=0.2)  # waits up to 0.2 s on the daemon's stdout (and drains it)
            events = _json_lines(path.read_text()) if path.exists() else []
    assert any(e.get("namespace") == "socksvc" and e.get("service") == "echo" for e in events)
    assert _json_lines(d.output) == []
    assert "services on" not in d.output


def test_twistd_with_an_unopenable_logfile_exits_1_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "socksvc.toml"
    config.write_text(JSON_CONFIG)
    missing = str(tmp_path / "no" / "socksvc.log")
    out = subprocess.run(
        [TWISTD, "--nodaemon", "--pidfile=", "--logfile", missing, "socksvc", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tempfile.gettempdir(),
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 1
    assert out.stderr == f"socksvc: {missing}: cannot open log file: No such file or directory\n"
    assert out.stdout == ""


def test_twistd_logger_keeps_its_observer_and_says_so_once() -> None:
    root = str(Path(__file__).resolve().parent.parent)
    env = {"PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    with_logger = ["--logger", "tests.test_logs.stdout_text_observer"]
    with daemon(JSON_CONFIG, twistd_args=with_logger, env=env) as d:  # text on stdout: "services on" appears
        pass
    warnings = [line for line in d.output.splitlines() if "log_format" in line]
    assert len(warnings) == 1, d.output
    assert '[socksvc#warn] socksvc: log_format = "json" ignored: twistd was told to log with --logger' in warnings[0]
    assert _json_lines(d.output) == []


def test_twistd_logs_each_listener_once(tmp_path: Path) -> None:
    sock = tmp_path / "echo.sock"
    config = (
        "[services.echo]\n"
        f'listen = ["tcp:0:interface=127.0.0.1", "udp:0:interface=127.0.0.1", "unix:{sock}"]\n'
        '[services.greeting]\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
    )
    with daemon(config) as d:
        pass
    assert "starting on" not in d.output, d.output
    assert "Starting factory" not in d.output
    listening = [line for line in d.output.splitlines() if ": listening on " in line]
    assert len(listening) == 4, d.output
    assert {k for k, _h, _p in d.listening["echo"]} == {"tcp", "udp", "unix"}


def test_no_factory_or_datagram_protocol_of_any_service_is_noisy() -> None:
    """Factory.noisy logs "Starting factory ..." and "Stopping factory ..." for every listener."""
    from socksvc.services.catalogue import types
    from tests.support import context

    for name, stype in types().items():
        ctx = context(name)
        if stype.stream is not None:
            assert stype.stream(ctx).noisy is False, name
        if stype.datagram is not None:
            assert stype.datagram(ctx).noisy is False, name
