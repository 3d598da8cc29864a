"""
The `socksvc` client's TCP probes (echo, greet, reverse) and its error paths,
against the real daemon on ephemeral ports: as functions (socksvc.client.main.run)
and through the installed console script.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from socksvc.client.common import (
    EXIT_CONNECT,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_PROTOCOL,
    EXIT_TIMEOUT,
    EXIT_USAGE,
)
from tests.support import Daemon, daemon, has_ipv6_loopback
from tests.support.client import one_error_line, run
from tests.support.resolver import local_names_only  # noqa: F401 (autouse: no DNS from these tests)

SCRIPT = os.path.join(os.path.dirname(sys.executable), "socksvc")

CONFIG = """
[services.echo]
listen = ["tcp:0:interface=127.0.0.1"]
[services.greeting]
listen = ["tcp:0:interface=127.0.0.1"]
[services.reverse]
listen = ["tcp:0:interface=127.0.0.1"]
"""

ECHO6 = """
[services.echo6]
type = "echo"
listen = ["tcp6:0:interface=\\\\:\\\\:1"]
"""


HAS_IPV6 = has_ipv6_loopback()


@pytest.fixture(scope="module")
def svc() -> Iterator[Daemon]:
    with daemon(CONFIG + (ECHO6 if HAS_IPV6 else "")) as d:
        yield d


@pytest.fixture
def feed(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[Callable[[bytes], None]]:
    """Make sys.stdin a real file (with a descriptor, as in a shell pipe) holding the given bytes."""
    opened: list[Any] = []

    def set_stdin(data: bytes) -> None:
        path = tmp_path / f"stdin-{len(opened)}"
        path.write_bytes(data)
        f = open(path)  # noqa: SIM115
        opened.append(f)
        monkeypatch.setattr(sys, "stdin", f)

    yield set_stdin
    for f in opened:
        f.close()


def script(*args: str, input: bytes | None = None, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([SCRIPT, *args], input=input, capture_output=True, timeout=timeout, check=False)


@pytest.fixture
def silent() -> Iterator[socket.socket]:
    """A listening socket that never accepts or answers: connects succeed, replies never come."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield s
    s.close()


