"""
socksvc's JSON log lines (docs/logging.md): a stable schema, one object a
line, pure ASCII, Twisted's internals left out.
"""

from __future__ import annotations

import enum
import io
import json
import re
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, LogPublisher
from twisted.python.failure import Failure

from socksvc.daemon.logformat import JsonObserver, json_value
from tests.support import connect, peer
from tests.support.policy import ctx_with

NOW = 1_763_700_000.25
ISO = re.compile(r"\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")


def event(**kw: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "log_namespace": "socksvc",
        "log_level": LogLevel.info,
        "log_time": NOW,
        "log_format": "{service}: hello {who}",
        "log_logger": object(),
        "log_source": None,
        "service": "echo",
        "who": "there",
        "event": "hello",
    }
    e.update(kw)
    return e


def line_of(e: dict[str, Any]) -> str:
    out = io.StringIO()
    JsonObserver(out)(e)
    return out.getvalue()


def record_of(e: dict[str, Any]) -> dict[str, Any]:
    text = line_of(e)
    assert text.endswith("\n") and text.count("\n") == 1, text
    assert text.isascii()
    assert not re.search(r"[\x00-\x1f\x7f]", text[:-1]), text
    obj = json.loads(text)
    assert isinstance(obj, dict)
    return obj


def test_the_record_has_the_documented_keys_in_order() -> None:
    record = record_of(event())
    assert record == {
        "time": datetime.fromtimestamp(NOW, UTC).strftime("%Y-%m-%dT%H:%M:%S.250Z"),
        "level": "info",
        "namespace": "socksvc",
        "event": "hello",
        "service": "echo",
        "message": "echo: hello there",
        "who": "there",
    }
    assert list(record)[:6] == ["time", "level", "namespace", "event", "service", "message"]


def test_time_is_iso8601_utc_with_milliseconds() -> None:
    whole = 1_763_700_000
    cases = [whole + 0.25, whole + 0.9994, whole + 0.9999996, whole + 0.001, whole + 1.0, 0.001, 1e9, 4e9 + 0.5]
    for when in cases:
        stamp = record_of(event(log_time=when))["time"]
        assert ISO.match(stamp), stamp
        expected = datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        assert stamp == expected
    assert record_of(event(log_time=None))["time"] is None
    assert record_of(event(log_time=float("nan")))["time"] is None


def test_levels_have_the_usual_names() -> None:
    names = {
        LogLevel.debug: "debug",
        LogLevel.info: "info",
        LogLevel.warn: "warning",
        LogLevel.error: "error",
        LogLevel.critical: "critical",
    }
    for level, name in names.items():
        assert record_of(event(log_level=level))["level"] == name
    assert record_of(event(log_level=None))["level"] == "info"


def test_event_is_always_there_service_only_when_the_event_has_one() -> None:
    bare = {"log_namespace": "twisted.internet.base", "log_level": LogLevel.info, "log_time": NOW, "log_format": "Hi"}
    record = record_of(bare)
    assert record["event"] is None and "service" not in record and "system" not in record
    assert record["message"] == "Hi"


def test_no_twisted_internals() -> None:
    record = record_of(event(log_flattened={"a": 1}, log_trace=[], __class_uuid__="x", log_system="-"))
    assert not [k for k in record if k.startswith(("log_", "__"))]
    assert record["system"] == "-"
    text = line_of(event(log_level=LogLevel.warn))
    assert "__class_uuid__" not in text and '"log_' not in text


def test_a_legacy_event_keeps_its_text_not_its_internals() -> None:
    legacy = {
        "message": ("ServiceFactory", "said hi"),
        "system": "ServiceFactory,0,127.0.0.1",
        "isError": 0,
        "time": NOW,
        "log_time": NOW,
        "log_text": "ServiceFactory said hi",
        "log_format": "{log_text}",
        "log_level": LogLevel.info,
        "log_namespace": "log_legacy",
        "log_system": "ServiceFactory,0,127.0.0.1",
        "extra": 1,
    }
    assert record_of(legacy) == {
        "time": record_of(event())["time"],
        "level": "info",
        "namespace": "log_legacy",
        "system": "ServiceFactory,0,127.0.0.1",
        "event": None,
        "message": "ServiceFactory said hi",
        "extra": 1,
    }
    boom = Failure(ZeroDivisionError("division by zero"))
    err = dict(legacy, isError=1, failure=boom, why="it broke", log_level=LogLevel.critical)
    err["log_text"] = "it broke\n" + boom.getTraceback()
    record = record_of(err)
    assert record["message"] == "it broke"
    assert "ZeroDivisionError: division by zero" in record["traceback"]
    assert "failure" not in record and "why" not in record and "isError" not in record


def test_a_failure_is_a_traceback_string() -> None:
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        failure = Failure()
    record = record_of(event(log_failure=failure, log_level=LogLevel.critical, log_format="{service}: it broke"))
    assert record["message"] == "echo: it broke"
    assert record["level"] == "critical"
    assert record["traceback"].startswith("Traceback (most recent call last):\n")
    assert "ZeroDivisionError: division by zero" in record["traceback"]
    assert list(record).index("traceback") == list(record).index("message") + 1


def test_fields_named_like_the_records_keys_are_prefixed() -> None:
    record = record_of(event(message="m", time=3, level="x", namespace="n", system="s", traceback="t"))
    assert record["message"] == "echo: hello there"
    assert (record["field_message"], record["field_time"], record["field_level"]) == ("m", 3, "x")
    assert (record["field_namespace"], record["field_system"], record["field_traceback"]) == ("n", "s", "t")


