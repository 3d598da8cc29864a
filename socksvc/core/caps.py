"""
Caps for byte-stream services (discard, chargen): C{max_bytes} and
C{max_duration}, and the means to end a connection that reached one.

L{CappedSettings} brings the two keys (and the datagram guard's, for the
service's udp: listens); L{Caps} is the stream protocol base with the
C{max_duration} timer and L{Caps.capped}, which the service calls when it
has counted C{max_bytes}.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from socksvc.config.settings import MAX_TIMEOUT, as_float, as_int, setting
from socksvc.core.datagram import GuardSettings
from socksvc.core.protocols import StreamProtocol


@attrs.frozen
class CappedSettings(GuardSettings):
    """The caps a byte-stream service (discard, chargen) takes, with the datagram guard's keys."""

    max_bytes: int = setting(
        0, as_int(maximum=1 << 40), "bytes one connection may move before it is closed; 0 = no limit"
    )
    max_duration: float = setting(
        600.0, as_float(maximum=MAX_TIMEOUT), "seconds one connection may last before it is closed; 0 = no limit"
    )


class Caps(StreamProtocol):
    """
    A stream protocol with C{max_duration} (a timer from the connection's
    start) and the means to end a connection for a cap (L{capped}). The
    settings are read when the connection starts and when it reads or
    writes, so a reload's new caps apply to open connections too, from
    their next read or write (a new max_duration from the next connection).
    """

    nodelay = False
    self_producer = False
    deadline: IDelayedCall | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        limit = self.context.settings.max_duration
        if limit > 0:
            self.deadline = self.context.reactor.callLater(limit, self._expired)

    def _expired(self) -> None:
        self.deadline = None
        self.capped("max_duration reached")

    def capped(self, why: str) -> None:
        """A cap is reached: say so in the close line and close."""
        if not self.close_reason:
            self.close_reason = why
        transport: Any = self.transport
        transport.loseConnection()

    def connectionLost(self, reason: Failure = Failure(Exception("connection lost"))) -> None:
        if self.deadline is not None and self.deadline.active():
            self.deadline.cancel()
        self.deadline = None
        super().connectionLost(reason)
