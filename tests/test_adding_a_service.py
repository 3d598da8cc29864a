"""
docs/adding-a-service.md's example, run: its code blocks make a working
service on the contract (stream and guarded datagram sides), so the
walk-through cannot drift from the code.
"""

from __future__ import annotations

import pathlib
import re
import types
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from socksvc.config import loader
from socksvc.core.policy import Policy
from socksvc.services.catalogue import TYPES

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "adding-a-service.md"


def _example() -> Any:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    assert len(blocks) >= 4
    module = types.ModuleType("socksvc_doc_example_upper")
    exec(compile("\n".join(blocks), str(DOC), "exec"), module.__dict__)
    return module


class _UDP:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def write(self, data: bytes, addr: Any) -> None:
        self.sent.append((data, addr))


def test_the_walk_through_builds_a_working_service() -> None:
    upper = _example()
    stype = upper.SERVICE_TYPE
    catalogue = {**TYPES, stype.name: stype}
    config = loader.loads('[services.upper]\nlisten = ["tcp:0", "udp:0"]\nmax_line = 64\n', "<doc>", catalogue)
    svc = config.service("upper")
    assert svc.settings.max_line == 64 and svc.settings.rate_per_source == 100.0
    clock = Clock()
    ctx = stype.context("upper", svc.settings, Policy("upper", svc.policy, clock), clock, {7007})

    addr = IPv4Address("TCP", "127.0.0.1", 40000)
    proto = stype.stream(ctx).buildProtocol(addr)
    transport = StringTransport(peerAddress=addr)
    proto.makeConnection(transport)
    proto.dataReceived(b"hello\nwor")
    proto.dataReceived(b"ld\n")
    assert transport.value() == b"HELLO\nWORLD\n"
    assert ctx.state.status().counters["lines"] == 2

    udp = stype.datagram(ctx)
    sent = _UDP()
    udp.makeConnection(sent)
    udp.datagramReceived(b"ping", ("192.0.2.1", 40000))
    udp.datagramReceived(b"loop", ("192.0.2.1", 7007))  # the daemon's own port
    udp.datagramReceived(b"amp", ("192.0.2.1", 19))  # chargen: a denied source port
    udp.datagramReceived(b"bcast", ("255.255.255.255", 40000))
    assert sent.sent == [(b"PING", ("192.0.2.1", 40000))]
    counters = ctx.state.status().counters
    assert counters["udp_dropped_own_port"] == counters["udp_dropped_source_port"] == 1
    assert counters["udp_dropped_broadcast"] == 1
