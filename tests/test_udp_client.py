"""`socksvc udp`: the ping-like UDP echo client, against the real daemon on port 0."""

from __future__ import annotations

import argparse
import os
import re
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from socksvc.client import udp as client
from socksvc.client.common import parse_nonnegative_int
from socksvc.client.main import run
from tests.support import Daemon, daemon, has_ipv6_loopback
from tests.support.resolver import local_names_only  # noqa: F401 (autouse: no DNS from these tests)

CONFIG = """
[services.echo]
listen = ["udp:0:interface=127.0.0.1"]

[services.stingy]
type = "echo"
listen = ["udp:0:interface=127.0.0.1"]
rate_exempt = []
rate_per_source = 0.001
burst = 2
"""

REPLY = re.compile(r"^(\d+) bytes? from 127\.0\.0\.1 port (\d+): seq=(\d+) time=([\d.]+) ms$", re.M)
RTT = re.compile(r"^rtt min/avg/max = ([\d.]+)/([\d.]+)/([\d.]+) ms$", re.M)


@pytest.fixture(scope="module")
def d() -> Iterator[Daemon]:
    with daemon(CONFIG) as running:
        yield running


def free_udp_port() -> int:
    """A port nothing listens on (just released; ICMP port unreachable comes back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def socksvc(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = run(["udp", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_pings_and_summarises(d: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    port = d.port("echo", "udp")
    code, out, _ = socksvc(capsys, "127.0.0.1", str(port), "--count", "3", "--interval", "0")
    assert code == 0
    replies = REPLY.findall(out)
    assert [(int(seq), int(p)) for _n, p, seq, _t in replies] == [(1, port), (2, port), (3, port)]
    assert re.search(r"^3 datagrams sent, 3 received, 0\.0% loss, time \d+ ms$", out, re.M)
    m = RTT.search(out)
    assert m is not None
    lo, avg, hi = (float(x) for x in m.groups())
    assert lo <= avg <= hi
    assert out.startswith(f"UDP ECHO 127.0.0.1 port {port} (127.0.0.1): 56 bytes per datagram\n")
    assert [n for n, *_ in replies] == ["56", "56", "56"]  # the same size every time, whatever the pid


def test_message_sizes_empty_and_largest(d: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    port = str(d.port("echo", "udp"))
    code, out, _ = socksvc(capsys, "127.0.0.1", port, "héllo")
    assert code == 0
    assert REPLY.search(out) is not None
    assert REPLY.findall(out)[0][0] == "6"
    for size in ("0", "1", "65507"):
        code, out, _ = socksvc(capsys, "127.0.0.1", port, "--size", size, "-c", "2", "-i", "0")
        assert code == 0, out
        assert [n for n, *_ in REPLY.findall(out)] == [size, size]
        unit = "byte" if size == "1" else "bytes"
        assert f": {size} {unit} per datagram\n{size} {unit} from 127.0.0.1 port " in out


def test_quiet_prints_only_the_summary(d: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = socksvc(capsys, "127.0.0.1", str(d.port("echo", "udp")), "-q", "-c", "2", "-i", "0")
    assert code == 0
    assert REPLY.search(out) is None
    assert out.splitlines()[0] == f"--- 127.0.0.1 port {d.port('echo', 'udp')} udp echo statistics ---"


def test_partial_loss_is_counted(d: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    """stingy answers a non-exempt source twice (burst = 2), then about never."""
    port = str(d.port("stingy", "udp"))
    code, out, _ = socksvc(capsys, "127.0.0.1", port, "-c", "4", "-i", "0", "-t", "0.3")
    assert code == 0  # some replies came back
    assert len(REPLY.findall(out)) == 2
    assert out.count("no reply within 0.3 s") == 2
    assert "4 datagrams sent, 2 received, 50.0% loss, time " in out


def test_no_reply_at_all_times_out_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = str(silent.getsockname()[1])
        code, out, _ = socksvc(capsys, "127.0.0.1", port, "-c", "2", "-i", "0", "-t", "0.2")
        assert len(select.select([silent], [], [], 0)[0]) == 1  # the probes did arrive
    assert code == 1
    assert out.count("no reply within 0.2 s") == 2
    assert "2 datagrams sent, 0 received, 100.0% loss, time " in out
    assert RTT.search(out) is None


def test_nothing_listening_is_port_unreachable_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    port = str(free_udp_port())
    code, out, _ = socksvc(capsys, "127.0.0.1", port, "-c", "2", "-i", "0", "-t", "2")
    assert code == 1
    assert "port unreachable" in out
    assert "100.0% loss" in out


def test_falls_back_to_the_next_address_when_the_first_refuses(
    d: Daemon, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As for "localhost" resolving to ::1 first while the daemon is on 127.0.0.1."""
    dead = ("127.0.0.1", free_udp_port())
    live = ("127.0.0.1", d.port("echo", "udp"))
    monkeypatch.setattr(client, "resolve", lambda target, kind: [(socket.AF_INET, dead), (socket.AF_INET, live)])
    code, out, _ = socksvc(capsys, "127.0.0.1", "7", "-c", "2", "-i", "0")
    assert code == 0
    assert f"trying 127.0.0.1 port {live[1]}" in out
    assert "2 datagrams sent, 2 received, 0.0% loss" in out


