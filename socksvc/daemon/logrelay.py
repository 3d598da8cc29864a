"""
One log stream for the supervisor and its workers.

A worker writes no log of its own: its observer (L{Relay}) sends every
event to the supervisor over the control channel, with the C{worker} field
(the worker's slot, 0 to N-1), so every destination and format twistd and
C{[daemon]} choose (stdout, a log file reopened on SIGUSR1, syslog, JSON or
text) works as in one process. In text lines the worker shows in the
system part: C{[socksvc#info w1]}. Two ways, the supervisor chooses:

 - when it writes socksvc's own lines (text or JSON, to stdout or a log
   file), the worker formats each line itself, exactly so, and sends the
   finished line (L{socksvc.daemon.control.LogLine}), which the supervisor
   writes as it is: formatting costs the worker what it would cost one
   process, and the supervisor only writes;
 - otherwise (syslog, an admin's C{--logger}, C{twist}), the worker sends
   the event as one JSON object (L{flatten}: the format, level, namespace,
   time and the event's fields as JSON can hold them; a failure as its
   traceback text; L{socksvc.daemon.control.Log}), and the supervisor
   rebuilds it (L{rebuild}) for its own observer.

What the supervisor says once for the whole daemon (a listener's
C{listening on}, a reload's summary lines) it does not repeat for every
worker: L{echoed} drops those worker events. Before its control channel is
up (and if it breaks), a worker writes its lines to its standard error,
which the supervisor reads and logs too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from twisted.logger import ILogObserver, LogEvent, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from socksvc.daemon.control import PAGE
from socksvc.daemon.logformat import FastTextObserver, JsonObserver, is_port_noise, json_value
from socksvc.daemon.logsink import LineSink

_KEPT = ("log_format", "log_namespace", "log_time", "log_system", "log_text")
"""Twisted's own keys a relayed event keeps (besides the level and failure)."""

ECHOED = frozenset({"listen", "reloaded", "ready", "stopping"})
"""Worker events the supervisor says itself, once."""


