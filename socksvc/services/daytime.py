"""
Daytime (RFC 867): the date and time as one line of text.

RFC 867 leaves the format open; socksvc sends UTC in RFC 3339, ASCII,
ending in CRLF, never the server's local zone: C{2026-11-21T11:39:21Z\\r\\n}
(22 bytes). Over a stream the line is sent and the connection closed, the
way a greeting is (L{socksvc.core.oneshot}: on a plain TCP port
straight from the accept loop). Over UDP any datagram, empty ones
included, is answered with the line, behind the datagram guard; the reply
may exceed its request by the line's 22 bytes (C{slack}), which is the
whole amplification there is (a 28-byte empty IPv4 datagram gets 50 bytes
back: 1.8x), and the guard's per-source rate limit bounds it.
"""

from __future__ import annotations

import math
import time as _time
from typing import Any

import attrs
from twisted.internet.protocol import DatagramProtocol, ServerFactory

from socksvc.config.settings import as_float, setting
from socksvc.core.datagram import DatagramGuard, GuardedDatagram, GuardSettings
from socksvc.core.oneshot import OneShot, OneShotFactory
from socksvc.core.service import ServiceContext, ServiceStatus, ServiceType

LINE_SIZE = len(b"2026-11-21T11:39:21Z\r\n")


def daytime_line(now: float) -> bytes:
    """The line for Unix time C{now}: UTC, RFC 3339, CRLF (years past 9999, or an unrepresentable C{now}: the epoch)."""
    try:
        text = _time.strftime("%Y-%m-%dT%H:%M:%SZ\r\n", _time.gmtime(now))
    except (OverflowError, OSError, ValueError):
        text = "1970-01-01T00:00:00Z\r\n"
    if len(text) != LINE_SIZE:  # a year outside 0000-9999
        text = "1970-01-01T00:00:00Z\r\n"
    return text.encode("ascii")


@attrs.frozen
class DaytimeSettings(GuardSettings):
    """Keys of a daytime service (and the datagram guard's, for its udp: listens)."""

    send_timeout: float = setting(
        10.0, as_float(minimum=0.1, maximum=3600), "seconds to deliver the line before aborting"
    )


class Clockface:
    """
    A daytime service's state: the line, formatted once per second, and the
    guard its udp: listens share. Called as C{(peer, now)} like a greeting's
    renderer, so core's one-message stream side serves it.
    """

    def __init__(self, context: ServiceContext[DaytimeSettings, Any]) -> None:
        self.guard = DatagramGuard(context.name, context.settings, context.policy, context.reactor, context.udp_ports)
        self._second: float | None = None
        self._line = b""

    def __call__(self, peer: str, now: float) -> bytes:
        second = now // 1 if math.isfinite(now) else 0.0
        if second != self._second:
            self._line = daytime_line(now)
            self._second = second
        return self._line

    def reconfigure(self, settings: DaytimeSettings) -> None:
        self.guard.reconfigure(settings)

    def shutdown(self) -> None:
        pass

    def status(self) -> ServiceStatus:
        return ServiceStatus(counters=self.guard.counters())


DaytimeContext = ServiceContext[DaytimeSettings, Clockface]


class UDPDaytime(GuardedDatagram):
    """RFC 867 over UDP: any datagram gets the line."""

    slack = LINE_SIZE

    def __init__(self, state: Clockface, clock: Any) -> None:
        super().__init__(state.guard)
        self.clockface = state
        self.clock = clock

    def reply_for(self, datagram: bytes) -> bytes:
        return self.clockface("", self.clock.seconds())


def make_factory(context: DaytimeContext) -> ServerFactory:
    return OneShotFactory(context, OneShot)


def make_datagram(context: DaytimeContext) -> DatagramProtocol:
    return UDPDaytime(context.state, context.reactor)


SERVICE_TYPE: ServiceType[DaytimeSettings, Clockface] = ServiceType(
    name="daytime",
    settings=DaytimeSettings,
    doc="RFC 867 daytime over TCP, UNIX streams and UDP: UTC in RFC 3339, CRLF",
    make_state=Clockface,
    stream=make_factory,
    datagram=make_datagram,
)
