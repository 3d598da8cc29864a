"""
Unit tests for the classic services (discard, daytime, time, chargen, QOTD
over UDP): byte-exact RFC formats on a fake clock, the 2036 wrap, chargen's
rotation and its producer, the caps, and every datagram guard of every new
UDP side, over fake transports. Real sockets: test_classic_loopback.py.
"""

from __future__ import annotations

import os
import struct
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.interfaces import IConsumer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from socksvc.core.caps import CappedSettings
from socksvc.core.datagram import BROADCAST, DISABLED, OWN_PORT, SOURCE_PORT, TOO_LARGE, UNSPECIFIED
from socksvc.services import chargen, daytime, discard
from socksvc.services import time as rfc868
from socksvc.services.catalogue import load, types
from socksvc.wire import CHARGEN_PORT, DAYTIME_PORT, DEFAULT_PORTS, DISCARD_PORT, TIME_PORT
from tests.support import connect, context
from tests.support.classic import rfc864_lines

WRAP = 2085978496
"""2036-02-07T06:28:16Z: RFC 868's 32-bit count of seconds since 1900 wraps to 0."""
CLIENT = ("192.0.2.1", 40000)


class FakeUDP:
    """What a datagram protocol sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def write(self, datagram: bytes, addr: Any = None) -> None:
        self.sent.append((datagram, addr))


def udp(type_name: str, body: str = "", clock: Clock | None = None) -> tuple[Any, FakeUDP, Any]:
    """A service's datagram protocol on a fake transport, and its context."""
    ctx = context(type_name, body, clock=clock)
    stype = types()[type_name]
    assert stype.datagram is not None
    proto = stype.datagram(ctx)
    transport = FakeUDP()
    proto.makeConnection(transport)
    return proto, transport, ctx


def nonzero(drops: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in drops.items() if v}


# -- time (RFC 868) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("unix", "expected"),
    [
        (0, 2208988800),
        (1700000000.9, 1700000000 + 2208988800),  # whole seconds, rounded down
        (WRAP - 2, 2**32 - 2),
        (WRAP - 1, 2**32 - 1),
        (WRAP - 0.001, 2**32 - 1),
        (WRAP, 0),
        (WRAP + 1, 1),
        (WRAP + 2**32, 0),  # 2172: the next wrap
        (-2208988800, 0),  # 1900-01-01, the RFC's epoch
        (-1, 2208988799),
    ],
)
def test_time_is_seconds_since_1900_mod_2_32(unix: float, expected: int) -> None:
    assert rfc868.rfc868(unix) == struct.pack("!I", expected)


@pytest.mark.parametrize("offset", [-2, -1, 0, 1, 2])
def test_time_over_tcp_across_the_2036_wrap_on_a_fake_clock(offset: int) -> None:
    clock = Clock()
    clock.advance(WRAP + offset)
    _proto, transport = connect(context("time", clock=clock))
    assert transport.value() == struct.pack("!I", (WRAP + offset + 2208988800) % 2**32)
    assert transport.disconnecting


def test_time_over_udp_across_the_2036_wrap_and_for_an_empty_request() -> None:
    clock = Clock()
    proto, transport, _ = udp("time", clock=clock)
    got = []
    for instant in (WRAP - 1, WRAP, WRAP + 1):
        clock.advance(instant - clock.seconds())
        proto.datagramReceived(b"", CLIENT)  # rdate -u sends an empty datagram
        got.append(transport.sent[-1][0])
    assert got == [b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x00\x00\x00\x01"]
    assert transport.sent[-1][1] == CLIENT


@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers(min_value=-(2**80), max_value=2**80))
def test_time_never_raises(now: float) -> None:
    assert len(rfc868.rfc868(now)) == 4
    assert len(daytime.daytime_line(now)) == daytime.LINE_SIZE


# -- daytime (RFC 867) ---------------------------------------------------------------


def test_daytime_is_utc_rfc3339_crlf_on_a_fake_clock() -> None:
    clock = Clock()
    clock.advance(1700000000.75)
    _proto, transport = connect(context("daytime", clock=clock))
    assert transport.value() == b"2023-11-14T22:13:20Z\r\n"
    assert transport.disconnecting


