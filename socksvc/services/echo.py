"""
Echo (RFC 862): every byte back, binary-safe, in order.

Over a stream the transport is registered as its own producer, so a client
that sends without reading fills our write buffer, which pauses reading from
it: daemon memory stays flat. After the client's half-close everything owed
is still delivered, then we close. Over UDP each datagram is answered with
itself, behind the datagram guard (L{socksvc.core.datagram}, docs/udp.md).
"""

from __future__ import annotations

import attrs
from twisted.internet.protocol import DatagramProtocol, ServerFactory

from socksvc.core import writethrough
from socksvc.core.datagram import DatagramGuard, GuardedDatagram, GuardSettings
from socksvc.core.protocols import ServiceFactory, StreamProtocol
from socksvc.core.service import ServiceContext, ServiceStatus, ServiceType


@attrs.frozen
class EchoSettings(GuardSettings):
    """Keys of an echo service: the datagram guard's, for its udp: listens (see docs/udp.md)."""


class EchoState:
    """An echo service's state: the guard its udp: listens share."""

    def __init__(self, context: ServiceContext[EchoSettings, EchoState]) -> None:
        self.guard = DatagramGuard(context.name, context.settings, context.policy, context.reactor, context.udp_ports)

    def reconfigure(self, settings: EchoSettings) -> None:
        self.guard.reconfigure(settings)

    def shutdown(self) -> None:
        pass

    def status(self) -> ServiceStatus:
        return ServiceStatus(counters=self.guard.counters())


EchoContext = ServiceContext[EchoSettings, EchoState]


class Echo(StreamProtocol):
    """RFC 862 echo over a stream transport (set-up and half-close: see L{StreamProtocol})."""

    def dataReceived(self, data: bytes) -> None:
        n = len(data)
        self.bytes_in += n
        self.touched = True
        writethrough.write(self.transport, data)
        self.bytes_out += n


class UDPEcho(GuardedDatagram):
    """RFC 862 echo over one UDP port: the reply is the datagram itself."""

    def reply_for(self, datagram: bytes) -> bytes:
        return datagram


def make_factory(context: EchoContext) -> ServerFactory:
    return ServiceFactory(context, Echo)


def make_datagram(context: EchoContext) -> DatagramProtocol:
    return UDPEcho(context.state.guard)


SERVICE_TYPE: ServiceType[EchoSettings, EchoState] = ServiceType(
    name="echo",
    settings=EchoSettings,
    doc="RFC 862 echo over TCP, UNIX streams and UDP",
    make_state=EchoState,
    stream=make_factory,
    datagram=make_datagram,
)
