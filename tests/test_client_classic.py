"""
The classic toolbox commands (socksvc time, daytime, chargen, discard)
against the real daemon, over TCP and UDP, and their exit statuses (the one
table of docs/client.md): 0, 2 bad command line, 3 unknown host (resolver
faked), 4 cannot connect, 5 timed out, 6 refused or a wrong answer.
"""

from __future__ import annotations

import calendar
import re
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from socksvc.client.classic import parse_size, unix_time
from socksvc.client.common import (
    EXIT_CONNECT,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_PROTOCOL,
    EXIT_TIMEOUT,
    EXIT_USAGE,
)
from tests.support import Daemon, daemon
from tests.support.classic import free_port, silent  # noqa: F401
from tests.support.client import in_process, one_line, unknown_names
from tests.support.resolver import local_names_only  # noqa: F401 (autouse: no DNS from these tests)

BOTH = 'listen = ["tcp:0:interface=127.0.0.1", "udp:0:interface=127.0.0.1"]'
CONFIG = f"""
[services.time]
{BOTH}
[services.daytime]
{BOTH}
[services.chargen]
{BOTH}
udp = true
[services.discard]
{BOTH}
[services.quiet-chargen]
type = "chargen"
listen = ["udp:0:interface=127.0.0.1"]
[services.short-chargen]
type = "chargen"
listen = ["tcp:0:interface=127.0.0.1"]
max_bytes = 1000
"""
DENIED = "".join(
    f'[services.{name}]\nlisten = ["tcp:0:interface=127.0.0.1"]\ndeny = ["127.0.0.0/8"]\n'
    for name in ("time", "daytime", "chargen", "discard")
)
COMMANDS = ("time", "daytime", "chargen", "discard")
WRAP = 2085978496  # 2036-02-07T06:28:16Z


@pytest.fixture(scope="module")
def svc() -> Iterator[Daemon]:
    with daemon(CONFIG) as d:
        yield d


@pytest.fixture(scope="module")
def denied() -> Iterator[Daemon]:
    with daemon(DENIED) as d:
        yield d


def where(d: Daemon, service: str, kind: str = "tcp") -> list[str]:
    return ["127.0.0.1", str(d.port(service, kind))]


def bounded(command: str) -> list[str]:
    return ["--bytes", "64K"] if command in ("chargen", "discard") else []


# -- pure parts -------------------------------------------------------------------


@pytest.mark.parametrize("local", [WRAP - 10, WRAP - 1, WRAP, WRAP + 1, WRAP + 10, 1700000000, 0])
@pytest.mark.parametrize("skew", [-3, 0, 3])
def test_rfc868_time_is_read_in_the_era_nearest_the_local_clock(local: int, skew: int) -> None:
    server = local + skew
    data = struct.pack("!I", (server + 2208988800) % 2**32)
    assert unix_time(data, local + 0.5) == server


def test_sizes() -> None:
    assert [parse_size(t) for t in ("1", "64K", "10M", "2g")] == [1, 65536, 10 << 20, 2 << 30]
    for bad in ("0", "-1", "1.5", "K", "", "10T"):
        with pytest.raises(Exception, match="not a positive whole number"):
            parse_size(bad)


# -- 0: each command, each transport -----------------------------------------------


@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_time(svc: Daemon, capfd: pytest.CaptureFixture[str], kind: str) -> None:
    flag = ["--udp"] if kind == "udp" else []
    code, out, err = in_process(["time", *where(svc, "time", kind), *flag], capfd)
    assert (code, err) == (EXIT_OK, "")
    lines = out.splitlines()
    port = svc.port("time", kind)
    m = re.fullmatch(rf"127\.0\.0\.1 port {port}: (\w{{3}} \w{{3}} [ \d]\d \d\d:\d\d:\d\d) UTC (\d{{4}})", lines[0])
    assert m, out
    shown = calendar.timegm(time.strptime(f"{m.group(1)} {m.group(2)}", "%a %b %d %H:%M:%S %Y"))
    assert abs(shown - time.time()) <= 2
    offset = float(re.match(r"offset ([-+]\d+\.\d) s", lines[1]).group(1))  # type: ignore[union-attr]
    assert abs(offset) <= 1.0  # our daemon runs on our clock
    assert "+/-0.5 s" in lines[2]


@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_daytime(svc: Daemon, capfd: pytest.CaptureFixture[str], kind: str) -> None:
    flag = ["-u"] if kind == "udp" else []
    code, out, err = in_process(["daytime", *where(svc, "daytime", kind), *flag], capfd)
    assert (code, err) == (EXIT_OK, "")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\r\n", out), repr(out)


@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_chargen_counts_exactly_what_it_was_told(svc: Daemon, capfd: pytest.CaptureFixture[str], kind: str) -> None:
    flag = ["--udp"] if kind == "udp" else []
    code, out, err = in_process(["chargen", *where(svc, "chargen", kind), *flag, "--bytes", "1M"], capfd)
    assert (code, err) == (EXIT_OK, "")
    m = re.fullmatch(
        rf"chargen from 127\.0\.0\.1 port \d+ \({kind}\): ([\d,]+) bytes in [\d.]+ s, ([\d.]+) MB/s\n", out
    )
    assert m, out
    got = int(m.group(1).replace(",", ""))
    assert got == 1 << 20 if kind == "tcp" else (1 << 20) <= got < (1 << 20) + 512
    assert float(m.group(2)) > 0


