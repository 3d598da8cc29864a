"""
The chat's web listener (the chat service's C{web} listen list): the chat
page over HTTP and the page's WebSocket, in the same rooms as line and IRC
clients.

One connection serves either one plain HTTP request (C{GET /}, the page and
its script and style sheet: L{socksvc.services.chat.page}) or the WebSocket
at C{/ws}. The WebSocket is autobahn's (Twisted-native), with its unsafe
defaults replaced by explicit limits:

 - Origin: a browser's WebSocket is accepted only from the page this
   listener serves (the Origin must be the scheme and Host of the request)
   or from an origin listed in C{web_origins}; clients that send no Origin
   (not browsers) are accepted, as they could connect with nc anyway;
 - message size: a message (one line of input) is at most the chat's
   C{max_line} bytes, a frame too (autobahn's C{maxMessagePayloadSize},
   C{maxFramePayloadSize}); a bigger one closes the connection (1009);
 - pings: every C{ping_interval} seconds, answered within C{ping_timeout}
   or the connection is dropped (C{autoPingInterval}, C{autoPingTimeout});
 - handshakes: the request head is at most L{MAX_REQUEST} bytes and must
   arrive within L{HANDSHAKE_TIMEOUT} seconds; the closing handshake gets
   L{CLOSE_TIMEOUT}; no compression (no decompression bombs);
 - its log lines are dropped: a client could otherwise have one written per
   bad request; the connection's close line says why it was refused.

The page sends lines exactly as a line client types them (a nickname, then
text, C{/join ROOM}, C{/msg NICK TEXT}...), one per message, through the
same input budget, command surface, flood control and outbox as line
clients; it receives
JSON events (L{socksvc.services.chat.webview}).
"""

from __future__ import annotations

from typing import Any

import autobahn.websocket.protocol
import txaio
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from socksvc.core import writethrough
from socksvc.core.protocols import ServiceFactory, Tracked
from socksvc.core.service import ServiceContext
from socksvc.services.chat import page
from socksvc.services.chat.commands import handle_line
from socksvc.services.chat.delivery import Member
from socksvc.services.chat.protocol import ChatInput, MemberProducer, closing
from socksvc.services.chat.sanitize import clip, visible
from socksvc.services.chat.state import ChatState
from socksvc.services.chat.weblimits import CLOSE_TIMEOUT, HANDSHAKE_TIMEOUT, MAX_REQUEST, Timers, same_origin
from socksvc.services.chat.webview import WebView
from socksvc.util.lines import LineSplitter, TooLong

CLOSE_GRACE = 10.0
"""Seconds a closing client gets to take its last lines."""
WS_PATH = b"/ws"


# autobahn pretty-prints every connection's options (pprint.pformat) for a debug line,
# whether or not debug lines are logged: about 1 ms a connection, more than accepting it
# costs. socksvc never logs autobahn's debug lines (see _QUIET), so that formatting goes.
def _unformatted(obj: object, *args: Any, **kw: Any) -> str:
    return ""


setattr(autobahn.websocket.protocol, "pformat", _unformatted)  # noqa: B010  (typed as pprint's: set by name)

_QUIET = txaio.make_logger(level="critical")  # type: ignore[attr-defined]
"""autobahn's logger for our connections: a client must not be able to write our log (see the module doc)."""


def web_view(state: ChatState) -> WebView:
    """The one web view of a chat state (made on first use)."""
    view = state.views.get("web")
    if view is None:
        view = state.views["web"] = WebView(state.clock)
    assert isinstance(view, WebView)
    return view


