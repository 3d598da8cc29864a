"""Helpers for the chat tests: a chat service on a fake clock, clients over StringTransport."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from socksvc.core.service import ServiceContext
from socksvc.services.catalogue import types
from socksvc.services.chat.protocol import ChatProtocol
from tests.support import context, peer

# Every line a client may receive (docs/chat.md), after an optional [HH:MM] stamp.
LINE = re.compile(
    r"^(\[\d\d:\d\d\] )?(<[^\s<>*]+> |\* [^\s<>*]+ |\*[^\s<>*]+\* |-> \*[^\s<>*]+\* |-!- )"
    r"|^\[history \d\d:\d\d\] (<[^\s<>*]+> |\* [^\s<>*]+ )"
)
UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


class CountingTransport(StringTransport):
    """A StringTransport that counts writes and, like TCP, pauses its producer when its buffer is full."""

    def __init__(self, *a: Any, buffer: int = 0, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.writes = 0
        self.buffer = buffer  # 0: never full
        self.paused = False

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)
        if self.buffer and len(self.io.getvalue()) > self.buffer and not self.paused and self.producer:
            self.paused = True
            self.producer.pauseProducing()

    def drain(self) -> bytes:
        """The peer reads everything; the transport says it can take more."""
        data: bytes = self.value()
        self.clear()
        if self.paused and self.producer:
            self.paused = False
            self.producer.resumeProducing()
        return data


class Client:
    def __init__(self, chat: Chat, proto: ChatProtocol, transport: CountingTransport) -> None:
        self.chat = chat
        self.proto = proto
        self.transport = transport
        self._seen = 0

    def send(self, *lines: str) -> None:
        """Send lines in one read."""
        self.proto.dataReceived("".join(line + "\n" for line in lines).encode("utf-8"))

    def raw(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def output(self) -> bytes:
        data: bytes = self.transport.value()
        return data

    def lines(self) -> list[str]:
        """Lines received since the last call."""
        data = self.transport.value()
        new, self._seen = data[self._seen :], len(data)
        assert new == b"" or new.endswith(b"\r\n"), new
        return new.decode("utf-8").split("\r\n")[:-1] if new else []

    def all_lines(self) -> list[str]:
        data: bytes = self.transport.value()
        return data.decode("utf-8").split("\r\n")[:-1]

    def lose(self, reason: Exception | None = None) -> None:
        from twisted.internet.error import ConnectionDone

        self.proto.connectionLost(Failure(reason or ConnectionDone()))

    @property
    def member(self) -> Any:
        return self.proto.member


class Chat:
    def __init__(self, body: str = "", *, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.ctx: ServiceContext = context("chat", body, clock=self.clock)
        stream = types()["chat"].stream
        assert stream is not None
        self.factory = stream(self.ctx)
        self.port = 40000

    @property
    def state(self) -> Any:
        return self.ctx.state

    def connect(self, nick: str | None = None, *, buffer: int = 0, release: bool = True) -> Client:
        self.port += 1
        addr = peer(port=self.port)
        proto = self.factory.buildProtocol(addr)
        assert isinstance(proto, ChatProtocol)
        transport = CountingTransport(peerAddress=addr, buffer=buffer)
        proto.makeConnection(transport)
        client = Client(self, proto, transport)
        if nick is None:
            if release:
                self.state.release_held()  # as the timer would, a moment later
        else:
            client.send(nick)
            # A nickname is kept as its PRECIS enforcement: NFKC (docs/chat.md).
            assert f"-!- You are now known as {unicodedata.normalize('NFKC', nick)}" in client.lines()
        return client
