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


def read_setting_file(path: str, limit: int, what: str) -> bytes:
    """
    A file a setting names (its path is in the config line already): the
    whole regular file, at most C{limit} bytes, through L{read_regular_file};
    any problem is a L{ValueError} of a few words naming C{what} ("quotes
    file") and the reason, for the loader's one error line.
    """
    try:
        data = read_regular_file(path, limit)
    except (OSError, ValueError) as e:  # ValueError: not a regular file, or a NUL in the path
        raise ValueError(f"cannot read {what}: {getattr(e, 'strerror', None) or e}") from None
    if len(data) > limit:
        raise ValueError(f"{what} is over {limit >> 20} MiB" if limit >= 1 << 20 else f"{what} is over {limit} bytes")
    return data


def read_setting_text(path: str, limit: int, what: str) -> str:
    """L{read_setting_file}, decoded as UTF-8 (anything else is a L{ValueError} saying so)."""
    try:
        return read_setting_file(path, limit, what).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what} is not UTF-8 text") from None