class RemoteFailure:
    """A worker's failure, as its traceback text (what Twisted's and socksvc's formatters read of one)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def getTraceback(self, *args: Any, **kwargs: Any) -> str:
        return self.text

    def getErrorMessage(self) -> str:
        lines = self.text.strip().splitlines()
        return lines[-1] if lines else ""

    def __str__(self) -> str:
        return self.text


def flatten(event: LogEvent) -> dict[str, Any]:
    """An event as a JSON-ready dict (see the module doc)."""
    out: dict[str, Any] = {}
    for key, value in event.items():
        if type(key) is not str:
            continue
        if key.startswith("log_"):
            if key in _KEPT and value is not None:
                out[key] = json_value(value)
            continue
        if isinstance(value, Failure):
            continue  # a legacy event's failure: as log_failure below
        out[key] = json_value(value)
    level = event.get("log_level")
    out["log_level"] = level.name if isinstance(level, type(LogLevel.info)) else "info"
    failure = event.get("log_failure", event.get("failure"))
    if failure is not None:
        try:
            out["log_failure"] = failure.getTraceback() if isinstance(failure, Failure) else str(failure)
        except Exception:
            out["log_failure"] = repr(failure)
    return out


def encode(event: LogEvent) -> str:
    """L{flatten}ed and encoded, cut to fit one AMP value (a huge field or traceback loses its tail)."""
    record = flatten(event)
    text = json.dumps(record, separators=(",", ":"))
    if len(text.encode()) <= PAGE:
        return text
    for key, value in sorted(record.items(), key=lambda kv: -len(json.dumps(kv[1]))):
        if isinstance(value, str) and len(value) > 200:
            record[key] = value[:200] + "... (cut)"
        elif key not in ("log_format", "log_level", "log_namespace", "log_time") and not isinstance(value, int | float):
            record[key] = "(cut)"
        text = json.dumps(record, separators=(",", ":"))
        if len(text.encode()) <= PAGE:
            return text
    return json.dumps({"log_level": record["log_level"], "log_format": "(a log event too big to relay)"})


class _LineSender(LineSink):
    """A sink whose lines go over the control channel (with their urgency)."""

    def __init__(self, send: Callable[[str, bool], None]) -> None:
        super().__init__(None)
        self.send = send

    def emit(self, line: str, urgent: bool = False) -> None:
        if len(line) > PAGE:
            line = line[: PAGE - 12] + "... (cut)\n"
        self.send(line, urgent)


@implementer(ILogObserver)
class Relay:
    """
    A worker's log observer: each event to C{send} (the control channel) as
    JSON, or once L{lines} was called, formatted here into the supervisor's
    format and sent as a finished line; to C{fallback} (stderr) while there
    is no channel.
    """

    def __init__(self, fallback: Callable[[str], None]) -> None:
        self.send: Callable[[str], None] | None = None
        self.fallback = fallback
        self._format: Callable[[LogEvent], None] | None = None
        self._worker = 0
        self._text = True

    def lines(self, log_format: str, worker: int, send: Callable[[str, bool], None]) -> None:
        """Format events here, as C{log_format} ("text" or "json"), with the worker's number, and send the lines."""
        sink = _LineSender(send)
        self._text = log_format != "json"
        self._format = FastTextObserver(sink) if self._text else JsonObserver(sink)
        self._worker = worker

    def __call__(self, event: LogEvent) -> None:
        if is_port_noise(event):
            return
        formatter = self._format
        if formatter is not None:
            if echoed(event):
                return
            event = dict(event)
            event["worker"] = self._worker
            if self._text:
                level = event.get("log_level")
                name = level.name if isinstance(level, type(LogLevel.info)) else "-"
                event["log_system"] = f"{event.get('log_namespace', '-')}#{name} w{self._worker}"
            try:
                formatter(event)
                return
            except Exception:
                self._format = None  # the channel is gone: events, then stderr
        try:
            text = encode(event)
        except Exception as e:  # never let a log line break the worker
            text = json.dumps({"log_level": "error", "log_format": f"(a log event could not be relayed: {e!r})"})
        send = self.send
        if send is not None:
            try:
                send(text)
                return
            except Exception:
                self.send = None
        self.fallback(text + "\n")


_PORT_CLOSED = re.compile(r"\((TCP|UDP|UNIX|TLS)\w* Port .* Closed\)")


def echoed(record: Mapping[str, Any]) -> bool:
    """
    True for a worker event the supervisor logs itself (it would be one line
    per worker otherwise): a listener's start and close, a reload's info lines.
    """
    name = record.get("event")
    if name in ECHOED:
        return True
    if name == "reload" and record.get("log_level") in ("info", LogLevel.info):
        return True
    text = record.get("log_text")
    return record.get("log_namespace") == "log_legacy" and isinstance(text, str) and bool(_PORT_CLOSED.fullmatch(text))


def rebuild(text: str, worker: int, text_format: bool) -> LogEvent | None:
    """
    A relayed event back as a log event, with C{worker}; None when it is one
    the supervisor says itself. In text logs the worker is shown in the
    system part. Garbage (a worker's stray output) becomes a plain line.
    """
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        record = {"log_format": "{line}", "line": text.rstrip("\n"), "log_level": "warn", "event": "worker_output"}
    if echoed(record):
        return None
    event: dict[str, Any] = dict(record)
    level = LogLevel.levelWithName(str(record.get("log_level", "info"))) if _known(record) else LogLevel.info
    event["log_level"] = level
    namespace = record.get("log_namespace")
    if not isinstance(namespace, str):
        namespace = event["log_namespace"] = "socksvc"
    if not isinstance(record.get("log_time"), int | float):
        event.pop("log_time", None)
    if "log_failure" in record:
        event["log_failure"] = RemoteFailure(str(record["log_failure"]))
    event["worker"] = worker
    if text_format:
        event["log_system"] = f"{namespace}#{level.name} w{worker}"
    return event


def _known(record: dict[str, Any]) -> bool:
    try:
        LogLevel.levelWithName(str(record.get("log_level")))
    except Exception:
        return False
    return True
