"""
The chat's IRC listener (the chat service's C{irc} listen list): an IRC
server view of the same chat state line clients use.

Built on C{twisted.words.protocols.irc.IRC} (its command dispatch,
C{irc_COMMAND} methods, and its message parser), not on twisted.words'
service. Input goes through the line clients' own L{ChatInput} (split into
lines at the byte level by L{LineSplitter}, every byte and line charged to
the connection's input budget, paced a slice per reactor turn, line_timeout)
and each line is decoded as UTF-8 with replacement (IRC's own
C{dataReceived} decodes each TCP chunk and fails on a character split across
reads, or on any byte that is not UTF-8). Everything a client says goes
through the chat state's actions, so flood control, slow readers and the
idle rules are the line clients' own; what it is sent comes from its
member's outbox (L{socksvc.services.chat.ircview} renders the events).

The commands are in L{socksvc.services.chat.irccommands}; this module is the
connection: bytes in, registration, pings, bytes out.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol, IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from socksvc.core.protocols import ServiceFactory, Tracked
from socksvc.core.service import ServiceContext
from socksvc.services.chat.delivery import Member
from socksvc.services.chat.irccommands import FREE, IrcCommands
from socksvc.services.chat.ircview import ERR_INPUTTOOLONG, IrcView
from socksvc.services.chat.protocol import ChatConnection, ChatInput
from socksvc.services.chat.sanitize import decode_line
from socksvc.services.chat.state import ChatState
from socksvc.util.lines import LineSplitter, TooLong

CLOSE_GRACE = 10.0
"""Seconds a closing client gets to take its last lines."""
IRC_LINE = 512
"""An IRC line's length (RFC 1459), CRLF included: the least we accept, whatever the chat's max_line."""


@implementer(IHalfCloseableProtocol, IPushProducer)
class IrcConnection(IrcCommands, ChatConnection):
    """
    One IRC client: the connection half. The protocol class the factory
    builds (L{protocol_class}) adds C{twisted.words.protocols.irc.IRC} as a
    base, which gives C{handleCommand} (the dispatch to C{irc_COMMAND}).
    """

    handleCommand: Callable[[str, str, list[str]], None]
    """From IRC: calls C{irc_COMMAND(prefix, params)}, or C{irc_unknown}."""
    parse: Callable[[str], tuple[str, str, list[str]]]
    """IRC's C{parsemsg}: a line's prefix, command and parameters."""
    hostname: str

    def __init__(self) -> None:
        self.factory: Any = None
        self.context: ServiceContext[Any, ChatState] = None  # type: ignore[assignment]  # set by the factory
        self.transport: Any = None
        self.member: Member | None = None
        self.closer: IDelayedCall | None = None
        self.pinger: IDelayedCall | None = None
        self.last_input = 0.0
        self.ping_sent: float | None = None
        self.input: ChatInput | None = None
        self.init_commands()

    @property
    def idle_exempt(self) -> bool:
        """Registered clients may idle (pings find the dead ones); idle_timeout applies until then."""
        return self.member is not None and self.member.nick is not None

    def connectionMade(self) -> None:
        super().connectionMade()  # Tracked: the policy counts it (IRC's own would look up our FQDN)
        state = self.context.state
        self.view = irc_view(state)
        self.hostname = self.view.server
        splitter = LineSplitter(max(state.settings.max_line, IRC_LINE))
        self.input = ChatInput(self, splitter, self.context.reactor, self.policy.settings)
        transport: Any = self.transport
        for option in ("setTcpNoDelay", "setTcpKeepAlive"):
            method = getattr(transport, option, None)
            if method is not None:
                method(True)
        transport.registerProducer(self, True)
        self.member = state.attach(self, self.view)
        self.last_input = self.context.reactor.seconds()
        self.schedule_ping()

    def dataReceived(self, data: bytes) -> None:
        """
        Bytes in: the connection's L{ChatInput} splits them (at the byte level),
        charges them and their lines to this connection's input budget (as for
        a line client), and hands lines back a slice at a time.
        """
        self.bytes_in += len(data)
        member = self.member
        line_input = self.input
        if member is None or member.gone or line_input is None or line_input.done:
            return
        self.last_input = self.context.reactor.seconds()
        self.ping_sent = None  # anything from the client answers our ping
        state = self.context.state
        max_line = max(state.settings.max_line, IRC_LINE)
        splitter = line_input.splitter
        splitter.max_line = max_line
        line_input.received(data, self.policy.settings)
        if not member.gone and not line_input.done and splitter.pending > 8 * max_line:
            with state.batch():
                state.no_line_end(member)

    def lines_received(self, lines: list[bytes | TooLong]) -> None:
        """A slice of complete lines from the L{ChatInput}, handled in one batch."""
        member = self.member
        if member is None or member.gone:
            return
        state = self.context.state
        with state.batch():
            for n, line in enumerate(lines):
                if member.gone:
                    return
                if isinstance(line, TooLong):
                    state.lines_too_long += 1
                    self.send_reply(ERR_INPUTTOOLONG, text="Input line was too long")
                    continue
                if not line.strip():
                    continue
                self.touched = True
                if not self.line_received(decode_line(line)):
                    state.lines_flooded += len(lines) - n - 1  # flood_ok counted this one
                    break  # over the flood limit: the rest of this slice is too

    def input_refused(self, reason: str) -> None:
        """Over its input budget for too long, or a line not finished in time: disconnected, saying why."""
        member = self.member
        if member is not None and not member.gone:
            with self.context.state.batch():
                self.context.state.kick(member, reason)

    def line_received(self, text: str) -> bool:
        """One line: parse, charge flood control, dispatch. False when the line was dropped for flooding."""
        if text.startswith("@"):  # IRCv3 message tags (none was negotiated): skipped
            text = text.partition(" ")[2].lstrip(" ")
        try:
            prefix, command, params = self.parse(text.strip(" "))
        except (ValueError, IndexError):
            return True  # nothing that parses as a command: ignored, as IRC servers do
        command = command.upper()
        member = self.member
        assert member is not None
        if member.nick is not None and command not in FREE and not self.context.state.flood_ok(member):
            return False
        cluster = self.context.state.cluster
        if cluster is not None and cluster.hold(member, lambda: self.dispatch(command, prefix, params)):
            return True  # its NICK or JOIN is on its way through the chat bus: this waits for it
        self.dispatch(command, prefix, params)
        return True

    # -- pings -----------------------------------------------------------------

    def schedule_ping(self, delay: float | None = None) -> None:
        settings = self.context.state.settings
        if settings.ping_interval <= 0:
            return
        if self.pinger is not None and self.pinger.active():
            self.pinger.cancel()
        wait = settings.ping_interval if delay is None else delay
        self.pinger = self.context.reactor.callLater(max(wait, 0.01), self.ping_due)

    def ping_due(self) -> None:
        """Ping a client silent for ping_interval; disconnect one that has not answered in ping_timeout."""
        self.pinger = None
        member = self.member
        if member is None or member.gone:
            return
        settings = self.context.state.settings
        now = self.context.reactor.seconds()
        if self.ping_sent is not None:
            if now - self.ping_sent >= settings.ping_timeout:
                with self.context.state.batch():
                    self.context.state.kick(member, f"ping timeout: {settings.ping_timeout:g} seconds")
                return
            self.schedule_ping(self.ping_sent + settings.ping_timeout - now)
            return
        quiet = now - self.last_input
        if quiet < settings.ping_interval:
            self.schedule_ping(settings.ping_interval - quiet)
            return
        self.ping_sent = now
        self.context.state.tell(member, f"PING :{self.hostname}\r\n".encode())
        self.schedule_ping(settings.ping_timeout)

    # -- output (the Connection the state writes through) ------------------------

    def sendLine(self, line: str | bytes) -> None:
        """IRC's way out, through the member's outbox (batching, backpressure) like everything else."""
        data = line.encode("utf-8") if isinstance(line, str) else line
        if self.member is not None:
            self.context.state.tell(self.member, data + b"\r\n")

    # -- closing -------------------------------------------------------------

    def readConnectionLost(self) -> None:
        """The client half-closed: it has left; its lines still waiting are handled, what is owed delivered."""
        if self.input is not None and not self.input.done:
            waiting = self.input.splitter.take()
            if waiting:
                self.lines_received(waiting)
        if self.member is not None:
            self.context.state.disconnected(self.member, "connection closed")
        self.close()

    def writeConnectionLost(self) -> None:
        transport: Any = self.transport
        transport.abortConnection()

    def connectionLost(self, reason: Failure = Failure(Exception("connection lost"))) -> None:
        if self.input is not None:
            self.input.stop()
        for call in (self.closer, self.pinger):
            if call is not None and call.active():
                call.cancel()
        self.closer = self.pinger = None
        member = self.member
        if member is not None and not member.gone:
            self.context.state.disconnected(member, "connection closed")
        Tracked.connectionLost(self, reason)


def irc_view(state: ChatState) -> IrcView:
    """The one IRC view of a chat state (made on first use: events render once per view, not per member)."""
    view = state.views.get("irc")
    if view is None:
        view = state.views["irc"] = IrcView(f"{state.service}.socksvc", state.clock)
    assert isinstance(view, IrcView)
    return view


@functools.cache
def protocol_class() -> type[IrcConnection]:
    """
    The IRC protocol class: L{IrcConnection} on C{twisted.words.protocols.irc.IRC}.

    The reactor rule: C{twisted.words.protocols.irc} imports
    C{twisted.internet.reactor} when it is imported, and importing a socksvc
    module must never import the reactor (twistd installs its reactor after
    the plugin is imported; tests/test_architecture.py checks). So the class
    is made here, when the first IRC factory is built: the daemon binds
    after installing its reactor.
    """
    from twisted.words.protocols import irc

    class IrcProtocol(IrcConnection, irc.IRC):  # type: ignore[misc]
        parse = staticmethod(irc.parsemsg)

    return IrcProtocol


def make_factory(context: ServiceContext[Any, ChatState]) -> ServiceFactory[Any]:
    """The factory of the chat's C{irc} listeners."""
    return ServiceFactory(context, protocol_class())
