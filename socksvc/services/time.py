"""
Time (RFC 868): the seconds since 1900-01-01T00:00:00Z as a 32-bit unsigned
big-endian number, modulo 2**32.

C{struct.pack("!I", (unix_seconds + 2208988800) % 2**32)}: the RFC's epoch
is 1900, 2,208,988,800 seconds before Unix's, and the count wraps to 0 at
2036-02-07T06:28:16Z (RFC 868's "era" 1 begins); clients such as rdate
read the wrap by assuming the nearest era. Any clock value at all gives 4
bytes and never an exception (the modulo also takes a clock set before 1970
or after 2106).

Over a stream the 4 bytes are sent and the connection closed, the way a
greeting is (L{socksvc.core.oneshot}). Over UDP any datagram,
empty ones included (rdate -u sends an empty one), gets the 4 bytes, behind
the datagram guard; the reply may exceed its request by those 4 bytes
(C{slack}): a 28-byte empty IPv4 datagram gets 32 bytes back (1.14x), and
the guard's per-source rate limit bounds it.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import attrs
from twisted.internet.protocol import DatagramProtocol, ServerFactory

from socksvc.config.settings import as_float, setting
from socksvc.core.datagram import DatagramGuard, GuardedDatagram, GuardSettings
from socksvc.core.oneshot import OneShot, OneShotFactory
from socksvc.core.service import ServiceContext, ServiceStatus, ServiceType

EPOCH_OFFSET = 2208988800
"""Seconds from 1900-01-01T00:00:00Z (RFC 868's epoch) to 1970-01-01T00:00:00Z (Unix's)."""

_PACK = struct.Struct("!I").pack


def rfc868(now: float) -> bytes:
    """The 4 bytes for Unix time C{now} (whole seconds, rounded down; a non-finite C{now} counts as 0)."""
    seconds = math.floor(now) if math.isfinite(now) else 0
    return _PACK((seconds + EPOCH_OFFSET) % 2**32)


@attrs.frozen
class TimeSettings(GuardSettings):
    """Keys of a time service (and the datagram guard's, for its udp: listens)."""

    send_timeout: float = setting(
        10.0, as_float(minimum=0.1, maximum=3600), "seconds to deliver the 4 bytes before aborting"
    )


class TimeState:
    """
    A time service's state: the 4 bytes, computed once per second, and the
    guard its udp: listens share. Called as C{(peer, now)} like a greeting's
    renderer, so core's one-message stream side serves it.
    """

    def __init__(self, context: ServiceContext[TimeSettings, Any]) -> None:
        self.guard = DatagramGuard(context.name, context.settings, context.policy, context.reactor, context.udp_ports)
        self._second: float | None = None
        self._bytes = b""

    def __call__(self, peer: str, now: float) -> bytes:
        second = now // 1 if math.isfinite(now) else 0.0
        if second != self._second:
            self._bytes = rfc868(now)
            self._second = second
        return self._bytes

    def reconfigure(self, settings: TimeSettings) -> None:
        self.guard.reconfigure(settings)

    def shutdown(self) -> None:
        pass

    def status(self) -> ServiceStatus:
        return ServiceStatus(counters=self.guard.counters())


TimeContext = ServiceContext[TimeSettings, TimeState]


class UDPTime(GuardedDatagram):
    """RFC 868 over UDP: any datagram gets the 4 bytes."""

    slack = 4

    def __init__(self, state: TimeState, clock: Any) -> None:
        super().__init__(state.guard)
        self.time = state
        self.clock = clock

    def reply_for(self, datagram: bytes) -> bytes:
        return self.time("", self.clock.seconds())


def make_factory(context: TimeContext) -> ServerFactory:
    return OneShotFactory(context, OneShot)


def make_datagram(context: TimeContext) -> DatagramProtocol:
    return UDPTime(context.state, context.reactor)


SERVICE_TYPE: ServiceType[TimeSettings, TimeState] = ServiceType(
    name="time",
    settings=TimeSettings,
    doc="RFC 868 time over TCP, UNIX streams and UDP: 32-bit seconds since 1900, wrapping in 2036",
    make_state=TimeState,
    stream=make_factory,
    datagram=make_datagram,
)
