"""
The chat protocol: bytes in, lines to the state; bytes out with backpressure.

Thin on purpose. It strips telnet commands (answering the ones a telnet
client waits for), hands the bytes to its L{LineInput} (which splits lines,
charges every byte and line to this connection's budget, slows and then
disconnects a client over it, and hands lines back a slice per reactor
turn), decodes the lines, and hands each to the L{ChatState} inside one
batch, so everything one slice causes reaches each recipient in one write.
It is its transport's producer: the transport tells it when its buffer is
full (C{pauseProducing}) and when it drained (C{resumeProducing}), and the
member's outbox queues, stalls or catches up accordingly (a member's input
is not held back for its output: the outbox bounds that).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol, IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from socksvc.core import writethrough
from socksvc.core.lineinput import LineInput
from socksvc.core.protocols import Tracked
from socksvc.core.service import ServiceContext
from socksvc.services.chat.commands import handle_line
from socksvc.services.chat.delivery import Member
from socksvc.services.chat.sanitize import TelnetFilter, decode_line
from socksvc.services.chat.state import ChatState
from socksvc.util.lines import LineSplitter, TooLong

CLOSE_GRACE = 10.0  # seconds a closing peer gets to take its last lines


class ChatInput(LineInput):
    """
    A chat connection's input: a slice is one batch, one write to every
    member of the room, so a bigger slice means fewer writes per member
    (64 KiB and 1,024 lines a turn, where reverse takes 4 KiB and 256).
    Chat's lines cost little each, and the input budget (200 lines at once
    by default) bounds what a client gets per turn long before that.
    """

    __slots__ = ()
    read_size = 65536
    slice_lines = 1024
    slice_bytes = 65536


def closing(conn: Any, reason: str) -> Any:
    """
    The start of every chat connection's close (line, IRC, web): the first
    reason kept, input stopped; the transport to close, or None when it has
    gone already.
    """
    if reason and not conn.close_reason:
        conn.close_reason = reason
    if conn.input is not None:
        conn.input.stop()
    transport = conn.transport
    return transport if transport is not None and transport.connected else None


class MemberProducer:
    """The transport's producer calls, passed to the connection's member (its outbox pauses and resumes)."""

    __slots__ = ()
    member: Member | None

    def pauseProducing(self) -> None:
        if self.member is not None:
            self.member.pause()

    def resumeProducing(self) -> None:
        if self.member is not None:
            self.member.resume()

    def stopProducing(self) -> None:
        pass


class ChatConnection(MemberProducer, Tracked):
    """
    What every chat client connection (line, IRC) does for the state and its
    transport alike: the L{Connection} writes, the close with its grace
    period, and the transport's producer calls passed to the member.
    """

    __slots__ = ()
    context: ServiceContext[Any, ChatState]
    input: LineInput | None
    closer: IDelayedCall | None
    member: Member | None

    def send(self, data: bytes) -> None:
        if data:
            self.bytes_out += len(data)
            writethrough.write(self.transport, data)

    def send_last(self, data: bytes, reason: str) -> None:
        self.close_reason = reason
        transport: Any = self.transport
        self.bytes_out += len(data)
        writethrough.send_now(transport, data)
        transport.abortConnection()

    def close(self, reason: str = "") -> None:
        transport = closing(self, reason)
        if transport is None:
            return
        transport.unregisterProducer()
        transport.loseConnection()
        if self.closer is None:
            self.closer = self.context.reactor.callLater(CLOSE_GRACE, transport.abortConnection)


@implementer(IHalfCloseableProtocol, IPushProducer)
class ChatProtocol(ChatConnection):
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
        "input",
        "last_seen",
        "member",
        "peer",
        "policy",
        "service_name",
        "source",
        "started",
        "subnet",
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
        self.subnet: Any = None
        self.started = 0.0
        self.last_seen = 0.0
        self.bytes_in = 0
        self.bytes_out = 0
        self.idle_sweeps = 0
        self.idle_aborted = False
        self.close_reason = ""
        self.member: Member | None = None
        self.telnet: TelnetFilter | None = None
        self.input: LineInput | None = None
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

    @property
    def splitter(self) -> LineSplitter:
        assert self.input is not None
        return self.input.splitter

    def connectionMade(self) -> None:
        super().connectionMade()
        state = self.context.state
        splitter = LineSplitter(state.settings.max_line)
        self.input = ChatInput(self, splitter, self.context.reactor, self.policy.settings)
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
        line_input = self.input
        if member is None or member.gone or line_input is None or line_input.done:
            return
        settings = self.policy.settings
        state = self.context.state
        splitter = line_input.splitter
        telnet = self.telnet
        if telnet is not None or b"\xff" in data or b"\r\x00" in data or (data[:1] == b"\x00" and splitter.tail_cr):
            if telnet is None:
                telnet = self.telnet = TelnetFilter(cr=splitter.tail_cr)
            size, commands = len(data), telnet.commands
            data = telnet.feed(data)
            # Telnet commands cost their bytes, and each costs a line (an IRC-style penalty per command).
            line_input.charge(size - len(data), settings, telnet.commands - commands)
            if telnet.replies:
                state.tell(member, telnet.take_replies())
        max_line = state.settings.max_line
        splitter.max_line = max_line
        line_input.received(data, settings)
        if not member.gone and not line_input.done and splitter.pending > 8 * max_line:
            with state.batch():
                state.no_line_end(member)
        if member.held is not None:
            member.release()

    def lines_received(self, lines: list[bytes | TooLong]) -> None:
        """A slice of complete lines from the L{LineInput}, handled in one batch."""
        member = self.member
        if member is None or member.gone:
            return
        state = self.context.state
        with state.batch():
            for n, line in enumerate(lines):
                if member.gone:
                    return
                if isinstance(line, TooLong):
                    state.too_long(member)
                    continue
                if not line.strip():
                    continue  # blank lines take no flood token (the input budget charged them)
                self.touched = True
                if not state.flood_ok(member):
                    state.lines_flooded += len(lines) - n - 1  # flood_ok counted this one
                    break  # the rest of this slice is over the limit too: no work spent on it
                handle_line(state, member, decode_line(line))
        if member.held is not None:
            member.release()

    def input_refused(self, reason: str) -> None:
        """Over its input budget for too long, or a line not finished in time: disconnected, saying why."""
        member = self.member
        if member is None or member.gone:
            return
        state = self.context.state
        with state.batch():
            state.kick(member, reason)

    # -- closing -------------------------------------------------------------

    def readConnectionLost(self) -> None:
        """The client half-closed: it has left; its lines still waiting are handled, what is owed delivered."""
        member = self.member
        if self.input is not None and not self.input.done:
            waiting = self.input.splitter.take()
            if waiting:
                self.lines_received(waiting)
        if member is not None:
            self.context.state.disconnected(member, "connection closed")
        self.close()

    def writeConnectionLost(self) -> None:
        transport: Any = self.transport
        transport.abortConnection()

    def connectionLost(self, reason: Failure = Failure(Exception("connection lost"))) -> None:
        if self.input is not None:
            self.input.stop()
        if self.closer is not None and self.closer.active():
            self.closer.cancel()
        self.closer = None
        member = self.member
        if member is not None and not member.gone:
            self.context.state.disconnected(member, "connection closed")
        super().connectionLost(reason)