def test_underscore_fields_only_shape_the_message() -> None:
    record = record_of(event(log_format="{service}: closed{_why}", _why=" (reset)"))
    assert record["message"] == "echo: closed (reset)"
    assert "_why" not in record


class Colour(enum.Enum):
    RED = 1


class Odd:
    def __str__(self) -> str:
        return "odd thing"


class Hostile:
    def __str__(self) -> str:
        raise RuntimeError("no")

    def __repr__(self) -> str:
        raise RuntimeError("no")


class Label(str):
    pass


def test_every_field_type() -> None:
    nested: Any = [1]
    for _ in range(10):
        nested = [nested]
    fields = {
        "s": "text",
        "i": 7,
        "big": 2**70,
        "neg": -3,
        "f": 0.5,
        "t": True,
        "n": None,
        "inf": float("inf"),
        "ninf": float("-inf"),
        "nan": float("nan"),
        "b": b"bytes\xff",
        "ba": bytearray(b"ab"),
        "l": [1, "a", None],
        "tu": (1, 2),
        "se": {3, 1, 2},
        "d": {"k": [1, {"x": b"y"}], 5: "int key"},
        "level": LogLevel.warn,
        "colour": Colour.RED,
        "obj": Odd(),
        "hostile": Hostile(),
        "label": Label("sub"),
        "deep": nested,
    }
    record = record_of(event(**fields))
    assert (record["s"], record["i"], record["big"], record["neg"], record["f"]) == ("text", 7, 2**70, -3, 0.5)
    assert (record["t"], record["n"]) == (True, None)
    assert (record["inf"], record["ninf"], record["nan"]) == ("inf", "-inf", "nan")
    assert (record["b"], record["ba"]) == ("bytes\\xff", "ab")
    assert (record["l"], record["tu"], record["se"]) == ([1, "a", None], [1, 2], [1, 2, 3])
    assert record["d"] == {"k": [1, {"x": "y"}], "5": "int key"}
    assert record["field_level"] == "warn"
    assert (record["colour"], record["obj"], record["label"]) == ("RED", "odd thing", "sub")
    assert record["hostile"] == "<unprintable Hostile>"
    depth, value = 0, record["deep"]
    while isinstance(value, list):
        depth, value = depth + 1, value[0]
    assert depth == 4 and isinstance(value, str)  # four levels kept, the rest as text


def test_non_ascii_and_control_characters_are_escaped() -> None:
    tricky = "héllo ☃ 😀 \x00\x07\x1b[31m\x7f\x9b\u2028\u202e\t\r\nend"
    text = line_of(event(who=tricky, nick=tricky))
    assert text.isascii() and text.count("\n") == 1
    assert "\\u00e9" in text and "\\ud83d\\ude00" in text and "\\u001b" in text and "\\u007f" in text
    assert "\\u2028" in text and "\\u202e" in text and "\\n" in text and "\\r" in text
    record = json.loads(text)
    assert record["nick"] == tricky
    assert record["message"] == "echo: hello " + tricky


def test_lone_surrogates_become_replacement_characters() -> None:
    record = record_of(event(name="bad\udcff\ud800name", who="x\udc80"))
    assert record["name"] == "bad\ufffd\ufffdname"
    assert record["message"] == "echo: hello x\ufffd"
    # What a strict reader gets: valid UTF-8 after decoding the escapes.
    json.dumps(record, ensure_ascii=False).encode("utf-8")


def test_an_unformattable_message_still_gives_one_line() -> None:
    record = record_of(event(log_format="{missing} and {who}"))
    assert "Unable to format event" in record["message"]
    record = record_of(event(log_format=None))
    assert record["message"] == ""


_KEYS = st.text(min_size=1, max_size=8).filter(lambda k: not k.startswith(("log_", "_")) and k not in ("event",))
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_KEYS, _VALUES, max_size=6), st.text(), st.floats(min_value=0, max_value=4e9))
def test_any_event_is_one_ascii_json_object_on_one_line(fields: dict[str, Any], text: str, when: float) -> None:
    e = event(log_format="{who}", who=text, log_time=when)
    e.update(fields)
    record = record_of(e)
    for key in fields:
        name = key if key not in ("time", "level", "namespace", "system", "message", "traceback") else f"field_{key}"
        if key in ("service", "who"):
            continue
        assert record[name] == json.loads(json.dumps(json_value(fields[key]), allow_nan=False))
    assert ISO.match(record["time"])


# -- the daemon's own events, end to end ----------------------------------------


def test_a_close_event_as_a_shipper_sees_it() -> None:
    clock = Clock()
    clock.advance(NOW)
    ctx = ctx_with(clock=clock)
    out = io.StringIO()
    publisher = LogPublisher(JsonObserver(out))
    from socksvc.core import policy

    original = policy.log
    policy.log = Logger(namespace="socksvc", observer=publisher)
    try:
        proto, _transport = connect(ctx, peer("192.0.2.7", 50412))
        proto.dataReceived(b"hello")
        clock.advance(1.5)
        proto.connectionLost(Failure(ConnectionResetError("Connection reset by peer")))
    finally:
        policy.log = original
    [line] = out.getvalue().splitlines()
    record = json.loads(line)
    del record["time"]
    assert record == {
        "level": "info",
        "namespace": "socksvc",
        "event": "close",
        "service": "echo",
        "message": "echo: 192.0.2.7:50412 closed after 1.500s, 5 bytes in, 5 bytes out (Connection reset by peer)",
        "peer": "192.0.2.7:50412",
        "source": "192.0.2.7",
        "duration": 1.5,
        "bytes_in": 5,
        "bytes_out": 5,
        "reason": "Connection reset by peer",
    }
