"""
Greeting (RFC 865 style, as in quote of the day): say one message, close.

The message is a template with {hostname}, {peer}, {time} and {service}, or
a random line of a quotes file. It is under 512 bytes (RFC 865), checked when
the config is loaded. A peer that never reads is aborted after send_timeout.

Over UDP (RFC 865's other half) each datagram is answered with the message
cut to the datagram's own size (at a character boundary), behind the
datagram guard: a reply is never larger than its request, so the service
amplifies nothing; a request too short for one character gets no reply
(counted as too_large). Send 512 bytes to be sure of the whole message.

The stream side is core's "one message, then close" (L{socksvc.core.oneshot}):
on a plain TCP port the whole greeting happens in the accept loop.
"""

from __future__ import annotations

import random
import re
import socket
import string
import time as _time
from typing import Any

import attrs
from twisted.internet.protocol import DatagramProtocol, ServerFactory

from socksvc.config.loader import MAX_SERVICE_NAME
from socksvc.config.settings import as_float, setting
from socksvc.core.datagram import DatagramGuard, GuardedDatagram, GuardSettings
from socksvc.core.oneshot import OneShot, OneShotFactory
from socksvc.core.oneshot import render as render  # the bytes one client gets (tests ask greeting for it)
from socksvc.core.service import ServiceContext, ServiceStatus, ServiceType
from socksvc.util.files import read_setting_text

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
    text = read_setting_text(value, MAX_QUOTES_FILE, "quotes file")
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
class GreetingSettings(GuardSettings):
    """Keys of a greeting service (and the datagram guard's, for its udp: listens)."""

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

    def __init__(self, settings: GreetingSettings, service: str, guard: DatagramGuard | None = None) -> None:
        self.service = service
        self.guard = guard
        """The datagram guard of the service's udp: listens (QOTD over UDP)."""
        self.reconfigure(settings)

    def reconfigure(self, settings: GreetingSettings) -> None:
        """New settings (a reload): everything rendered or looked up is done again."""
        self.settings = settings
        if self.guard is not None:
            self.guard.reconfigure(settings)
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
        return ServiceStatus(counters=self.guard.counters() if self.guard is not None else {})


GreetingContext = ServiceContext[GreetingSettings, Renderer]


def make_state(context: GreetingContext) -> Renderer:
    """A greeting service's state: its L{Renderer}, with the guard its udp: listens share."""
    guard = DatagramGuard(context.name, context.settings, context.policy, context.reactor, context.udp_ports)
    return Renderer(context.settings, context.name, guard)


class Greeting(OneShot):
    """The greeting's stream protocol: one message, then close (see L{OneShot})."""


class GreetingFactory(OneShotFactory):
    """The greeting's factory: greets a plain TCP peer straight from the accept loop (see L{OneShotFactory})."""


def udp_peer(host: str, port: int) -> str:
    """A datagram's source as {peer} shows a stream peer: C{192.0.2.1:5000}, C{[2001:db8::1]:5000}."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def cut_to(data: bytes, size: int) -> bytes:
    """C{data}, or its longest prefix of at most C{size} bytes that ends on a UTF-8 character boundary."""
    if len(data) <= size:
        return data
    end = size
    while end > 0 and (data[end] & 0xC0) == 0x80:  # a continuation byte: the cut would split a character
        end -= 1
    return data[:end]


class QOTDDatagram(GuardedDatagram):
    """
    RFC 865 over UDP: the message, cut to the request's size. A request too
    short for one character gets nothing (the whole message goes to the
    guard, which drops it as too_large, so the drop is counted).
    """

    def __init__(self, renderer: Renderer, clock: Any) -> None:
        assert renderer.guard is not None
        super().__init__(renderer.guard)
        self.renderer = renderer
        self.clock = clock
        self.peer = ""

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.peer = udp_peer(addr[0], addr[1])
        super().datagramReceived(datagram, addr)

    def reply_for(self, datagram: bytes) -> bytes:
        message = self.renderer(self.peer, self.clock.seconds())
        return cut_to(message, len(datagram)) or message


def make_factory(context: GreetingContext) -> ServerFactory:
    return GreetingFactory(context, Greeting)


def make_datagram(context: GreetingContext) -> DatagramProtocol:
    return QOTDDatagram(context.state, context.reactor)


SERVICE_TYPE: ServiceType[GreetingSettings, Renderer] = ServiceType(
    name="greeting",
    settings=GreetingSettings,
    doc="RFC 865 quote of the day: one message, then close (TCP, UNIX streams); over UDP, cut to the request's size",
    make_state=make_state,
    stream=make_factory,
    datagram=make_datagram,
)
