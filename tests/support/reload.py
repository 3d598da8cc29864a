"""Reload test helpers: a daemon on a memory reactor that can refuse ports, its clients, and a reload run to its end."""

from __future__ import annotations

from typing import Any

from twisted.internet.error import CannotListenError
from twisted.internet.testing import StringTransport

from socksvc.daemon import systemd
from socksvc.daemon.service import DaemonService
from socksvc.services.catalogue import loads
from tests.support import peer
from tests.support.systemd import PortsReactor

BASE = """
[services.echo]
listen = ["tcp:7:interface=127.0.0.1", "udp:7:interface=127.0.0.1"]
[services.greeting]
listen = ["tcp:17:interface=127.0.0.1"]
message = "hello"
[services.chat]
listen = ["tcp:7070:interface=127.0.0.1"]
"""


class FailingReactor(PortsReactor):
    """Refuses to listen on the ports in C{busy}."""

    def __init__(self) -> None:
        super().__init__()
        self.busy: set[int] = set()

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        if port in self.busy:
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))
        return super().listenTCP(port, factory, backlog, interface)


def started(text: str = BASE, reactor: PortsReactor | None = None, notifier: Any = None) -> DaemonService:
    svc = DaemonService(loads(text, "<test>"), reactor or FailingReactor(), notifier=notifier or systemd.Notifier(None))
    svc.privilegedStartService()
    svc.startService()
    return svc


def connection(svc: DaemonService, name: str) -> tuple[Any, StringTransport]:
    """A client of service C{name}, connected through its real factory."""
    instance = svc.instance(name)
    proto = instance.factory().buildProtocol(peer())
    transport = StringTransport(peerAddress=peer())
    proto.makeConnection(transport)
    return proto, transport


def reload(svc: DaemonService, text: str) -> bool:
    results: list[bool] = []
    svc.reload(loads(text, "<test>")).addCallback(results.append)
    reactor = svc.reactor
    reactor.advance(0)
    assert results, "reload did not finish"
    return results[0]


def specs(svc: DaemonService, name: str) -> list[str]:
    return [listener.spec.text for listener in svc.instance(name).listeners()]
