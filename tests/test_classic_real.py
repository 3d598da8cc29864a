"""
The classic services against clients and servers that no one here wrote:
rdate (RFC 868, TCP and UDP) reads our time service, and xinetd's internal
services give the same RFC-defined answers (time; chargen's lines) side by
side with ours. Each skips with its reason where the tool is missing (.ci/run
installs both).
"""

from __future__ import annotations

import calendar
import itertools
import os
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator

import pytest

from bench.xinetd import Xinetd, XinetdError, missing, xinetd
from tests.support import Daemon, daemon, recv_all, recv_exactly
from tests.support.classic import recv, rfc864_lines, udp

RDATE = shutil.which("rdate")
needs_rdate = pytest.mark.skipif(RDATE is None, reason="rdate is not installed (Debian package rdate)")
needs_xinetd = pytest.mark.skipif(missing() is not None, reason=str(missing()))

RFC864_EXAMPLE = b"""\
!"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefgh\r
"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghi\r
#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghij\r
"""
"""RFC 864's own example lines (the first three it prints)."""


@pytest.fixture(scope="module")
def d() -> Iterator[Daemon]:
    both = 'listen = ["tcp:0:interface=127.0.0.1", "udp:0:interface=127.0.0.1"]'
    with daemon(f"[services.time]\n{both}\n[services.chargen]\n{both}\nudp = true\n") as running:
        yield running


@pytest.fixture(scope="module")
def x() -> Iterator[Xinetd]:
    try:
        with xinetd({"time": ("stream", "dgram"), "chargen": ("stream",)}) as running:
            yield running
    except XinetdError as e:
        pytest.skip(f"xinetd: {e}")


def rdate(port: int, *flags: str) -> float:
    """The Unix time rdate -p prints for 127.0.0.1:port (whole seconds)."""
    assert RDATE is not None
    proc = subprocess.run(
        [RDATE, "-p", *flags, "-o", str(port), "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "TZ": "UTC", "LC_ALL": "C"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # "Wed Dec  2 07:10:02 UTC 2026"
    return calendar.timegm(time.strptime(proc.stdout.strip(), "%a %b %d %H:%M:%S UTC %Y"))


@needs_rdate
@pytest.mark.parametrize("flags", [(), ("-u",)], ids=["tcp", "udp"])
def test_rdate_reads_our_time_and_agrees_with_the_local_clock(d: Daemon, flags: tuple[str, ...]) -> None:
    kind = "udp" if flags else "tcp"
    before = int(time.time())
    got = rdate(d.port("time", kind), *flags)
    after = time.time()
    assert before <= got <= after  # to the second


def rfc868(data: bytes) -> int:
    (value,) = struct.unpack("!I", data)
    return int(value)


def tcp_time(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        return recv_all(s)


def udp_time(port: int) -> bytes:
    with udp() as s:
        s.sendto(b"", ("127.0.0.1", port))  # as rdate -u does
        reply = recv(s)
    assert reply is not None
    return reply


@needs_xinetd
def test_time_agrees_with_xinetds_over_tcp_and_udp(d: Daemon, x: Xinetd) -> None:
    pairs = [
        (tcp_time(d.port("time")), tcp_time(x.port("time"))),
        (udp_time(d.port("time", "udp")), udp_time(x.port("time", "dgram"))),
    ]
    for ours, theirs in pairs:
        assert len(ours) == len(theirs) == 4
        assert abs(rfc868(ours) - rfc868(theirs)) <= 1
        assert abs(rfc868(ours) - (int(time.time()) + 2208988800) % 2**32) <= 1


def lines_of(port: int, count: int) -> list[bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        data = recv_exactly(s, 74 * count)
    assert len(data) == 74 * count
    return [data[i : i + 74] for i in range(0, len(data), 74)]


@needs_xinetd
def test_chargen_lines_agree_with_xinetds_where_the_rfc_defines_them(d: Daemon, x: Xinetd) -> None:
    """
    What RFC 864 defines, both do: 72 printing characters and CRLF a line,
    each line the one before moved on by one character of the ring; and
    xinetd's first 22 lines are ours from line 1 (and RFC 864's own
    example), byte for byte. Where they part: the RFC's ring is the 95
    printing characters, space to tilde, and ours is; xinetd's is 93 (no
    space, no tilde), so from the line where ours first shows a tilde the
    two differ, and xinetd restarts its ring every 95 lines.
    """
    ours, theirs = lines_of(d.port("chargen"), 300), lines_of(x.port("chargen"), 94)
    for lines in (ours, theirs):
        for line in lines:
            assert len(line) == 74 and line.endswith(b"\r\n")
            assert all(32 <= c <= 126 for c in line[:72])
        for a, b in itertools.pairwise(lines):
            assert b[:71] == a[1:72]  # moved on by one character
    assert b"".join(ours) == rfc864_lines(300)
    assert theirs[:22] == ours[1:23]
    assert b"".join(theirs[:3]) == RFC864_EXAMPLE == b"".join(ours[1:4])
    assert theirs[22] != ours[23]  # ours: "...{|}~", xinetd's: "...{|}!"
    assert ours[23].endswith(b"~\r\n") and b" " in ours[0] and b"~" not in b"".join(theirs)
