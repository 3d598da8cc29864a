"""
What a log line looks like: twistd's text lines, faster, and socksvc's JSON.

L{FastTextObserver} writes exactly twistd's text lines
(C{2026-11-21T11:44:17+0000 [socksvc#info] message}) but:

 - formats the time prefix once per second of log time (the time zone offset
   of the local time, as twistd prints it, cannot change within a second);
 - formats a message whose fields are all plain names (C{{peer}},
   C{{duration:.3f}}) with C{str.format_map}, and checks each format string
   only once;
 - hands everything else (tracebacks, C{{callable()}} fields, events without
   a string format, anything that fails to format) to Twisted's own
   L{formatEventAsClassicLogText}, so the output never differs.

L{JsonObserver} writes one JSON object a line in socksvc's own schema
(L{json_record}; docs/logging.md): C{time} (ISO 8601, UTC, milliseconds),
C{level}, C{namespace}, C{system} (when Twisted gives one), C{event},
C{service} (when the event is about one), C{message} (the rendered text),
C{traceback} (for a failure), then the event's own fields. Twisted's
internal keys (C{log_*}, C{__class_uuid__}, a legacy event's C{message}
tuple and friends) and fields whose names start with C{_} (they only shape
the message) are left out. The line is pure ASCII: non-ASCII and control
characters are JSON escapes, lone surrogates become U+FFFD.

Both drop the lines Twisted's ports write when they start listening
(C{ServiceFactory starting on 7007}, L{is_port_noise}): socksvc logs its own
C{listening on} line for every listener. Both hand finished lines to a sink
(L{socksvc.daemon.logsink.LineSink}), marking warnings, errors and failures
urgent so a buffered sink writes them, and everything before them, at once.
"""

from __future__ import annotations

import enum
import json
import math
import re
import string
import time
from typing import IO, Any

