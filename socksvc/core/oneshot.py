"""
One message, then close: the stream side of every service that answers a
connection with a few bytes and hangs up (greeting, daytime, time).

The service's state renders the message, called as C{state(peer, now)} with
the peer's text and the reactor's time; its settings have C{send_timeout}.
L{OneShotFactory} admits through the policy like any L{ServiceFactory}, and
has L{OneShotFactory.quick}: on a plain TCP port the daemon makes a
L{socksvc.daemon.quickport.QuickPort}, which hands it each accepted socket
before any transport exists, and the whole exchange (send, shut down, read
away, close, keep the books) happens right there in the accept loop.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IDelayedCall
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from socksvc.core import writethrough
from socksvc.core.protocols import ServiceFactory, StreamProtocol
from socksvc.core.service import ServiceContext

OneShotContext = ServiceContext[Any, Any]
"""
A "one message, then close" service's context: its state renders
C{(peer, now) -> bytes}; its settings have C{send_timeout}.
"""


def render(context: OneShotContext, peer: str, now: float) -> bytes:
    """The bytes one client gets: what the service's state renders."""
    data: bytes = context.state(peer, now)
    return data


class OneShot(StreamProtocol):
    """
    Writes the message and closes; anything the peer sends is ignored. A
    peer's half-close does not cut the message short (see L{StreamProtocol}).

    On a plain TCP port (a L{socksvc.daemon.quickport.QuickPort}) the whole
    exchange happens in the accept loop, before any transport exists
    (L{OneShotFactory.quick}, L{greet_now}). Otherwise there is a transport
    (a UNIX socket, TLS, a test transport, or the rest of a message the
    kernel did not take whole). On a plain TCP or UNIX transport the message
    goes straight to the socket and the connection closes in order at once,
    input the peer sent first discarded so that the close does not reset
    the connection under the message (L{writethrough.send_last}, as
    refusals do), on the next reactor turn so that the accept loop takes in
    every waiting peer first. Anything else is written and closed the usual
    way, and a peer that never reads is aborted after send_timeout.
    """

    context: OneShotContext
    nodelay = False  # one write followed by our FIN: nothing for Nagle to hold back
    self_producer = False  # one message, bounded: nothing to pause
    deadline: IDelayedCall | None = None
    """The pending send, then the send deadline; connectionLost cancels either."""
    rest: bytes = b""
    """What L{greet_now} could not send: written the usual way once there is a transport."""

    def greet_now(self, sock: socket.socket) -> OneShot | None:
        """
        The whole exchange on a socket that has no transport yet
        (L{OneShotFactory.quick}): send, shut down, read away what came,
        close, and keep the books (the policy's open and close, the close
        line) as a transport would have. None when done; when the kernel
        did not take the whole message, C{self} with the remainder in
        C{rest}, to be given a transport (which sends it the usual way).
        """
        context = self.context
        data = render(context, self.peer, context.reactor.seconds())
        self.bytes_out = len(data)
        sent = writethrough.send_and_drain(sock, data)
        if sent != len(data):
            self.rest = data[sent:]
            return self
        sock.close()
        self.policy.opened(self)
        self.policy.closed(self, _DONE)
        return None

    def connectionMade(self) -> None:
        super().connectionMade()
        if self.rest:
            self._write(self.rest)
            return
        context = self.context
        data = render(context, self.peer, context.reactor.seconds())
        self.bytes_out = len(data)
        if writethrough.idle_plain(self.transport):
            self.deadline = context.reactor.callLater(0, self._send, data)
        else:
            self._write(data)

    def _send(self, data: bytes) -> None:
        self.deadline = None
        sent = writethrough.send_last(self.transport, data)
        if sent != len(data):
            self._write(data[sent:])
        # else: sent and closed (connectionLost has run)

    def _write(self, data: bytes) -> None:
        """The usual way: queue it, close once it is out, abort a peer that does not take it in time."""
        context = self.context
        transport: Any = self.transport
        # The deadline first: connectionLost cancels it, whenever that comes.
        self.deadline = context.reactor.callLater(context.settings.send_timeout, transport.abortConnection)
        transport.write(data)
        transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        self.bytes_in += len(data)

    def connectionLost(self, reason: Failure = Failure(Exception("connection lost"))) -> None:
        if self.deadline is not None and self.deadline.active():
            self.deadline.cancel()
        self.deadline = None
        super().connectionLost(reason)


_DONE = Failure(ConnectionDone("greeted"))
"""The close reason of every exchange finished without a transport (the same as an orderly close)."""


class OneShotFactory(ServiceFactory[OneShotContext]):
    """
    A one-message service's factory: with L{quick}, a
    L{socksvc.daemon.quickport.QuickPort} serves a plain TCP peer straight
    from its accept loop, no transport built; everything else (TLS, UNIX
    sockets, refusals) goes the usual way.
    """

    def quick(self, sock: socket.socket, addr: IAddress) -> Protocol | None:
        """Admit the peer as L{buildProtocol} does; greet it now, or return the protocol to serve it with."""
        proto = self.buildProtocol(addr)
        if isinstance(proto, OneShot):
            return proto.greet_now(sock)
        if proto is None:
            sock.close()
        return proto
