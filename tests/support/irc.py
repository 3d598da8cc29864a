"""
Helpers for the IRC and web tests: IRC and WebSocket clients of a chat
service on a fake clock (L{tests.support.chat.Chat}), over StringTransports.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from socksvc.services.chat import irc, web
from tests.support import peer
from tests.support import websocket as ws
from tests.support.chat import Chat, CountingTransport


class IrcClient:
    """One IRC client of C{chat}, its lines read with L{lines}."""

    def __init__(self, chat: Chat, buffer: int = 0) -> None:
        chat.port += 1
        addr = peer(port=chat.port)
        factory = chat.state.views.get("_irc_factory") or irc.make_factory(chat.ctx)
        chat.state.views["_irc_factory"] = factory
        self.proto: Any = factory.buildProtocol(addr)
        self.transport = CountingTransport(peerAddress=addr, buffer=buffer)
        self.proto.makeConnection(self.transport)
        self._seen = 0

    def send(self, *lines: str) -> None:
        self.raw("".join(line + "\r\n" for line in lines).encode("utf-8"))

    def raw(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def lines(self) -> list[str]:
        """Lines received since the last call (each must end with CRLF and fit in 512 bytes)."""
        data = self.transport.value()
        new, self._seen = data[self._seen :], len(data)
        assert new == b"" or new.endswith(b"\r\n"), new
        out = new.split(b"\r\n")[:-1] if new else []
        for line in out:
            assert len(line) + 2 <= 512, line
        return [line.decode("utf-8") for line in out]

    def register(self, nick: str) -> list[str]:
        self.send(f"NICK {nick}", f"USER {nick} 0 * :{nick.title()} Example")
        got = self.lines()
        assert any(f" 001 {nick} " in line for line in got), got
        return got

    def lose(self) -> None:
        self.proto.connectionLost(Failure(ConnectionDone()))

    @property
    def member(self) -> Any:
        return self.proto.member


def irc_client(chat: Chat, nick: str | None = None, *channels: str) -> IrcClient:
    client = IrcClient(chat)
    if nick is not None:
        client.register(nick)
        for name in channels:
            client.send(f"JOIN {name}")
        client.lines()
    return client


class WebClient:
    """One browser of C{chat}, as the page speaks: lines out, JSON events in."""

    def __init__(self, chat: Chat, origin: str | None = "http://127.0.0.1:7080", buffer: int = 0) -> None:
        chat.port += 1
        addr = peer(port=chat.port)
        factory = chat.state.views.get("_web_factory") or web.make_factory(chat.ctx)
        chat.state.views["_web_factory"] = factory
        self.proto: Any = factory.buildProtocol(addr)
        self.transport = CountingTransport(peerAddress=addr, buffer=buffer)
        self.proto.makeConnection(self.transport)
        self.proto.dataReceived(ws.request(origin=origin))
        head = self.transport.value()
        self.status = head.split(b"\r\n", 1)[0].decode()
        self._seen = head.find(b"\r\n\r\n") + 4
        self.buf = b""
        chat.state.release_held()

    def send(self, *lines: str) -> None:
        for line in lines:
            self.proto.dataReceived(ws.frame(line))

    def frames(self) -> list[tuple[int, bytes]]:
        data = self.transport.value()
        self.buf += data[self._seen :]
        self._seen = len(data)
        frames, self.buf = ws.parse(self.buf)
        return frames

    def events(self) -> list[dict[str, Any]]:
        """The JSON events received since the last call."""
        out = []
        for opcode, payload in self.frames():
            if opcode == ws.TEXT:
                out += [json.loads(line) for line in payload.decode("utf-8").split("\n") if line]
        return out

    def lose(self) -> None:
        self.proto.connectionLost(Failure(ConnectionDone()))

    @property
    def member(self) -> Any:
        return self.proto.member
