"""The fast text observer: the same lines as twistd's, and only where twistd would write them to stdout."""

from __future__ import annotations

import io
import string
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.logger import LogLevel, textFileLogObserver
from twisted.python.failure import Failure

from socksvc.logs import FastTextObserver, choose_text_observer, wants_default_logging


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
        (["twistd", "-n", "--logfile=-", "socksvc"], True),
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
    assert wants_default_logging(argv) is default


def test_twistd_options_decide_when_given() -> None:
    out = io.StringIO()
    assert isinstance(choose_text_observer(out, {"nodaemon": True, "logfile": None}), FastTextObserver)
    assert isinstance(choose_text_observer(out, {"nodaemon": True, "logfile": "-"}), FastTextObserver)
    assert choose_text_observer(out, {"nodaemon": False}) is None
    assert choose_text_observer(out, {"nodaemon": True, "logfile": "x.log"}) is None
    assert choose_text_observer(out, {"nodaemon": True, "syslog": True}) is None
    assert choose_text_observer(out, {"nodaemon": True, "logger": "a.b"}) is None
    assert choose_text_observer(out, None, ["twistd", "-n", "socksvc"]) is not None
    assert choose_text_observer(out, None, ["twistd", "socksvc"]) is None


def _application_observer(options: dict[str, Any] | None, log_format: str = "text") -> object:
    from twisted.application.service import Application
    from twisted.internet.testing import MemoryReactorClock
    from twisted.logger import ILogObserver

    from socksvc.config import loads
    from socksvc.daemon import DaemonService

    config = loads(f'[daemon]\nlog_format = "{log_format}"\n[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1"]\n')
    service = DaemonService(config, MemoryReactorClock(), handle_signals=False)
    service.twistd_options = options
    app = Application("socksvc")
    service.setServiceParent(app)
    return app.getComponent(ILogObserver, None)


def test_the_daemon_gives_twistd_the_fast_observer_only_for_stdout() -> None:
    assert isinstance(_application_observer({"nodaemon": True, "logfile": None}), FastTextObserver)
    assert _application_observer({"nodaemon": True, "logfile": "/tmp/somewhere.log"}) is None
    assert _application_observer({"nodaemon": True, "syslog": True}) is None
    json = _application_observer({"nodaemon": True}, "json")
    assert json is not None and not isinstance(json, FastTextObserver)
