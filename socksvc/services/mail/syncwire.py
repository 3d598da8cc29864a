"""
The durability helper's wire: one AMP command, L{Sync}, between the smtp
service (L{socksvc.services.mail.durable.Syncer}) and its syncer child
(C{python -m socksvc.services.mail.syncer}), and L{sync_paths}, the
blocking work the child does for it.

fsync waits for the disk (about 15 ms here, sometimes seconds), and nothing
may wait in the reactor: so a child process does it, and the daemon hears
the answer over a pipe like any other event.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from twisted.internet.protocol import connectionDone
from twisted.protocols import amp
from twisted.python.failure import Failure

MAX_PATH = 4096
"""Octets in one path at most (PATH_MAX)."""
MAX_PATHS = 100
"""Paths in one L{Sync} at most, so an answer full of errors fits one AMP value."""
BUDGET = 60000
"""Octets of paths (each plus its 2-octet length) in one L{Sync}: an AMP value holds 65535."""
MAX_ERROR = 200
"""Characters of one error's text."""


class Sync(amp.Command):
    """
    fsync each path, in order (files before the directories that name them):
    open it O_RDONLY, fsync, close. The answer lists the paths that failed
    (their index and the error); an empty list means all are on disk.
    """

    arguments = [(b"paths", amp.ListOf(amp.String()))]
    response = [(b"failed", amp.AmpList([(b"index", amp.Integer()), (b"error", amp.Unicode())]))]


def cost(path: bytes) -> int:
    """What one path takes of L{BUDGET}."""
    return len(path) + 2


def sync_paths(paths: Sequence[bytes]) -> list[tuple[int, str]]:
    """Blocking: fsync every path in order; the (index, reason) of those that failed."""
    failed: list[tuple[int, str]] = []
    for i, path in enumerate(paths):
        try:
            fsync_path(path)
        except OSError as e:
            failed.append((i, error_text(e)))
    return failed


def fsync_path(path: bytes | str) -> None:
    """Blocking: open C{path} read-only (a file or a directory; never through a symlink), fsync it, close it."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def error_text(e: BaseException | None) -> str:
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return text.encode("utf-8", "replace").decode("utf-8")[:MAX_ERROR]


def failure_rows(failed: Iterable[tuple[int, str]]) -> list[dict[str, object]]:
    """L{sync_paths}' result as L{Sync}'s C{failed}."""
    return [{"index": i, "error": error} for i, error in failed]


class QuietAMP(amp.AMP):
    """AMP without its two log lines per connection (a syncer child is no connection anyone asked about)."""

    def makeConnection(self, transport: Any) -> None:
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        amp.BinaryBoxProtocol.connectionLost(self, reason)
        self.transport = None
