"""
UDP echo against the real daemon (twistd subprocess) on loopback, port 0.

"No reply" is proved without sleeping: after the datagram that must be
dropped, a control datagram goes to the same daemon socket from a source
that is answered. The daemon handles datagrams in order and loopback
delivers a reply inside sendto, so once the control reply is in, any reply
to the dropped datagram would already be waiting: we then look with a zero
timeout.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from collections.abc import Iterator

import pytest

from tests.support import Daemon, daemon, has_ipv6_loopback

TIMEOUT = 5.0


def udp(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.bind((host, port))
    return s


def recv(s: socket.socket, timeout: float = TIMEOUT) -> bytes | None:
    """One datagram, or None when none comes within C{timeout}."""
    ready, _, _ = select.select([s], [], [], timeout)
    if not ready:
        return None
    return s.recvfrom(70000)[0]


def drain(s: socket.socket) -> list[bytes]:
    """Every datagram already waiting on C{s}."""
    got = []
    while (data := recv(s, 0)) is not None:
        got.append(data)
    return got


def ask(dest: tuple[str, int], data: bytes, host: str = "127.0.0.1") -> bytes | None:
    """The tutorials' client: sendto, then recvfrom."""
    with udp(host) as s:
        s.sendto(data, dest)
        return recv(s)


def control(dest: tuple[str, int], host: str = "127.0.0.3") -> None:
    """A datagram that is answered: after it, the daemon has handled everything sent before."""
    assert ask(dest, b"control", host) == b"control"


def udp_ports(d: Daemon, service: str) -> list[int]:
    return [int(p) for kind, _h, p in d.listening.get(service, []) if kind == "udp"]


@pytest.fixture(scope="module")
def denied_port() -> Iterator[socket.socket]:
    """A socket on a free high port that the test config puts in deny_source_ports."""
    s = udp()
    yield s
    s.close()


@pytest.fixture(scope="module")
def d(denied_port: socket.socket) -> Iterator[Daemon]:
    port = denied_port.getsockname()[1]
    config = f"""
[services.echo]
listen = ["udp:0:interface=127.0.0.1", "udp:port=0:interface=127.0.0.1"]

[services.strict]
type = "echo"
listen = ["udp:0:interface=127.0.0.1"]
deny_source_ports = [{port}]

[services.flood]
type = "echo"
listen = ["udp:0:interface=127.0.0.1"]
rate_exempt = []
rate_per_source = 1
burst = 5
"""
    with daemon(config) as running:
        assert len(udp_ports(running, "echo")) == 2
        yield running


def test_round_trip(d: Daemon) -> None:
    dest = ("127.0.0.1", d.port("echo", "udp"))
    assert ask(dest, b"hello, world\n") == b"hello, world\n"
    assert ask(dest, bytes(range(256))) == bytes(range(256))


def test_largest_datagram_comes_back_whole(d: Daemon) -> None:
    dest = ("127.0.0.1", d.port("echo", "udp"))
    big = os.urandom(65507)
    assert ask(dest, big) == big
    with udp() as s, pytest.raises(OSError):
        s.sendto(big + b"x", dest)  # and that is the largest there is


def test_empty_datagram_comes_back_empty(d: Daemon) -> None:
    dest = ("127.0.0.1", d.port("echo", "udp"))
    assert ask(dest, b"") == b""


def test_many_datagrams_from_loopback_are_all_answered(d: Daemon) -> None:
    """Loopback is rate exempt by default: 500 > burst (200), all answered."""
    dest = ("127.0.0.1", d.port("echo", "udp"))
    with udp() as s:
        got = 0
        for i in range(500):
            s.sendto(b"%d" % i, dest)
            if recv(s) == b"%d" % i:
                got += 1
    assert got == 500


def test_no_reply_to_a_denied_source_port(d: Daemon, denied_port: socket.socket) -> None:
    dest = ("127.0.0.1", d.port("strict", "udp"))
    denied_port.sendto(b"reflect me", dest)
    control(dest)
    assert drain(denied_port) == []
    d.read(until="dropped: source port is in deny_source_ports", timeout=TIMEOUT)
    # The same port is answered by a service that does not deny it.
    other = ("127.0.0.1", d.port("echo", "udp"))
    denied_port.sendto(b"fine here", other)
    assert recv(denied_port) == b"fine here"


