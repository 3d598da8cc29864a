"""Start-up errors: one line, exit status 1, no traceback."""

from __future__ import annotations


class StartupError(SystemExit):
    """
    Start-up cannot go on. A SystemExit carrying the one line to print: when
    nothing catches it, Python prints the line to stderr and exits with 1
    (under twistd, twist, and in the tests alike, no traceback).
    """

    def __init__(self, line: str) -> None:
        super().__init__(f"socksvc: {line}")
        self.line = line


class StartupFailed(Exception):
    """
    Start-up failed after twistd daemonized: an Exception (not a
    SystemExit), because that is what twistd's daemonizing parent reports
    through its status pipe (exit status 1, pidfile removed). Its text is
    the L{StartupError} line.
    """
