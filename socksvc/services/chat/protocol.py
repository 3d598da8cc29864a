"""
The chat protocol: bytes in, lines to the state; bytes out with backpressure.

Thin on purpose. It strips telnet negotiation, splits lines (L{LineSplitter}
bounds memory), decodes them, and hands each to the L{ChatState} inside one
batch, so everything one read causes reaches each recipient in one write. It
is its transport's producer: the transport tells it when its buffer is full
(C{pauseProducing}) and when it drained (C{resumeProducing}), and the member's
outbox queues, stalls or catches up accordingly.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol, IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from socksvc.core import writethrough
from socksvc.core.protocols import Tracked
from socksvc.core.service import ServiceContext
from socksvc.services.chat.commands import handle_line
from socksvc.services.chat.delivery import Member
from socksvc.services.chat.sanitize import TelnetFilter, decode_line
from socksvc.services.chat.state import ChatState
from socksvc.util.lines import LineSplitter, TooLong

CLOSE_GRACE = 10.0  # seconds a closing peer gets to take its last lines


@implementer(IHalfCloseableProtocol, IPushProducer)
class ChatProtocol(Tracked):
    """One chat client."""

    # Slots, not a per-instance dict: a dict per member is a large share of
    # the daemon's memory per client (docs/performance.md). Everything the base classes and the
    # policy layer set is here too (anything else still lands in __dict__).
    __slots__ = (
        "bytes_in",
        "bytes_out",
        "close_reason",
        "closer",
        "connected",
        "context",
        "factory",
        "idle_aborted",
        "idle_sweeps",
        "last_seen",
        "member",
        "peer",
        "policy",
        "service_name",
        "source",
        "splitter",
        "started",
        "telnet",
        "touched",
        "transport",
    )

    def __init__(self) -> None:
        self.factory: Any = None
        self.context: ServiceContext[Any, ChatState] = None  # type: ignore[assignment]  # set by the factory
        self.transport: Any = None
        self.connected = 0
        self.policy = None  # type: ignore[assignment]  # set by the factory
        self.service_name = ""
        self.peer = ""
        self.source = "local"
        self.started = 0.0
        self.last_seen = 0.0
        self.bytes_in = 0
        self.bytes_out = 0
        self.idle_sweeps = 0
        self.idle_aborted = False
        self.close_reason = ""
        self.member: Member | None = None
        self.telnet: TelnetFilter | None = None
        self.closer: IDelayedCall | None = None
        self.touched = False

    @property
    def idle_exempt(self) -> bool:
        """
        A member with a nickname is never idle: listening is what chat members
        mostly do. Until a nickname is chosen, idle_timeout applies as to any
        service.
        """
        return self.member is not None and self.member.nick is not None

    def connectionMade(self) -> None:
        super().connectionMade()
        state = self.context.state
        self.splitter = LineSplitter(state.settings.max_line)
        transport: Any = self.transport
        for option in ("setTcpNoDelay", "setTcpKeepAlive"):
            method = getattr(transport, option, None)
            if method is not None:
                method(True)
        transport.registerProducer(self, True)
        with state.batch():
            self.member = state.connect(self)

    def dataReceived(self, data: bytes) -> None:
        self.bytes_in += len(data)
        member = self.member
        if member is None or member.gone:
            return
        if self.telnet is not None or b"\xff" in data:
            if self.telnet is None:
                self.telnet = TelnetFilter()
            data = self.telnet.feed(data)
        state = self.context.state
        splitter = self.splitter
        max_line = state.settings.max_line
        splitter.max_line = max_line
        lines = splitter.feed(data)
        with state.batch():
            for n, line in enumerate(lines):
                if member.gone:
                    return
                if isinstance(line, TooLong):
                    state.too_long(member)
                    continue
                if not line.strip():
                    continue  # blank lines are ignored (and cost no flood token)
                self.touched = True
                if not state.flood_ok(member):
                    state.lines_flooded += len(lines) - n - 1  # flood_ok counted this one
                    break  # the rest of this read is over the limit too: no work spent on it
                handle_line(state, member, decode_line(line))
            if not member.gone and splitter.pending > 8 * max_line:
                state.no_line_end(member)
        if member.held is not None:
            member.release()

    # -- Connection (what the state writes through) --------------------------

    def send(self, data: bytes) -> None:
        self.bytes_out += len(data)
        writethrough.write(self.transport, data)

    def send_last(self, data: bytes, reason: str) -> None:
        self.close_reason = reason
        transport: Any = self.transport
        self.bytes_out += len(data)
        writethrough.send_now(transport, data)
        transport.abortConnection()

    def close(self, reason: str = "") -> None:
        if reason and not self.close_reason:
            self.close_reason = reason
        transport: Any = self.transport
        if transport is None or not transport.connected:
            return
        transport.unregisterProducer()
        transport.loseConnection()
        if self.closer is None:
            self.closer = self.context.reactor.callLater(CLOSE_GRACE, transport.abortConnection)

    # -- IPushProducer (the transport tells us about its buffer) -------------

    def pauseProducing(self) -> None:
        if self.member is not None:
            self.member.pause()

    def resumeProducing(self) -> None:
        if self.member is not None:
            self.member.resume()

    def stopProducing(self) -> None:
        pass

    # -- closing -------------------------------------------------------------

    def readConnectionLost(self) -> None:
        """The client half-closed: it has left; deliver what is owed and close."""
        member = self.member
        if member is not None:
            self.context.state.disconnected(member, "connection closed")
        self.close()

    def writeConnectionLost(self) -> None:
        transport: Any = self.transport
        transport.abortConnection()

    def connectionLost(self, reason: Failure = Failure(Exception("connection lost"))) -> None:
        if self.closer is not None and self.closer.active():
            self.closer.cancel()
        self.closer = None
        member = self.member
        if member is not None and not member.gone:
            self.context.state.disconnected(member, "connection closed")
        super().connectionLost(reason)
