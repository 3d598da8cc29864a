"""
Reverse: a line service; every line comes back reversed.

Lines end with LF or CRLF and the reply ends the same way. Reversal is by
user-perceived character, not by byte or code point: combining marks,
variation selectors, emoji modifiers, zero-width-joiner sequences and
regional-indicator flags stay attached to their base (so "café" written with a
combining accent comes back "éfac", not with the accent on the wrong letter).
Invalid UTF-8 is replaced with U+FFFD. A line longer than max_line gets one
error line, then the connection is closed.
"""

from __future__ import annotations

import unicodedata
from typing import Any

import attrs
from twisted.internet.protocol import ServerFactory

from socksvc.config.settings import as_int, setting
from socksvc.core import writethrough
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


def reverse_text(text: str) -> str:
    """C{text} reversed by user-perceived character."""
    return "".join(reversed(clusters(text)))


def reverse_line(line: bytes) -> bytes:
    """One received line (no line end) reversed, as UTF-8."""
    return reverse_text(line.decode("utf-8", "replace")).encode("utf-8")


@attrs.frozen
class ReverseSettings:
    """Keys of a reverse service."""

    max_line: int = setting(4096, as_int(minimum=1, maximum=1 << 20), "longest line in bytes; longer closes")


class Reverse(StreamProtocol):
    """Reverses each line."""

    context: ServiceContext[ReverseSettings, NoState]
    splitter: LineSplitter
    closing = False

    def connectionMade(self) -> None:
        self.splitter = LineSplitter(self.context.settings.max_line, strip_cr=False)
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self.closing:
            return
        replies: list[bytes] = []
        for line in self.splitter.feed(data):
            if isinstance(line, TooLong):
                self._too_long(b"".join(replies))
                return
            self.touched = True
            if line.endswith(b"\r"):
                replies.append(reverse_line(line[:-1]) + b"\r\n")
            else:
                replies.append(reverse_line(line) + b"\n")
        if self.splitter.pending > self.splitter.max_line + 1:
            self._too_long(b"".join(replies))
            return
        if replies:
            out = b"".join(replies)
            self.bytes_out += len(out)
            writethrough.write(self.transport, out)

    def _too_long(self, before: bytes) -> None:
        transport: Any = self.transport
        out = before + f"error: line longer than {self.splitter.max_line} bytes\r\n".encode()
        self.bytes_out += len(out)
        self.closing = True
        transport.unregisterProducer()
        transport.write(out)
        transport.pauseProducing()  # read nothing more from it
        transport.loseConnection()

    def readConnectionLost(self) -> None:
        """The client half-closed: answer an unterminated last line, then close."""
        if not self.closing:
            last = self.splitter.finish()
            if isinstance(last, TooLong):
                self._too_long(b"")
                return
            if last is not None:
                self.touched = True
                cr = last.endswith(b"\r")
                out = reverse_line(last[:-1] if cr else last) + (b"\r\n" if cr else b"\n")
                self.bytes_out += len(out)
                transport: Any = self.transport
                transport.write(out)
        super().readConnectionLost()


def make_factory(context: ServiceContext[ReverseSettings, NoState]) -> ServerFactory:
    return ServiceFactory(context, Reverse)


SERVICE_TYPE: ServiceType[ReverseSettings, NoState] = ServiceType(
    name="reverse",
    settings=ReverseSettings,
    doc="line reverser (by character, UTF-8 aware)",
    stream=make_factory,
)