def free_port() -> int:
    """A port with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# -- echo ----------------------------------------------------------------------


def test_echo_message(svc: Daemon, capsysbinary: Any) -> None:
    code, out, err = run(["echo", "127.0.0.1", str(svc.port("echo")), "hello there"], capsysbinary)
    assert (code, out, err) == (EXIT_OK, b"hello there\n", "")


def test_echo_message_by_name(svc: Daemon, capsysbinary: Any) -> None:
    code, out, _ = run(["echo", "localhost", str(svc.port("echo")), "héllo\n"], capsysbinary)
    assert (code, out) == (EXIT_OK, "héllo\n".encode())


def test_echo_stdin_is_binary_safe(svc: Daemon, capsysbinary: Any, feed: Callable[[bytes], None]) -> None:
    data = bytes(range(256)) * 4 + b"\r\n\x00no newline at the end"
    feed(data)
    code, out, err = run(["echo", "127.0.0.1", str(svc.port("echo"))], capsysbinary)
    assert (code, err) == (EXIT_OK, "")
    assert out == data


def test_echo_large_stdin_does_not_deadlock(svc: Daemon, capsysbinary: Any, feed: Callable[[bytes], None]) -> None:
    # Far more than both sides' socket buffers: the client must read replies while sending.
    data = os.urandom(4 << 20)
    feed(data)
    code, out, _ = run(["echo", "127.0.0.1", str(svc.port("echo")), "--timeout", "20"], capsysbinary)
    assert code == EXIT_OK
    assert out == data


def test_echo_empty_stdin(svc: Daemon, capsysbinary: Any, feed: Callable[[bytes], None]) -> None:
    feed(b"")
    assert run(["echo", "127.0.0.1", str(svc.port("echo"))], capsysbinary) == (EXIT_OK, b"", "")


def _rtts(out: str) -> list[float]:
    return [float(m) for m in re.findall(r"seq=\d+ time=([0-9.]+) ms", out)]


def test_echo_count_prints_each_round_and_min_avg_max(svc: Daemon, capsysbinary: Any) -> None:
    port = svc.port("echo")
    code, out, err = run(["echo", "127.0.0.1", str(port), "ping", "--count", "4", "--interval", "0"], capsysbinary)
    assert (code, err) == (EXIT_OK, "")
    text = out.decode()
    assert text.startswith(f"ECHO 127.0.0.1 port {port} (127.0.0.1): 4 bytes, 4 round trips\n")
    assert re.findall(r"seq=(\d+)", text) == ["1", "2", "3", "4"]
    assert f"4 bytes from 127.0.0.1 port {port}: seq=1 time=" in text
    assert re.search(r"^4 messages sent, 4 received, 0\.0% loss, time \d+ ms$", text, re.M)
    m = re.search(r"rtt min/avg/max = ([0-9.]+)/([0-9.]+)/([0-9.]+) ms", text)
    assert m is not None
    lo, avg, hi = (float(x) for x in m.groups())
    rtts = _rtts(text)
    assert lo == pytest.approx(min(rtts), abs=0.001)
    assert hi == pytest.approx(max(rtts), abs=0.001)
    assert lo <= avg <= hi


def test_echo_count_says_one_in_the_singular(svc: Daemon, capsysbinary: Any) -> None:
    port = svc.port("echo")
    code, out, err = run(["echo", "127.0.0.1", str(port), "x", "--count", "1"], capsysbinary)
    assert (code, err) == (EXIT_OK, "")
    lines = out.decode().splitlines()
    assert lines[0] == f"ECHO 127.0.0.1 port {port} (127.0.0.1): 1 byte, 1 round trip"
    assert lines[1].startswith(f"1 byte from 127.0.0.1 port {port}: seq=1 time=")
    assert lines[2] == f"--- 127.0.0.1 port {port} echo statistics ---"
    assert re.fullmatch(r"1 message sent, 1 received, 0\.0% loss, time \d+ ms", lines[3])


def test_echo_count_with_interval_and_stdin_payload(
    svc: Daemon, capsysbinary: Any, feed: Callable[[bytes], None]
) -> None:
    feed(b"\x00\x01payload\xff" * 1000)
    code, out, _ = run(["echo", "127.0.0.1", str(svc.port("echo")), "-c", "2", "-i", "0.01"], capsysbinary)
    assert code == EXIT_OK
    text = out.decode()
    assert len(_rtts(text)) == 2
    assert "10000 bytes from 127.0.0.1" in text


def test_echo_count_with_empty_message_is_a_usage_error(svc: Daemon, capsysbinary: Any) -> None:
    code, out, err = run(["echo", "127.0.0.1", str(svc.port("echo")), "", "-c", "2"], capsysbinary)
    assert (code, out) == (EXIT_USAGE, b"")
    one_error_line(err, r"socksvc: echo --count needs a message that is not empty")


def test_echo_count_against_a_wrong_reply_fails(svc: Daemon, capsysbinary: Any) -> None:
    # A greeting service is not an echo: the reply differs.
    code, out, err = run(["echo", "127.0.0.1", str(svc.port("greeting")), "x" * 26, "-c", "3"], capsysbinary)
    assert code == EXIT_PROTOCOL
    one_error_line(err, r"socksvc: reply 1 from 127\.0\.0\.1 port \d+ differs from what was sent \(26 bytes\)")
    assert b"1 message sent, 0 received, 100.0% loss, time " in out  # the summary still comes


@pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback on this host")
@pytest.mark.parametrize("host", ["::1", "[::1]"])
def test_echo_over_ipv6(svc: Daemon, capsysbinary: Any, host: str) -> None:
    code, out, _ = run(["echo", host, str(svc.port("echo6")), "six"], capsysbinary)
    assert (code, out) == (EXIT_OK, b"six\n")


# -- greet and reverse -----------------------------------------------------------


def test_greet(svc: Daemon, capsysbinary: Any) -> None:
    code, out, err = run(["greet", "localhost", str(svc.port("greeting"))], capsysbinary)
    assert (code, out, err) == (EXIT_OK, b"Thank you for connecting\r\n", "")


def test_reverse_text(svc: Daemon, capsysbinary: Any) -> None:
    code, out, _ = run(["reverse", "127.0.0.1", str(svc.port("reverse")), "héllo wörld"], capsysbinary)
    assert (code, out) == (EXIT_OK, "dlröw olléh\n".encode())


def test_reverse_stdin_lines(svc: Daemon, capsysbinary: Any, feed: Callable[[bytes], None]) -> None:
    feed(b"abc\ndef\r\n\nno end")
    code, out, _ = run(["reverse", "127.0.0.1", str(svc.port("reverse"))], capsysbinary)
    assert (code, out) == (EXIT_OK, b"cba\nfed\r\n\ndne on\n")


def test_reverse_many_lines(svc: Daemon, capsysbinary: Any, feed: Callable[[bytes], None]) -> None:
    lines = [f"line {i} ".encode() * 20 for i in range(1000)]
    feed(b"\n".join(lines) + b"\n")
    code, out, _ = run(["reverse", "127.0.0.1", str(svc.port("reverse"))], capsysbinary)
    assert code == EXIT_OK
    assert out.split(b"\n")[:-1] == [line[::-1] for line in lines]


SHORT_LINES = """
[services.reverse]
listen = ["tcp:0:interface=127.0.0.1"]
max_line = 16
"""


@pytest.fixture(scope="module")
def short_lines() -> Iterator[Daemon]:
    with daemon(SHORT_LINES) as d:
        yield d


@pytest.mark.parametrize("size", [17, 100, 1 << 20])
def test_reverse_a_line_over_the_servers_limit_is_exit_6(short_lines: Daemon, capsysbinary: Any, size: int) -> None:
    port = short_lines.port("reverse")
    code, out, err = run(["reverse", "127.0.0.1", str(port), "x" * size], capsysbinary)
    assert (code, out) == (EXIT_PROTOCOL, b"")
    one_error_line(err, rf"socksvc: 127\.0\.0\.1 port {port} answered line 1: error: line longer than 16 bytes")


def test_reverse_lines_before_the_long_one_are_printed(
    short_lines: Daemon, capsysbinary: Any, feed: Callable[[bytes], None]
) -> None:
    port = short_lines.port("reverse")
    feed(b"abc\ndef\n" + b"y" * 5000 + b"\nnever answered\n")
    code, out, err = run(["reverse", "127.0.0.1", str(port)], capsysbinary)
    assert (code, out) == (EXIT_PROTOCOL, b"cba\nfed\n")
    one_error_line(err, rf"socksvc: 127\.0\.0\.1 port {port} answered line 3: error: line longer than 16 bytes")


def test_reverse_text_that_reverses_to_the_error_line_is_a_reply(svc: Daemon, capsysbinary: Any) -> None:
    text = "error: line longer than 16 bytes"[::-1]
    code, out, err = run(["reverse", "127.0.0.1", str(svc.port("reverse")), text], capsysbinary)
    assert (code, out, err) == (EXIT_OK, b"error: line longer than 16 bytes\n", "")


# -- UNIX sockets: the same grammar for every stream command ----------------------


@pytest.fixture(scope="module")
def unix_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A daemon with echo, greeting, reverse and chat on UNIX sockets only (as in the README's config)."""
    base = str(tmp_path_factory.mktemp("unix"))
    config = "".join(
        f'[services.{name}]\nlisten = ["unix:{base}/{name}.sock"]\n' for name in ("echo", "greeting", "reverse", "chat")
    )
    with daemon(config):
        yield base


