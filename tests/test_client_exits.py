"""
The exit-status table of docs/client.md, command by command: every status a
command can end with, made to happen, through the same entry point as the
console script (socksvc.client.main), in-process or as a subprocess.

| status | echo | greet | reverse | udp | chat | lookup |
|---|---|---|---|---|---|---|
| 0 success | x | x | x | x | x | x |
| 1 other (stdout closed; udp: no reply) | x | x | x | x | x | x |
| 2 bad command line | x | x | x | x | x | x |
| 3 not found | x | x | x | x | x | x |
| 4 cannot connect | x | x | x | - | x | - |
| 5 timed out | x | x | x | - | x | - |
| 6 refused, closed early, wrong reply | x | x | x | - | x | - |
| 130 Ctrl-C | x | x | x | x | x | x |

udp has no connection to fail (a datagram nobody answers is loss: 1, as
ping) and lookup connects to nothing. The resolver is faked for names that
do not resolve (no DNS query leaves the machine).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from socksvc.client.common import (
    EXIT_CONNECT,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_PROTOCOL,
    EXIT_TIMEOUT,
    EXIT_USAGE,
)
from tests.support import Daemon, daemon
from tests.support.client import in_process, one_line, unknown_names
from tests.support.resolver import local_names_only  # noqa: F401 (autouse: no DNS from these tests)

PY = sys.executable
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STREAM = ("echo", "greet", "reverse", "chat")
EVERY = ("echo", "greet", "reverse", "udp", "chat", "lookup")
SERVICE = {"echo": "echo", "greet": "greeting", "reverse": "reverse", "chat": "chat", "udp": "echo"}

CONFIG = """
[services.echo]
listen = ["tcp:0:interface=127.0.0.1", "udp:0:interface=127.0.0.1"]
[services.greeting]
listen = ["tcp:0:interface=127.0.0.1"]
[services.reverse]
listen = ["tcp:0:interface=127.0.0.1"]
[services.chat]
listen = ["tcp:0:interface=127.0.0.1"]
"""
DENIED = "".join(
    f'[services.{name}]\nlisten = ["tcp:0:interface=127.0.0.1"]\ndeny = ["127.0.0.0/8"]\n'
    for name in ("echo", "greeting", "reverse", "chat")
)


@pytest.fixture(scope="module")
def svc() -> Iterator[Daemon]:
    with daemon(CONFIG) as d:
        yield d


@pytest.fixture(scope="module")
def denied() -> Iterator[Daemon]:
    with daemon(DENIED) as d:
        yield d


def target(d: Daemon, command: str) -> list[str]:
    kind = "udp" if command == "udp" else "tcp"
    return ["127.0.0.1", str(d.port(SERVICE[command], kind))]


def argv_for(command: str, where: list[str]) -> list[str]:
    """A complete, successful-looking command line for C{command} at C{where}."""
    if command == "lookup":
        return ["lookup", "smtp://mail.example.com"]
    extra = {"echo": ["hi"], "reverse": ["abc"], "udp": ["hi"], "chat": ["--plain"]}.get(command, [])
    return [command, *where, *extra]


# -- 0 ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", EVERY)
def test_0_success(svc: Daemon, capfd: pytest.CaptureFixture[str], command: str) -> None:
    stdin = b"/quit\n" if command == "chat" else b""
    where = target(svc, command) if command != "lookup" else []
    code, out, err = in_process(argv_for(command, where), capfd, stdin)
    assert (code, err) == (EXIT_OK, ""), err
    assert out


# -- 1 ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", EVERY)
def test_1_standard_output_closed(svc: Daemon, command: str) -> None:
    """`socksvc ... | head -0`: quietly 1, as the table says."""
    where = target(svc, command) if command != "lookup" else []
    r, w = os.pipe()
    os.close(r)  # whatever the client writes gets EPIPE
    try:
        p = subprocess.run(
            [PY, "-m", "socksvc.client.main", *argv_for(command, where)],
            stdin=subprocess.DEVNULL,
            stdout=w,
            stderr=subprocess.PIPE,
            timeout=30,
            cwd=ROOT,
        )
    finally:
        os.close(w)
    assert (p.returncode, p.stderr) == (EXIT_ERROR, b"")


def test_1_udp_no_reply_at_all(capfd: pytest.CaptureFixture[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = str(silent.getsockname()[1])
        code, out, _ = in_process(["udp", "127.0.0.1", port, "-t", "0.2"], capfd)
    assert code == EXIT_ERROR
    assert "1 datagram sent, 0 received, 100.0% loss" in out


# -- 2 ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", EVERY)
def test_2_bad_command_line(capfd: pytest.CaptureFixture[str], command: str) -> None:
    argv = ["lookup", "http://host:99999/"] if command == "lookup" else [command, "127.0.0.1", "70000"]
    code, out, err = in_process(argv, capfd)
    assert (code, out) == (EXIT_USAGE, "")
    assert "port out of range" in one_line(err)


@pytest.mark.parametrize("command", EVERY)
def test_2_bad_option_value(capfd: pytest.CaptureFixture[str], command: str) -> None:
    argv = ["lookup", "--nope"] if command == "lookup" else [command, "--timeout", "0"]
    code, out, err = in_process(argv, capfd)
    assert (code, out) == (EXIT_USAGE, "")
    assert err.startswith(f"usage: socksvc {command} ")


# -- 3 ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", EVERY)
def test_3_unknown_host(capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    unknown_names(monkeypatch)
    argv = ["lookup", "nosuch.example"] if command == "lookup" else argv_for(command, ["nosuch.example", "7"])
    code, out, err = in_process(argv, capfd)
    assert (code, out) == (EXIT_NOT_FOUND, "")
    assert one_line(err) == "socksvc: cannot resolve host 'nosuch.example': name or service not known"


@pytest.mark.parametrize("command", EVERY)
def test_3_unknown_service_name(capfd: pytest.CaptureFixture[str], command: str) -> None:
    argv = ["lookup", "nosuchscheme://x"] if command == "lookup" else [command, "127.0.0.1", "nosuchservice"]
    code, out, err = in_process(argv, capfd)
    assert (code, out) == (EXIT_NOT_FOUND, "")
    assert one_line(err).startswith("socksvc: unknown ")


# -- 4 ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("command", STREAM)
def test_4_cannot_connect(capfd: pytest.CaptureFixture[str], command: str) -> None:
    port = free_port()
    code, out, err = in_process(argv_for(command, ["127.0.0.1", str(port)]), capfd)
    assert (code, out) == (EXIT_CONNECT, "")
    assert one_line(err) == f"socksvc: cannot connect to 127.0.0.1 port {port}: connection refused"


# -- 5 ------------------------------------------------------------------------------


@pytest.fixture
def silent() -> Iterator[socket.socket]:
    """A listener that accepts (the kernel does) and never says or answers anything."""
    s = socket.create_server(("127.0.0.1", 0))
    yield s
    s.close()


@pytest.mark.parametrize("command", STREAM)
def test_5_timed_out(silent: socket.socket, capfd: pytest.CaptureFixture[str], command: str) -> None:
    port = str(silent.getsockname()[1])
    extra = ["--nick", "zed"] if command == "chat" else []  # chat waits for the answer to its /nick
    code, out, err = in_process([*argv_for(command, ["127.0.0.1", port]), *extra, "-t", "0.3"], capfd)
    assert (code, out) == (EXIT_TIMEOUT, "")
    assert "within 0.3 s" in one_line(err)


# -- 6 ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", STREAM)
def test_6_refused_by_the_daemon(denied: Daemon, capfd: pytest.CaptureFixture[str], command: str) -> None:
    where = target(denied, command)
    code, out, err = in_process(argv_for(command, where), capfd, b"hello\n")
    assert (code, out) == (EXIT_PROTOCOL, "")
    assert one_line(err) == f"socksvc: 127.0.0.1 port {where[1]} refused us: access denied"


# -- 130 ----------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["echo", "greet", "reverse", "chat"])
def test_130_ctrl_c_while_waiting(silent: socket.socket, command: str) -> None:
    port = str(silent.getsockname()[1])
    proc = subprocess.Popen(
        [PY, "-m", "socksvc.client.main", *argv_for(command, ["127.0.0.1", port]), "-t", "60"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert select.select([silent], [], [], 20)[0], "the client never connected"
        conn, _ = silent.accept()
        with conn:
            if command in ("echo", "reverse"):  # it has sent: it is waiting for the reply
                conn.settimeout(20)
                assert conn.recv(1, socket.MSG_PEEK)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert (proc.returncode, out, err) == (EXIT_INTERRUPTED, b"", b"")


def test_130_udp(svc: Daemon) -> None:
    proc = subprocess.Popen(
        [PY, "-m", "socksvc.client.main", "udp", *target(svc, "udp"), "-c", "0", "-i", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        assert b" seq=1 " in proc.stdout.readline()  # in its 30 s pause now
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert (proc.returncode, err) == (EXIT_INTERRUPTED, b"")


def test_130_lookup(capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """lookup never waits on the network: Ctrl-C during its resolver call, in-process."""

    def interrupted(*args: Any, **kw: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(socket, "getaddrinfo", interrupted)
    assert in_process(["lookup", "somewhere"], capfd) == (EXIT_INTERRUPTED, "", "")


# -- one table ----------------------------------------------------------------------


def test_docs_and_help_show_the_one_table() -> None:
    """docs/client.md's exit-code table is EXIT_CODES word for word, and --help prints it."""
    from socksvc.client.common import EXIT_CODES
    from socksvc.client.main import build_parser

    with open(os.path.join(ROOT, "docs", "client.md"), encoding="utf-8") as f:
        doc = f.read()
    table = doc[doc.index("| code | meaning |") :].split("\n\n", 1)[0].splitlines()[2:]
    rows = {}
    for row in table:
        code, text = row.strip("|").split("|", 1)
        rows[int(code)] = text.strip(" |")
    assert rows == EXIT_CODES
    help_text = " ".join(build_parser().format_help().split())
    for code, text in EXIT_CODES.items():
        assert f"{code} {text}" in help_text
