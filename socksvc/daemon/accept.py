"""
Accept errors, rate-limited.

Running out of file descriptors (EMFILE) is handled by Twisted's listening
port, which keeps one descriptor in reserve and uses it to accept and close
the waiting peers, so the listener never spins; L{guard_port} rate-limits the
log lines Twisted writes about it (one per closed peer otherwise).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import IReactorTime
from twisted.logger import ILogObserver, LogEvent, Logger
from zope.interface import implementer

from socksvc.util.ratelimit import LOG_PERIOD, RateLimitedLog

log = Logger(namespace="socksvc")


# What Twisted's listening port logs when accept() fails, and what we make of it.
_ACCEPT_EVENTS: tuple[tuple[str, str | None, str], ...] = (
    ("EMFILE encountered", "emfile", "out of file descriptors (EMFILE): new connections are closed unanswered"),
    ("EMFILE recovery: Closed socket", "closed", "closed a new connection unanswered: out of file descriptors"),
    ("Re-reserving EMFILE", None, ""),
    ("Could not re-reserve EMFILE", "reserve", "cannot re-reserve the EMFILE recovery descriptor"),
    ("Could not accept new connection", "accept", "cannot accept new connections"),
)


def _accept_event(fmt: str) -> tuple[str | None, str] | None:
    for prefix, key, text in _ACCEPT_EVENTS:
        if fmt.startswith(prefix):
            return key, text
    return None


@implementer(ILogObserver)
class AcceptErrorLog:
    """
    A log observer for one listening port's own logger: Twisted logs a line
    for every connection it has to close while out of file descriptors (so a
    connection flood at EMFILE is a log flood); this keeps one line per kind
    per 10 s, with a summary count, and passes other events through.
    """

    def __init__(self, where: str, clock: IReactorTime, observer: Callable[[LogEvent], None]) -> None:
        self.where = where
        self.observer = observer
        self.limit = RateLimitedLog(clock, LOG_PERIOD, summary=self._summary)
        self.counts: dict[str, int] = {}
        self._text: dict[str, str] = {}

    def __call__(self, event: LogEvent) -> None:
        fmt = str(event.get("log_format") or "")
        kind = _accept_event(fmt)
        if kind is None:
            self.observer(event)
            return
        key, text = kind
        if key is None:
            return
        detail = event.get("acceptError") or ""
        if detail:
            key = f"{key} {detail}"
            text = f"{text} ({detail})"
        self.counts[key] = self.counts.get(key, 0) + 1
        self._text[key] = text

        def emit(held: int) -> None:
            log.warn(
                "{where}: {what}",
                event="accept_error",
                where=self.where,
                what=text,
                kind=key,
                held=held,
            )

        self.limit(key, emit)

    def _summary(self, key: str, held: int) -> None:
        log.warn(
            "{where}: {what}: {held} more times in the last {period:.0f}s",
            event="accept_error_summary",
            where=self.where,
            what=self._text.get(key, key),
            kind=key,
            held=held,
            period=self.limit.period,
        )


def guard_port(port: Any, clock: IReactorTime, where: str = "") -> AcceptErrorLog | None:
    """
    Rate-limit what a listening port logs about failed accepts (see
    L{AcceptErrorLog}). Call it on every stream port once it listens; ports
    without Twisted's accept logger (UDP, test doubles) are left alone.
    """

    if not isinstance(port, tcp.Port):
        return None
    current = port._logger
    if isinstance(current.observer, AcceptErrorLog):
        return current.observer
    guard = AcceptErrorLog(where or repr(port), clock, current.observer)
    port._logger = Logger(namespace=current.namespace, source=port, observer=guard)
    return guard