@pytest.mark.parametrize(
    ("argv", "code", "text"),
    [
        (["127.0.0.1", "70000"], 2, "port out of range"),
        (["127.0.0.1", "7", "msg", "--size", "3"], 2, "give MESSAGE or --size, not both"),
        (["127.0.0.1", "7", "--size", "65508"], 2, "more than a UDP datagram can carry"),
        (["[nope]"], 2, "not an IPv6 address"),
    ],
)
def test_errors_are_one_line(capsys: pytest.CaptureFixture[str], argv: list[str], code: int, text: str) -> None:
    got, out, err = socksvc(capsys, *argv)
    assert got == code
    assert text in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in out + err


def test_an_unknown_host_is_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def getaddrinfo(host: object, *args: object, **kw: object) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)  # never the system's resolver
    got, out, err = socksvc(capsys, "nosuch.invalid", "7007")
    assert (got, out) == (3, "")
    assert err == "socksvc: cannot resolve host 'nosuch.invalid': name or service not known\n"


def test_bad_option_values_are_refused_by_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--count", "-1"], ["--timeout", "0"], ["--interval", "x"], ["--size", "big"]):
        try:
            code = run(["udp", *argv])
        except SystemExit as e:  # argparse's own exit, if main lets it through
            code = e.code  # type: ignore[assignment]
        assert code == 2
        assert "socksvc udp: error" in capsys.readouterr().err


