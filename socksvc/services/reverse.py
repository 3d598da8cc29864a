"""
Reverse: a line service; every line comes back reversed.

Lines end with LF or CRLF and the reply ends the same way. Reversal is by
user-perceived character, not by byte or code point: combining marks,
variation selectors, emoji modifiers, zero-width-joiner sequences and
regional-indicator flags stay attached to their base (so "café" written with a
combining accent comes back "éfac", not with the accent on the wrong letter).
Invalid UTF-8 is replaced with U+FFFD. A line longer than max_line gets one
error line, then the connection is closed.

Input is paced by L{LineInput}: each connection's lines and bytes are
charged to its budget (the policy's input_* keys), a connection over it is
read more slowly, then disconnected with C{error: sending too fast}; a line
left unfinished for line_timeout gets C{error: line not finished within Ns}.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import attrs
from twisted.internet.protocol import ServerFactory
from twisted.python.failure import Failure

from socksvc.config.settings import as_int, setting
from socksvc.core import writethrough
from socksvc.core.lineinput import LineInput
from socksvc.core.protocols import ServiceFactory, StreamProtocol
from socksvc.core.service import NoState, ServiceContext, ServiceType
from socksvc.util.lines import LineSplitter, TooLong

ZWJ = "\u200d"


def _extends(ch: str) -> bool:
    """Does C{ch} belong to the character before it?"""
    cp = ord(ch)
    return (
        unicodedata.category(ch) in ("Mn", "Mc", "Me")
        or 0xFE00 <= cp <= 0xFE0F  # variation selectors
        or 0xE0100 <= cp <= 0xE01EF
        or 0x1F3FB <= cp <= 0x1F3FF  # emoji skin tones
        or 0xE0020 <= cp <= 0xE007F  # emoji tag sequences
    )


def _is_regional(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF


def clusters(text: str) -> list[str]:
    """Split text into user-perceived characters (a practical approximation of UAX #29)."""
    # Where each cluster starts; slicing once at the end keeps a long run of
    # combining marks linear (growing a string per mark is quadratic).
    starts: list[int] = []
    joined = False  # the previous cluster ended with a ZWJ
    for i, ch in enumerate(text):
        if starts and (joined or _extends(ch) or ch == ZWJ):
            pass
        elif starts and _is_regional(ch) and i - starts[-1] == 1 and _is_regional(text[starts[-1]]):
            pass  # the second half of a flag
        else:
            starts.append(i)
        joined = ch == ZWJ
    if not starts:
        return []
    ends = [*starts[1:], len(text)]
    return [text[a:b] for a, b in zip(starts, ends, strict=True)]


def _ranges(points: list[int]) -> str:
    """A regex character class body for these code points (sorted), as ranges."""
    out: list[str] = []
    start = prev = points[0]
    for cp in [*points[1:], -1]:
        if cp == prev + 1:
            prev = cp
            continue
        out.append(re.escape(chr(start)) + ("" if prev == start else "-" + re.escape(chr(prev))))
        start = prev = cp
    return "".join(out)


# Every code point _extends() accepts lives in planes 0, 1 and 14 (marks, variation selectors,
# skin tones, tags; tests/test_reverse.py checks the whole code space).
_EXTENDING = [cp for r in (range(0x20000), range(0xE0000, 0xE1000)) for cp in r if _extends(chr(cp))]
_RI = "[\U0001f1e6-\U0001f1ff]"
_BMP = _ranges([cp for cp in _EXTENDING if cp < 0x10000])
_ASTRAL = _ranges([cp for cp in _EXTENDING if cp >= 0x10000])
_PLANES = "\U00010000-\U0010ffff"
# The BMP class is a bitmap to the regex engine; the astral one is a list of ranges, so it is
# only tried on astral characters.
_EXT = f"[{_BMP}]|(?=[{_PLANES}])[{_ASTRAL}]"
_CLUSTER = re.compile(f"(?:{_RI}{_RI}|{ZWJ}+.?|.)(?:{_EXT}|{ZWJ}+.?)*", re.DOTALL)
"""L{clusters} as one regex: a start (a flag's two halves, a run of ZWJs and what they join, or any
character), then extending characters and ZWJ-joined ones. The same clusters, at C speed."""
_SPECIAL = re.compile(f"[{_BMP}{ZWJ}{_PLANES}]")
"""What can make a cluster of more than one code point (any astral character is let through): without
it, each code point is a cluster."""


def reverse_text(text: str) -> str:
    """C{text} reversed by user-perceived character (L{clusters}, by L{_CLUSTER})."""
    if _SPECIAL.search(text) is None:
        return text[::-1]
    return "".join(reversed(_CLUSTER.findall(text)))


def reverse_line(line: bytes) -> bytes:
    """One received line (no line end) reversed, as UTF-8."""
    if line.isascii():
        return line[::-1]  # no ASCII character extends another: byte order is character order
    return reverse_text(line.decode("utf-8", "replace")).encode("utf-8")


@attrs.frozen
class ReverseSettings:
    """Keys of a reverse service."""

    max_line: int = setting(4096, as_int(minimum=1, maximum=1 << 20), "longest line in bytes; longer closes")


class Reverse(StreamProtocol):
    """Reverses each line."""

    context: ServiceContext[ReverseSettings, NoState]
    input: LineInput
    self_producer = False  # the LineInput is the transport's producer: output and budget both hold reading
    closing = False

    @property
    def splitter(self) -> LineSplitter:
        return self.input.splitter

    def connectionMade(self) -> None:
        splitter = LineSplitter(self.context.settings.max_line, strip_cr=False)
        self.input = LineInput(self, splitter, self.context.reactor, self.policy.settings)
        super().connectionMade()
        transport: Any = self.transport
        transport.registerProducer(self.input, True)

    def dataReceived(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self.closing:
            return
        self.input.received(data, self.policy.settings)
        if not self.closing and self.splitter.pending > self.splitter.max_line + 1:
            self._refuse(f"line longer than {self.splitter.max_line} bytes")

    def lines_received(self, lines: list[bytes | TooLong]) -> None:
        """A slice of lines from the L{LineInput}: one write of their replies."""
        replies: list[bytes] = []
        for line in lines:
            if isinstance(line, TooLong):
                self._refuse(f"line longer than {self.splitter.max_line} bytes", b"".join(replies))
                return
            self.touched = True
            if line.endswith(b"\r"):
                replies.append(reverse_line(line[:-1]) + b"\r\n")
            else:
                replies.append(reverse_line(line) + b"\n")
        if replies:
            out = b"".join(replies)
            self.bytes_out += len(out)
            writethrough.write(self.transport, out)

    def input_refused(self, reason: str) -> None:
        """Over budget for too long, or a line not finished in time: say so and close."""
        self._refuse(reason)

    def _refuse(self, reason: str, before: bytes = b"") -> None:
        """One error line (after C{before}, replies owed), then close; nothing more is read."""
        if self.closing:
            return
        transport: Any = self.transport
        out = before + f"error: {reason}\r\n".encode()
        self.bytes_out += len(out)
        self.closing = True
        self.close_reason = reason
        self.input.stop()
        transport.unregisterProducer()
        transport.write(out)
        transport.pauseProducing()  # read nothing more from it
        transport.loseConnection()

    def readConnectionLost(self) -> None:
        """The client half-closed: answer the lines still waiting and an unterminated last one, then close."""
        if not self.closing:
            waiting = self.splitter.take()
            if waiting:
                self.lines_received(waiting)
        if not self.closing:
            self.input.stop()
            last = self.splitter.finish()
            if isinstance(last, TooLong):
                self._refuse(f"line longer than {self.splitter.max_line} bytes")
                return
            if last is not None:
                self.touched = True
                cr = last.endswith(b"\r")
                out = reverse_line(last[:-1] if cr else last) + (b"\r\n" if cr else b"\n")
                self.bytes_out += len(out)
                transport: Any = self.transport
                transport.write(out)
            transport = self.transport
            transport.unregisterProducer()
        super().readConnectionLost()

    def connectionLost(self, reason: Failure = Failure(Exception("connection lost"))) -> None:
        input_ = getattr(self, "input", None)
        if input_ is not None:
            input_.stop()
        super().connectionLost(reason)


def make_factory(context: ServiceContext[ReverseSettings, NoState]) -> ServerFactory:
    return ServiceFactory(context, Reverse)


SERVICE_TYPE: ServiceType[ReverseSettings, NoState] = ServiceType(
    name="reverse",
    settings=ReverseSettings,
    doc="line reverser (by character, UTF-8 aware)",
    stream=make_factory,
)
