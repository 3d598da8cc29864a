"""
Character generator (RFC 864): an endless stream of text lines.

The lines are RFC 864's: 72 characters of the ring of the 95 printing ASCII
characters (space to tilde), line k starting at character k of the ring, and
CRLF; the pattern repeats every 95 lines (7,030 bytes). Every connection
starts at line 0.

Over a stream the protocol is a push producer (L{Chargen}): it writes while
the transport wants more and stops when the transport pauses it (the
client stopped reading and the kernel's buffers are full), so a client that
never reads costs a bounded buffer, not memory that grows. It writes the
same pre-built block of 19 whole periods each time (no copy, no per-line
work), so the rotation runs on across pauses without any bookkeeping.
What the client sends is read and dropped. C{max_bytes} ends the stream
after that many bytes (delivered in full, then the close); C{max_duration}
ends it after that many seconds. Progress (the client taking what was
written) is activity for the idle sweeper, so a client that stops reading
is cut after idle_timeout.

Over UDP chargen is the classic amplifier (US-CERT TA14-017A puts its
bandwidth amplification at 358.8), so it answers nothing unless the
service sets C{udp = true}; every datagram is then counted and dropped as
C{disabled}. When enabled, a datagram is answered with a random whole
number of lines, 1 to 6 (RFC 864: a random length of 0 to 512 bytes),
cut to the request's own size: a reply is never larger than its request
(and an empty request gets no reply at all).
"""

from __future__ import annotations

import random
from typing import Any

import attrs
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.protocol import DatagramProtocol, ServerFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from socksvc.config.settings import as_bool, setting
from socksvc.core.caps import CappedSettings, Caps
from socksvc.core.datagram import DISABLED, GuardedDatagram, GuardState
from socksvc.core.protocols import ServiceFactory
from socksvc.core.service import ServiceContext, ServiceType

RING = bytes(range(32, 127))
"""The 95 printing ASCII characters, space first: RFC 864's ring."""
LINE_CHARS = 72
LINE_SIZE = LINE_CHARS + 2


def line(k: int) -> bytes:
    """Line C{k} of the pattern: 72 characters of the ring from character k mod 95, then CRLF."""
    start = k % len(RING)
    return (RING + RING)[start : start + LINE_CHARS] + b"\r\n"


PERIOD = b"".join(line(k) for k in range(len(RING)))
"""One whole period: 95 lines, 7,030 bytes."""
BLOCK = PERIOD * 19
"""What one write sends: 133,570 bytes, whole periods, so every write but a capped last one is this very object."""
UDP_MAX_LINES = 512 // LINE_SIZE
"""Lines in the longest UDP reply: 6 (444 bytes), within RFC 864's 512."""
_TWO_PERIODS = PERIOD * 2
WRITES_PER_TURN = 4
"""Blocks written per resume when the transport does not pause us (a test transport); then the reactor runs."""


@attrs.frozen
class ChargenSettings(CappedSettings):
    """Keys of a chargen service: the caps, the UDP switch, and the datagram guard's keys."""

    udp: bool = setting(
        False,
        as_bool,
        "answer udp: datagrams (off: each is dropped, counted as disabled); a reply is never larger than its request",
    )


class ChargenState(GuardState):
    """A chargen service's state: the guard, and where the UDP side is in the ring."""

    def __init__(self, context: ServiceContext[ChargenSettings, Any]) -> None:
        super().__init__(context)
        self.next_line = 0
        self.random = random.Random()

    def datagram_reply(self, size: int) -> bytes:
        """1 to 6 whole lines (the next ones in the ring), cut to C{size} bytes."""
        lines = self.random.randint(1, UDP_MAX_LINES)
        start = self.next_line
        self.next_line = (start + lines) % len(RING)
        return _TWO_PERIODS[start * LINE_SIZE : (start + lines) * LINE_SIZE][:size]


ChargenContext = ServiceContext[ChargenSettings, ChargenState]


@implementer(IPushProducer)
class Chargen(Caps):
    """RFC 864 over a stream: the pattern, as fast as the client takes it, until a cap or the client's close."""

    paused = False
    done = False
    later: IDelayedCall | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        transport: Any = self.transport
        transport.registerProducer(self, True)
        self.resumeProducing()

    # IPushProducer

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        self.done = True

    def resumeProducing(self) -> None:
        self.later = None
        self.paused = False
        if self.done:
            return
        self.touched = True  # the client took everything written so far
        for _ in range(WRITES_PER_TURN):
            if self.paused or self.done:
                return
            self._write_block()
        if not self.paused and not self.done:
            self.later = self.context.reactor.callLater(0, self.resumeProducing)

    def _write_block(self) -> None:
        block = BLOCK
        cap = self.context.settings.max_bytes
        if cap:
            left = cap - self.bytes_out
            if left <= 0:
                self.capped("max_bytes reached")
                return
            if left < len(block):
                block = block[:left]  # every earlier write was a whole BLOCK: the cut keeps the rotation
        self.bytes_out += len(block)
        transport: Any = self.transport
        transport.write(block)
        if cap and self.bytes_out >= cap:
            self.capped("max_bytes reached")

    # the end

    def capped(self, why: str) -> None:
        """Stop producing; deliver what is written and close (abort, if the client is not reading)."""
        if self.done:
            return
        self.done = True
        self.close_reason = self.close_reason or why
        transport: Any = self.transport
        transport.unregisterProducer()
        if self.paused:
            transport.abortConnection()
        else:
            transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        self.bytes_in += len(data)

    def readConnectionLost(self) -> None:
        """The client half-closed: it may still read, so the stream goes on."""

    def connectionLost(self, reason: Failure = Failure(Exception("connection lost"))) -> None:
        self.done = True
        if self.later is not None and self.later.active():
            self.later.cancel()
        self.later = None
        super().connectionLost(reason)


class UDPChargen(GuardedDatagram):
    """RFC 864 over UDP: off unless C{udp = true}; then 1 to 6 lines, cut to the request's size."""

    def __init__(self, state: ChargenState) -> None:
        super().__init__(state.guard)
        self.chargen = state

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if self.chargen.settings.udp:
            super().datagramReceived(datagram, addr)
            return
        guard = self.state
        guard.received += 1
        guard.bytes_in += len(datagram)
        guard.dropped(DISABLED, addr[0], addr[1])

    def reply_for(self, datagram: bytes) -> bytes | None:
        return self.chargen.datagram_reply(len(datagram)) if datagram else None


def make_factory(context: ChargenContext) -> ServerFactory:
    return ServiceFactory(context, Chargen)


def make_datagram(context: ChargenContext) -> DatagramProtocol:
    return UDPChargen(context.state)


SERVICE_TYPE: ServiceType[ChargenSettings, ChargenState] = ServiceType(
    name="chargen",
    settings=ChargenSettings,
    doc="RFC 864 character generator over TCP and UNIX streams (and UDP, when udp = true)",
    make_state=ChargenState,
    stream=make_factory,
    datagram=make_datagram,
)
