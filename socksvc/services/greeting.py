"""
Greeting (RFC 865 style, as in quote of the day): say one message, close.

The message is a template with {hostname}, {peer}, {time} and {service}, or
a random line of a quotes file. It is under 512 bytes (RFC 865), checked when
the config is loaded. A peer that never reads is aborted after send_timeout.
"""

from __future__ import annotations

import random
import re
import socket
import string
import time as _time
from typing import Any

import attrs
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IDelayedCall
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.python.failure import Failure

from socksvc.config.loader import MAX_SERVICE_NAME
from socksvc.config.settings import as_float, setting
from socksvc.core import writethrough
from socksvc.core.protocols import ServiceFactory, StreamProtocol
from socksvc.core.service import ServiceContext, ServiceStatus, ServiceType
from socksvc.util.files import read_regular_file

MAX_MESSAGE = 512
MAX_QUOTES_FILE = 16 << 20
"""A quotes file is read whole when the config loads: not /dev/zero, not a disk image."""
FIELDS = ("hostname", "peer", "time", "service")
HOSTNAME_TTL = 60.0
"""Seconds a looked-up hostname is used for (a reload that changes the service's settings looks again)."""
# Worst cases for the size check: the longest peer text we can produce, a
# long service name, an RFC 3339 time.
_WORST = {
    "peer": "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535",
    "service": "s" * MAX_SERVICE_NAME,
    "time": "2026-11-21T11:39:21Z",
}


def _hostname() -> str:
    return socket.gethostname()


def _finish(text: str) -> bytes:
    """A message as sent: UTF-8, ending in CRLF (added if it has no line end)."""
    data = text.encode("utf-8", "replace")
    if not data.endswith(b"\n"):
        data += b"\r\n"
    return data


def _cut(data: bytes, limit: int = MAX_MESSAGE) -> bytes:
    """
    C{data} if it fits in C{limit} bytes; otherwise its longest prefix that
    ends on a UTF-8 character boundary and leaves room for CRLF, plus CRLF.
    """
    if len(data) <= limit:
        return data
    end = limit - 2
    while end > 0 and (data[end] & 0xC0) == 0x80:  # a continuation byte: the cut would split a character
        end -= 1
    return data[:end] + b"\r\n"


def parse_message(value: Any) -> str:
    """A greeting template: only the known fields, and short enough."""
    if not isinstance(value, str):
        raise ValueError("expected a string")
    try:
        parsed = list(string.Formatter().parse(value))
    except ValueError as e:
        raise ValueError(f"bad template: {e} (write {{{{ and }}}} for literal braces)") from None
    for _literal, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in FIELDS:
            known = ", ".join("{" + f + "}" for f in FIELDS)
            raise ValueError(f"unknown field {{{field}}} (known: {known})")
        if conversion or (spec and ("{" in spec)):
            raise ValueError(f"field {{{field}}} takes no conversion or nested format")
        # Checked before anything is rendered: "{peer:>99999999999}" would
        # build a string of that width first and the size check after.
        for number in re.findall(r"\d+", spec or ""):
            digits = number.lstrip("0")
            if len(digits) > len(str(MAX_MESSAGE)) or int(digits or "0") > MAX_MESSAGE:
                raise ValueError(f"field {{{field}}}: {number} in its format is over {MAX_MESSAGE} (RFC 865)")
    try:
        size = len(_finish(value.format(hostname=_hostname(), **_WORST)))
    except (ValueError, TypeError) as e:
        raise ValueError(f"bad template: {e}") from None
    if size > MAX_MESSAGE:
        raise ValueError(f"message is {size} bytes when filled in; the limit is {MAX_MESSAGE} (RFC 865)")
    return value


@attrs.frozen
class Quotes:
    """A quotes file, read when the config is loaded."""

    path: str
    lines: tuple[str, ...]


