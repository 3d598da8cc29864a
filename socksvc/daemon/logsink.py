"""
Where finished log lines go: a stream written line by line, or held in a
buffer and written in one go; and a log file that can be reopened by path.

L{LineSink} with C{buffer = 0} writes and flushes every line (one write a
line, as twistd does). With C{buffer = N} (C{[daemon] log_buffer}, like
nginx's C{access_log ... buffer= flush=}) lines are held until N bytes are
waiting, until C{flush_after} seconds (C{log_flush}) after the first one,
until an urgent line comes (a warning, an error, a failure: written at once
with everything before it), or until the reactor shuts down; a line then
costs a list append instead of a system call. Lines held when the process
is killed (SIGKILL, a crash of the interpreter) are lost: that is the
trade, as with nginx.

L{LogFile} is the file behind twistd's C{--logfile} (or twist's
C{--log-file}): appended to, never rotated by the daemon itself (that is
logrotate's job), and reopened by path on SIGUSR1 (L{reopen}), the way
logrotate's move-then-signal expects: the moved file is closed, a new one
is created at the path with mode C{[daemon] log_mode}.
"""

from __future__ import annotations

import os
from typing import IO, Any, Protocol


class Sink(Protocol):
    """What an observer writes finished lines to."""

    def emit(self, line: str, urgent: bool = False) -> None: ...


class LogFileError(Exception):
    """The log file cannot be opened; C{str()} is the one line to print."""


class LogFile:
    """
    A log file opened by path: appended to (C{O_APPEND}, so C{copytruncate}
    works too), created with C{mode} (regardless of the umask) when it does
    not exist; an existing file keeps its mode and owner (logrotate's
    C{create} may have made it).
    """

    def __init__(self, path: str, mode: int = 0o644) -> None:
        self.path = os.path.abspath(path)
        self.mode = mode
        self._file = self._open()

    def _open(self) -> IO[str]:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)
        try:
            fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, self.mode)
        except FileExistsError:
            fd = os.open(self.path, flags)
        else:
            try:
                os.fchmod(fd, self.mode)  # the umask (twistd's daemon default is 077) has no say
            except OSError:
                os.close(fd)
                raise
        return os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace")

    @classmethod
    def open(cls, path: str, mode: int = 0o644) -> LogFile:
        """L{LogFile}, raising L{LogFileError} (one line naming the file and why) when it cannot be opened."""
        try:
            return cls(path, mode)
        except OSError as e:
            raise LogFileError(f"{path}: cannot open log file: {e.strerror or e}") from None

    def write(self, text: str) -> None:
        self._file.write(text)

    def flush(self) -> None:
        self._file.flush()

    def reopen(self) -> None:
        """
        Close the file and open the path again (a new file if the old one
        was moved). When the path cannot be opened, raises C{OSError} and
        keeps writing to the old file.
        """
        new = self._open()
        old, self._file = self._file, new
        try:
            old.close()
        except OSError:
            pass

    def close(self) -> None:
        self._file.close()

    @property
    def closed(self) -> bool:
        return self._file.closed


class LineSink:
    """
    Writes lines to C{out} (anything with C{write} and C{flush}): each at
    once, or, with C{buffer} > 0 and a C{clock}, held as the module doc
    says. C{buffer} counts characters (the JSON log is ASCII, so bytes).
    """

    def __init__(
        self,
        out: Any,
        buffer: int = 0,
        flush_after: float = 1.0,
        clock: Any = None,
    ) -> None:
        self.out = out
        self.limit = buffer if clock is not None else 0
        self.flush_after = flush_after
        self.clock = clock
        self._lines: list[str] = []
        self._size = 0
        self._timer: Any = None

    @property
    def held(self) -> int:
        """Characters waiting in the buffer."""
        return self._size

    def emit(self, line: str, urgent: bool = False) -> None:
        if not self.limit:
            self.out.write(line)
            self.out.flush()
            return
        self._lines.append(line)
        self._size += len(line)
        if urgent or self._size >= self.limit:
            self.flush()
        elif self._timer is None:
            self._timer = self.clock.callLater(self.flush_after, self._timed)

    def _timed(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        """Write what is held now (a line that was held waits no longer)."""
        if not self._lines:
            return
        data = "".join(self._lines)
        self._lines.clear()
        self._size = 0
        self.out.write(data)
        self.out.flush()

    def stop_buffering(self) -> None:
        """Write what is held and write every later line at once (the reactor is shutting down)."""
        self.limit = 0
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        self.flush()

    def flush_quietly(self) -> None:
        """L{flush} at interpreter exit, where a closed or broken stream is nobody's business."""
        try:
            self.flush()
        except (OSError, ValueError):
            pass

    def reopen(self) -> str | None:
        """
        Flush, then reopen C{out} by path when it can be (a L{LogFile}).
        Gives the path reopened, or None when C{out} is a stream. Raises
        C{OSError} when the path cannot be opened (the old file stays).
        """
        self.flush()
        reopen = getattr(self.out, "reopen", None)
        if reopen is None:
            return None
        reopen()
        return str(self.out.path)
