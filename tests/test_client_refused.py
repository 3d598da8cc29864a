"""
The client against a daemon that refuses it (access list, connection limits):
the daemon's one line (``socksvc: REASON``) is an error with a non-zero exit,
never printed as if it were the echo, the reversed text, the greeting or a
chat line. Against the real daemon on ephemeral ports.
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from socksvc.client.common import EXIT_OK, EXIT_PROTOCOL, ClientError, refusal
from socksvc.client.target import Target, connect
from socksvc.util.visible import UNSAFE_STRICT, is_safe
from socksvc.wire import REFUSAL
from tests import test_client
from tests.support import Daemon, daemon
from tests.support.client import one_error_line, run
from tests.support.resolver import local_names_only  # noqa: F401 (autouse: no DNS from these tests)

feed = test_client.feed  # the fixture: standard input from a file
SCRIPT = os.path.join(os.path.dirname(sys.executable), "socksvc")
SERVICES = ("echo", "reverse", "greeting", "chat")
DENY_ALL = "".join(
    f'[services.{name}]\nlisten = ["tcp:0:interface=127.0.0.1"]\ndeny = ["127.0.0.0/8"]\n' for name in SERVICES
)
ONE_EACH = """
[services.echo]
listen = ["tcp:0:interface=127.0.0.1"]
max_per_source = 1
log_close_rate = 0  # every close has its line: a test waits for one
[services.reverse]
listen = ["tcp:0:interface=127.0.0.1"]
"""


@pytest.fixture(scope="module")
def denied() -> Iterator[Daemon]:
    from socksvc.services.catalogue import types

    if "chat" not in types():
        pytest.skip("the daemon has no chat service type yet")
    with daemon(DENY_ALL) as d:
        yield d


@pytest.fixture(scope="module")
def open_svc() -> Iterator[Daemon]:
    with daemon(ONE_EACH) as d:
        yield d


# -- the probes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "service", "args"),
    [
        ("echo", "echo", ["hi"]),  # shorter than the refusal line: used to pass as an echo
        ("echo", "echo", ["hello, this message is longer than the refusal line"]),
        ("echo", "echo", []),  # standard input
        ("reverse", "reverse", ["abc"]),
        ("reverse", "reverse", []),
        ("greet", "greeting", []),
    ],
)
def test_a_refusal_is_an_error_not_a_reply(
    denied: Daemon, capsysbinary: Any, feed: Callable[[bytes], None], command: str, service: str, args: list[str]
) -> None:
    feed(b"from stdin\n")
    port = denied.port(service)
    code, out, err = run([command, "127.0.0.1", str(port), *args], capsysbinary)
    assert code == EXIT_PROTOCOL
    assert out == b""
    one_error_line(err, rf"socksvc: 127\.0\.0\.1 port {port} refused us: access denied")


@pytest.mark.parametrize("message", ["x", "a message longer than the refusal line, by some way"])
def test_echo_count_reports_the_refusal(denied: Daemon, capsysbinary: Any, message: str) -> None:
    port = denied.port("echo")
    code, out, err = run(["echo", "127.0.0.1", str(port), message, "-c", "2", "-i", "0"], capsysbinary)
    assert code == EXIT_PROTOCOL
    one_error_line(err, rf"socksvc: 127\.0\.0\.1 port {port} refused us: access denied")
    assert b"access denied" not in out
    assert b"1 message sent, 0 received, 100.0% loss, time " in out  # the summary still comes


def test_too_many_connections_from_our_address(open_svc: Daemon) -> None:
    port = open_svc.port("echo")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as held:
        held.sendall(b"x")
        assert held.recv(1) == b"x"  # accepted and counted: the next one is over max_per_source
        p = subprocess.run([SCRIPT, "echo", "127.0.0.1", str(port), "hi"], capture_output=True, timeout=30)
        held_port = held.getsockname()[1]
    # The daemon sees the close a moment later: until then the slot is taken, and
    # the next test on this daemon (one connection per address) would be refused.
    open_svc.read(until=f"echo: 127.0.0.1:{held_port} closed after")
    assert p.returncode == EXIT_PROTOCOL
    assert p.stdout == b""
    one_error_line(
        p.stderr.decode(), rf"socksvc: 127\.0\.0\.1 port {port} refused us: too many connections from your address"
    )


def test_an_echo_that_reads_like_a_refusal_is_still_an_echo(open_svc: Daemon, capsysbinary: Any) -> None:
    code, out, err = run(["echo", "127.0.0.1", str(open_svc.port("echo")), "socksvc: access denied"], capsysbinary)
    assert (code, out, err) == (EXIT_OK, b"socksvc: access denied\n", "")


def test_a_reversed_line_that_reads_like_a_refusal_is_still_a_reply(open_svc: Daemon, capsysbinary: Any) -> None:
    port = open_svc.port("reverse")
    code, out, err = run(["reverse", "127.0.0.1", str(port), "deined ssecca :cvskcos"], capsysbinary)
    assert (code, out, err) == (EXIT_OK, b"socksvc: access denied\n", "")


def test_an_echo_that_differs_is_an_error(capsysbinary: Any) -> None:
    # Not an echo service: the reply (shorter than the message) is not what was sent.
    with daemon('[services.greeting]\nlisten = ["tcp:0:interface=127.0.0.1"]\n') as d:
        port = d.port("greeting")
        code, out, err = run(["echo", "127.0.0.1", str(port), "x" * 10], capsysbinary)
    assert code == EXIT_PROTOCOL
    assert out == b""
    one_error_line(err, rf"socksvc: the reply from 127\.0\.0\.1 port {port} differs from what was sent")


def test_greet_recognises_a_refusal_line_sent_in_pieces() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        proc = subprocess.Popen(
            [SCRIPT, "greet", "127.0.0.1", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        listener.settimeout(20)
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"sock")
            conn.sendall(b"svc: busy \x1b[2J\r\n")
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == EXIT_PROTOCOL
    assert out == b""
    one_error_line(err.decode(), rf"socksvc: 127\.0\.0\.1 port {port} refused us: busy \^\[\[2J")


# -- the refusal parser ------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_refusal_parser_never_fails_and_is_safe_to_print(data: bytes) -> None:
    reason = refusal(data)
    if not data.startswith(REFUSAL):
        assert reason is None
    else:
        assert reason
        assert is_safe(reason, UNSAFE_STRICT)
        assert "\n" not in reason


@settings(max_examples=100, deadline=None)
@given(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=60))
def test_refusal_parser_reads_the_daemons_line(reason: str) -> None:
    line = b"socksvc: " + reason.encode() + b"\r\n"
    assert refusal(line) == reason
    assert refusal(line + b"more after the line") == reason
    assert refusal(b" " + line) is None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), min_size=1, max_size=8),
    st.lists(st.integers(1, 50), max_size=10),
)
def test_reverse_meter_shows_replies_whole_whatever_the_chunks(lines: list[bytes], cuts: list[int]) -> None:
    """However the replies are cut into reads, what is shown is the replies, and each is counted once."""
    from socksvc.client.exchange import TOO_LONG, ReverseMeter

    lines = [line for line in lines if not TOO_LONG.fullmatch(line.rstrip(b"\r")) and not line.startswith(REFUSAL)]
    meter = ReverseMeter()
    meter.on_sent(b"".join(line[::-1] + b"\n" for line in lines))
    replies = b"".join(line + b"\n" for line in lines)
    shown, at = b"", 0
    for cut in [*cuts, len(replies)]:
        shown += meter.on_received(replies[at : at + cut])
        at += cut
    shown += meter.on_received(replies[at:]) + meter.flush()
    assert shown == replies
    assert (meter.sent, meter.received, meter.owed()) == (len(lines), len(lines), False)


def test_reverse_meter_holds_back_the_servers_error_line_however_it_is_cut() -> None:
    from socksvc.client.exchange import ReverseMeter, ServerSaid

    reply = b"cba\nerror: line longer than 16 bytes\r\n"
    for cut in range(1, len(reply)):
        meter = ReverseMeter()
        meter.on_sent(b"abc\n" + b"x" * 40 + b"\n")
        shown = meter.on_received(reply[:cut])
        with pytest.raises(ServerSaid) as e:
            meter.on_received(reply[cut:])
        assert shown + e.value.before == b"cba\n"
        assert (e.value.text, e.value.line) == ("error: line longer than 16 bytes", 2)


# -- chat ----------------------------------------------------------------------------


def test_chat_plain_mode_reports_the_refusal_and_fails(denied: Daemon) -> None:
    port = denied.port("chat")
    p = subprocess.run(
        [SCRIPT, "chat", "127.0.0.1", str(port), "--nick", "zed"], input=b"hello\n", capture_output=True, timeout=30
    )
    assert p.returncode == EXIT_PROTOCOL
    assert p.stdout == b""
    assert p.stderr.decode() == f"socksvc: 127.0.0.1 port {port} refused us: access denied\n"


def test_chat_plain_mode_in_process(denied: Daemon) -> None:
    from socksvc.client.chat.plain import run_plain

    r, w = os.pipe()  # stdin stays open: the server closes first
    out = io.BytesIO()
    target = Target("127.0.0.1", denied.port("chat"))
    try:
        with pytest.raises(ClientError) as e:
            run_plain(connect(target, 5), target, stdin_fd=r, stdout=out)
    finally:
        os.close(r)
        os.close(w)
    assert (e.value.code, e.value.message) == (EXIT_PROTOCOL, f"{target} refused us: access denied")
    assert out.getvalue() == b""


def test_chat_console_reports_the_refusal_and_exits_6(denied: Daemon) -> None:
    from tests.support.client import console_session as _console_session

    async def body(console: Any, pipe: Any, screen: io.StringIO, task: asyncio.Task[int]) -> None:
        assert await asyncio.wait_for(task, 10) == EXIT_PROTOCOL
        assert console.refused == "access denied"
        assert any(isinstance(x, str) and x.endswith("refused us: access denied") for x in console.shown)
        assert "refused us: access denied" in screen.getvalue()
        assert not any(not isinstance(x, str) for x in console.shown)  # not shown as a chat line

    _console_session(denied.port("chat"), body, nick="zed")
