"""
socksvc's reactor: Twisted's epoll reactor with a leaner dispatch per event.

Twisted's L{EPollReactor<twisted.internet.epollreactor.EPollReactor>} runs
every ready descriptor's C{doRead} inside C{log.callWithLogger}, which calls
the descriptor's C{logPrefix()}, copies the legacy logging context and pushes
and pops it: a measurable share of the daemon's time per echoed message
(figures in docs/performance.md). The context only matters to
messages logged with the legacy C{twisted.python.log} API I{during} the event
(their C{system} field); socksvc logs with C{twisted.logger}, whose events
never read it.

L{SocksvcReactor} dispatches the common event (readable, nothing else) by
calling C{doRead} directly, with the same error handling and the same
disconnection rules as Twisted's C{_doReadOrWrite}; any other event (writable,
hung up, error) goes the stock way, context and all. An exception from
C{doRead} is still logged with the descriptor's prefix as its system.

C{twistd socksvc} installs it when the command line chose no reactor (on
Linux, where twistd's default is the epoll reactor it refines); C{twistd -r
epoll socksvc} keeps Twisted's own, and C{twistd -r socksvc} asks for this
one by name.
"""

from __future__ import annotations

import select
import sys
from typing import Any

from twisted.internet import epollreactor
from twisted.internet.main import installReactor
from twisted.internet.posixbase import _NO_FILEDESC
from twisted.python import log
from twisted.python.failure import Failure

_EPOLLIN = select.EPOLLIN if hasattr(select, "EPOLLIN") else 1


class SocksvcReactor(epollreactor.EPollReactor):
    """An epoll reactor whose plain read events skip the legacy logging context."""

    def doPoll(self, timeout: float | None) -> None:
        if timeout is None:
            timeout = -1  # wait indefinitely
        # EINTR is retried by Python itself (PEP 475); other errors are bugs.
        events = self._poller.poll(timeout, len(self._selectables))
        selectables = self._selectables
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            if event != _EPOLLIN:
                log.callWithLogger(selectable, self._doReadOrWrite, selectable, fd, event)
                continue
            # Twisted's _doReadOrWrite for a read event, without the context.
            in_read = False
            try:
                if selectable.fileno() == -1:
                    why: Any = _NO_FILEDESC
                else:
                    why = selectable.doRead()
                    in_read = True
            except BaseException:
                why = sys.exc_info()[1]
                log.callWithLogger(selectable, log.err, Failure())
            if why:
                self._disconnectSelectable(selectable, why, in_read)

    doIteration = doPoll


def install() -> SocksvcReactor:
    """Install L{SocksvcReactor} as the global reactor and return it."""
    reactor = SocksvcReactor()
    installReactor(reactor)
    return reactor


__all__ = ["SocksvcReactor", "install"]
