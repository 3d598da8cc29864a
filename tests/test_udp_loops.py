"""
No traffic loop between two real daemons (CVE-2024-2169), whatever their
rate settings say.

Two `twistd socksvc` processes listen on 127.0.0.1, and one datagram that
claims to come from daemon A's UDP port is sent to daemon B, as an attacker
would: B's echo goes to A, A's echo back to B, and so on. Each daemon must
stop the loop after its C{loop_budget} replies. The spoofed datagram needs a
raw socket (root or CAP_NET_RAW); without one these tests are skipped. (A
UDP socket on 127.0.0.2 with A's port number would not do: B's reply would
go back to that socket, not to A, and no loop would start.)

The daemons' ports: a loop's peer is a server, and servers listen on ports
they choose, below the ephemeral range, where the small C{loop_budget}
applies. Each test picks a free one there and checks it (a port in use is
tried again with another); the ephemeral case lets the kernel choose.
"""

from __future__ import annotations

import random
import re
import select
import socket
import struct
import time
from collections.abc import Iterator

import pytest

from socksvc.util.loopguard import ephemeral_floor
from tests.support import Daemon, start_daemon

TIMEOUT = 10.0
LOOP_LINE = "dropped: the peer answers every reply at once"
SUMMARY = re.compile(r"\] (?P<service>\S+): udp: (?P<received>\d+) datagrams in, (?P<replied>\d+) replies out")


def raw_udp_socket() -> socket.socket:
    try:
        return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    except PermissionError:
        pytest.skip("spoofing a source address needs a raw socket (root or CAP_NET_RAW)")


def spoof(source_port: int, dest_port: int, payload: bytes) -> None:
    """One datagram to 127.0.0.1:C{dest_port} that says it is from 127.0.0.1:C{source_port}."""
    header = struct.pack("!HHHH", source_port, dest_port, 8 + len(payload), 0)  # checksum 0: none (IPv4)
    with raw_udp_socket() as s:
        s.sendto(header + payload, ("127.0.0.1", 0))


def free_server_port() -> int:
    """A UDP port on 127.0.0.1 below the ephemeral range that nothing holds now."""
    floor = ephemeral_floor()
    low = max(1024, floor // 2)
    if low >= floor:
        pytest.skip(f"the ephemeral range starts at {floor}: no unprivileged server port below it")
    for _ in range(50):
        port = random.randrange(low, floor)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    pytest.skip("no free UDP port below the ephemeral range")


def echo_daemon(settings: str, server_port: bool) -> Daemon:
    """A daemon with one echo service on 127.0.0.1 (a chosen server port, or port 0)."""
    for _ in range(5):
        port = free_server_port() if server_port else 0
        config = f'[services.echo]\nlisten = ["udp:{port}:interface=127.0.0.1"]\n{settings}\n'
        d = start_daemon(config)
        if "services on" in d.output:
            return d
        d.stop()
        if "in use" not in d.output:
            raise AssertionError(f"daemon did not start:\n{d.output}")
    pytest.skip("the chosen UDP ports kept being taken")


@pytest.fixture
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[Daemon, Daemon]]:
    settings, server_port, _budget = request.param
    raw_udp_socket().close()  # skip before starting anything
    a = echo_daemon(settings, server_port)
    try:
        b = echo_daemon(settings, server_port)
    except BaseException:
        a.stop()
        raise
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def wait_for_either(daemons: tuple[Daemon, ...], text: str) -> Daemon:
    """The first daemon to say C{text}; fail after TIMEOUT."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        for d in daemons:
            d.read(timeout=0.05)
            if text in d.output:
                return d
    raise AssertionError(f"no daemon said {text!r} within {TIMEOUT} s: the loop never stopped")


def round_trip(port: int) -> bytes | None:
    """A plain client's datagram: once it is answered, the daemon has handled everything before it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"still serving", ("127.0.0.1", port))
        ready, _, _ = select.select([s], [], [], TIMEOUT)
        return s.recv(100) if ready else None


def totals(d: Daemon) -> tuple[int, int]:
    """(datagrams in, replies out) from the summary a stopped daemon logged."""
    [m] = [m for m in SUMMARY.finditer(d.output) if m.group("service") == "echo"]
    return int(m.group("received")), int(m.group("replied"))


LOOPS = [
    # (the echo service's settings, listen on a server port (else port 0), the budget that applies)
    pytest.param(("", True, 64), id="defaults: loopback rate-exempt"),
    pytest.param(("rate_exempt = []\nrate_per_source = 0", True, 64), id="no rate limit at all"),
    pytest.param(('rate_exempt = ["0.0.0.0/0"]\nloop_budget = 10', True, 10), id="everyone exempt, budget 10"),
    pytest.param(("loop_budget_ephemeral = 300", False, 300), id="port 0: the ephemeral budget"),
]


@pytest.mark.parametrize(
    ("pair", "budget"), [pytest.param(p.values[0], p.values[0][2], id=p.id) for p in LOOPS], indirect=["pair"]
)
def test_a_spoofed_datagram_between_two_daemons_loops_a_bounded_number_of_times(
    pair: tuple[Daemon, Daemon], budget: int
) -> None:
    a, b = pair
    port_a, port_b = a.port("echo", "udp"), b.port("echo", "udp")
    spoof(port_a, port_b, b"ping-pong")
    wait_for_either((a, b), LOOP_LINE)
    # Both still answer a client (and have handled every datagram sent before it).
    assert round_trip(port_a) == b"still serving"
    assert round_trip(port_b) == b"still serving"
    a.stop()
    b.stop()
    received_a, replied_a = totals(a)
    received_b, replied_b = totals(b)
    # Each replied at most its budget in the loop, plus the client's datagram.
    assert replied_a <= budget + 1, a.output
    assert replied_b <= budget + 1, b.output
    # In all: the spoofed datagram, the loop's, the drop, the clients'.
    assert received_a + received_b <= 2 * budget + 4
    assert "loop 1" in a.output + b.output
