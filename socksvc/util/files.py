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


def read_named_file(path: str, limit: int, what: str) -> bytes:
    """
    The whole regular file at C{path}, at most C{limit} bytes, through
    L{read_regular_file}; any problem is a L{ValueError} whose text is one
    line naming C{what} ("key file") and the reason.
    """
    try:
        data = read_regular_file(path, limit)
    except (OSError, ValueError) as e:  # ValueError: not a regular file, or a NUL in the path
        reason = getattr(e, "strerror", None) or e
        raise ValueError(f"cannot read {what} {path}: {reason}") from None
    if len(data) > limit:
        size = f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit} bytes"
        raise ValueError(f"{what} {path} is over {size}")
    return data