@pytest.mark.skipif(os.geteuid() != 0, reason="binding port 19 (chargen) needs root")
def test_no_reply_to_chargen_port_19_by_default(d: Daemon) -> None:
    try:
        s = udp("127.0.0.1", 19)
    except OSError as e:
        pytest.skip(f"cannot bind udp 127.0.0.1:19: {e.strerror}")
    with s:
        dest = ("127.0.0.1", d.port("echo", "udp"))  # default deny_source_ports
        s.sendto(b"chargen says hi", dest)
        control(dest)
        assert drain(s) == []


def test_no_reply_to_the_daemons_own_udp_ports(d: Daemon) -> None:
    """
    The daemon holds 127.0.0.1:A and 127.0.0.1:B, so a test cannot send
    from those; but the rule is about the port number, whatever the
    address (any host "sending" from our echo port is a spoof or another
    echo server), so 127.0.0.2:B and 127.0.0.2:A stand in for them.
    """
    a, b = udp_ports(d, "echo")
    flood = d.port("flood", "udp")
    dest = ("127.0.0.1", a)
    for source_port in (a, b, flood):
        try:
            s = udp("127.0.0.2", source_port)
        except OSError as e:
            pytest.skip(f"cannot bind 127.0.0.2:{source_port}: {e.strerror}")
        with s:
            s.sendto(b"loop?", dest)
            control(dest)
            assert drain(s) == [], source_port
    d.read(until="dropped: source port is one of this daemon's UDP ports", timeout=TIMEOUT)


def test_a_flood_from_one_source_is_answered_only_up_to_burst_plus_rate(d: Daemon) -> None:
    """flood: rate_exempt = [], rate_per_source = 1, burst = 5."""
    dest = ("127.0.0.1", d.port("flood", "udp"))
    with udp("127.0.0.4") as s:
        started = time.monotonic()
        for i in range(60):
            s.sendto(b"%d" % i, dest)
        control(dest)  # another source (127.0.0.3) has its own budget
        elapsed = time.monotonic() - started
        got = drain(s)
    assert len(got) >= 5  # the whole burst
    assert len(got) <= 5 + 1 * elapsed + 1  # and then one a second at most
    assert got[:5] == [b"0", b"1", b"2", b"3", b"4"]
    d.read(until="dropped: rate_per_source exceeded", timeout=TIMEOUT)


# -- IPv6 ----------------------------------------------------------------------


def _dual_stack() -> bool:
    with contextlib.suppress(OSError), open("/proc/sys/net/ipv6/bindv6only") as f:
        return f.read().strip() == "0"
    return False


needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback (::1) on this host")


@needs_ipv6
def test_ipv6_round_trip_largest_and_empty() -> None:
    config = """
[services.echo]
listen = ['udp:0:interface=\\:\\:1']
"""
    with daemon(config) as d6:
        dest = ("::1", d6.port("echo", "udp"))
        assert ask(dest, b"over six", "::1") == b"over six"
        assert ask(dest, b"", "::1") == b""
        big = os.urandom(65527)
        assert ask(dest, big, "::1") == big
        assert "listening on udp [::1]:" in d6.output


@needs_ipv6
@pytest.mark.skipif(not _dual_stack(), reason="net.ipv6.bindv6only=1: no IPv4-mapped addresses")
def test_ipv4_mapped_sources_are_unwrapped_for_every_check() -> None:
    """A dual-stack socket sees 127.0.0.2 as ::ffff:127.0.0.2; deny still matches it."""
    config = """
[services.echo]
listen = ['udp:0:interface=\\:\\:']
deny = ["127.0.0.2/32"]
"""
    with daemon(config) as d6:
        port = d6.port("echo", "udp")
        assert ask(("127.0.0.1", port), b"mapped") == b"mapped"
        with udp("127.0.0.2") as s:
            s.sendto(b"denied", ("127.0.0.1", port))
            control(("127.0.0.1", port))
            assert drain(s) == []
        d6.read(until="dropped: address denied by allow/deny", timeout=TIMEOUT)
        assert "::ffff:127.0.0.2" in d6.output
