"""
A daemon on a fake reactor after a scripted sequence of connections,
refusals, UDP drops and chat events (tests/test_metrics.py checks every
metric it gives; tests/test_grafana.py reads its exposition), and helpers
to scrape it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import attrs
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from socksvc.core.protocols import Refuser
from socksvc.daemon import metrics
from socksvc.daemon.service import DaemonService
from socksvc.daemon.systemd import Notifier
from socksvc.services.catalogue import loads
from tests.support import peer
from tests.support.systemd import PortsReactor

CONFIG = """
[daemon]
http = ["tcp:0:interface=127.0.0.1"]

[services.echo]
listen = ["tcp:0:interface=127.0.0.1", "udp:0:interface=127.0.0.1"]
max_connections = 2
deny = ["192.0.2.0/24"]

[services.chat]
listen = ["tcp:0:interface=127.0.0.1"]
send_queue_max = 1024

[services.chat2]
type = "chat"
listen = ["tcp:0:interface=127.0.0.1"]
flood_burst = 2
flood_rate = 1
max_line = 16
"""

DONE = Failure(ConnectionDone())

BUS = {
    "chat_lines_dropped_bus_full": 4,
    "chat_bus_up": 1,
    "chat_bus_nodes": 3,
    "chat_bus_lines_held": 7,
    "chat_bus_lines_lost": 2,
    "chat_bus_entries_dropped": 1,
    "chat_bus_collisions": 5,
    "chat_bus_queued": 6,
}
"""The counters a chat with a bus adds to its status (socksvc.services.chat.cluster.Cluster.counters)."""


def with_bus(daemon: DaemonService, service: str = "chat", counters: Mapping[str, int] = BUS) -> None:
    """Chat C{service}'s status gets C{counters} too, as if it had a bus."""
    state = daemon.instance(service).context.state
    real = state.status

    def status() -> Any:
        got = real()
        return attrs.evolve(got, counters={**got.counters, **counters})

    state.status = status


def start(text: str = CONFIG) -> DaemonService:
    svc = DaemonService(loads(text, "<test>"), PortsReactor(), notifier=Notifier(None), handle_signals=False)
    svc.privilegedStartService()
    svc.startService()
    return svc


def open_(daemon: DaemonService, service: str, host: str = "127.0.0.1", port: int = 40000) -> tuple[Any, Any]:
    proto = daemon.instance(service).factory().buildProtocol(peer(host, port))
    transport = StringTransport(peerAddress=peer(host, port))
    proto.makeConnection(transport)
    return proto, transport


class FakeUDP:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def write(self, data: bytes, addr: Any = None) -> None:
        self.sent.append((data, addr))


def stubborn(proto: Any, transport: Any) -> None:
    """A peer that never lets go: the connection ends only when the daemon aborts it."""
    transport.loseConnection = lambda: None
    transport.abortConnection = lambda: proto.connectionLost(Failure(ConnectionDone()))


def scrape(daemon: DaemonService, accept: str | None = None) -> dict[str, Any]:
    """{family name: family} from a real exposition of the admin site's registry."""
    assert daemon.admin is not None
    body, content_type = metrics.render(daemon.admin.factory().registry, accept)
    text = body.decode("utf-8")
    parse = openmetrics_families if "openmetrics" in content_type else text_string_to_metric_families
    return {f.name: f for f in parse(text)}


def value(families: dict[str, Any], sample: str, **labels: str) -> float:
    found = [
        s.value
        for f in families.values()
        for s in f.samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (sample, labels, found)
    return float(found[0])


@pytest.fixture
def scripted() -> Iterator[DaemonService]:
    """The daemon after the scripted sequence the tests below check, figure by figure."""
    daemon = start()
    clock = daemon.reactor
    # echo: two connections (the cap), one more refused for the cap, one denied.
    c1, _t1 = open_(daemon, "echo", port=40001)
    c1.dataReceived(b"hello")
    c2, _t2 = open_(daemon, "echo", port=40002)
    assert isinstance(open_(daemon, "echo", port=40003)[0], Refuser)
    assert isinstance(open_(daemon, "echo", "192.0.2.7")[0], Refuser)
    clock.advance(0.2)
    c1.connectionLost(DONE)
    c2.dataReceived(b"abc")  # still open: its bytes count too
    # UDP: one echoed, one from a denied source port, one from a broadcast address.
    echo = daemon.instance("echo")
    assert echo.stype.datagram is not None
    udp = echo.stype.datagram(echo.context)
    udp.transport = FakeUDP()
    udp.datagramReceived(b"ping", ("127.0.0.1", 40000))
    udp.datagramReceived(b"ping", ("127.0.0.1", 53))
    udp.datagramReceived(b"ping", ("255.255.255.255", 40000))
    # chat: bob stops reading (send_queue_max 1024); alice says three 600-byte lines:
    # the first waits in bob's queue, the second stalls him, the third he misses too.
    alice, _ta = open_(daemon, "chat", port=41001)
    bob, _tb = open_(daemon, "chat", port=41002)
    alice.dataReceived(b"alice\n")
    bob.dataReceived(b"bob\n")
    bob.pauseProducing()
    for _ in range(3):
        alice.dataReceived(b"x" * 600 + b"\n")
    # chat2: carol's nickname takes one of two flood tokens; of four lines at once
    # "a" is said and b, c, d are dropped; then a line over max_line (16).
    carol, _tc = open_(daemon, "chat2", port=42001)
    carol.dataReceived(b"carol\n")
    carol.dataReceived(b"a\nb\nc\nd\n")
    carol.dataReceived(b"y" * 40 + b"\n")
    yield daemon
    daemon.stopService()
