"""
Echo (RFC 862): every byte back, binary-safe, in order.

Over a stream the transport is registered as its own producer, so a client
that sends without reading fills our write buffer, which pauses reading from
it: daemon memory stays flat. After the client's half-close everything owed
is still delivered, then we close. Over UDP see L{socksvc.core.datagram}.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.protocol import DatagramProtocol, ServerFactory

from socksvc.config.settings import as_float, as_int, as_list, as_networks, as_port, setting
from socksvc.core import writethrough
from socksvc.core.policy import ServiceFactory, StreamProtocol
from socksvc.core.service import ServiceContext, ServiceType

DEFAULT_DENY_SOURCE_PORTS = (0, 7, 9, 13, 17, 19, 37, 53, 69, 111, 123, 137, 161, 389, 1900, 5353, 11211)


@attrs.frozen
class EchoSettings:
    """Keys of an echo service; they apply to its udp: listens (see socksvc.core.datagram and docs/udp.md)."""

    deny_source_ports: tuple[int, ...] = setting(
        DEFAULT_DENY_SOURCE_PORTS,
        as_list(as_port),
        "UDP: never reply to these source ports (other reflectors and amplifiers)",
    )
    rate_per_source: float = setting(
        100.0, as_float(), "UDP: replies a second to one IPv4 address or IPv6 /64; 0 = no limit"
    )
    burst: int = setting(
        200, as_int(), "UDP: replies one source may get at once above rate_per_source; 0 = one second's worth"
    )
    max_sources: int = setting(65536, as_int(minimum=1), "UDP: sources tracked for rate limiting (oldest evicted)")
    rate_exempt: tuple[Any, ...] = setting(
        tuple(as_networks(["127.0.0.0/8", "::1/128"])),
        as_networks,
        "UDP: CIDRs not rate limited (loopback cannot be spoofed from outside)",
    )


class Echo(StreamProtocol):
    """RFC 862 echo over a stream transport (set-up and half-close: see L{StreamProtocol})."""

    def dataReceived(self, data: bytes) -> None:
        n = len(data)
        self.bytes_in += n
        self.touched = True
        writethrough.write(self.transport, data)
        self.bytes_out += n


def make_factory(context: ServiceContext) -> ServerFactory:
    return ServiceFactory(context, Echo)


def make_datagram(context: ServiceContext) -> DatagramProtocol:
    from socksvc.core.datagram import UDPEcho

    return UDPEcho(context)


SERVICE_TYPE = ServiceType(
    name="echo",
    settings=EchoSettings,
    doc="RFC 862 echo over TCP, UNIX streams and UDP",
    stream=make_factory,
    datagram=make_datagram,
)
