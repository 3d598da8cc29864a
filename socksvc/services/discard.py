"""
Discard (RFC 863): everything read is thrown away; nothing is ever sent.

Over a stream each read is counted and dropped on the spot (nothing is
buffered, so a 1 GiB upload costs no memory); input is activity for the
idle sweeper, and the optional caps C{max_bytes} and C{max_duration} end a
connection that has taken enough. Over UDP a datagram is counted (by the
datagram guard, which also counts what it would have dropped, by reason:
spoofed broadcast sources, denied source ports, the daemon's own ports...)
and never answered.

The caps are core's (L{socksvc.core.caps}), shared with chargen.
"""

from __future__ import annotations

import attrs
from twisted.internet.protocol import DatagramProtocol, ServerFactory

from socksvc.core.caps import CappedSettings, Caps
from socksvc.core.datagram import GuardedDatagram, GuardState
from socksvc.core.protocols import ServiceFactory
from socksvc.core.service import ServiceContext, ServiceType


@attrs.frozen
class DiscardSettings(CappedSettings):
    """Keys of a discard service: the caps, and the datagram guard's for its udp: listens."""


DiscardContext = ServiceContext[DiscardSettings, GuardState]


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
