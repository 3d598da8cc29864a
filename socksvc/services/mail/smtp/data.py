"""
The mail data of one DATA command, read as it arrives and streamed to disk.

L{DataReader} takes the bytes after the 354 reply in whatever chunks the
network gives, finds the end (a line holding only a dot, CRLF on both sides:
RFC 5321 4.1.1.4; no other sequence ends it, so the SMTP smuggling tricks
with a bare LF or CR do not), removes dot-stuffing (4.5.2), checks the text
and hands it on with LF line ends. It holds at most one partial line.

The first problem found stops the writing (the caller then drops the file at
once) and the rest is read and thrown away up to the end, where the client
gets the reply for it:

 - L{SIZE}: the message grew past C{max_message_size} (RFC 1870: 552);
 - L{LONG}: a line over 1000 octets with its CRLF (RFC 5321 4.5.3.1.6: 500);
 - L{BARE}: a CR or LF that is not part of a CRLF (RFC 5321 2.3.8; what the
   smuggling attacks rely on), L{NUL}: a NUL byte (RFC 5322 and RFC 6152 allow
   neither, in 7bit or 8bit text): 554, the message is refused.

Work per chunk is a few C-level passes over it (split, count, join), not a
Python loop per line, unless lines start with a dot.
"""

from __future__ import annotations

import email.header
from collections.abc import Callable

MAX_TEXT_LINE = 1000
"""Octets in a line of mail data, CRLF included (RFC 5321 4.5.3.1.6)."""
HEADER_CAPTURE = 16384
"""Octets of the header section kept for the announcement's Subject."""

SIZE = "size"
LONG = "long"
BARE = "bare"
NUL = "nul"
WRITE = "write"


class DataReader:
    """One message's data, from after the 354 to the terminating dot."""

    def __init__(self, sink: Callable[[bytes], None], max_size: int) -> None:
        self.sink = sink
        """Takes the text with LF line ends; an OSError from it is the L{WRITE} problem."""
        self.max_size = max_size
        self.size = 0
        """Octets of the message so far, with CRLF line ends, dot-stuffing removed."""
        self.problem: str | None = None
        self.error: OSError | None = None
        self.headers = bytearray()
        self._in_headers = True
        self._pending = b""
        self._skipping = False

    def feed(self, data: bytes) -> bytes | None:
        """Take C{data}; None while the message goes on, else what came after its end (the next commands)."""
        buf = self._pending + data if self._pending else data
        if self._skipping:
            j = buf.find(b"\r\n")
            if j < 0:
                self._pending = b"\r" if buf.endswith(b"\r") else b""
                return None
            buf = buf[j + 2 :]
            self._skipping = False
        # buf starts at the start of a line.
        if buf.startswith(b".\r\n"):
            self._pending = b""
            return buf[3:]
        end = buf.find(b"\r\n.\r\n")
        if end >= 0:
            self._pending = b""
            self._lines(buf[: end + 2])
            return buf[end + 5 :]
        k = buf.rfind(b"\r\n")
        if k >= 0:
            self._lines(buf[: k + 2])
            buf = buf[k + 2 :]
        if len(buf) - buf.endswith(b"\r") > MAX_TEXT_LINE - 2:
            self._fail(LONG)
            self._skipping = True
            buf = b"\r" if buf.endswith(b"\r") else b""
        self._pending = buf
        return None

    @property
    def pending(self) -> int:
        """Octets of a partial line held (at most a line's worth)."""
        return len(self._pending)

    def _fail(self, problem: str) -> None:
        if self.problem is None:
            self.problem = problem
            self.headers = bytearray()

    def _lines(self, block: bytes) -> None:
        """Whole lines, each ending with CRLF."""
        if self.problem is not None:
            return
        lines = block.split(b"\r\n")
        lines.pop()
        n = len(lines)
        if max(map(len, lines)) > MAX_TEXT_LINE - 2:
            self._fail(LONG)
            return
        if b"\0" in block:
            self._fail(NUL)
            return
        if block.count(b"\n") != n or block.count(b"\r") != n:
            self._fail(BARE)
            return
        size = len(block)
        if block[:1] == b"." or b"\r\n." in block:
            lines = [line[1:] if line[:1] == b"." else line for line in lines]
            size = sum(map(len, lines)) + 2 * n
        self.size += size
        if self.size > self.max_size:
            self._fail(SIZE)
            return
        text = b"\n".join(lines) + b"\n"
        if self._in_headers:
            self._capture(text)
        try:
            self.sink(text)
        except OSError as e:
            self.error = e
            self._fail(WRITE)

    def _capture(self, text: bytes) -> None:
        headers = self.headers
        headers += text[: HEADER_CAPTURE - len(headers)]
        cut = 0 if headers[:1] == b"\n" else headers.find(b"\n\n")
        if cut >= 0:
            del headers[cut + 1 :]
            self._in_headers = False
        elif len(headers) >= HEADER_CAPTURE:
            self._in_headers = False


SUBJECT_MAX = 200
"""Characters of a Subject that go into an announcement."""


def subject_of(headers: bytes) -> str:
    """
    The Subject of a header section (LF line ends), unfolded, RFC 2047
    encoded words decoded, whitespace runs (folds, CR, LF, TAB) collapsed
    into one space, at most L{SUBJECT_MAX} characters; "" if there is none.
    Control characters are left for the chat to make visible.
    """
    raw: list[bytes] = []
    found = False
    for line in headers.split(b"\n"):
        if found:
            if line[:1] in (b" ", b"\t"):
                raw.append(line)
                continue
            break
        if line[:8].lower() == b"subject:":
            found = True
            raw.append(line[8:])
    if not found:
        return ""
    value = b" ".join(raw)[: 4 * SUBJECT_MAX].decode("utf-8", "replace")
    try:
        text = str(email.header.make_header(email.header.decode_header(value)))
    except Exception:  # a malformed encoded word: show it as it came
        text = value
    text = " ".join(text.split())
    return text if len(text) <= SUBJECT_MAX else text[: SUBJECT_MAX - 1] + "\u2026"
