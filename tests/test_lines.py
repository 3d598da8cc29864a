"""LineSplitter: LF and CRLF, any chunking, bounded memory, over-long lines."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socksvc.util.lines import TOO_LONG, LineSplitter, TooLong


def expected(stream: bytes, max_line: int, strip_cr: bool) -> tuple[list[bytes | TooLong], int]:
    """The lines a whole stream should give, and the bytes left pending: a plain model."""
    *lines, rest = stream.split(b"\n")
    out: list[bytes | TooLong] = []
    for line in lines:
        body = line[:-1] if line.endswith(b"\r") else line
        if len(body) > max_line:
            out.append(TOO_LONG)
        else:
            out.append(body if strip_cr else line)
    return out, len(rest)


def feed_chunks(splitter: LineSplitter, stream: bytes, cuts: list[int]) -> list[bytes | TooLong]:
    out: list[bytes | TooLong] = []
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        out += splitter.feed(stream[start:cut])
        start = max(start, cut)
        # Memory stays bounded whatever comes in.
        assert len(splitter._buf) <= splitter.max_line + 1
    return out


streams = st.lists(st.binary(max_size=12) | st.sampled_from([b"\n", b"\r\n", b"\r", b"x" * 20]), max_size=12).map(
    b"".join
)


@given(
    stream=streams,
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=10),
    max_line=st.integers(min_value=1, max_value=15),
    strip_cr=st.booleans(),
)
def test_any_chunking_gives_the_same_lines(stream: bytes, cuts: list[int], max_line: int, strip_cr: bool) -> None:
    cuts = [c for c in cuts if c <= len(stream)]
    splitter = LineSplitter(max_line, strip_cr=strip_cr)
    lines, pending = expected(stream, max_line, strip_cr)
    assert feed_chunks(splitter, stream, cuts) == lines
    assert splitter.pending == pending


@given(stream=streams, max_line=st.integers(min_value=1, max_value=15))
def test_byte_at_a_time_equals_all_at_once(stream: bytes, max_line: int) -> None:
    one = LineSplitter(max_line)
    many = LineSplitter(max_line)
    assert one.feed(stream) == [line for i in range(len(stream)) for line in many.feed(stream[i : i + 1])]
    assert one.pending == many.pending


def test_lf_and_crlf() -> None:
    splitter = LineSplitter(100)
    assert splitter.feed(b"one\ntwo\r\nthree") == [b"one", b"two"]
    assert splitter.pending == 5
    assert splitter.feed(b"\r") == []
    assert splitter.feed(b"\n") == [b"three"]
    assert splitter.pending == 0
    # Only the CR right before the LF goes.
    assert splitter.feed(b"a\rb\r\r\n") == [b"a\rb\r"]
    assert splitter.feed(b"\n\r\n") == [b"", b""]


def test_keeping_cr() -> None:
    splitter = LineSplitter(3, strip_cr=False)
    assert splitter.feed(b"abc\r\nabc\n") == [b"abc\r", b"abc"]


@pytest.mark.parametrize("strip_cr", [True, False])
def test_max_line_counts_the_line_without_its_end(strip_cr: bool) -> None:
    splitter = LineSplitter(3, strip_cr=strip_cr)
    assert splitter.feed(b"abc\n") == [b"abc"]
    assert splitter.feed(b"abcd\n") == [TOO_LONG]
    assert splitter.feed(b"abc\r\n") == [b"abc" if strip_cr else b"abc\r"]
    assert splitter.feed(b"abcd\r\n") == [TOO_LONG]
    assert splitter.feed(b"ab") == []
    assert splitter.feed(b"cd") == []
    assert splitter.feed(b"\n") == [TOO_LONG]


def test_an_endless_line_is_counted_not_kept() -> None:
    splitter = LineSplitter(10)
    for _ in range(1000):
        assert splitter.feed(b"x" * 1000) == []
        assert len(splitter._buf) <= 11
    assert splitter.pending == 1_000_000
    # Its end is reported once, and the next line is fine.
    assert splitter.feed(b"tail\nnext\n") == [TOO_LONG, b"next"]
    assert splitter.pending == 0


def test_pending_counts_since_the_last_line_end() -> None:
    splitter = LineSplitter(5)
    assert splitter.pending == 0
    splitter.feed(b"ab")
    assert splitter.pending == 2
    splitter.feed(b"c\nde")
    assert splitter.pending == 2
    splitter.feed(b"fghij")
    assert splitter.pending == 7


def test_too_long_is_one_object() -> None:
    assert TooLong() is TOO_LONG
    assert repr(TOO_LONG) == "TOO_LONG"


@given(st.binary(max_size=300), st.integers(1, 40), st.booleans())
def test_finish_gives_the_unterminated_rest(data: bytes, max_line: int, strip_cr: bool) -> None:
    """feed + finish is the same as feeding the data with a line end added."""
    a = LineSplitter(max_line, strip_cr=strip_cr)
    lines_a = a.feed(data)
    last = a.finish()
    if last is not None:
        lines_a.append(last)
    assert a.pending == 0
    b = LineSplitter(max_line, strip_cr=strip_cr)
    lines_b = b.feed(data + b"\n") if data and not data.endswith(b"\n") else b.feed(data)
    assert lines_a == lines_b


def test_a_long_line_one_byte_at_a_time_grows_one_buffer_in_place() -> None:
    """
    200k one-byte reads of one unfinished line: the partial line is appended
    to in place, not copied whole per read (which made this quadratic). No
    timing is asserted; the structural check is that the buffer object stays
    the same, and the suite's runtime covers the rest.
    """
    splitter = LineSplitter(1 << 20, strip_cr=False)
    splitter.feed(b"x")
    buf = splitter._buf
    for _ in range(200_000 - 1):
        splitter.feed(b"x")
    assert splitter._buf is buf
    assert splitter.pending == 200_000
    assert splitter.feed(b"\r\n") == [b"x" * 200_000 + b"\r"]
    assert splitter.pending == 0
    assert splitter.feed(b"y") == [] and splitter.finish() == b"y"