@implementer(IPushProducer)
class WebMember(MemberProducer, Tracked, WebSocketServerProtocol):  # type: ignore[misc]
    """One browser (or one HTTP request for the page)."""

    log = _QUIET

    def __init__(self) -> None:
        WebSocketServerProtocol.__init__(self)
        self.context: ServiceContext[Any, ChatState] = None  # type: ignore[assignment]  # set by the factory
        self.member: Member | None = None
        self.input: ChatInput | None = None
        self.closer: Any = None
        self.head_bytes = 0
        self.last_words = False

    @property
    def idle_exempt(self) -> bool:
        """A member with a nickname may idle (pings find the dead); idle_timeout applies until then."""
        return self.member is not None and self.member.nick is not None

    def connectionMade(self) -> None:
        Tracked.connectionMade(self)
        peer = self.peer
        WebSocketServerProtocol.connectionMade(self)
        self.peer = peer  # autobahn sets its own form ("tcp4:HOST:PORT"); the close line keeps ours

    def dataReceived(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self.state == self.STATE_CONNECTING:
            self.head_bytes += len(data)
            if self.head_bytes > MAX_REQUEST and b"\r\n\r\n" not in self.data + data:
                self.http_reply(431, "Request Header Fields Too Large", b"request head too long\n")
                return
        WebSocketServerProtocol.dataReceived(self, data)

    # -- plain HTTP: the page -------------------------------------------------

    def processHandshake(self) -> None:
        """The page's files for plain requests; the WebSocket at /ws (autobahn's handshake)."""
        end = self.data.find(b"\r\n\r\n")
        if end < 0:
            return
        request = self.data[: self.data.find(b"\r\n")].split(b" ")
        if len(request) != 3 or not request[2].startswith(b"HTTP/1."):
            self.http_reply(400, "Bad Request", b"bad request\n")
            return
        method, target = request[0], request[1].split(b"?", 1)[0]
        if target == WS_PATH and method == b"GET":
            super().processHandshake()
            return
        if method not in (b"GET", b"HEAD"):
            self.http_reply(405, "Method Not Allowed", b"method not allowed\n", [("Allow", "GET, HEAD")])
            return
        found = page.FILES.get(target.decode("latin-1"))
        if found is None:
            self.http_reply(404, "Not Found", b"not found\n")
            return
        content_type, body = found
        headers = [("Content-Type", content_type), *page.headers(self.request_host())]
        self.http_reply(200, "OK", body, headers, head_only=method == b"HEAD")

    def request_host(self) -> str:
        """The request's Host header (for the page's connect-src), if it is a plain host[:port]."""
        for line in self.data[: self.data.find(b"\r\n\r\n")].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"host":
                return page.clean_host(value.strip().decode("latin-1"))
        return ""

    def http_reply(
        self, code: int, reason: str, body: bytes, headers: list[tuple[str, str]] | None = None, head_only: bool = False
    ) -> None:
        """One HTTP response, then the connection closes (one request per connection)."""
        if code >= 400 and not self.close_reason:
            self.close_reason = f"http {code}"
        lines = [f"HTTP/1.1 {code} {reason}", f"Content-Length: {len(body)}", "Connection: close"]
        if not any(name == "Content-Type" for name, _ in headers or []):
            lines.append("Content-Type: text/plain; charset=utf-8")
        lines += [f"{name}: {value}" for name, value in headers or []]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body)
        self.state = self.STATE_CLOSED  # autobahn: nothing more to do on this connection
        self.bytes_out += len(data)
        transport: Any = self.transport
        transport.write(data)
        transport.loseConnection()

    def failHandshake(self, reason: str, code: int = 400, responseHeaders: Any = None) -> None:
        """A refused WebSocket handshake: a short reply (nothing of the request echoed); why goes in the close line."""
        self.close_reason = "websocket refused: " + clip(visible(str(reason)), 120)
        self.http_reply(code, "Refused", b"websocket refused\n", list(responseHeaders or []))

    # -- the WebSocket ----------------------------------------------------------

    def onConnect(self, request: ConnectionRequest) -> None:
        """The Origin check (see the module doc)."""
        origin = request.origin or ""
        if not origin:
            return
        settings = self.context.state.settings
        secure = bool(getattr(self.factory, "isSecure", False)) or self.is_tls()
        if not same_origin(origin, request.headers.get("host", ""), secure, settings.web_origins):
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "origin not allowed")

    def is_tls(self) -> bool:
        transport: Any = self.transport
        return getattr(transport, "TLS", False) or hasattr(transport, "getPeerCertificate")

    def onOpen(self) -> None:
        state = self.context.state
        self.input = ChatInput(self, LineSplitter(state.settings.max_line), self.context.reactor, self.policy.settings)
        transport: Any = self.transport
        transport.registerProducer(self, True)
        with state.batch():
            self.member = state.connect(self, web_view(state))

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """
        A message is one or more lines: they go through the line clients' own
        L{ChatInput} (every byte and line charged to this connection's input
        budget, paced a slice per reactor turn, reading held while over it).
        """
        member, line_input = self.member, self.input
        if member is None or member.gone or line_input is None or line_input.done:
            return
        if isBinary:
            self._fail_connection(1003, "text messages only")  # sendClose takes only 1000 and 3000-4999
            return
        line_input.received(payload.replace(b"\r", b"") + b"\n", self.policy.settings)

    def lines_received(self, lines: list[bytes | TooLong]) -> None:
        """A slice of lines from the L{ChatInput}, handled in one batch, as a line client's are."""
        member = self.member
        if member is None or member.gone:
            return
        state = self.context.state
        with state.batch():
            for n, line in enumerate(lines):
                if member.gone:
                    break
                if isinstance(line, TooLong) or not line.strip():
                    continue  # (a message is at most max_line bytes: a line cannot be too long)
                self.touched = True
                if not state.flood_ok(member):
                    state.lines_flooded += len(lines) - n - 1  # flood_ok counted this one
                    break
                handle_line(state, member, line.decode("utf-8", "replace"))
        if member.held is not None:
            member.release()

    def input_refused(self, reason: str) -> None:
        """Over its input budget for too long: disconnected, saying why."""
        member = self.member
        if member is not None and not member.gone:
            with self.context.state.batch():
                self.context.state.kick(member, reason)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        member = self.member
        if member is not None and not member.gone:
            self.context.state.disconnected(member, "connection closed")

    # -- Connection (what the state writes through) --------------------------

    def send(self, data: bytes) -> None:
        """Events, already one WebSocket frame (the web view wraps them: L{WebView.wrap})."""
        if data and self.state == self.STATE_OPEN:
            self.sendData(data)

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        """Every byte autobahn sends (handshake, frames) leaves here: counted, written through."""
        self.bytes_out += len(data)
        if self.last_words:
            writethrough.send_now(self.transport, data)
        else:
            writethrough.write(self.transport, data)

    def send_last(self, data: bytes, reason: str) -> None:
        self.close_reason = reason
        self.last_words = True
        self.send(data)
        transport: Any = self.transport
        transport.abortConnection()

    def close(self, reason: str = "") -> None:
        transport = closing(self, reason)
        if transport is None:
            return
        if self.state == self.STATE_OPEN:
            self.sendClose(1000)
        else:
            transport.loseConnection()
        if self.closer is None:
            self.closer = self.context.reactor.callLater(CLOSE_GRACE, transport.abortConnection)

    def unregisterProducer(self) -> None:
        """autobahn calls this on every drop, registered or not (test transports refuse that)."""
        transport: Any = self.transport
        try:
            transport.unregisterProducer()
        except RuntimeError:
            pass

    def _fail_connection(self, code: int = 1001, reason: str = "going away") -> None:
        """autobahn fails the connection (a message too big, a bad frame): the close line says why."""
        if not self.close_reason:
            self.close_reason = clip(visible(str(reason)), 120)
        super()._fail_connection(code, reason)

    def connectionLost(self, reason: Failure = Failure(Exception("connection lost"))) -> None:
        if self.input is not None:
            self.input.stop()
        if self.closer is not None and self.closer.active():
            self.closer.cancel()
        self.closer = None
        why = getattr(self, "wasNotCleanReason", None)
        if why and not self.close_reason:
            self.close_reason = clip(visible(str(why)), 120)  # autobahn's: a message too big, a ping timeout...
        try:
            WebSocketServerProtocol.connectionLost(self, reason)
        finally:
            member = self.member
            if member is not None and not member.gone:
                self.context.state.disconnected(member, "connection closed")
            Tracked.connectionLost(self, reason)