def test_chargen_for_some_seconds(svc: Daemon, capfd: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    code, out, _err = in_process(["chargen", *where(svc, "chargen"), "--seconds", "0.5"], capfd)
    assert code == EXIT_OK
    assert 0.5 <= time.monotonic() - started < 5
    m = re.search(r"bytes in (\d+\.\d+) s", out)
    assert m and 0.5 <= float(m.group(1)) < 5, out


@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_discard(svc: Daemon, capfd: pytest.CaptureFixture[str], kind: str) -> None:
    flag = ["--udp"] if kind == "udp" else []
    code, out, err = in_process(["discard", *where(svc, "discard", kind), *flag, "-b", "3M"], capfd)
    assert (code, err) == (EXIT_OK, "")
    assert re.match(rf"discard to 127\.0\.0\.1 port \d+ \({kind}\): 3,145,728 bytes in [\d.]+ s, [\d.]+ MB/s", out)
    if kind == "udp":
        assert "never answers" in out
    else:
        assert "no close" not in out  # the daemon closed after our half-close: every byte was taken


# -- 2, 3, 4, 5, 6 ----------------------------------------------------------------------


def test_2_bytes_and_seconds_together(capfd: pytest.CaptureFixture[str]) -> None:
    for command in ("chargen", "discard"):
        code, out, err = in_process([command, "--bytes", "1", "--seconds", "1"], capfd)
        assert (code, out) == (EXIT_USAGE, "")
        assert "not allowed with argument" in err


def test_2_udp_over_a_unix_socket(capfd: pytest.CaptureFixture[str]) -> None:
    code, out, err = in_process(["time", "unix:/nonexistent", "--udp"], capfd)
    assert (code, out) == (EXIT_USAGE, "")
    assert one_line(err) == "socksvc: udp has no UNIX sockets: give HOST and PORT, not 'unix:/nonexistent'"


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("flag", [[], ["--udp"]])
def test_3_unknown_host(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: str, flag: list[str]
) -> None:
    unknown_names(monkeypatch)
    code, out, err = in_process([command, "nosuch.example", *flag, *bounded(command)], capfd)
    assert (code, out) == (EXIT_NOT_FOUND, "")
    assert one_line(err) == "socksvc: cannot resolve host 'nosuch.example': name or service not known"


@pytest.mark.parametrize("command", COMMANDS)
def test_4_cannot_connect(capfd: pytest.CaptureFixture[str], command: str) -> None:
    port = free_port()
    code, out, err = in_process([command, "127.0.0.1", str(port), *bounded(command)], capfd)
    assert (code, out) == (EXIT_CONNECT, "")
    assert one_line(err) == f"socksvc: cannot connect to 127.0.0.1 port {port}: connection refused"


@pytest.mark.parametrize("command", ["time", "daytime", "chargen"])
def test_4_nothing_listens_on_the_udp_port(capfd: pytest.CaptureFixture[str], command: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out, err = in_process([command, "127.0.0.1", str(port), "--udp", *bounded(command)], capfd)
    assert (code, out) == (EXIT_CONNECT, "")
    assert one_line(err).startswith(f"socksvc: cannot reach 127.0.0.1 port {port} (udp): ")


@pytest.mark.parametrize("command", ["time", "daytime", "chargen"])
def test_5_timed_out(silent: socket.socket, capfd: pytest.CaptureFixture[str], command: str) -> None:  # noqa: F811
    port = str(silent.getsockname()[1])
    code, out, err = in_process([command, "127.0.0.1", port, "-t", "0.3", *bounded(command)], capfd)
    assert (code, out) == (EXIT_TIMEOUT, "")
    assert "within 0.3 s" in one_line(err)


def test_5_no_udp_reply_from_a_chargen_whose_udp_is_off(svc: Daemon, capfd: pytest.CaptureFixture[str]) -> None:
    code, out, err = in_process(
        ["chargen", *where(svc, "quiet-chargen", "udp"), "--udp", "-t", "0.3", "-b", "1K"], capfd
    )
    assert (code, out) == (EXIT_TIMEOUT, "")
    assert "UDP side is off" in one_line(err)


@pytest.mark.parametrize("command", COMMANDS)
def test_6_refused_by_the_daemon(denied: Daemon, capfd: pytest.CaptureFixture[str], command: str) -> None:
    target = where(denied, command)
    code, out, err = in_process([command, *target, *bounded(command)], capfd)
    assert (code, out) == (EXIT_PROTOCOL, "")
    assert one_line(err) == f"socksvc: 127.0.0.1 port {target[1]} refused us: access denied"


def test_6_a_time_answer_that_is_not_4_bytes(capfd: pytest.CaptureFixture[str]) -> None:
    script = (
        "import socket; s = socket.create_server(('127.0.0.1', 0)); print(s.getsockname()[1], flush=True); "
        "c, _ = s.accept(); c.sendall(b'abc'); c.close()"
    )
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) as server:
        assert server.stdout is not None
        port = server.stdout.readline().strip()
        code, out, err = in_process(["time", "127.0.0.1", port], capfd)
        server.wait(10)
    assert (code, out) == (EXIT_PROTOCOL, "")
    assert one_line(err).endswith("sent 3 bytes, not RFC 868's 4")


def test_6_chargen_closed_early(svc: Daemon, capfd: pytest.CaptureFixture[str]) -> None:
    code, out, err = in_process(["chargen", *where(svc, "short-chargen"), "--bytes", "1M"], capfd)
    assert code == EXIT_PROTOCOL
    assert "1,000 bytes in" in out  # what came is still reported
    assert one_line(err).endswith("closed the connection after 1,000 bytes")
