"""
txredisapi's protocol as the chat bus uses it: one connection to Redis,
made by our own endpoints (socksvc.services.chat.redisbus), with no
reconnecting of its own, commands that never raise (a gone connection is a
failed Deferred), a wait for AUTH and SELECT that fails when the connection
closes first (with txredisapi's reason, or the connection's), and commands
built and replies passed on without txredisapi's per-argument copies.

txredisapi imports the reactor when it is imported: it is imported here
only inside functions that run once the daemon runs.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure


def text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def call(p: Any, *args: str) -> Deferred[Any]:
    """
    One command on connection C{p}: txredisapi raises at once on a
    connection that has gone, and that must be a failed Deferred here (a
    ConnectionError, like every failure of the link), never an exception in
    the middle of a chat action.
    """
    try:
        d: Deferred[Any] = p.execute_command(*args)
    except Exception as e:
        return fail(ConnectionError(f"{type(e).__name__}: {e}"))
    return d


def ready(p: Any) -> Deferred[Any]:
    """
    txredisapi's protocol, once AUTH and SELECT succeeded; a failure when the
    connection closes first (txredisapi then never fires C{whenConnected}: a
    wrong password left the link waiting forever, saying nothing).
    """
    d: Deferred[Any] = Deferred()

    def connected(proto: Any) -> None:
        if not d.called:
            d.callback(proto)

    def closed(_: object) -> None:
        if not d.called:
            d.errback(ConnectionError(p.factory.error or "the connection closed before it was ready"))

    p.whenConnected().addCallback(connected)
    p.whenDisconnected().addCallback(closed)
    return d


def flat_dict(flat: object) -> dict[str, str]:
    if not isinstance(flat, list):
        return {}
    return {text(flat[i]): text(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}


def build_command(*args: object) -> bytes | None:
    """
    A command in RESP, as txredisapi builds it (UTF-8) for text and bytes
    arguments, in one join instead of a few calls per argument; None for
    anything else (txredisapi's own way then says what is wrong).
    """
    parts = [b"*%d\r\n" % len(args)]
    add = parts.append
    for arg in args:
        if isinstance(arg, str):
            try:
                b = arg.encode()
            except UnicodeError:
                return None
        elif isinstance(arg, bytes):
            b = arg
        else:
            return None
        add(b"$%d\r\n%b\r\n" % (len(b), b))
    return b"".join(parts)


_protocol: Any = None


def protocol_class() -> Any:
    """
    txredisapi's protocol, two of its per-argument costs taken out: commands
    are built by L{build_command}, and replies are passed on as hiredis
    parsed them (with neither a charset nor number conversion, txredisapi
    would only copy every list).
    """
    global _protocol
    if _protocol is None:
        import txredisapi  # imports the reactor: only once connecting

        class Protocol(txredisapi.RedisProtocol):  # type: ignore[misc, name-defined]
            def _build_command(self, *args: Any, **kwargs: Any) -> bytes:
                built = build_command(*args)
                if built is None:
                    built = super()._build_command(*args, **kwargs)
                return built

            def tryConvertData(self, data: Any) -> Any:
                if self.charset is None and not self.convertNumbers:
                    return data
                return super().tryConvertData(data)

        _protocol = Protocol
    return _protocol


class LinkFactory(Factory):
    """What txredisapi's protocol expects of its factory, and no reconnecting of its own."""

    isLazy = False
    noisy = False

    def __init__(self, password: str | None, username: str | None, db: int, reply_timeout: float | None) -> None:
        self.password = password
        self.username = username
        self.db = db
        self.reply_timeout = reply_timeout
        self.error: str | None = None

    def buildProtocol(self, addr: Any) -> Any:
        p = protocol_class()(
            charset=None,
            replyTimeout=self.reply_timeout,
            password=self.password,
            dbid=self.db or None,
            convertNumbers=False,
            username=self.username,
        )
        p.factory = self
        lost = p.connectionLost

        def connection_lost(why: Failure) -> None:  # keep why (a TLS handshake refused, a reset) for the log
            if self.error is None and not why.check(ConnectionDone):
                self.error = " ".join(why.getErrorMessage().split())[:300]
            lost(why)

        p.connectionLost = connection_lost
        return p

    def stopTrying(self) -> None:
        pass

    def connectionError(self, why: str) -> None:
        self.error = why