def test_daytime_ignores_the_local_zone() -> None:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Pacific/Chatham"  # UTC+12:45/+13:45: any local-time leak shows
    time.tzset()
    try:
        assert daytime.daytime_line(WRAP) == b"2036-02-07T06:28:16Z\r\n"
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


def test_daytime_over_udp_answers_any_datagram_with_the_line() -> None:
    clock = Clock()
    clock.advance(0)
    proto, transport, _ = udp("daytime", clock=clock)
    proto.datagramReceived(b"", CLIENT)
    proto.datagramReceived(b"x" * 100, CLIENT)
    assert transport.sent == [(b"1970-01-01T00:00:00Z\r\n", CLIENT)] * 2


# -- the guard on every new UDP side -------------------------------------------------

UDP_SIDES = [
    ("time", ""),
    ("daytime", ""),
    ("chargen", "udp = true"),
    ("greeting", ""),
    ("discard", ""),
]


@pytest.mark.parametrize(("type_name", "body"), UDP_SIDES)
def test_every_udp_side_drops_spoofed_denied_own_port_and_broadcast_sources(type_name: str, body: str) -> None:
    proto, transport, ctx = udp(type_name, f"deny_source_ports = [50000]\n{body}")
    ctx.udp_ports.add(7037)  # one of "the daemon's" UDP ports
    request = b"q" * 512
    proto.datagramReceived(request, ("192.0.2.1", 50000))  # a spoofed denied source port
    proto.datagramReceived(request, ("192.0.2.1", 7037))  # the daemon's own port: a loop
    proto.datagramReceived(request, ("255.255.255.255", 40000))  # broadcast
    proto.datagramReceived(request, ("0.0.0.0", 40000))  # unspecified
    assert transport.sent == []
    assert nonzero(proto.drops) == {SOURCE_PORT: 1, OWN_PORT: 1, BROADCAST: 1, UNSPECIFIED: 1}
    assert ctx.state.status().counters["udp_dropped_own_port"] == 1
    proto.datagramReceived(request, CLIENT)
    if type_name == "discard":
        assert transport.sent == []  # never a reply
    else:
        assert len(transport.sent) == 1
        assert transport.sent[0][1] == CLIENT
        assert len(transport.sent[0][0]) <= len(request)
    assert ctx.state.guard.received == 5


def test_udp_rate_limit_applies_to_the_new_services() -> None:
    proto, transport, _ = udp("time", "rate_exempt = []\nrate_per_source = 1\nburst = 3")
    for _ in range(10):
        proto.datagramReceived(b"", CLIENT)
    assert len(transport.sent) == 3
    assert proto.drops["rate"] == 7


# -- discard (RFC 863) ---------------------------------------------------------------


def test_discard_drops_everything_and_sends_nothing() -> None:
    proto, transport = connect(context("discard"))
    for _ in range(100):
        proto.dataReceived(b"x" * 65536)
    assert transport.value() == b""
    assert proto.bytes_in == 100 * 65536
    assert proto.touched
    assert not transport.disconnecting
    proto.readConnectionLost()  # the client's half-close: done
    assert transport.disconnecting


def test_discard_max_bytes_closes() -> None:
    proto, transport = connect(context("discard", "max_bytes = 1000"))
    proto.dataReceived(b"x" * 999)
    assert not transport.disconnecting
    proto.dataReceived(b"x")
    assert transport.disconnecting
    assert proto.close_reason == "max_bytes reached"


def test_discard_max_duration_closes_and_the_timer_goes_with_the_connection() -> None:
    clock = Clock()
    proto, transport = connect(context("discard", "max_duration = 5", clock=clock))
    clock.advance(4.9)
    assert not transport.disconnecting
    clock.advance(0.2)
    assert transport.disconnecting
    assert proto.close_reason == "max_duration reached"
    proto2, _ = connect(context("discard", "max_duration = 5", clock=clock))
    proto2.connectionLost()
    assert clock.getDelayedCalls() == []