class WebFactory(ServiceFactory[Any], WebSocketServerFactory):  # type: ignore[misc]
    """The factory of the chat's C{web} listeners: policy admission (ServiceFactory), autobahn's options."""

    def __init__(self, context: ServiceContext[Any, ChatState]) -> None:
        ServiceFactory.__init__(self, context, WebMember)
        WebSocketServerFactory.__init__(self, server="socksvc", reactor=context.reactor)
        self._batched_timer = Timers(context.reactor)
        self.limit(context.state.settings)

    def limit(self, settings: Any) -> None:
        """autobahn's options from the chat's settings (new connections take them: a reload applies)."""
        self.setProtocolOptions(
            webStatus=False,
            maxFramePayloadSize=settings.max_line,
            maxMessagePayloadSize=settings.max_line,
            autoPingInterval=settings.ping_interval,
            autoPingTimeout=settings.ping_timeout if settings.ping_interval > 0 else 0,
            openHandshakeTimeout=HANDSHAKE_TIMEOUT,
            closeHandshakeTimeout=CLOSE_TIMEOUT,
            perMessageCompressionAccept=lambda offers: None,
            failByDrop=False,
            requireMaskedClientFrames=True,
            allowNullOrigin=False,
            trustXForwardedFor=0,
        )

    def buildProtocol(self, addr: Any) -> Any:
        self.limit(self.context.state.settings)
        return ServiceFactory.buildProtocol(self, addr)


def make_factory(context: ServiceContext[Any, ChatState]) -> WebFactory:
    """The factory of the chat's C{web} listeners."""
    return WebFactory(context)