def test_echo_over_a_unix_socket(unix_dir: str, capsysbinary: Any, feed: Callable[[bytes], None]) -> None:
    where = f"unix:{unix_dir}/echo.sock"
    assert run(["echo", where, "hello"], capsysbinary) == (EXIT_OK, b"hello\n", "")
    # After unix:PATH there is no PORT: the next word is the MESSAGE, whatever it looks like.
    assert run(["echo", where, "7007"], capsysbinary) == (EXIT_OK, b"7007\n", "")
    feed(b"\x00binary\xff")
    assert run(["echo", where], capsysbinary) == (EXIT_OK, b"\x00binary\xff", "")
    code, out, err = run(["echo", where, "ping", "-c", "2", "-i", "0"], capsysbinary)
    assert (code, err) == (EXIT_OK, "")
    assert out.decode().startswith(f"ECHO {where}: 4 bytes, 2 round trips\n4 bytes from {where}: seq=1 ")


def test_greet_and_reverse_over_unix_sockets(unix_dir: str, capsysbinary: Any) -> None:
    code, out, err = run(["greet", f"unix:{unix_dir}/greeting.sock"], capsysbinary)
    assert (code, out, err) == (EXIT_OK, b"Thank you for connecting\r\n", "")
    code, out, err = run(["reverse", f"unix:{unix_dir}/reverse.sock", "stressed"], capsysbinary)
    assert (code, out, err) == (EXIT_OK, b"desserts\n", "")


