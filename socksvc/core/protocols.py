"""
The base protocols every stream service builds on, and the factory that
admits through the policy.

L{ServiceFactory.buildProtocol} asks the service's L{Policy} about each peer
and builds either the service's L{Tracked} protocol or a L{Refuser}: there is
no wrapping protocol. Refused peers get one line (C{socksvc: REASON}) and are
closed at once: they never count against a cap, never get a read buffer,
never log a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, ClassVar, Generic, TypeVar

from twisted.internet.interfaces import IAddress, IHalfCloseableProtocol
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from socksvc.core.policy import Policy
from socksvc.core.writethrough import send_last
from socksvc.util.addresses import format_peer, peer_facts
from socksvc.wire import REFUSAL_PREFIX

C = TypeVar("C")
"""The service context type (L{socksvc.core.service.ServiceContext} of some settings and state)."""


class Tracked(Protocol):
    """
    Base for every service's stream protocol: what the policy layer knows of
    a connection. A subclass adds to C{bytes_in}/C{bytes_out} and sets
    C{touched} when the peer did something that counts as activity (any
    input for a byte service, a complete line for a line service); only
    C{touched} keeps a connection from being aborted by the idle sweeper,
    unless the subclass makes C{idle_exempt} true for connections that idle
    by design (a chat member listening). A subclass may set C{close_reason}
    (a few words) before closing; it goes in the close event.
    """

    policy: Policy
    context: Any
    """The service's context (a subclass may narrow the type: C{ServiceContext[Settings, State]})."""
    service_name: str = ""
    peer: str = ""
    source: str = "local"
    subnet: Hashable = None
    """The peer's group for max_per_subnet (L{Policy.subnet_of}); None: not counted."""
    bytes_in: int = 0
    bytes_out: int = 0
    started: float = 0.0
    last_seen: float = 0.0
    touched: bool = False
    idle_sweeps: int = 0
    idle_aborted: bool = False
    close_reason: str = ""

    @property
    def idle_exempt(self) -> bool:
        """True while this connection may idle without being swept (see the class doc)."""
        return False

    def connectionMade(self) -> None:
        self.policy.opened(self)

    def connectionLost(self, reason: Failure = Failure(Exception("connection lost"))) -> None:
        self.policy.closed(self, reason)


@implementer(IHalfCloseableProtocol)
class StreamProtocol(Tracked):
    """
    A service's stream protocol with the usual set-up. With C{nodelay},
    TCP_NODELAY (replies go out at once, not after Nagle's wait). With
    C{self_producer}, the transport is registered as its own streaming
    producer: a peer that sends without reading fills our write buffer, and
    that pauses reading from it, so memory stays flat. Half-close: after the
    peer's half-close what is owed is still delivered, then the connection
    closes (a subclass with a last word overrides C{readConnectionLost});
    when the peer can no longer read at all, the connection is aborted.
    """

    nodelay: ClassVar[bool] = True
    self_producer: ClassVar[bool] = True

    def connectionMade(self) -> None:
        super().connectionMade()
        transport: Any = self.transport
        if self.nodelay:
            set_nodelay = getattr(transport, "setTcpNoDelay", None)
            if set_nodelay is not None:
                set_nodelay(True)
        if self.self_producer:
            transport.registerProducer(transport, True)

    def readConnectionLost(self) -> None:
        """The peer half-closed: deliver what is owed, then close."""
        transport: Any = self.transport
        if self.self_producer:
            transport.unregisterProducer()
        transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """The peer stopped reading for good: nothing more can be delivered."""
        transport: Any = self.transport
        transport.abortConnection()


class Refuser(Protocol):
    """
    Says why in one line, then closes at once: a refused peer holds no slot
    or buffer.

    The line goes straight to the socket (L{send_last}). When the kernel took
    all of it (on a fresh plain TCP or UNIX connection it always does) the
    connection is closed in order at once, input the peer already sent read
    away first, so the peer reads the line before its end-of-file: an abort
    (RST) can overtake the line, and a client doing a non-blocking connect
    then sees only "connection reset". When the line could not be sent whole
    (TLS, say), the connection is aborted, its descriptor released on the
    next reactor turn. Either way nothing waits on the peer.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def message(self) -> bytes:
        """What the refused peer reads (a subclass may say it in its protocol: the admin listener's HTTP)."""
        return f"{REFUSAL_PREFIX}{self.reason}\r\n".encode()

    def connectionMade(self) -> None:
        transport: Any = self.transport
        line = self.message()
        sent = send_last(transport, line)
        if sent == len(line):
            return
        if not sent:
            transport.write(line)  # best effort: abort discards it unless the transport sends at once
        transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        """Whatever came with the connection is dropped unread."""


class ServiceFactory(ServerFactory, Generic[C]):
    """
    A service's stream factory: asks the policy about each peer, then builds
    the service's L{Tracked} protocol.
    """

    noisy = False

    def __init__(self, context: C, make: Callable[[], Tracked]) -> None:
        self.context = context
        self.make = make

    def buildProtocol(self, addr: IAddress) -> Protocol | None:  # type: ignore[override]
        context: Any = self.context
        policy: Policy = context.policy
        ip, source = peer_facts(addr)
        subnet = policy.subnet_of(ip)
        reason = policy.check_ip(ip, source, subnet)
        if reason is not None:
            policy.refuse(addr, reason)
            return Refuser(reason)
        proto = self.make()
        proto.factory = self
        proto.context = context
        proto.policy = policy
        proto.service_name = policy.service
        proto.peer = format_peer(addr)
        proto.source = source
        proto.subnet = subnet
        return proto
