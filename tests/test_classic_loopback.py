"""
The classic services against the real daemon (twistd subprocess) on
loopback, port 0: every listener kind of every service, the datagram guard
of every new UDP side, and memory that stays flat under a 1 GiB discard
upload and a chargen client that stops reading. Plus chargen's producer on
a real socket in this process, to see it paused.

"No reply" is shown as in test_udp_loopback: after the datagram that must
be dropped, a control datagram from an answered source goes to the same
daemon socket; once its reply is in, any reply to the dropped one would be
waiting already. Discard never replies to anything, so there the daemon's
drop line is the evidence that it handled the datagram.
"""

from __future__ import annotations

import re
import socket
import struct
import time
from collections.abc import Iterator

import psutil
import pytest
import pytest_twisted

from socksvc.services import chargen
from tests.conftest import Loopback, until
from tests.support import Daemon, context, daemon, recv_all, recv_exactly
from tests.support.classic import drain, recv, rfc864_lines, udp, udp_ports

TIMEOUT = 5.0
RFC3339 = re.compile(rb"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)Z\r\n$")
UDP_SERVICES = ("time", "daytime", "chargen", "greeting")


@pytest.fixture(scope="module")
def denied_port() -> Iterator[socket.socket]:
    """A socket on a free high port that every service's deny_source_ports lists."""
    s = udp()
    yield s
    s.close()


@pytest.fixture(scope="module")
def d(denied_port: socket.socket) -> Iterator[Daemon]:
    port = denied_port.getsockname()[1]
    both = 'listen = ["tcp:0:interface=127.0.0.1", "udp:0:interface=127.0.0.1"]'
    config = f"""
[services.discard]
{both}
deny_source_ports = [{port}]
[services.discard-capped]
type = "discard"
listen = ["tcp:0:interface=127.0.0.1"]
max_bytes = 100000
[services.daytime]
{both}
deny_source_ports = [{port}]
[services.time]
{both}
deny_source_ports = [{port}]
[services.chargen]
{both}
deny_source_ports = [{port}]
udp = true
[services.chargen-capped]
type = "chargen"
listen = ["tcp:0:interface=127.0.0.1"]
max_bytes = 1000000
[services.chargen-noudp]
type = "chargen"
listen = ["udp:0:interface=127.0.0.1"]
[services.greeting]
{both}
deny_source_ports = [{port}]
message = "Quote of the day: {{service}}"
"""
    with daemon(config) as running:
        yield running


def ask(dest: tuple[str, int], data: bytes, host: str = "127.0.0.1") -> bytes | None:
    with udp(host) as s:
        s.sendto(data, dest)
        return recv(s)


def control(dest: tuple[str, int]) -> None:
    """A datagram that is answered: after it, the daemon has handled everything sent to C{dest} before."""
    assert ask(dest, b"c" * 512, "127.0.0.3") is not None


def rfc868_now(data: bytes) -> float:
    """What 4 RFC 868 bytes say the Unix time is, in the era around now."""
    (value,) = struct.unpack("!I", data)
    era = (int(time.time()) + 2208988800) // 2**32
    return value + era * 2**32 - 2208988800


# -- each service, each listener kind -------------------------------------------------


def test_time_over_tcp_and_udp_agrees_with_the_local_clock(d: Daemon) -> None:
    with socket.create_connection(("127.0.0.1", d.port("time")), timeout=TIMEOUT) as s:
        got = recv_all(s)
    assert len(got) == 4
    assert abs(rfc868_now(got) - time.time()) <= 1.5
    reply = ask(("127.0.0.1", d.port("time", "udp")), b"")
    assert reply is not None and len(reply) == 4
    assert abs(rfc868_now(reply) - time.time()) <= 1.5