def test_udp_discard_never_replies() -> None:
    proto, transport, ctx = udp("discard")
    for size in (0, 1, 512, 65507):
        proto.datagramReceived(b"x" * size, CLIENT)
    assert transport.sent == []
    assert ctx.state.guard.received == 4
    assert ctx.state.guard.bytes_in == 1 + 512 + 65507


# -- chargen (RFC 864) ---------------------------------------------------------------


def test_chargen_lines_are_the_rfcs() -> None:
    assert chargen.line(0) == b" !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefg\r\n"
    assert chargen.line(1) == b"!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefgh\r\n"
    assert chargen.line(95) == chargen.line(0)
    assert len(chargen.PERIOD) == 95 * 74 == 7030
    assert rfc864_lines(19 * 95) == chargen.BLOCK


@implementer(IConsumer)
class PausingTransport(StringTransport):
    """A transport that pauses its streaming producer once C{limit} bytes are buffered, as TCP's does."""

    def __init__(self, limit: int = 200_000) -> None:
        super().__init__()
        self.limit = limit

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.producer is not None and self.streaming and len(self.value()) >= self.limit:
            self.producerState = "paused"
            self.producer.pauseProducing()

    def drain(self) -> bytes:
        """The client reads everything; the producer is resumed."""
        data = self.value()
        self.clear()
        if self.producer is not None:
            self.producerState = "producing"
            self.producer.resumeProducing()
        return data


def chargen_connection(body: str = "", clock: Clock | None = None) -> tuple[Any, PausingTransport, Any]:
    ctx = context("chargen", body, clock=clock)
    factory = types()["chargen"].stream(ctx)  # type: ignore[misc]
    proto = factory.buildProtocol(None)
    transport = PausingTransport()
    proto.makeConnection(transport)
    return proto, transport, ctx


def test_chargen_rotates_across_many_lines_and_pauses() -> None:
    proto, transport, _ = chargen_connection()
    got = b""
    for _ in range(30):  # 30 pauses
        assert proto.paused
        got += transport.drain()
    assert len(got) > 4_000_000
    whole = len(got) // 74
    assert got[: whole * 74] == rfc864_lines(whole)
    assert proto.bytes_out == len(got) + len(transport.value())


def test_paused_chargen_writes_nothing_until_resumed() -> None:
    clock = Clock()
    proto, transport, _ = chargen_connection(clock=clock)
    size = len(transport.value())
    assert proto.paused
    for _ in range(50):
        clock.advance(1)
    assert len(transport.value()) == size
    assert proto.bytes_out == size


def test_chargen_on_a_transport_that_never_pauses_yields_to_the_reactor() -> None:
    clock = Clock()
    proto, transport = connect(context("chargen", clock=clock))  # StringTransport: never pauses its producer
    assert len(transport.value()) == chargen.WRITES_PER_TURN * len(chargen.BLOCK)
    # The rest comes on the next reactor turn (the other call is max_duration's).
    assert sorted(c.getTime() for c in clock.getDelayedCalls()) == [0, 600]
    proto.connectionLost()
    assert clock.getDelayedCalls() == []