def test_chat_over_a_unix_socket(unix_dir: str) -> None:
    p = script("chat", f"unix:{unix_dir}/chat.sock", "--nick", "unixer", input=b"/who\n")
    assert p.returncode == EXIT_OK, p.stderr
    assert "-!- You are now known as unixer" in p.stdout.decode().splitlines()


@pytest.mark.parametrize("command", ["echo", "greet", "reverse", "chat"])
def test_a_unix_socket_nobody_listens_on(command: str, tmp_path: Any, capsysbinary: Any) -> None:
    path = tmp_path / "nobody.sock"
    code, out, err = run(
        [command, f"unix:{path}", "--plain"] if command == "chat" else [command, f"unix:{path}"], capsysbinary
    )
    assert (code, out) == (EXIT_CONNECT, b"")
    one_error_line(err, rf"socksvc: cannot connect to unix:{re.escape(str(path))}: no such socket")


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["echo", "unix:/x.sock", "7007", "hi"], "unix:PATH takes no PORT: '7007'"),
        (["reverse", "unix:/x.sock", "7071", "abc"], "unix:PATH takes no PORT: '7071'"),
        (["greet", "unix:/x.sock", "7017"], "unix:PATH takes no PORT: '7017'"),
        (["echo", "unix:"], "not a UNIX socket path: 'unix:'"),
        (["udp", "unix:/x.sock"], "udp has no UNIX sockets"),
    ],
)
def test_unix_target_usage_errors(capsysbinary: Any, argv: list[str], fragment: str) -> None:
    code, out, err = run(argv, capsysbinary)
    assert (code, out) == (EXIT_USAGE, b"")
    one_error_line(err, "socksvc: " + re.escape(fragment) + ".*")


# -- errors ----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["echo", "greet", "reverse"])
def test_connection_refused(capsysbinary: Any, command: str) -> None:
    port = free_port()
    code, out, err = run([command, "127.0.0.1", str(port)], capsysbinary)
    assert (code, out) == (EXIT_CONNECT, b"")
    one_error_line(err, rf"socksvc: cannot connect to 127\.0\.0\.1 port {port}: connection refused")


def unknown_names(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """
    Fake the resolver: no name resolves. Tests never ask the system's
    resolver about a name that is not in /etc/hosts (no DNS query leaves the
    machine); returns the names asked about.
    """
    asked: list[str] = []

    def getaddrinfo(host: Any, *args: Any, **kw: Any) -> Any:
        asked.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def test_unknown_host(capsysbinary: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = unknown_names(monkeypatch)
    code, out, err = run(["echo", "no-such-host.invalid", "7007", "x"], capsysbinary)
    assert (code, out) == (EXIT_NOT_FOUND, b"")
    one_error_line(err, r"socksvc: cannot resolve host 'no-such-host\.invalid': name or service not known")
    assert asked == ["no-such-host.invalid"]


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["echo", "127.0.0.1", "x"], r"socksvc: no reply from 127\.0\.0\.1 port \d+ within 0\.3 s"),
        (
            ["echo", "127.0.0.1", "x", "-c", "2", "-i", "0"],
            r"socksvc: no reply from 127\.0\.0\.1 port \d+ within 0\.3 s",
        ),
        (["greet", "127.0.0.1"], r"socksvc: no greeting from 127\.0\.0\.1 port \d+ within 0\.3 s"),
        (["reverse", "127.0.0.1", "abc"], r"socksvc: no reply from 127\.0\.0\.1 port \d+ within 0\.3 s"),
    ],
)
def test_timeout(silent: socket.socket, capsysbinary: Any, argv: list[str], pattern: str) -> None:
    port = str(silent.getsockname()[1])
    argv = [argv[0], argv[1], port, *argv[2:], "--timeout", "0.3"]
    code, _out, err = run(argv, capsysbinary)
    assert code == EXIT_TIMEOUT
    one_error_line(err, pattern)


