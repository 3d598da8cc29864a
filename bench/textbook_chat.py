"""
The textbook Twisted chat server, for the chat benchmark to compare against.

This is the chat example of Twisted's "Writing Servers" howto, as people
write it: a LineReceiver that asks for a name, then calls sendLine on every
other member for every line. The only changes: it listens on a port the OS
chooses (printed as "textbook-chat: listening on HOST:PORT"), with the same
listen backlog the benchmark gives socksvc, and raises its descriptor limit.

    python bench/textbook_chat.py [HOST]
"""

from __future__ import annotations

import resource
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver


class Chat(LineReceiver):
    def __init__(self, users: dict[bytes, Chat]) -> None:
        self.users = users
        self.name: bytes | None = None
        self.state = "GETNAME"

    def connectionMade(self) -> None:
        self.sendLine(b"What's your name?")

    def connectionLost(self, reason: Any = None) -> None:
        if self.name in self.users:
            del self.users[self.name]  # type: ignore[arg-type]

    def lineReceived(self, line: bytes) -> None:
        if self.state == "GETNAME":
            self.handle_GETNAME(line)
        else:
            self.handle_CHAT(line)

    def handle_GETNAME(self, name: bytes) -> None:
        if name in self.users:
            self.sendLine(b"Name taken, please choose another.")
            return
        self.sendLine(b"Welcome, %s!" % (name,))
        self.name = name
        self.users[name] = self
        self.state = "CHAT"

    def handle_CHAT(self, message: bytes) -> None:
        message = b"<%s> %s" % (self.name, message)
        for _name, protocol in self.users.items():
            if protocol != self:
                protocol.sendLine(message)


class ChatFactory(Factory):
    def __init__(self) -> None:
        self.users: dict[bytes, Chat] = {}

    def buildProtocol(self, addr: Any) -> Chat:
        return Chat(self.users)


def main() -> None:
    host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    port = reactor.listenTCP(0, ChatFactory(), backlog=4096, interface=host)  # type: ignore[attr-defined,arg-type]
    print(f"textbook-chat: listening on {host}:{port.getHost().port}", flush=True)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
