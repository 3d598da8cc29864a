"""
Discard (RFC 863): everything read is thrown away; nothing is ever sent.

Over a stream each read is counted and dropped on the spot (nothing is
buffered, so a 1 GiB upload costs no memory); input is activity for the
idle sweeper, and the optional caps C{max_bytes} and C{max_duration} end a
connection that has taken enough. Over UDP a datagram is counted (by the
datagram guard, which also counts what it would have dropped, by reason:
spoofed broadcast sources, denied source ports, the daemon's own ports...)
and never answered.

L{CappedSettings} and L{Caps} are shared with chargen, which has the same
two caps.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import DatagramProtocol, ServerFactory
from twisted.python.failure import Failure

from socksvc.config.settings import as_float, as_int, setting
from socksvc.core.datagram import DatagramGuard, GuardedDatagram, GuardSettings
from socksvc.core.protocols import ServiceFactory, StreamProtocol
from socksvc.core.service import ServiceContext, ServiceStatus, ServiceType


@attrs.frozen
class CappedSettings(GuardSettings):
    """The caps a byte-stream service (discard, chargen) takes, with the datagram guard's keys."""

    max_bytes: int = setting(0, as_int(), "bytes one connection may move before it is closed; 0 = no limit")
    max_duration: float = setting(
        600.0, as_float(), "seconds one connection may last before it is closed; 0 = no limit"
    )


@attrs.frozen
class DiscardSettings(CappedSettings):
    """Keys of a discard service: the caps, and the datagram guard's for its udp: listens."""


class GuardState:
    """The state of a service whose only long-lived part is the guard its udp: listens share."""

    def __init__(self, context: ServiceContext[Any, Any]) -> None:
        self.settings = context.settings
        self.guard = DatagramGuard(context.name, context.settings, context.policy, context.reactor, context.udp_ports)

    def reconfigure(self, settings: Any) -> None:
        self.settings = settings
        self.guard.reconfigure(settings)

    def shutdown(self) -> None:
        pass

    def status(self) -> ServiceStatus:
        return ServiceStatus(counters=self.guard.counters())


DiscardContext = ServiceContext[DiscardSettings, GuardState]


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


class Discard(Caps):
    """RFC 863 over a stream: count and drop; close at a cap or at the peer's half-close."""

    def dataReceived(self, data: bytes) -> None:
        self.bytes_in += len(data)
        self.touched = True
        cap = self.context.settings.max_bytes
        if cap and self.bytes_in >= cap:
            self.capped("max_bytes reached")


class UDPDiscard(GuardedDatagram):
    """RFC 863 over UDP: every datagram is counted, by the guard's reasons too, and none is answered."""

    def reply_for(self, datagram: bytes) -> bytes | None:
        return None


def make_factory(context: DiscardContext) -> ServerFactory:
    return ServiceFactory(context, Discard)


def make_datagram(context: DiscardContext) -> DatagramProtocol:
    return UDPDiscard(context.state.guard)


SERVICE_TYPE: ServiceType[DiscardSettings, GuardState] = ServiceType(
    name="discard",
    settings=DiscardSettings,
    doc="RFC 863 discard over TCP, UNIX streams and UDP: everything read is dropped, nothing sent",
    make_state=GuardState,
    stream=make_factory,
    datagram=make_datagram,
)