def test_a_reply_that_is_not_the_echo_is_not_counted() -> None:
    """The test plays the server: first a wrong reply, then the right one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        port = str(server.getsockname()[1])
        cmd = [sys.executable, "-m", "socksvc.client.main", "udp", "127.0.0.1", port, "ping", "-t", "5"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            ready, _, _ = select.select([server], [], [], 10)
            assert ready, "the client sent nothing"
            data, addr = server.recvfrom(100)
            assert data == b"ping"
            server.sendto(b"pong", addr)
            server.sendto(data, addr)
            out, _ = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0
    assert "1 datagram sent, 1 received, 0.0% loss, time " in out
    assert out.count("bytes from") == 1


def test_console_script(d: Daemon) -> None:
    script = os.path.join(os.path.dirname(sys.executable), "socksvc")
    if not os.path.exists(script):
        pytest.skip("no socksvc console script in this environment")
    port = str(d.port("echo", "udp"))
    proc = subprocess.run(
        [script, "udp", "127.0.0.1", port, "--count", "2", "--interval", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert "2 datagrams sent, 2 received, 0.0% loss" in proc.stdout


# -- parsers and payloads ------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=-(10**6), max_value=10**6))
def test_count_and_size_parser(n: int) -> None:
    if n >= 0:
        assert parse_nonnegative_int(str(n)) == n
    else:
        with pytest.raises(argparse.ArgumentTypeError):
            parse_nonnegative_int(str(n))


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=8))
def test_count_parser_refuses_non_numbers_with_a_reason(text: str) -> None:
    try:
        value = parse_nonnegative_int(text)
    except argparse.ArgumentTypeError as e:
        assert str(e)
    else:
        assert value >= 0


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=10**6), st.integers(min_value=0, max_value=70000))
def test_generated_payload_has_exactly_the_size_asked(seq: int, size: int) -> None:
    payload = client.make_payload(seq, size)
    assert len(payload) == size
    assert client.make_payload(seq, None).startswith(b"socksvc udp seq=%d " % seq)
    assert len(client.make_payload(seq, None)) == client.DEFAULT_SIZE == 56


def test_ctrl_c_still_prints_the_summary(
    d: Daemon, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_probe = client.Pinger.probe

    def probe(self: client.Pinger, seq: int) -> str:
        if seq == 3:
            raise KeyboardInterrupt
        return real_probe(self, seq)

    monkeypatch.setattr(client.Pinger, "probe", probe)
    code, out, _ = socksvc(capsys, "127.0.0.1", str(d.port("echo", "udp")), "-c", "0", "-i", "0")
    assert code == 130  # interrupted, as every command: not 0, even though replies came
    assert "2 datagrams sent, 2 received, 0.0% loss" in out


def test_ctrl_c_exits_130_with_the_summary(d: Daemon) -> None:
    """The real thing: SIGINT to `socksvc udp -c 0` in its pause between probes."""
    port = str(d.port("echo", "udp"))
    cmd = [sys.executable, "-m", "socksvc.client.main", "udp", "127.0.0.1", port, "-c", "0", "-i", "30"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("UDP ECHO ")
        assert "seq=1 " in proc.stdout.readline()  # now in its 30 s pause
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert err == ""
    assert re.search(r"^1 datagram sent, 1 received", out, re.M)


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback (::1) on this host")
def test_ipv6_target_and_its_larger_limit(capsys: pytest.CaptureFixture[str]) -> None:
    with daemon("[services.echo]\nlisten = ['udp:0:interface=\\:\\:1']\n") as d6:
        port = str(d6.port("echo", "udp"))
        code, out, _ = socksvc(capsys, "[::1]", port, "--size", "65527")
        assert code == 0, out
        assert f"65527 bytes from ::1 port {port}: seq=1" in out
        code, _, err = socksvc(capsys, "::1", port, "--size", "65528")
        assert code == 2
        assert "65527 at most" in err


def test_the_example_in_docs_udp_md_is_real_output(d: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/udp.md's example, run: the same lines but for the port and the times."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "docs", "udp.md"), encoding="utf-8") as f:
        doc = f.read()
    block = doc[doc.index("$ socksvc udp 127.0.0.1 7007 --count 3\n") :].split("```", 1)[0].splitlines()[1:]
    port = str(d.port("echo", "udp"))
    code, out, _ = socksvc(capsys, "127.0.0.1", port, "--count", "3", "--interval", "0")
    assert code == 0
    got = out.splitlines()
    assert len(got) == len(block)
    variable = r"(time=[\d.]+ ms|time [\d.]+ ms|[\d.]+/[\d.]+/[\d.]+ ms)"  # times differ from run to run
    for shown, real in zip(block, got, strict=True):
        pieces = re.split(variable, shown.replace("7007", port))
        pattern = "".join(re.escape(p) if i % 2 == 0 else variable for i, p in enumerate(pieces))
        assert re.fullmatch(pattern, real), (shown, real)
