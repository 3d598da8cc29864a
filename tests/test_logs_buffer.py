"""
The buffered log writer ([daemon] log_buffer, log_flush), on a task.Clock:
lines are held until the buffer fills, the timer fires, an urgent line
comes (written after everything before it), or the reactor shuts down.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from socksvc.config.loader import ConfigError
from socksvc.config.schema import DaemonSettings
from socksvc.daemon.logformat import FastTextObserver, JsonObserver
from socksvc.daemon.logs import attach, observer_for
from socksvc.daemon.logsink import LineSink
from socksvc.services.catalogue import loads


class Stream:
    """A stream that records each write and flush."""

    def __init__(self) -> None:
        self.writes: list[str] = []
        self.flushes = 0

    def write(self, text: str) -> None:
        self.writes.append(text)

    def flush(self) -> None:
        self.flushes += 1

    @property
    def text(self) -> str:
        return "".join(self.writes)


def test_unbuffered_every_line_is_written_and_flushed_at_once() -> None:
    out = Stream()
    sink = LineSink(out)
    sink.emit("a\n")
    sink.emit("b\n")
    assert out.writes == ["a\n", "b\n"] and out.flushes == 2
    assert LineSink(out, buffer=4096).limit == 0  # no clock, no timer: no buffering


def test_lines_wait_until_the_buffer_fills() -> None:
    out, clock = Stream(), Clock()
    sink = LineSink(out, buffer=10, flush_after=1.0, clock=clock)
    sink.emit("abcd\n")
    assert out.writes == [] and sink.held == 5
    sink.emit("efgh\n")  # 10 characters: full
    assert out.writes == ["abcd\nefgh\n"] and out.flushes == 1
    assert sink.held == 0


def test_no_line_waits_longer_than_log_flush() -> None:
    out, clock = Stream(), Clock()
    sink = LineSink(out, buffer=1 << 20, flush_after=0.5, clock=clock)
    sink.emit("one\n")
    clock.advance(0.3)
    sink.emit("two\n")
    clock.advance(0.19)
    assert out.writes == []
    clock.advance(0.01)
    assert out.writes == ["one\ntwo\n"]
    assert clock.getDelayedCalls() == []  # idle: no timer
    sink.emit("three\n")
    [call] = clock.getDelayedCalls()
    assert call.getTime() == pytest.approx(clock.seconds() + 0.5)
    clock.advance(0.5)
    assert out.writes == ["one\ntwo\n", "three\n"]


def test_an_urgent_line_goes_out_at_once_after_what_came_before() -> None:
    out, clock = Stream(), Clock()
    sink = LineSink(out, buffer=1 << 20, flush_after=60, clock=clock)
    sink.emit("first\n")
    sink.emit("second\n")
    sink.emit("crash!\n", urgent=True)
    assert out.writes == ["first\nsecond\ncrash!\n"]
    clock.advance(60)  # the timer finds nothing to do
    assert out.writes == ["first\nsecond\ncrash!\n"]


@pytest.mark.parametrize("make", [FastTextObserver, JsonObserver])
def test_observers_mark_warnings_errors_and_failures_urgent(make: Any) -> None:
    out, clock = Stream(), Clock()
    observer = make(LineSink(out, buffer=1 << 20, flush_after=60, clock=clock))

    def event(n: int, **kw: Any) -> dict[str, Any]:
        e = {"log_namespace": "socksvc", "log_level": LogLevel.info, "log_time": 1e9, "log_format": f"line {n}"}
        e.update(kw)
        return e

    observer(event(1))
    observer(event(2, log_level=LogLevel.debug))
    assert out.writes == []
    observer(event(3, log_level=LogLevel.warn))
    assert len(out.writes) == 1 and [n for n in (1, 2, 3) if f"line {n}" in out.writes[0]] == [1, 2, 3]
    for n, kw in enumerate([{"log_level": LogLevel.error}, {"log_level": LogLevel.critical}], start=4):
        observer(event(n, **kw))
        assert f"line {n}" in out.writes[-1]
    observer(event(6, log_failure=Failure(ValueError("x"))))
    assert "line 6" in out.writes[-1]
    assert out.text.index("line 1") < out.text.index("line 3") < out.text.index("line 6")


def test_stopping_writes_what_is_held_and_buffers_no_more() -> None:
    out, clock = Stream(), Clock()
    sink = LineSink(out, buffer=1 << 20, flush_after=60, clock=clock)
    sink.emit("held\n")
    sink.stop_buffering()
    assert out.writes == ["held\n"]
    assert clock.getDelayedCalls() == []
    sink.emit("Main loop terminated.\n")
    assert out.writes == ["held\n", "Main loop terminated.\n"]


def test_the_reactor_shutting_down_flushes() -> None:
    reactor = MemoryReactorClock()
    out = Stream()
    sink = LineSink(out, buffer=1 << 20, flush_after=60, clock=reactor)
    attach(sink, reactor, signals=False)
    sink.emit("last words\n")
    assert list(reactor.triggers) == ["after"] and list(reactor.triggers["after"]) == ["shutdown"]
    [(trigger, args, kw)] = reactor.triggers["after"]["shutdown"]
    trigger(*args, **kw)
    assert out.writes == ["last words\n"]


def test_flush_at_exit_never_raises() -> None:
    out, clock = io.StringIO(), Clock()
    sink = LineSink(out, buffer=100, flush_after=1, clock=clock)
    sink.emit("x\n")
    out.close()
    sink.flush_quietly()


def test_the_daemon_settings_reach_the_sink() -> None:
    reactor = MemoryReactorClock()
    out = Stream()
    daemon = DaemonSettings(log_buffer=65536, log_flush=0.25)
    observer: Any = observer_for(daemon, {"nodaemon": True}, reactor, signals=False, out=out, argv=["twistd"])
    assert (observer.sink.limit, observer.sink.flush_after, observer.sink.clock) == (65536, 0.25, reactor)
    observer({"log_namespace": "socksvc", "log_level": LogLevel.info, "log_time": 1e9, "log_format": "hi"})
    assert out.writes == []
    reactor.advance(0.25)
    assert out.text.endswith("[socksvc#info] hi\n")
    unbuffered: Any = observer_for(DaemonSettings(), {"nodaemon": True}, reactor, signals=False, out=out)
    assert unbuffered.sink.limit == 0


# -- config ------------------------------------------------------------------------

BASE = '[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1"]\n'


def test_the_daemon_keys_load() -> None:
    daemon = loads('[daemon]\nlog_buffer = 65536\nlog_flush = 0.5\nlog_mode = "0640"\n' + BASE).daemon
    assert (daemon.log_buffer, daemon.log_flush, daemon.log_mode) == (65536, 0.5, "0640")
    assert loads("[daemon]\nlog_mode = 0o600\n" + BASE).daemon.log_mode == "0600"
    assert loads('[daemon]\nlog_mode = "644"\n' + BASE).daemon.log_mode == "0644"
    default = loads(BASE).daemon
    assert (default.log_buffer, default.log_flush, default.log_mode) == (0, 1.0, "0644")


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("log_buffer = -1", "must be at least 0"),
        ("log_buffer = 16777217", "must be at most 16777216"),
        ('log_buffer = "64k"', "expected an integer"),
        ("log_flush = 0", "must be at least 0.01"),
        ("log_flush = 61", "must be at most 60"),
        ('log_mode = "0755"', "no execute"),
        ('log_mode = "4644"', "no execute or special bits"),
        ('log_mode = "0444"', "owner-writable"),
        ('log_mode = "rw-r--r--"', "octal digits"),
        ('log_mode = "0o"', "octal digits"),
        ('log_mode = "06440"', "octal digits"),
        ("log_mode = 0o1777", "special bits"),
        ("log_mode = true", "got a boolean"),
        ("log_mode = 6.4", "got a number"),
    ],
)
def test_bad_daemon_values_are_one_line(line: str, error: str) -> None:
    with pytest.raises(ConfigError) as e:
        loads("[daemon]\n" + line + "\n" + BASE)
    assert error in str(e.value)
    assert "\n" not in str(e.value)