def test_daytime_over_tcp_and_udp_is_utc_rfc3339(d: Daemon) -> None:
    with socket.create_connection(("127.0.0.1", d.port("daytime")), timeout=TIMEOUT) as s:
        tcp = recv_all(s)
    dgram = ask(("127.0.0.1", d.port("daytime", "udp")), b"\n")
    for line in (tcp, dgram):
        assert line is not None
        m = RFC3339.match(line)
        assert m, line
        stamp = time.strptime(line[:20].decode(), "%Y-%m-%dT%H:%M:%SZ")
        assert abs(time.mktime(stamp) - time.mktime(time.gmtime())) <= 2


def test_chargen_over_tcp_is_the_rfc_pattern(d: Daemon) -> None:
    with socket.create_connection(("127.0.0.1", d.port("chargen")), timeout=TIMEOUT) as s:
        s.sendall(b"input is read and dropped\r\n")
        got = recv_exactly(s, 74 * 20000)
    assert got == rfc864_lines(20000)


def test_chargen_max_bytes_delivers_exactly_then_closes(d: Daemon) -> None:
    with socket.create_connection(("127.0.0.1", d.port("chargen-capped")), timeout=TIMEOUT) as s:
        got = recv_all(s)
    assert len(got) == 1000000
    assert got == rfc864_lines(1000000 // 74 + 1)[:1000000]
    d.read(until="max_bytes reached", timeout=TIMEOUT)


def test_chargen_over_udp_never_exceeds_the_request(d: Daemon) -> None:
    dest = ("127.0.0.1", d.port("chargen", "udp"))
    for _ in range(20):
        reply = ask(dest, b"x" * 1000)
        assert reply is not None
        assert 74 <= len(reply) <= 444 and len(reply) % 74 == 0
        lines = reply.split(b"\r\n")[:-1]
        assert all(line in rfc864_lines(95) for line in lines)
    short = ask(dest, b"x" * 10)
    assert short is not None and len(short) == 10


def test_chargen_udp_is_off_unless_enabled(d: Daemon) -> None:
    with udp() as s:
        s.sendto(b"x" * 512, ("127.0.0.1", d.port("chargen-noudp", "udp")))
        d.read(until="does not answer UDP", timeout=TIMEOUT)
        assert drain(s) == []


def test_discard_over_tcp_drops_everything_and_closes_after_the_half_close(d: Daemon) -> None:
    with socket.create_connection(("127.0.0.1", d.port("discard")), timeout=TIMEOUT) as s:
        s.sendall(b"x" * 1000000)
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b""


def test_discard_max_bytes_closes(d: Daemon) -> None:
    with (
        socket.create_connection(("127.0.0.1", d.port("discard-capped")), timeout=TIMEOUT) as s,
        pytest.raises(OSError),  # reset or broken pipe once the daemon has closed
    ):
        for _ in range(1000):
            s.sendall(b"x" * 65536)
    d.read(until="max_bytes reached", timeout=TIMEOUT)


def test_qotd_over_udp(d: Daemon) -> None:
    dest = ("127.0.0.1", d.port("greeting", "udp"))
    assert ask(dest, b"x" * 512) == b"Quote of the day: greeting\r\n"
    assert ask(dest, b"x" * 5) == b"Quote"


# -- the guard, on every new UDP side -----------------------------------------------


@pytest.mark.parametrize("service", UDP_SERVICES)
def test_no_reply_to_a_spoofed_denied_source_port(d: Daemon, denied_port: socket.socket, service: str) -> None:
    dest = ("127.0.0.1", d.port(service, "udp"))
    denied_port.sendto(b"x" * 512, dest)
    control(dest)
    assert drain(denied_port) == []
    d.read(until=f"{service}: udp datagram from 127.0.0.1:{denied_port.getsockname()[1]} dropped", timeout=TIMEOUT)


@pytest.mark.parametrize("service", UDP_SERVICES)
def test_no_reply_to_the_daemons_own_udp_port(d: Daemon, service: str) -> None:
    """127.0.0.2 with the port number of one of the daemon's UDP ports stands in for a loop (see test_udp_loopback)."""
    dest = ("127.0.0.1", d.port(service, "udp"))
    for own in (d.port("time", "udp"), d.port("discard", "udp")):
        try:
            s = udp("127.0.0.2", own)
        except OSError as e:
            pytest.skip(f"cannot bind 127.0.0.2:{own}: {e.strerror}")
        with s:
            s.sendto(b"x" * 512, dest)
            control(dest)
            assert drain(s) == []
    d.read(until=f"{service}: udp datagram from 127.0.0.2", timeout=TIMEOUT)


def test_udp_discard_never_replies_and_counts_guard_drops(d: Daemon, denied_port: socket.socket) -> None:
    dest = ("127.0.0.1", d.port("discard", "udp"))
    with udp() as s:
        s.sendto(b"anything", dest)
        denied_port.sendto(b"spoof", dest)  # handled after the first: its drop line shows both were
        d.read(until=f"discard: udp datagram from 127.0.0.1:{denied_port.getsockname()[1]} dropped", timeout=TIMEOUT)
        assert drain(s) == []
    assert all(kind == "udp" or kind == "tcp" for kind, _h, _p in d.listening["discard"])
    assert len(udp_ports(d, "discard")) == 1


# -- memory ---------------------------------------------------------------------------


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def test_discard_takes_1_gib_with_flat_rss(d: Daemon) -> None:
    pid = d.proc.pid
    with socket.create_connection(("127.0.0.1", d.port("discard")), timeout=30) as s:
        block = b"\xa5" * (1 << 20)
        s.sendall(block * 8)  # warm up
        base = peak = rss(pid)
        for i in range(1024 - 8):
            s.sendall(block)
            if i % 64 == 0:
                peak = max(peak, rss(pid))
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b""
    assert max(peak, rss(pid)) - base < 8 << 20, f"RSS grew by {peak - base} bytes over a 1 GiB upload"


def test_chargen_to_a_client_that_stops_reading_keeps_rss_flat(d: Daemon) -> None:
    pid = d.proc.pid
    with socket.create_connection(("127.0.0.1", d.port("chargen")), timeout=TIMEOUT) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        assert len(recv_exactly(s, 1 << 20)) == 1 << 20
        base = rss(pid)
        # Not reading now. Meanwhile others are served: a time request is answered at once.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            with socket.create_connection(("127.0.0.1", d.port("time")), timeout=TIMEOUT) as t:
                assert len(recv_all(t)) == 4
            assert rss(pid) - base < 4 << 20
            d.read(timeout=0.05)  # take the daemon's log lines (a full pipe would stop it)
        # And it goes on where it stopped once the client reads again.
        more = recv_exactly(s, 1 << 20)
    assert more == rfc864_lines((2 << 20) // 74 + 1)[1 << 20 : 2 << 20]


# -- chargen's producer on a real socket, in this process -----------------------------


@pytest_twisted.ensureDeferred
async def test_chargen_producer_is_paused_by_a_client_that_stops_reading() -> None:
    from twisted.internet import reactor

    loop = Loopback(chargen.make_factory(context("chargen", clock=reactor)))  # type: ignore[arg-type]
    try:
        server, sock = await loop.connect()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        last, still = -1, 0

        def stalled() -> bool:
            """Paused, and nothing written for 20 reactor turns: the kernel's buffers are full."""
            nonlocal last, still
            still = still + 1 if server.paused and server.bytes_out == last else 0
            last = server.bytes_out
            return still >= 20

        await until(stalled, what="chargen to stall")
        written = server.bytes_out
        buffered = len(server.transport.dataBuffer) + sum(map(len, server.transport._tempDataBuffer))
        assert buffered <= 2 * len(chargen.BLOCK)  # what the daemon holds: about one block
        assert written <= 64 << 20  # the rest is in the kernel's socket buffers
        got = await loop.recv_until(sock, written + 74)
        assert got[: len(got) // 74 * 74] == rfc864_lines(len(got) // 74)
        assert server.bytes_out > written  # reading resumed it
    finally:
        await loop.close()