def test_chargen_max_bytes_delivers_exactly_that_then_closes() -> None:
    proto, transport, _ = chargen_connection("max_bytes = 1000000")
    got = b""
    while not transport.disconnecting:
        got += transport.drain()
    got += transport.value()
    assert len(got) == 1000000
    assert got == rfc864_lines(1000000 // 74 + 1)[:1000000]
    assert proto.close_reason == "max_bytes reached"


def test_chargen_max_duration_aborts_a_client_that_is_not_reading() -> None:
    clock = Clock()
    proto, transport, _ = chargen_connection("max_duration = 2", clock=clock)
    clock.advance(2)
    assert transport.disconnecting
    assert proto.close_reason == "max_duration reached"
    assert transport.producer is None


def test_chargen_input_is_read_and_dropped_and_half_close_keeps_the_stream() -> None:
    proto, transport, _ = chargen_connection()
    proto.dataReceived(b"junk" * 1000)
    assert proto.bytes_in == 4000
    proto.readConnectionLost()
    assert not transport.disconnecting
    got = transport.drain()
    assert got.startswith(rfc864_lines(10))


def test_chargen_touches_only_when_the_client_reads() -> None:
    proto, transport, _ = chargen_connection()
    proto.touched = False
    proto.dataReceived(b"input is not activity")
    assert not proto.touched
    transport.drain()
    assert proto.touched


def test_udp_chargen_is_off_by_default() -> None:
    proto, transport, ctx = udp("chargen")
    proto.datagramReceived(b"x" * 512, CLIENT)
    assert transport.sent == []
    assert nonzero(proto.drops) == {DISABLED: 1}
    assert ctx.state.status().counters["udp_dropped_disabled"] == 1


def test_udp_chargen_reply_is_whole_lines_within_512_and_never_larger_than_the_request() -> None:
    proto, transport, ctx = udp("chargen", "udp = true\nrate_exempt = []\nrate_per_source = 0")
    ctx.state.random.seed(864)
    sizes = []
    for _ in range(200):
        proto.datagramReceived(b"x" * 1000, CLIENT)
        reply = transport.sent[-1][0]
        sizes.append(len(reply))
        assert len(reply) % 74 == 0
    assert set(sizes) == {74 * k for k in range(1, 7)}  # 1 to 6 lines, at random
    # The ring runs on from one reply to the next.
    joined = b"".join(d for d, _ in transport.sent)
    assert joined == rfc864_lines(len(joined) // 74)
    for size in (1, 73, 100):
        proto.datagramReceived(b"x" * size, CLIENT)
        assert len(transport.sent[-1][0]) == size
    sent = len(transport.sent)
    proto.datagramReceived(b"", CLIENT)  # nothing to cut it to: no reply (not an empty one)
    assert len(transport.sent) == sent
    assert nonzero(proto.drops) == {}


# -- QOTD over UDP (greeting) ---------------------------------------------------------


def test_qotd_over_udp_is_the_message_cut_to_the_request() -> None:
    proto, transport, _ = udp("greeting", 'message = "Grüße, {peer}"')
    proto.datagramReceived(b"x" * 512, CLIENT)
    assert transport.sent[-1] == ("Grüße, 192.0.2.1:40000\r\n".encode(), CLIENT)
    proto.datagramReceived(b"x" * 4, CLIENT)
    assert transport.sent[-1][0] == b"Gr\xc3\xbc"
    proto.datagramReceived(b"x" * 3, CLIENT)  # "Gr" and half of the u-umlaut: the half is not sent
    assert transport.sent[-1][0] == b"Gr"
    sent = len(transport.sent)
    proto.datagramReceived(b"", CLIENT)  # too short for any of it
    assert len(transport.sent) == sent
    assert nonzero(proto.drops) == {TOO_LARGE: 1}


# -- the embedded default ----------------------------------------------------------------


def test_embedded_default_serves_the_classic_services_on_their_ports() -> None:
    cfg = load(None)
    listens = {svc.name: [spec.text for spec in svc.listen] for svc in cfg.services}
    assert listens["discard"] == [f"tcp:{DISCARD_PORT}:interface=127.0.0.1", f"udp:{DISCARD_PORT}:interface=127.0.0.1"]
    assert listens["daytime"] == [f"tcp:{DAYTIME_PORT}:interface=127.0.0.1", f"udp:{DAYTIME_PORT}:interface=127.0.0.1"]
    assert listens["time"] == [f"tcp:{TIME_PORT}:interface=127.0.0.1", f"udp:{TIME_PORT}:interface=127.0.0.1"]
    assert listens["chargen"] == [f"tcp:{CHARGEN_PORT}:interface=127.0.0.1"]
    assert "udp:7017:interface=127.0.0.1" in listens["greeting"]
    assert len(set(DEFAULT_PORTS.values())) == len(DEFAULT_PORTS)
    assert not cfg.service("chargen").settings.udp


def test_discard_and_chargen_share_the_caps() -> None:
    assert issubclass(chargen.ChargenSettings, CappedSettings)
    assert issubclass(discard.DiscardSettings, CappedSettings)
