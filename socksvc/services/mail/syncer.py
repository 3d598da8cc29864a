"""
The syncer child: C{python -m socksvc.services.mail.syncer --parent PID}.

Started by the smtp service (L{socksvc.services.mail.durable.Syncer}) with
AMP on its stdin and stdout; it answers L{Sync} commands, one at a time,
doing the blocking fsyncs (L{sync_paths}) that the daemon's reactor must
not. It exits when its stdin closes (the daemon stopped it, or went away)
and, through C{PR_SET_PDEATHSIG}, is killed when the daemon dies, even by
SIGKILL. SIGINT and SIGTERM are ignored: a Ctrl-C or a systemd stop reaches
the daemon, which drains the child (answers in flight are given) and closes
its stdin.

Nothing here imports the reactor when imported; L{main} installs the
default one.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from socksvc.services.mail.syncwire import QuietAMP, Sync, failure_rows, sync_paths

PR_SET_PDEATHSIG = 1


class SyncResponder(QuietAMP):
    """The child's end: answers L{Sync}; C{on_close} when the daemon's end of the pipe closes."""

    def __init__(self, on_close: Callable[[], object]) -> None:
        super().__init__()
        self.on_close = on_close

    @Sync.responder
    def sync(self, paths: list[bytes]) -> dict[str, Any]:
        return {"failed": failure_rows(sync_paths(paths))}

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.on_close()


def die_with(parent: int) -> None:
    """Be killed (SIGKILL) when the process that started this one dies; exit now if it already has."""
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "prctl"):  # not Linux: the closed stdin alone ends this process
        return
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:  # it died before the prctl
        raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] != "--parent" or not args[1].isdigit():
        sys.stderr.write("usage: python -m socksvc.services.mail.syncer --parent PID (the smtp service starts it)\n")
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    die_with(int(args[1]))

    from twisted.internet import reactor as installed
    from twisted.internet import stdio

    reactor: Any = installed

    def stop() -> None:
        if reactor.running:
            reactor.stop()
        else:  # the pipe closed before the reactor ran: stop as soon as it does
            reactor.callWhenRunning(reactor.stop)

    stdio.StandardIO(SyncResponder(stop), reactor=reactor)
    reactor.run(installSignalHandlers=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