@pytest.fixture
def full() -> Iterator[socket.socket]:
    """A listener whose accept queue is full: new connects get no answer at all (Linux drops the SYN)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    filler = socket.create_connection(listener.getsockname(), timeout=5)
    probe = socket.socket()
    probe.settimeout(0.2)
    try:
        probe.connect(listener.getsockname())
    except TimeoutError:
        pass
    else:
        pytest.skip("this kernel answered a connect to a full accept queue")
    finally:
        probe.close()
    yield listener
    filler.close()
    listener.close()


@pytest.mark.parametrize("command", ["echo", "greet", "reverse"])
def test_connect_timeout(full: socket.socket, capsysbinary: Any, command: str) -> None:
    port = full.getsockname()[1]
    code, out, err = run([command, "127.0.0.1", str(port), "--timeout", "0.3"], capsysbinary)
    assert (code, out) == (EXIT_TIMEOUT, b"")
    one_error_line(err, rf"socksvc: cannot connect to 127\.0\.0\.1 port {port}: timed out after 0\.3 s")


def _start(*args: str) -> subprocess.Popen[bytes]:
    """The socksvc script in the background, its output captured, no input."""
    return subprocess.Popen([SCRIPT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def _accept(listener: socket.socket, timeout: float = 20.0) -> socket.socket:
    ready, _, _ = select.select([listener], [], [], timeout)
    assert ready, "the client never connected"
    conn, _ = listener.accept()
    return conn


def test_server_closing_early_is_one_line(silent: socket.socket) -> None:
    port = silent.getsockname()[1]
    proc = _start("echo", "127.0.0.1", str(port), "hello")
    conn = _accept(silent)
    got = b""
    while len(got) < 5:  # read what was sent first, so the close is a clean FIN, not a reset
        chunk = conn.recv(100)
        assert chunk
        got += chunk
    conn.close()
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == EXIT_PROTOCOL
    assert out == b""
    one_error_line(err.decode(), rf"socksvc: 127\.0\.0\.1 port {port} closed the connection before replying in full")


def test_server_reset_is_one_line(silent: socket.socket) -> None:
    port = silent.getsockname()[1]
    proc = _start("echo", "127.0.0.1", str(port), "hello")
    conn = _accept(silent)
    assert conn.recv(5, socket.MSG_PEEK)  # the client is past connecting: it has sent
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()  # linger 0: an RST
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == EXIT_PROTOCOL, err
    assert out == b""
    one_error_line(err.decode(), rf"socksvc: connection to 127\.0\.0\.1 port {port} reset by the server")


def test_greeting_service_that_says_nothing(silent: socket.socket) -> None:
    port = silent.getsockname()[1]
    proc = _start("greet", "127.0.0.1", str(port))
    _accept(silent).close()
    _out, err = proc.communicate(timeout=20)
    assert proc.returncode == EXIT_PROTOCOL
    one_error_line(err.decode(), rf"socksvc: 127\.0\.0\.1 port {port} closed the connection without a greeting")


def test_ctrl_c_exits_130_quietly(silent: socket.socket) -> None:
    port = silent.getsockname()[1]
    proc = _start("echo", "127.0.0.1", str(port), "hello", "--timeout", "60")
    conn = _accept(silent)  # connected and now waiting for a reply that never comes
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    conn.close()
    assert proc.returncode == EXIT_INTERRUPTED
    assert (out, err) == (b"", b"")


def test_ctrl_c_during_count_prints_the_summary(svc: Daemon) -> None:
    proc = _start("echo", "127.0.0.1", str(svc.port("echo")), "hi", "-c", "1000", "-i", "30")
    assert proc.stdout is not None
    first = proc.stdout.readline() + proc.stdout.readline()  # the header and round 1; now in its 30 s pause
    assert b"seq=1 " in first
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=20)
    assert proc.returncode == EXIT_INTERRUPTED
    assert err == b""
    assert b"1 message sent, 1 received, 0.0% loss, time " in rest


def test_closed_stdout_is_quiet(svc: Daemon) -> None:
    r, w = os.pipe()
    os.close(r)  # whatever the client writes gets EPIPE
    proc = subprocess.run(
        [SCRIPT, "echo", "127.0.0.1", str(svc.port("echo")), "hi"], stdout=w, stderr=subprocess.PIPE, timeout=30
    )
    os.close(w)
    assert proc.returncode == 1
    assert proc.stderr == b""


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["echo", "127.0.0.1", "70000"], "port out of range"),
        (["echo", "127.0.0.1", "0"], "port out of range"),
        (["echo", "a b"], "not a host name or address"),
        (["echo", "localhost:7007"], "give the port as a separate argument"),
        (["echo", "[localhost]"], "not an IPv6 address in brackets"),
        (["echo", "--count", "0"], "must be 1 or more"),
        (["echo", "--count", "x"], "not a whole number"),
        (["echo", "--interval", "-1"], "between 0 and 86400"),
        (["greet", "--timeout", "0"], "more than 0"),
        (["reverse", "--timeout", "nan"], "more than 0"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
    ],
)
def test_usage_errors(capsysbinary: Any, argv: list[str], fragment: str) -> None:
    code, out, err = run(argv, capsysbinary)
    assert (code, out) == (EXIT_USAGE, b"")
    assert fragment in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["echo", "hello"], " (to send a message: socksvc echo HOST PORT MESSAGE, or pipe it on stdin)"),
        (["reverse", "stressed"], " (to reverse text: socksvc reverse HOST PORT TEXT, or pipe lines on stdin)"),
        (["udp", "ping"], " (to send a message: socksvc udp HOST PORT MESSAGE)"),
        (["greet", "hello"], ""),  # nothing else it could have meant
        (["echo", "hello", "7007"], ""),  # HOST and PORT given: a host it is
    ],
)
def test_a_lone_word_that_is_no_host_gets_a_hint(
    capsysbinary: Any, monkeypatch: pytest.MonkeyPatch, argv: list[str], hint: str
) -> None:
    asked = unknown_names(monkeypatch)
    code, out, err = run(argv, capsysbinary)
    assert (code, out) == (EXIT_NOT_FOUND, b"")
    word = argv[1]
    one_error_line(err, re.escape(f"socksvc: cannot resolve host '{word}': name or service not known{hint}"))
    assert asked == [word]


@pytest.mark.parametrize("command", ["echo", "greet", "reverse", "udp", "chat", "lookup"])
def test_extra_arguments_get_the_commands_own_usage(capsysbinary: Any, command: str) -> None:
    code, out, err = run([command, "a", "b", "c", "d", "e"], capsysbinary)
    assert (code, out) == (EXIT_USAGE, b"")
    assert err.startswith(f"usage: socksvc {command} ")
    assert err.splitlines()[-1] == f"socksvc {command}: error: unrecognized arguments: " + " ".join(
        ["a", "b", "c", "d", "e"][{"greet": 2, "chat": 2, "lookup": 1}.get(command, 3) :]
    )


def test_unknown_service_name(capsysbinary: Any) -> None:
    code, _, err = run(["echo", "localhost", "no-such-service-name"], capsysbinary)
    assert code == EXIT_NOT_FOUND
    one_error_line(err, r"socksvc: unknown service name 'no-such-service-name' .*")


# -- the console script ----------------------------------------------------------


def test_script_help_lists_every_command() -> None:
    p = script("--help")
    assert p.returncode == 0
    for command in ("echo", "greet", "reverse", "udp", "chat", "lookup"):
        assert re.search(rf"^\s+{command}\s", p.stdout.decode(), re.M), command
    assert "exit codes (every command):" in p.stdout.decode()


def test_script_version() -> None:
    p = script("--version")
    assert p.returncode == 0
    assert re.fullmatch(r"socksvc \S+\n", p.stdout.decode())


def test_script_probes(svc: Daemon) -> None:
    p = script("echo", "127.0.0.1", str(svc.port("echo")), input=b"\x00\xff\r\nbinary")
    assert (p.returncode, p.stdout, p.stderr) == (0, b"\x00\xff\r\nbinary", b"")
    p = script("echo", "127.0.0.1", str(svc.port("echo")), "x", "-c", "2", "-i", "0")
    assert p.returncode == 0
    assert b"rtt min/avg/max = " in p.stdout
    p = script("greet", "127.0.0.1", str(svc.port("greeting")))
    assert (p.returncode, p.stdout) == (0, b"Thank you for connecting\r\n")
    p = script("reverse", "127.0.0.1", str(svc.port("reverse")), "stressed")
    assert (p.returncode, p.stdout) == (0, b"desserts\n")
    p = script("reverse", "127.0.0.1", str(svc.port("reverse")), input=b"ab\ncd\n")
    assert (p.returncode, p.stdout) == (0, b"ba\ndc\n")


def test_script_errors_are_one_line() -> None:
    port = free_port()
    p = script("echo", "localhost", str(port), "x")
    assert p.returncode == EXIT_CONNECT
    one_error_line(p.stderr.decode(), rf"socksvc: cannot connect to localhost port {port}: connection refused")
    p = script("echo", "--count", "-3")
    assert p.returncode == EXIT_USAGE
    assert b"Traceback" not in p.stderr


def test_script_timeout(silent: socket.socket) -> None:
    p = script("greet", "127.0.0.1", str(silent.getsockname()[1]), "--timeout", "0.2")
    assert p.returncode == EXIT_TIMEOUT
    one_error_line(p.stderr.decode(), r"socksvc: no greeting from 127\.0\.0\.1 port \d+ within 0\.2 s")
