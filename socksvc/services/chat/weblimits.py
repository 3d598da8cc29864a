"""
The web listener's limits that are not autobahn options: the request head's
size and time, the Origin check, and autobahn's timers on our reactor (so a
test's fake clock drives them).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

MAX_REQUEST = 8192
"""Bytes of an HTTP request head (request line and headers), at most."""
HANDSHAKE_TIMEOUT = 10.0
"""Seconds a client has to send its whole request head."""
CLOSE_TIMEOUT = 2.0
"""Seconds the WebSocket closing handshake may take before the connection is dropped."""


class Call:
    """A timer of autobahn's, on the service's reactor (a fake clock in tests): cancel() is always safe."""

    __slots__ = ("call",)

    def __init__(self, call: Any) -> None:
        self.call = call

    def cancel(self) -> None:
        if self.call.active():
            self.call.cancel()


class Timers:
    """What autobahn wants of a batched timer (C{call_later}), on our reactor."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def call_later(self, delay: float, func: Any, *args: Any, **kw: Any) -> Call:
        return Call(self.reactor.callLater(delay, func, *args, **kw))


def same_origin(origin: str, host: str, secure: bool, allowed: tuple[str, ...]) -> bool:
    """Is C{origin} the page this listener serves (scheme and Host of the request), or one in C{allowed}?"""
    origin = origin.strip().lower().rstrip("/")
    if origin in (o.lower().rstrip("/") for o in allowed):
        return True
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return False
    scheme = "https" if secure else "http"
    default = 443 if secure else 80
    if parts.scheme != scheme or not parts.hostname:
        return False
    try:
        want = urlsplit(f"{scheme}://{host.strip().lower()}")
        want_port = want.port
    except ValueError:
        return False
    return parts.hostname == want.hostname and (port or default) == (want_port or default)
