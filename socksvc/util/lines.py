"""
Line splitting for line services (reverse, chat).

Lines end with LF; a CR right before the LF is removed (so CRLF works too,
and netcat's bare LF is the common case). Memory is bounded: a partial line
never holds more than C{max_line} (+1 for a CR) bytes; a longer line is
skipped up to its end and reported as L{TOO_LONG}, and L{LineSplitter.pending}
says how many bytes have come since the last line end so a caller can give up
on a peer that never sends one.

A caller that paces its work (L{socksvc.core.lineinput.LineInput}) adds
bytes with L{LineSplitter.append} and takes complete lines a slice at a time
with L{LineSplitter.take}: splitting is one C-level pass per read, and the
per-line work (CR, length) is done only for the lines taken, and what waits
is kept as the bytes that came (split L{SPLIT_MAX} lines at a time when
taken), so a read of 65,536 blank lines costs its 64 KiB, not a list of
65,536 lines. The lines not taken yet wait (L{LineSplitter.ready}); a
caller that queues must stop reading while they do, or what waits grows
with every read.
"""

from __future__ import annotations

from collections import deque


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


SPLIT_MAX = 1024
"""Lines split out of a waiting block at a time: what waits costs its bytes, not a pointer per line."""

_EMPTY: list[bytes] = []  # the queue when nothing waits: shared, never mutated (a chat holds thousands of splitters)


class LineSplitter:
    """Feed it bytes, get complete lines."""

    __slots__ = ("_blocks", "_buf", "_head", "_queue", "_skipped", "max_line", "strip_cr")

    def __init__(self, max_line: int, strip_cr: bool = True) -> None:
        self.max_line = max_line
        self.strip_cr = strip_cr
        self._buf = bytearray()  # the partial line: appended to in place, never copied per read
        self._skipped = 0  # bytes of an over-long line thrown away so far
        # Complete lines not taken yet: _queue[_head:] (split, raw: LF removed, CR kept), then
        # _blocks, each TOO_LONG or bytes holding whole lines joined by LF (not split yet).
        self._queue = _EMPTY
        self._head = 0
        self._blocks: deque[bytes | TooLong] | None = None  # made when first needed: an empty deque is 600 bytes

    @property
    def pending(self) -> int:
        """Bytes of the unfinished last line: received since the last line end (kept or skipped)."""
        return self._skipped + len(self._buf)

    @property
    def ready(self) -> bool:
        """Do complete lines wait to be taken?"""
        return self._head < len(self._queue) or bool(self._blocks)

    @property
    def tail_cr(self) -> bool:
        """Does the unfinished last line end with a CR (the first half of a CRLF or CR NUL)?"""
        return self._buf.endswith(b"\r")

    def feed(self, data: bytes) -> list[bytes | TooLong]:
        """Add C{data}; return every complete line waiting, in order."""
        self.append(data)
        return self.take()

    def append(self, data: bytes) -> None:
        """Add C{data}; its complete lines wait for L{take}."""
        if self._skipped:
            end = data.find(b"\n")
            if end < 0:
                self._skipped += len(data)
                return
            self._skipped = 0
            self._block(TOO_LONG)
            data = data[end + 1 :]
        last = data.rfind(b"\n")
        if last < 0:
            # Only the partial line grows: append in place (amortised linear;
            # a one-byte-at-a-time sender costs no copy of what came before).
            self._buf += data
            if len(self._buf) > self.max_line + 1:  # +1: the CR of a CRLF may be waiting for its LF
                self._skipped = len(self._buf)
                self._buf = bytearray()
            return
        if self._buf:
            self._buf += data[:last]
            block = bytes(self._buf)  # once per completed line
        else:
            block = data[:last]
        self._block(block)
        rest = data[last + 1 :]
        if len(rest) > self.max_line + 1:
            self._skipped = len(rest)
            self._buf = bytearray()
        else:
            self._buf = bytearray(rest)

    def _block(self, block: bytes | TooLong) -> None:
        if self._blocks is None:
            self._blocks = deque()
        self._blocks.append(block)

    def take(self, max_lines: int | None = None, max_bytes: int | None = None) -> list[bytes | TooLong]:
        """
        Complete lines, in order: all that wait, or at most C{max_lines} and
        no more once C{max_bytes} bytes of lines were given (at least one line
        when one waits). An over-long line is L{TOO_LONG}.
        """
        out: list[bytes | TooLong] = []
        wanted = -1 if max_lines is None else max(0, max_lines)
        budget = max_bytes
        limit = self.max_line
        strip = self.strip_cr
        queue, head = self._queue, self._head
        blocks = self._blocks
        while wanted:
            if head >= len(queue):
                if not blocks:
                    break
                block = blocks.popleft()
                if isinstance(block, TooLong):
                    out.append(block)
                    wanted -= 1
                    continue
                queue = block.split(b"\n", SPLIT_MAX)
                if len(queue) > SPLIT_MAX:
                    blocks.appendleft(queue.pop())  # the rest, still whole
                head = 0
            line = queue[head]
            head += 1
            wanted -= 1
            cr = line.endswith(b"\r")
            if cr and strip:
                line = line[:-1]
            # max_line counts the line without its line end (LF, or CRLF).
            out.append(TOO_LONG if len(line) - (cr and not strip) > limit else line)
            if budget is not None:
                budget -= len(line) + 1
                if budget <= 0:
                    break
        if head >= len(queue):
            queue, head = _EMPTY, 0
        if not blocks:
            self._blocks = None
        self._queue, self._head = queue, head
        return out

    def finish(self) -> bytes | TooLong | None:
        """
        The input ended: the unterminated last line, if there is one (a
        trailing CR removed when stripping), L{TOO_LONG} if it was over
        max_line, or None. The splitter is empty afterwards (lines still
        waiting are dropped: take them first).
        """
        self._queue, self._head = _EMPTY, 0
        self._blocks = None
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
