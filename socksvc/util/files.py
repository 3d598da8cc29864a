"""
The guarded file reader: every file the config names is read through it.
"""

from __future__ import annotations

import errno
import os
import stat


def read_regular_file(path: str, limit: int) -> bytes:
    """
    Up to C{limit} + 1 bytes of the regular file at C{path} (one more than
    allowed tells the caller it is too big). Never blocks: the file is opened
    non-blocking and anything but a regular file (a FIFO would wait for a
    writer, a tty for a line; a socket, a device) is refused with
    C{ValueError("not a regular file")}, a directory with C{IsADirectoryError}.
    OSError for what the OS refuses; ValueError for a NUL in the path.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if not stat.S_ISREG(mode):
            raise ValueError("not a regular file")
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
