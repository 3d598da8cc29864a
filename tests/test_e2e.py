"""
End to end: `twistd -n socksvc` as a subprocess, talked to with plain sockets
as the tutorials' clients would; one test per listener kind; the log lines;
and the embedded default on its real ports.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from socksvc.services.catalogue import load
from tests.conftest import port_in_use
from tests.support import Daemon, daemon, echo_round_trip, has_ipv6_loopback, recv_all, recv_exactly, start_daemon

IPV6 = has_ipv6_loopback()


@pytest.fixture(scope="module")
def sockdir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="socksvc-e2e-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def d(sockdir: str) -> Iterator[Daemon]:
    tcp6 = ', "tcp6:0:interface=\\\\:\\\\:1"' if IPV6 else ""
    config = f"""
[services.echo]
listen = ["tcp:0:interface=127.0.0.1", "unix:{sockdir}/echo.sock"{tcp6}]

[services.lab-echo]
type = "echo"
listen = ["tcp:0:interface=127.0.0.1"]

[services.greeting]
listen = ["tcp:0:interface=127.0.0.1"]
message = "hello {{peer}} from {{service}}"

[services.reverse]
listen = ["tcp:0:interface=127.0.0.1"]
max_line = 64
"""
    with daemon(config) as running:
        yield running


# -- every TCP service with plain sockets --------------------------------------


def test_every_tcp_service_with_plain_sockets(d: Daemon) -> None:
    payload = bytes(range(256)) * 1024  # 256 KiB, binary
    with socket.create_connection(("127.0.0.1", d.port("echo")), timeout=10) as s:
        assert echo_round_trip(s, payload) == payload
    with socket.create_connection(("127.0.0.1", d.port("lab-echo")), timeout=10) as s:
        s.sendall(b"ping\n")
        assert recv_exactly(s, 5) == b"ping\n"
        s.sendall(b"pong\n")
        assert recv_exactly(s, 5) == b"pong\n"
    with socket.create_connection(("127.0.0.1", d.port("greeting")), timeout=10) as s:
        me = "{}:{}".format(*s.getsockname())
        assert recv_all(s) == f"hello {me} from greeting\r\n".encode()
    with socket.create_connection(("127.0.0.1", d.port("reverse")), timeout=10) as s:
        s.sendall("hello\r\ncaf\u00e9\n".encode())
        assert recv_exactly(s, len("olleh\r\n\u00e9fac\n".encode())) == "olleh\r\n\u00e9fac\n".encode()
        s.sendall(b"x" * 100 + b"\n")
        assert recv_all(s) == b"error: line longer than 64 bytes\r\n"


def test_connection_close_is_logged(d: Daemon) -> None:
    with socket.create_connection(("127.0.0.1", d.port("echo")), timeout=10) as s:
        me = "{}:{}".format(*s.getsockname())
        assert echo_round_trip(s, b"12345") == b"12345"
    pattern = re.compile(rf"echo: {re.escape(me)} closed after (?P<duration>\d+\.\d{{3}})s, 5 bytes in, 5 bytes out")
    d.read(until=f"echo: {me} closed")
    match = pattern.search(d.output)
    assert match, d.output
    assert float(match.group("duration")) >= 0


# -- one real loopback test per listener kind ----------------------------------


def test_tcp_listener(d: Daemon) -> None:
    with socket.create_connection(("127.0.0.1", d.port("echo")), timeout=10) as s:
        assert echo_round_trip(s, b"over tcp") == b"over tcp"


@pytest.mark.skipif(not IPV6, reason="no IPv6 on ::1 here")
def test_tcp6_listener(d: Daemon) -> None:
    [(_kind, host, port)] = [entry for entry in d.listening["echo"] if entry[1].startswith("[")]
    assert host == "[::1]"
    assert isinstance(port, int)
    with socket.create_connection(("::1", port), timeout=10) as s:
        me = s.getsockname()
        assert echo_round_trip(s, b"over tcp6") == b"over tcp6"
    d.read(until=f"echo: [::1]:{me[1]} closed")


def test_unix_listener(d: Daemon, sockdir: str) -> None:
    path = os.path.join(sockdir, "echo.sock")
    assert ("unix", "", path) in d.listening["echo"]
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        assert echo_round_trip(s, b"over unix\x00") == b"over unix\x00"
    d.read(until="echo: unix closed")


# -- JSON logs -----------------------------------------------------------------


def test_json_log_lines() -> None:
    config = '[daemon]\nlog_format = "json"\n[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
    d = start_daemon(config, ready=False)
    try:
        d.read(until="services on")
        port = 0
        for event in _json_lines(d.output):
            if event.get("event") == "listen":
                port = int(event["where"].rpartition(":")[2])
        assert port
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            me = s.getsockname()[1]
            assert echo_round_trip(s, b"json") == b"json"
        d.read(until='"event": "close"')
    finally:
        d.stop()
        if d.config_path:
            os.unlink(d.config_path)
    [close] = [e for e in _json_lines(d.output) if e.get("event") == "close"]
    assert close["service"] == "echo"
    assert close["peer"] == f"127.0.0.1:{me}"
    assert (close["bytes_in"], close["bytes_out"]) == (4, 4)
    assert close["duration"] >= 0


def _json_lines(output: str) -> list[dict[str, Any]]:
    """Every line of output, parsed as JSON: one object a line, nothing else."""
    events = []
    # Not splitlines(): it would also split on the \x1e record separator of json-seq.
    for line in output.split("\n"):
        if line:
            events.append(json.loads(line))
    return events


# -- the embedded default on its real ports --------------------------------------


def _default_ports() -> list[tuple[str, int]]:
    config = load(None)
    specs = [spec for svc in config.services for _key, _index, spec in svc.listens()] + list(config.daemon.http)
    return [("udp" if spec.kind == "datagram" else "tcp", spec.port) for spec in specs if spec.port]


def _taken(kind: str, port: int) -> bool:
    if kind == "tcp":
        return port_in_use(port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def test_twistd_with_no_config_serves_the_embedded_default() -> None:
    taken = [f"{kind} {port}" for kind, port in _default_ports() if _taken(kind, port)]
    if taken:
        pytest.skip(f"default ports already taken on 127.0.0.1: {', '.join(taken)}")
    with daemon(None) as d:
        assert d.port("echo") == 7007
        assert d.port("echo", "udp") == 7007
        assert d.port("greeting") == 7017
        assert d.port("reverse") == 7071
        assert (d.port("chat/irc"), d.port("chat/web")) == (7667, 7080)
        assert d.port("admin/http") == 9107
        with urllib.request.urlopen("http://127.0.0.1:9107/metrics", timeout=10) as r:
            assert b'socksvc_connections{service="echo"}' in r.read()
        assert "config <embedded default>" in d.output
        with socket.create_connection(("127.0.0.1", 7007), timeout=10) as s:
            assert echo_round_trip(s, b"default") == b"default"
        with socket.create_connection(("127.0.0.1", 7017), timeout=10) as s:
            assert recv_all(s) == b"Thank you for connecting\r\n"
        with socket.create_connection(("127.0.0.1", 7071), timeout=10) as s:
            s.sendall(b"abc\n")
            assert recv_exactly(s, 4) == b"cba\n"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(10)
            u.sendto(b"dgram", ("127.0.0.1", 7007))
            assert u.recvfrom(100)[0] == b"dgram"
