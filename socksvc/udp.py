"""UDP echo (RFC 862 over datagrams). Hardened by the UDP issue."""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import DatagramProtocol

from socksvc.listen import ListenSpec
from socksvc.registry import ServiceContext

MAX_DATAGRAM = 65535


class UDPEcho(DatagramProtocol):
    def __init__(self, context: ServiceContext) -> None:
        self.context = context

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        assert self.transport is not None
        self.transport.write(datagram, addr)


def listen_udp(reactor: Any, spec: ListenSpec, protocol: DatagramProtocol) -> Any:
    assert spec.port is not None
    return reactor.listenUDP(spec.port, protocol, interface=spec.interface, maxPacketSize=MAX_DATAGRAM)