def parse_quotes(value: Any) -> Quotes | None:
    """Read a quotes file: one quote a line; blank lines and # comments skipped."""
    if not isinstance(value, str):
        raise ValueError("expected a file path string")
    if not value:
        return None
    try:
        data = read_regular_file(value, MAX_QUOTES_FILE)
    except (OSError, ValueError) as e:  # ValueError: not a regular file, or a NUL in the path
        raise ValueError(f"cannot read quotes file: {getattr(e, 'strerror', None) or e}") from None
    if len(data) > MAX_QUOTES_FILE:
        raise ValueError(f"quotes file is over {MAX_QUOTES_FILE // (1 << 20)} MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("quotes file is not UTF-8 text") from None
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if len(_finish(line)) > MAX_MESSAGE:
            raise ValueError(f"line {number} of the quotes file is over {MAX_MESSAGE} bytes")
        lines.append(line)
    if not lines:
        raise ValueError("quotes file has no quotes")
    return Quotes(value, tuple(lines))


@attrs.frozen
class GreetingSettings:
    """Keys of a greeting service."""

    message: str = setting(
        "Thank you for connecting",
        parse_message,
        "the message, a template with {hostname}, {peer}, {time}, {service}; CRLF is added",
    )
    quotes: Quotes | None = setting(
        None,
        parse_quotes,
        "a file of quotes, one a line: serve a random one instead (not with message)",
        path=True,
        conflicts=("message",),
    )
    send_timeout: float = setting(
        10.0, as_float(minimum=0.1, maximum=3600), "seconds to deliver the message before aborting"
    )


class Renderer:
    """
    Renders one service's message, doing each piece of work once: a message
    without fields is rendered once; the hostname is looked up once per
    settings (so a reload picks up a new one); the time is formatted only
    when the message has {time}, and once per second.
    """

    def __init__(self, settings: GreetingSettings, service: str) -> None:
        self.service = service
        self.reconfigure(settings)

    def reconfigure(self, settings: GreetingSettings) -> None:
        """New settings (a reload): everything rendered or looked up is done again."""
        self.settings = settings
        self.static: bytes | None = None
        self.fields: frozenset[str] = frozenset()
        self.hostname = ""
        self._second: int | None = None
        self._time = ""
        self._minute: int | None = None
        if settings.quotes is None:
            self.fields = frozenset(f for _, f, _, _ in string.Formatter().parse(settings.message) if f)

    def refresh(self, now: float) -> None:
        """Look the hostname up again (once a minute, and after a reload)."""
        self._minute = int(now // HOSTNAME_TTL)
        self.hostname = _hostname() if "hostname" in self.fields else ""
        if self.settings.quotes is None and not self.fields - {"hostname", "service"}:
            self.static = _cut(_finish(self.settings.message.format(hostname=self.hostname, service=self.service)))

    def time(self, now: float) -> str:
        second = int(now // 1)
        if second != self._second:
            self._time = _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime(now))
            self._second = second
        return self._time

    def __call__(self, peer: str, now: float) -> bytes:
        if self._minute != now // HOSTNAME_TTL:
            self.refresh(now)
        if self.static is not None:
            return self.static
        settings = self.settings
        if settings.quotes is not None:
            text = random.choice(settings.quotes.lines)
        else:
            text = settings.message.format(
                hostname=self.hostname,
                peer=peer,
                time=self.time(now) if "time" in self.fields else "",
                service=self.service,
            )
        return _cut(_finish(text))

    def shutdown(self) -> None:
        pass

    def status(self) -> ServiceStatus:
        return ServiceStatus()


GreetingContext = ServiceContext[GreetingSettings, Renderer]


def make_state(context: GreetingContext) -> Renderer:
    """A greeting service's state: its L{Renderer}."""
    return Renderer(context.settings, context.name)


def render(context: GreetingContext, peer: str, now: float) -> bytes:
    """The bytes one client gets."""
    return context.state(peer, now)


class Greeting(StreamProtocol):
    """
    Writes the message and closes; anything the peer sends is ignored. A
    peer's half-close does not cut the message short (see L{StreamProtocol}).

    On a plain TCP port (a L{socksvc.daemon.quickport.QuickPort}) the whole
    greeting happens in the accept loop, before any transport exists
    (L{GreetingFactory.quick}, L{greet_now}). Otherwise there is a transport
    (a UNIX socket, TLS, a test transport, or the rest of a message the
    kernel did not take whole). On a plain TCP or UNIX transport the message
    goes straight to the socket and the connection closes in order at once,
    input the peer sent first discarded so that the close does not reset
    the connection under the message (L{writethrough.send_last}, as
    refusals do), on the next reactor turn so that the accept loop takes in
    every waiting peer first. Anything else is written and closed the usual
    way, and a peer that never reads is aborted after send_timeout.
    """

    context: GreetingContext
    nodelay = False  # one write followed by our FIN: nothing for Nagle to hold back
    self_producer = False  # one message, bounded: nothing to pause
    deadline: IDelayedCall | None = None
    """The pending send, then the send deadline; connectionLost cancels either."""
    rest: bytes = b""
    """What L{greet_now} could not send: written the usual way once there is a transport."""

    def greet_now(self, sock: socket.socket) -> Greeting | None:
        """
        The whole greeting on a socket that has no transport yet
        (L{GreetingFactory.quick}): send, shut down, read away what came,
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
"""The close reason of every greeting finished without a transport (the same as an orderly close)."""


class GreetingFactory(ServiceFactory[GreetingContext]):
    """
    The greeting's factory: with L{quick}, a L{socksvc.daemon.quickport.QuickPort}
    greets a plain TCP peer straight from its accept loop, no transport
    built; everything else (TLS, UNIX sockets, refusals) goes the usual way.
    """

    def quick(self, sock: socket.socket, addr: IAddress) -> Protocol | None:
        """Admit the peer as L{buildProtocol} does; greet it now, or return the protocol to serve it with."""
        proto = self.buildProtocol(addr)
        if isinstance(proto, Greeting):
            return proto.greet_now(sock)
        if proto is None:
            sock.close()
        return proto


def make_factory(context: GreetingContext) -> ServerFactory:
    return GreetingFactory(context, Greeting)


SERVICE_TYPE: ServiceType[GreetingSettings, Renderer] = ServiceType(
    name="greeting",
    settings=GreetingSettings,
    doc="RFC 865 style greeting / quote of the day: one message, then close",
    make_state=make_state,
    stream=make_factory,
)