from twisted.logger import (
    ILogObserver,
    LogEvent,
    LogLevel,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from socksvc.daemon.logsink import LineSink, Sink

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
"""twistd's (L{twisted.logger.textFileLogObserver}'s) time format."""

MAX_FORMATS = 1024
"""Format strings remembered at most (events normally use a few dozen literal ones)."""

MAX_DEPTH = 4
"""Nesting kept in a JSON field value; deeper values are written as their text."""

RESERVED = ("time", "level", "namespace", "system", "event", "service", "message", "traceback")
"""
The JSON record's own keys. An event field named time, level, namespace,
system, message or traceback is written as C{field_NAME}.
"""

LEVELS = {
    LogLevel.debug: "debug",
    LogLevel.info: "info",
    LogLevel.warn: "warning",
    LogLevel.error: "error",
    LogLevel.critical: "critical",
}
"""C{level} in the JSON record (Python logging's and structlog's names)."""

URGENT = frozenset({LogLevel.warn, LogLevel.error, LogLevel.critical})
"""Levels a buffered sink writes at once, with everything held before them."""

_LEGACY_KEYS = frozenset({"message", "format", "isError", "system", "time", "printed", "failure", "why", "logLevel"})
"""A legacy (C{twisted.python.log}) event's own keys: Twisted's, not the event's fields."""

_CONSTANTS = (type(LogLevel.info), enum.Enum)
"""Named constants (a log level, an enum member): written by name."""

_formatter = string.Formatter()
_SURROGATE = re.compile("[\ud800-\udfff]")
_encode = json.JSONEncoder(ensure_ascii=True, allow_nan=False, check_circular=False).encode


def is_port_noise(event: LogEvent) -> bool:
    """
    True for the line a Twisted port logs when it starts listening
    (C{ServiceFactory starting on 7007}, C{echo (udp) starting on 7007},
    C{ServiceFactory starting on '/run/x.sock'}): an unconditional legacy
    C{log.msg} in C{tcp.Port.startListening}, C{udp.Port._bindSocket} and
    their UNIX kin, which no C{noisy} flag turns off. socksvc's own
    C{listening on} line says the same with the service's name.
    """
    if event.get("log_namespace") != "log_legacy":
        return False
    text = event.get("log_text")
    return type(text) is str and " starting on " in text and "\n" not in text


def _plain(fmt: str) -> bool:
    """True when C{fmt} formats the same with C{str.format_map} as with Twisted's formatter."""
    try:
        for _literal, field, _spec, _conversion in _formatter.parse(fmt):
            if field is None:
                continue
            # Twisted calls "{name()}" fields; attribute and index lookups
            # ("{a.b}", "{a[0]}") and positional fields are left to it too.
            if not field.isidentifier():
                return False
            if _spec and "{" in _spec:
                return False
    except ValueError:
        return False
    return True


class _Messages:
    """Renders an event's message, plain formats with C{str.format_map} (checked once per format)."""

    def __init__(self) -> None:
        self._plain: dict[str, bool] = {}

    def plain(self, fmt: str) -> bool:
        plain = self._plain.get(fmt)
        if plain is None:
            plain = _plain(fmt)
            if len(self._plain) >= MAX_FORMATS:
                self._plain.clear()
            self._plain[fmt] = plain
        return plain

    def fast(self, event: LogEvent) -> str:
        """The message by C{str.format_map}, or "" when Twisted must format it."""
        fmt = event.get("log_format")
        if type(fmt) is str and self.plain(fmt):
            try:
                return fmt.format_map(event)
            except Exception:
                return ""  # Twisted says what went wrong its own way
        return ""

    def render(self, event: LogEvent) -> str:
        """The message as Twisted's L{formatEvent} renders it (no traceback)."""
        return self.fast(event) or formatEvent(event)


def _sink(out: Sink | IO[str]) -> Sink:
    return out if isinstance(out, LineSink) else LineSink(out)


@implementer(ILogObserver)
class FastTextObserver:
    """
    Writes events as twistd's text observer does, faster (see the module
    doc), to C{out}: a L{LineSink}, or a stream (flushed after every line,
    as twistd does).
    """

    def __init__(self, out: Sink | IO[str], time_format: str = TIME_FORMAT) -> None:
        self.sink = _sink(out)
        self.time_format = time_format
        self._second: int | None = None
        self._prefix = ""
        self._messages = _Messages()

    def stamp(self, when: float | None) -> str:
        """The time as twistd prints it, computed once per second."""
        if when is None:
            return "-"
        second = int(when // 1)
        if second != self._second:
            self._prefix = formatTime(when, self.time_format)
            self._second = second
        return self._prefix

    def format(self, event: LogEvent) -> str | None:
        """The line for C{event} (ending in a newline), or None when there is nothing to write."""
        if "log_failure" not in event:
            text = self._messages.fast(event)
            if text:
                system = event.get("log_system")
                if system is None:
                    level = event.get("log_level")
                    system = f"{event.get('log_namespace', '-')}#{level.name if level is not None else '-'}"
                line = f"{self.stamp(event.get('log_time'))} [{system}] {text}"
                if "\n" in line:
                    line = line.replace("\n", "\n\t")
                return line + "\n"
        return formatEventAsClassicLogText(event, formatTime=self.stamp)

    def __call__(self, event: LogEvent) -> None:
        if is_port_noise(event):
            return
        text = self.format(event)
        if text:
            self.sink.emit(text, event.get("log_level") in URGENT or "log_failure" in event)


def _clean(text: str) -> str:
    """C{text} with lone surrogates (which no UTF-8 reader accepts) as U+FFFD."""
    if text.isascii():
        return text
    return _SURROGATE.sub("\ufffd", text)


def _text(value: object) -> str:
    try:
        return _clean(str(value))
    except Exception:
        try:
            return _clean(repr(value))
        except Exception:
            return f"<unprintable {type(value).__name__}>"


def json_value(value: object, depth: int = 0) -> Any:
    """
    C{value} as JSON can hold it: strings (lone surrogates replaced),
    integers, booleans and null as they are; a non-finite float as its text
    (C{"inf"}, C{"nan"}); bytes decoded as UTF-8 (invalid bytes as C{\\xNN});
    lists, tuples and sets as arrays, mappings as objects (keys as text),
    up to L{MAX_DEPTH} deep; constants (a log level) by name; anything else
    as its text (C{str}).
    """
    kind = type(value)
    if kind is str:
        return _clean(value)  # type: ignore[arg-type]
    if kind is int or kind is bool or value is None:
        return value
    if kind is float:
        return value if math.isfinite(value) else str(value)  # type: ignore[arg-type]
    if isinstance(value, str):
        return _clean(str.__str__(value))
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return json_value(float(value))
    if isinstance(value, bytes | bytearray | memoryview):
        return _clean(bytes(value).decode("utf-8", "backslashreplace"))
    if isinstance(value, _CONSTANTS):
        return value.name
    if depth < MAX_DEPTH:
        if isinstance(value, list | tuple):
            return [json_value(item, depth + 1) for item in value]
        if isinstance(value, set | frozenset):
            return sorted((json_value(item, depth + 1) for item in value), key=repr)
        if isinstance(value, dict):
            return {_text(k): json_value(v, depth + 1) for k, v in value.items()}
    return _text(value)


_UNSEEN: Any = object()


def _field_name(key: object) -> str | None:
    """The name an event field gets in the JSON record, or None when it is left out."""
    name = key if type(key) is str else _text(key)
    if name.startswith(("log_", "_")) or name in ("event", "service"):
        return None
    return "field_" + name if name in RESERVED else name


def _traceback(failure: object) -> str:
    if isinstance(failure, Failure):
        try:
            return _clean(failure.getTraceback())
        except Exception:
            pass
    return _text(failure)


@implementer(ILogObserver)
class JsonObserver:
    """Writes events to C{out} (a L{LineSink} or a stream) as socksvc's JSON lines (L{json_record})."""

    def __init__(self, out: Sink | IO[str]) -> None:
        self.sink = _sink(out)
        self._messages = _Messages()
        self._second: int | None = None
        self._prefix = ""
        self._names: dict[Any, str | None] = {}

    def stamp(self, when: object) -> str | None:
        """ISO 8601 UTC with milliseconds: C{2026-11-21T11:44:17.250Z} (the second's part computed once per second)."""
        if type(when) is not float and type(when) is not int:
            return None
        if not math.isfinite(when):  # type: ignore[arg-type]
            return None
        second = int(when // 1)  # type: ignore[operator]
        # As datetime does: the float rounded to the microsecond, then truncated to the millisecond.
        micros = round((when - second) * 1_000_000)  # type: ignore[operator]
        if micros >= 1_000_000:
            second, micros = second + 1, micros - 1_000_000
        millis = micros // 1000
        if second != self._second:
            try:
                self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            except (OverflowError, OSError, ValueError):
                return None
            self._second = second
        return f"{self._prefix}.{millis:03d}Z"

    def record(self, event: LogEvent) -> dict[str, Any]:
        """The JSON object for C{event} (see docs/logging.md)."""
        legacy = "isError" in event and "message" in event
        failure = event.get("log_failure")
        if failure is None and legacy:
            failure = event.get("failure")
        if legacy and failure is not None:
            message = _text(event.get("why") or "Unhandled Error")
        else:
            message = _clean(self._messages.render(event))
        namespace = event.get("log_namespace", "-")
        record: dict[str, Any] = {
            "time": self.stamp(event.get("log_time")),
            "level": LEVELS.get(event.get("log_level"), "info"),  # type: ignore[arg-type]
            "namespace": namespace if type(namespace) is str and namespace.isascii() else _text(namespace),
        }
        system = event.get("log_system")
        if system is not None:
            record["system"] = _text(system)
        name = event.get("event")
        record["event"] = name if type(name) is str and name.isascii() else json_value(name)
        service = event.get("service", _UNSEEN)
        if service is not _UNSEEN:
            record["service"] = service if type(service) is str and service.isascii() else json_value(service)
        record["message"] = message
        if failure is not None:
            record["traceback"] = _traceback(failure)
        names = self._names
        for key, value in event.items():
            name = names.get(key, _UNSEEN)
            if name is _UNSEEN:
                name = _field_name(key)
                if len(names) >= MAX_FORMATS:
                    names.clear()
                names[key] = name
            if name is None or (legacy and key in _LEGACY_KEYS):
                continue
            kind = type(value)
            if kind is str:
                record[name] = value if value.isascii() else _clean(value)
            elif kind is int or kind is bool or value is None:
                record[name] = value
            else:
                record[name] = json_value(value)
        return record

    def format(self, event: LogEvent) -> str:
        """The line for C{event}: one JSON object, ASCII only, ending in a newline."""
        return _encode(self.record(event)) + "\n"

    def __call__(self, event: LogEvent) -> None:
        if is_port_noise(event):
            return
        line = self.format(event)
        self.sink.emit(line, event.get("log_level") in URGENT or "log_failure" in event)
