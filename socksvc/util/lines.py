"""
Line splitting for line services (reverse, chat).

Lines end with LF; a CR right before the LF is removed (so CRLF works too,
and netcat's bare LF is the common case). Memory is bounded: a partial line
never holds more than C{max_line} (+1 for a CR) bytes; a longer line is
skipped up to its end and reported as L{TOO_LONG}, and L{LineSplitter.pending}
says how many bytes have come since the last line end so a caller can give up
on a peer that never sends one.
"""

from __future__ import annotations


class TooLong:
    """Stands in the output for a line that was longer than max_line."""

    _instance: TooLong | None = None

    def __new__(cls) -> TooLong:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "TOO_LONG"


TOO_LONG = TooLong()


class LineSplitter:
    """Feed it bytes, get complete lines."""

    __slots__ = ("_buf", "_skipped", "max_line", "strip_cr")

    def __init__(self, max_line: int, strip_cr: bool = True) -> None:
        self.max_line = max_line
        self.strip_cr = strip_cr
        self._buf = bytearray()  # the partial line: appended to in place, never copied per read
        self._skipped = 0  # bytes of an over-long line thrown away so far

    @property
    def pending(self) -> int:
        """Bytes received since the last line end (kept or skipped)."""
        return self._skipped + len(self._buf)

    def feed(self, data: bytes) -> list[bytes | TooLong]:
        """Add C{data}; return the lines it completed, in order."""
        out: list[bytes | TooLong] = []
        if self._skipped:
            end = data.find(b"\n")
            if end < 0:
                self._skipped += len(data)
                return out
            self._skipped = 0
            out.append(TOO_LONG)
            data = data[end + 1 :]
        limit = self.max_line
        if b"\n" not in data:
            # Only the partial line grows: append in place (amortised linear;
            # a one-byte-at-a-time sender costs no copy of what came before).
            self._buf += data
            if len(self._buf) > limit + 1:  # +1: the CR of a CRLF may be waiting for its LF
                self._skipped = len(self._buf)
                self._buf = bytearray()
            return out
        if self._buf:
            self._buf += data
            data = bytes(self._buf)  # once per completed line
        lines = data.split(b"\n")
        rest = lines.pop()
        for line in lines:
            cr = line.endswith(b"\r")
            if cr and self.strip_cr:
                line = line[:-1]
            # max_line counts the line without its line end (LF, or CRLF).
            if len(line) - (cr and not self.strip_cr) > limit:
                out.append(TOO_LONG)
            else:
                out.append(line)
        if len(rest) > limit + 1:
            self._skipped = len(rest)
            self._buf = bytearray()
        else:
            self._buf = bytearray(rest)
        return out

    def finish(self) -> bytes | TooLong | None:
        """
        The input ended: the unterminated last line, if there is one (a
        trailing CR removed when stripping), L{TOO_LONG} if it was over
        max_line, or None. The splitter is empty afterwards.
        """
        if self._skipped:
            self._skipped = 0
            return TOO_LONG
        rest, self._buf = bytes(self._buf), bytearray()
        if not rest:
            return None
        if rest.endswith(b"\r") and self.strip_cr:
            rest = rest[:-1]
        if len(rest) - (rest.endswith(b"\r") and not self.strip_cr) > self.max_line:
            return TOO_LONG
        return rest
