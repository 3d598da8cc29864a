"""
The `socksvc chat` console client: line parsing and formatting, plain line
mode end to end, interactive mode end to end (prompt_toolkit pipe input, and a
real terminal under tmux), against a small fake chat server speaking the
formats of docs/chat.md, and against the real daemon when it has a chat type.

Run the fake server by hand: ``python -m tests.test_client_chat [PORT]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import io
import os
import re
import select
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from socksvc.client.chat import command as chat_cli
from socksvc.client.chat.format import (
    NICK_COLOURS,
    ChatLine,
    classify,
    escape,
    fold_nick,
    fragments,
    is_safe,
    mentions,
    nick_colour,
    plain,
)
from socksvc.client.common import (
    EXIT_CONNECT,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_PROTOCOL,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    ClientError,
)
from socksvc.client.main import run as client_run
from socksvc.client.target import Target, connect, describe, target_from
from tests.support.client import console_session
from tests.support.resolver import local_names_only  # noqa: F401 (autouse: no DNS from these tests)

PY = sys.executable
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------ helpers


def pause(seconds: float) -> None:
    """Wait without time.sleep (the brief forbids it in tests)."""
    select.select([], [], [], seconds)


def poll(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll C{predicate} until it returns something true; fail after C{timeout}."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        pause(0.02)


def visible(screen: str) -> str:
    """Terminal output without the CSI/OSC sequences prompt_toolkit wrote itself."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07", "", screen)


async def apoll(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class FakeChatServer:
    """
    A tiny chat server speaking the line formats of docs/chat.md, on a port
    the kernel chooses, in a thread (test scaffolding only). It records every
    line it receives, and can send raw bytes to everyone or drop everyone.
    """

    def __init__(self, port: int = 0) -> None:
        self.lock = threading.Lock()
        self.clients: dict[socket.socket, str] = {}
        self.received: list[tuple[str, str]] = []
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                server._serve(self.request)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.tcp = socketserver.ThreadingTCPServer(("127.0.0.1", port), Handler)
        self.tcp.daemon_threads = True
        self.port = self.tcp.server_address[1]
        self.thread = threading.Thread(target=self.tcp.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.tcp.shutdown()
        self.tcp.server_close()
        self.drop_all()

    def lines(self, nick: str | None = None) -> list[str]:
        with self.lock:
            return [line for who, line in self.received if nick is None or who == nick]

    def connected(self) -> int:
        with self.lock:
            return len(self.clients)

    def nicks(self) -> list[str]:
        with self.lock:
            return [n for n in self.clients.values() if n]

    def send_all(self, data: bytes) -> None:
        with self.lock:
            socks = list(self.clients)
        for s in socks:
            with contextlib.suppress(OSError):
                s.sendall(data)

    def drop_all(self) -> None:
        with self.lock:
            socks = list(self.clients)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def _to(self, nick: str, line: str) -> None:
        with self.lock:
            targets = [s for s, n in self.clients.items() if n == nick]
        for s in targets:
            with contextlib.suppress(OSError):
                s.sendall(line.encode() + b"\r\n")

    def _others(self, me: socket.socket, line: str) -> None:
        with self.lock:
            targets = [s for s, n in self.clients.items() if n and s is not me]
        for s in targets:
            with contextlib.suppress(OSError):
                s.sendall(line.encode() + b"\r\n")

    def _serve(self, s: socket.socket) -> None:
        nick = ""
        s.sendall(
            b"-!- Welcome to socksvc chat\r\n-!- Choose a nickname: letters, digits, _ - . (at most 24 characters)\r\n"
        )
        with self.lock:
            self.clients[s] = ""  # only now: send_all() lines come after the welcome
        buf = b""
        try:
            while True:
                data = s.recv(4096)
                if not data:
                    return
                buf += data
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    line = raw.rstrip(b"\r").decode("utf-8", "replace")
                    with self.lock:
                        self.received.append((nick, line))
                    words = line.split(maxsplit=1)
                    cmd = words[0].lower() if words and words[0].startswith("/") else ""
                    arg = words[1] if len(words) > 1 else ""
                    if cmd == "/quit":
                        s.sendall(b"-!- Disconnected: quit\r\n")
                        return
                    if cmd == "/nick" or (not nick and not cmd):
                        new = (arg if cmd else line).strip()
                        if new in self.nicks():
                            s.sendall(b"-!- error: nickname refused: taken\r\n")
                            continue
                        first = not nick
                        nick = new
                        with self.lock:
                            self.clients[s] = nick
                        s.sendall(f"-!- You are now known as {nick}\r\n".encode())
                        if first:
                            s.sendall(
                                b"-!- You are now in lobby (1 member)\r\n[history 14:01] <bob> anyone around?\r\n"
                            )
                    elif cmd == "/join":
                        s.sendall(f"-!- You are now in {arg.strip()} (1 member)\r\n".encode())
                    elif cmd == "/me":
                        self._others(s, f"* {nick} {arg}")
                    elif cmd == "/msg":
                        to, _, text = arg.partition(" ")
                        self._to(to, f"*{nick}* {text}")
                        s.sendall(f"-> *{to}* {text}\r\n".encode())
                    elif cmd:
                        s.sendall(f"-!- error: unknown command {cmd}; type /help for the list\r\n".encode())
                    else:
                        self._others(s, f"<{nick}> {line}")
        except OSError:
            return
        finally:
            with self.lock:
                self.clients.pop(s, None)
            with contextlib.suppress(OSError):
                s.close()


@pytest.fixture
def server() -> Iterator[FakeChatServer]:
    srv = FakeChatServer()
    try:
        yield srv
    finally:
        srv.close()


class LineClient:
    """A raw socket chat client for the other side of a conversation."""

    def __init__(self, port: int, nick: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""
        self.send(nick)
        self.wait_for(f"You are now known as {nick}")

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def wait_for(self, text: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.buf.decode("utf-8", "replace"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"never saw {text!r}; got {self.buf!r}")
            ready, _, _ = select.select([self.sock], [], [], left)
            if ready:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise AssertionError(f"closed before {text!r}; got {self.buf!r}")
                self.buf += chunk
        return self.buf.decode("utf-8", "replace")

    def has(self, text: str) -> bool:
        """Read what is there without blocking; has C{text} arrived?"""
        while select.select([self.sock], [], [], 0)[0]:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buf += chunk
        return text in self.buf.decode("utf-8", "replace")

    def close(self) -> None:
        self.sock.close()


# ------------------------------------------------------------------ classify


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("<alice> hello there", ChatLine("message", "hello there", "alice")),
        ("<alice> ", ChatLine("message", "", "alice")),
        ("* alice waves", ChatLine("action", "waves", "alice")),
        ("*bob* psst", ChatLine("private", "psst", "bob")),
        ("-> *bob* lunch?", ChatLine("private_sent", "lunch?", "bob")),
        ("-!- Welcome to socksvc chat", ChatLine("notice", "Welcome to socksvc chat")),
        ("-!- error: no such nick: zed", ChatLine("notice", "error: no such nick: zed")),
        ("-!-", ChatLine("notice", "")),
        ("[14:03] <alice> hi", ChatLine("message", "hi", "alice", "14:03")),
        ("[14:03] * alice waves", ChatLine("action", "waves", "alice", "14:03")),
        ("[14:03] -!- bob has joined lobby", ChatLine("notice", "bob has joined lobby", "", "14:03")),
        ("[history 14:01] <bob> anyone?", ChatLine("message", "anyone?", "bob", "history 14:01", True)),
        ("[history 14:01] * bob yawns", ChatLine("action", "yawns", "bob", "history 14:01", True)),
        ("<\uff42\uff4f\uff42> wide", ChatLine("message", "wide", "\uff42\uff4f\uff42")),
        # No known shape: the whole line is text, brackets and all.
        ("[14:03] hello", ChatLine("text", "[14:03] hello")),
        ("plain words", ChatLine("text", "plain words")),
        ("", ChatLine("text", "")),
        ("<two words> x", ChatLine("text", "<two words> x")),
        ("** nope", ChatLine("text", "** nope")),
    ],
)
def test_classify(line: str, expected: ChatLine) -> None:
    assert classify(line) == expected


@settings(max_examples=200)
@given(st.text())
def test_classify_never_fails_and_keeps_the_text(line: str) -> None:
    got = classify(line)
    assert got.text in line
    assert got.nick in line
    if got.kind == "text":
        assert got.text == line


@settings(max_examples=100)
@given(
    st.sampled_from(["", "[12:00] ", "[history 09:15] "]),
    st.text(alphabet=st.characters(whitelist_categories=("L", "Nd")), min_size=1, max_size=24),
    st.text(max_size=80),
)
def test_classify_round_trips_the_documented_shapes(stamp: str, nick: str, text: str) -> None:
    history = stamp.startswith("[history")
    assert classify(f"{stamp}<{nick}> {text}") == ChatLine("message", text, nick, stamp[1:-2], history)
    assert classify(f"{stamp}*{nick}* {text}") == ChatLine("private", text, nick, stamp[1:-2], history)


# ------------------------------------------------------------------ escaping


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[31mred\x1b[0m", "^[[31mred^[[0m"),
        ("bell\x07", "bell^G"),
        ("nul\x00", "nul^@"),
        ("cr\rlf\n", "cr^Mlf^J"),
        ("bs\x08", "bs^H"),
        ("del\x7f", "del^?"),
        ("csi\x9b2J", "csi\\x9b2J"),
        ("c1\x85", "c1\\x85"),
        ("rtl\u202eoverride", "rtl\\u202eoverride"),
        ("iso\u2066late\u2069", "iso\\u2066late\\u2069"),
        ("sep\u2028x", "sep\\u2028x"),
        ("tab\tstays", "tab\tstays"),
        ("héllo wörld ✓ 日本", "héllo wörld ✓ 日本"),
        ("^[ already visible", "^[ already visible"),
    ],
)
def test_escape(raw: str, shown: str) -> None:
    assert escape(raw) == shown
    assert is_safe(escape(raw))


@settings(max_examples=300)
@given(st.text())
def test_escape_leaves_nothing_a_terminal_interprets(text: str) -> None:
    out = escape(text)
    assert is_safe(out)
    for c in out:
        assert c == "\t" or (ord(c) >= 0x20 and not 0x7F <= ord(c) <= 0x9F)
        assert c not in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c\u2028\u2029"
    if is_safe(text):
        assert out == text


@settings(max_examples=200)
@given(st.text())
def test_client_and_server_escape_alike(text: str) -> None:
    # One rule (socksvc.util.visible): the client escapes what the server does, plus the bidi marks.
    from socksvc.services.chat.sanitize import visible as server_visible

    no_marks = "".join(c for c in text if c not in "\u061c\u200e\u200f")
    assert escape(no_marks) == server_visible(no_marks)
    assert server_visible(escape(text)) == escape(text)


@settings(max_examples=200)
@given(st.text(), st.text(max_size=10))
def test_every_rendered_fragment_is_escaped(line: str, me: str) -> None:
    frags = fragments(classify(line), me, "12:00")
    assert frags
    for style, text in frags:
        assert is_safe(text), (style, text)
    assert plain(line) == escape(line)
    assert is_safe(plain(line, "12:00"))


def test_plain_adds_local_time_only_to_unstamped_lines() -> None:
    assert plain("<a> hi", "09:30") == "[09:30] <a> hi"
    assert plain("[14:03] <a> hi", "09:30") == "[14:03] <a> hi"
    assert plain("<a> \x1b]0;pwned\x07") == "<a> ^[]0;pwned^G"


# ------------------------------------------------------------------ colours and styles


def test_nick_colours_are_stable_and_follow_the_servers_idea_of_sameness() -> None:
    # Fixed values: the same nick gets the same colour on every run and machine.
    assert [nick_colour(n) for n in ("alice", "bob", "carol")] == [11, 8, 11]
    assert (
        nick_colour("Alice")
        == nick_colour("ALICE")
        == nick_colour("\uff21\uff2c\uff29\uff23\uff25")
        == nick_colour("alice")
    )
    assert fold_nick("\uff22\uff2f\uff22") == "bob"


@settings(max_examples=100)
@given(st.text(min_size=1, max_size=24))
def test_nick_colour_in_palette(nick: str) -> None:
    assert 0 <= nick_colour(nick) < len(NICK_COLOURS)
    assert nick_colour(nick) == nick_colour(nick.upper()) or fold_nick(nick) != fold_nick(nick.upper())


def test_fragment_styles() -> None:
    msg = fragments(classify("<bob> hi alice"), me="alice")
    assert (f"class:nick-{nick_colour('bob')}", "bob") in msg
    assert ("class:mention", "hi alice") in msg  # a line naming us stands out
    assert ("", "hi carol") in fragments(classify("<bob> hi carol"), me="alice")
    own = fragments(classify("<alice> me"), me="alice")
    assert (f"class:nick-{nick_colour('alice')} class:self", "alice") in own
    assert fragments(classify("-!- bob has joined lobby")) == [("class:notice", "-!- bob has joined lobby")]
    assert fragments(classify("-!- error: no such nick: x"))[0][0] == "class:notice.error"
    private = fragments(classify("*bob* psst"))
    assert all("class:private" in style for style, _ in private)
    assert "".join(t for _, t in private) == "*bob* psst"
    hist = fragments(classify("[history 14:01] <bob> old"))
    assert hist[0] == ("class:timestamp class:history", "[history 14:01] ")
    assert all("class:history" in style for style, _ in hist)
    assert fragments(classify("<bob> x"), local_time="09:00")[0] == ("class:timestamp", "[09:00] ")
    assert "".join(t for _, t in fragments(classify("<b\x1bob> \x1b[2J"))) == "<b\x1bob> ^[[2J".replace("\x1b", "^[", 1)


def test_tab_completes_commands_and_seen_nicknames() -> None:
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    from socksvc.client.chat.terminal import ChatCompleter

    completer = ChatCompleter(lambda: ["bob", "Bobby", "carol"])

    def complete(text: str) -> list[str]:
        return [c.text for c in completer.get_completions(Document(text), CompleteEvent(completion_requested=True))]

    assert complete("/jo") == ["/join "]
    assert complete("/M") == ["/msg ", "/me "]
    assert complete("/msg bo") == ["Bobby", "bob"]
    assert complete("hi ca") == ["carol"]
    assert complete("") == []


def test_mentions() -> None:
    assert mentions("hey Alice, lunch?", "alice")
    assert not mentions("malice aforethought", "alice")
    assert not mentions("alice_b is here", "alice")
    assert not mentions("anything", "")


# ------------------------------------------------------------------ errors and command line


def test_describe_errors_in_plain_words() -> None:
    # One describe() for every command: the chat client says what the probes say.
    assert describe(ConnectionRefusedError()) == "connection refused"
    assert describe(ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")) == "connection refused"
    assert describe(TimeoutError()) == "timed out"
    assert describe(socket.gaierror(socket.EAI_NONAME, "Name or service not known")) == "name or service not known"
    assert describe(ConnectionResetError()) == "connection reset"
    assert describe(FileNotFoundError(errno.ENOENT, "No such file or directory")) == "no such socket"
    assert str(Target("::1", 7070)) == "::1 port 7070"
    assert str(Target(path="/run/chat.sock")) == "unix:/run/chat.sock"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="socksvc")
    chat_cli.register(p.add_subparsers(dest="command"))
    return p


def test_register_adds_the_chat_subcommand() -> None:
    args = parser().parse_args(["chat"])
    assert (args.nick, args.color, args.reconnect, args.timeout) == (None, True, True, 10.0)
    assert target_from(args) == Target("localhost", 7070)
    assert args.run is chat_cli.run
    args = parser().parse_args(["chat", "10.0.0.5", "7171", "--nick", "zoë", "--no-color", "--timestamps", "-t", "3"])
    assert (args.nick, args.color, args.timestamps, args.timeout) == ("zoë", False, True, 3.0)
    assert target_from(args) == Target("10.0.0.5", 7171)


def test_chat_takes_the_same_targets_as_every_command() -> None:
    # -t is --timeout, as for echo, greet, reverse and udp (--timestamps has no short form).
    assert parser().parse_args(["chat", "-t", "2.5"]).timeout == 2.5
    assert target_from(parser().parse_args(["chat", "[::1]", "7171"])) == Target("::1", 7171)
    assert target_from(parser().parse_args(["chat", "::1"])) == Target("::1", 7070)
    assert target_from(parser().parse_args(["chat", "unix:/run/chat.sock"])) == Target(path="/run/chat.sock")


@pytest.mark.parametrize(
    ("argv", "code", "text"),
    [
        (["chat", "127.0.0.1", "99999"], EXIT_USAGE, "socksvc: port out of range (1-65535): '99999'"),
        (["chat", "unix:/run/chat.sock", "7070"], EXIT_USAGE, "socksvc: unix:PATH takes no PORT: '7070'"),
        (["chat", "localhost:7070"], EXIT_USAGE, "socksvc: not a host name or address: 'localhost:7070' (give"),
        (["chat", "127.0.0.1", "no-such-service-x"], EXIT_NOT_FOUND, "socksvc: unknown service name"),
        (["chat", "--nick", "a b"], EXIT_USAGE, "socksvc chat: error: argument --nick/-n"),
        (["chat", "-t", "0"], EXIT_USAGE, "socksvc chat: error: argument --timeout/-t"),
    ],
)
def test_bad_arguments_are_one_line_errors(
    argv: list[str], code: int, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert client_run([*argv, "--plain"]) == code
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip().splitlines()[-1].startswith(text)
    assert "Traceback" not in err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_client(*args: str, stdin: bytes = b"", timeout: float = 20.0) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [PY, "-m", "socksvc.client.main", "chat", *args], input=stdin, capture_output=True, timeout=timeout, cwd=ROOT
    )


def test_connection_refused_is_one_line_and_exits_4() -> None:
    port = free_port()
    got = run_client("127.0.0.1", str(port))
    assert got.returncode == EXIT_CONNECT
    assert got.stderr.decode() == f"socksvc: cannot connect to 127.0.0.1 port {port}: connection refused\n"
    assert got.stdout == b""


def unknown_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """No name resolves (the resolver is faked: a test never asks the system's)."""

    def getaddrinfo(host: Any, *args: Any, **kw: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_unknown_host_is_one_line_and_exits_3(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    unknown_name(monkeypatch)
    assert client_run(["chat", "no-such-host.invalid", "7070", "--plain"]) == EXIT_NOT_FOUND
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "socksvc: cannot resolve host 'no-such-host.invalid': name or service not known\n"


def test_console_connect_fails_as_plain_mode_does(monkeypatch: pytest.MonkeyPatch) -> None:
    from socksvc.client.chat.net import open_stream

    port = free_port()
    with pytest.raises(ClientError) as refused:
        asyncio.run(open_stream(Target("127.0.0.1", port), 5))
    assert (refused.value.code, refused.value.message) == (
        EXIT_CONNECT,
        f"cannot connect to 127.0.0.1 port {port}: connection refused",
    )
    unknown_name(monkeypatch)
    with pytest.raises(ClientError) as unknown:
        asyncio.run(open_stream(Target("no-such-host.invalid", 7070), 5))
    assert unknown.value.code == EXIT_NOT_FOUND


# ------------------------------------------------------------------ plain line mode


def test_plain_mode_in_process(server: FakeChatServer) -> None:
    from socksvc.client.chat.plain import run_plain

    server_says = b"<mallory> \x1b[2J\x1b]0;owned\x07 \xc2\x9b \xe2\x80\xae evil\r\n"
    r, w = os.pipe()
    os.write(w, b"hello all\n/me waves\nno newline at the end")
    os.close(w)
    out = io.BytesIO()
    target = Target("127.0.0.1", server.port)
    sock = connect(target, 5)
    poll(lambda: server.connected() == 1, what="the client to be accepted")
    server.send_all(server_says)
    try:
        code = run_plain(sock, target, stdin_fd=r, stdout=out, nick="alice", drain=5.0)
    finally:
        os.close(r)
    assert code == 0
    assert server.lines() == ["/nick alice", "hello all", "/me waves", "no newline at the end", "/quit"]
    text = out.getvalue().decode()
    assert text.splitlines() == [
        "-!- Welcome to socksvc chat",
        "-!- Choose a nickname: letters, digits, _ - . (at most 24 characters)",
        "<mallory> ^[[2J^[]0;owned^G \\x9b \\u202e evil",
        "-!- You are now known as alice",
        "-!- You are now in lobby (1 member)",
        "[history 14:01] <bob> anyone around?",
        "-!- Disconnected: quit",
    ]
    assert "\x1b" not in text and "\r" not in text


def test_plain_mode_over_a_unix_socket(tmp_path: Any) -> None:
    from socksvc.client.chat.plain import run_plain

    path = str(tmp_path / "chat.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    target = Target(path=path)
    sock = connect(target, 5)
    peer, _ = listener.accept()
    peer.sendall(b"-!- Welcome to socksvc chat\r\n-!- partial line at close")
    peer.close()
    r, w = os.pipe()  # stdin stays open: the server closes first, and not because we said /quit
    out = io.BytesIO()
    try:
        with pytest.raises(ClientError) as e:
            run_plain(sock, target, stdin_fd=r, stdout=out)
    finally:
        os.close(r)
        os.close(w)
        listener.close()
    assert out.getvalue() == b"-!- Welcome to socksvc chat\n-!- partial line at close\n"
    assert (e.value.code, e.value.message) == (EXIT_PROTOCOL, f"unix:{path} closed the connection")


def test_plain_mode_drains_then_leaves_a_server_that_never_closes() -> None:
    from socksvc.client.chat.plain import run_plain

    with socket.create_server(("127.0.0.1", 0)) as listener:
        sock = socket.create_connection(listener.getsockname(), timeout=5)
        peer, _ = listener.accept()
        with peer:
            r, w = os.pipe()
            os.write(w, b"last words")
            os.close(w)
            try:
                assert run_plain(sock, Target("127.0.0.1", 1), stdin_fd=r, stdout=io.BytesIO(), drain=0.2) == 0
            finally:
                os.close(r)
            peer.settimeout(5)
            got = b""
            while not got.endswith(b"/quit\n"):
                got += peer.recv(100)
            assert got == b"last words\n/quit\n"


def read_until(f: Any, text: bytes, got: bytearray, timeout: float = 10.0) -> bytes:
    """Read from pipe C{f} into C{got} until C{text} is in it."""
    fd = f.fileno()
    deadline = time.monotonic() + timeout
    while text not in got:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"never saw {text!r}; got {bytes(got)!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"output ended before {text!r}; got {bytes(got)!r}")
            got += chunk
    return bytes(got)


@contextlib.contextmanager
def plain_client(port: int, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [PY, "-m", "socksvc.client.main", "chat", "127.0.0.1", str(port), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None:
                f.close()


def test_plain_mode_a_refused_nick_is_an_error_and_nothing_is_sent(server: FakeChatServer) -> None:
    """The scripted client of the issue: its nick is taken, so it must fail, and its message is never a nick."""
    holder = LineClient(server.port, "deploybot")
    try:
        got = run_client("127.0.0.1", str(server.port), "--nick", "deploybot", stdin=b"deploy finished\n")
    finally:
        holder.close()
    assert got.returncode == EXIT_PROTOCOL
    assert got.stderr.decode() == (f"socksvc: 127.0.0.1 port {server.port} refused the nickname 'deploybot': taken\n")
    assert "-!- error: nickname refused: taken" in got.stdout.decode().splitlines()
    assert "deploy finished" not in [line for _, line in server.received]


def _one_peer(listener: socket.socket) -> socket.socket:
    listener.settimeout(20)
    peer, _ = listener.accept()
    peer.settimeout(20)
    return peer


def _recv_line(peer: socket.socket, buf: bytearray) -> bytes:
    while b"\n" not in buf:
        chunk = peer.recv(4096)
        assert chunk, f"closed; got {bytes(buf)!r}"
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line


def test_plain_mode_holds_stdin_until_the_nick_is_taken() -> None:
    """A server that is slow to answer /nick: no line of stdin reaches it before its answer."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        proc = subprocess.Popen(
            [PY, "-m", "socksvc.client.main", "chat", "127.0.0.1", str(port), "--nick", "alice"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )
        try:
            assert proc.stdin is not None
            proc.stdin.write(b"hello\n")
            proc.stdin.flush()  # stdin is ready at once, and stays open
            peer = _one_peer(listener)
            with peer:
                buf = bytearray()
                assert _recv_line(peer, buf) == b"/nick alice"
                assert select.select([peer], [], [], 0.5)[0] == [], "sent before the nick was accepted"
                peer.sendall(b"-!- You are now known as alice\r\n")
                assert _recv_line(peer, buf) == b"hello"
                proc.stdin.close()
                assert _recv_line(peer, buf) == b"/quit"
                peer.sendall(b"-!- Disconnected: quit\r\n")
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            for f in (proc.stdin, proc.stdout, proc.stderr):
                if f is not None:
                    f.close()


def test_plain_mode_no_answer_to_the_nick_times_out() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        proc = subprocess.Popen(
            [PY, "-m", "socksvc.client.main", "chat", "127.0.0.1", str(port), "--nick", "alice", "-t", "0.5"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )
        peer = _one_peer(listener)
        with peer:
            _out, err = proc.communicate(b"hello\n", timeout=20)
            peer.settimeout(5)
            got = b""
            while chunk := peer.recv(4096):
                got += chunk
    assert proc.returncode == EXIT_TIMEOUT
    assert err.decode() == f"socksvc: no answer to /nick from 127.0.0.1 port {port} within 0.5 s\n"
    assert got == b"/nick alice\n"  # and never "hello"


def test_plain_mode_end_to_end(server: FakeChatServer) -> None:
    """stdin is a pipe: plain mode. Talk both ways, then stdin ends: /quit, exit 0."""
    with plain_client(server.port, "--nick", "alice") as proc:
        assert proc.stdin is not None
        got = bytearray()
        read_until(proc.stdout, b"You are now known as alice", got)
        proc.stdin.write(b"hello bob\n")
        proc.stdin.flush()
        poll(lambda: "hello bob" in server.lines("alice"), what="the server to get alice's line")
        bob = LineClient(server.port, "bob")
        try:
            bob.send("hi alice")
            bob.send("/me grins")
            bob.send("/msg alice psst")
            read_until(proc.stdout, b"*bob* psst\n", got)
            server.send_all(b"<bob> \x1b[31mred\x07\r\n")
            read_until(proc.stdout, b"<bob> ^[[31mred^G\n", got)
        finally:
            bob.close()
        proc.stdin.close()
        assert proc.wait(10) == 0
        assert proc.stdout is not None
        rest = proc.stdout.read()
        lines = (bytes(got) + rest).decode().splitlines()
        assert "<bob> hi alice" in lines and "* bob grins" in lines and "*bob* psst" in lines
        assert lines[-1] == "-!- Disconnected: quit"
        assert b"\x1b" not in bytes(got) + rest
    assert server.lines("alice")[-1] == "/quit"


def test_plain_mode_fails_when_the_server_closes_first(server: FakeChatServer) -> None:
    with plain_client(server.port) as proc:
        got = bytearray()
        read_until(proc.stdout, b"Choose a nickname", got)
        poll(lambda: server.connected() == 1, what="the server to list the client")
        server.drop_all()
        assert proc.wait(10) == EXIT_PROTOCOL
        assert proc.stderr is not None
        assert proc.stderr.read().decode() == f"socksvc: 127.0.0.1 port {server.port} closed the connection\n"


def test_plain_mode_passes_on_the_servers_reason_for_closing(server: FakeChatServer) -> None:
    with plain_client(server.port) as proc:
        got = bytearray()
        read_until(proc.stdout, b"Choose a nickname", got)
        poll(lambda: server.connected() == 1, what="the server to list the client")
        server.send_all(b"-!- Disconnected: flooding\r\n")
        read_until(proc.stdout, b"Disconnected: flooding", got)
        server.drop_all()
        assert proc.wait(10) == EXIT_PROTOCOL
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
        assert err == f"socksvc: 127.0.0.1 port {server.port} closed the connection: flooding\n"


# ------------------------------------------------------------------ interactive (prompt_toolkit pipe input)


def test_console_types_receives_and_quits_with_ctrl_d(server: FakeChatServer) -> None:
    async def body(console: Any, pipe: Any, screen: io.StringIO, task: asyncio.Task[int]) -> None:
        await apoll(lambda: console.registered and console.room == "lobby", what="registration")
        assert server.lines() == ["/nick alice"]
        pipe.send_text("hello everyone\r")
        await apoll(lambda: "hello everyone" in server.lines("alice"), what="alice's line at the server")
        await apoll(lambda: "alice" in screen.getvalue() and "hello everyone" in screen.getvalue())
        # Half a line typed; then a line arrives from bob.
        pipe.send_text("half a li")
        buffer = console.session.default_buffer
        await apoll(lambda: buffer.text == "half a li", what="typed text in the buffer")
        mark = len(screen.getvalue())
        bob = LineClient(server.port, "bob")
        try:
            bob.send("incoming from bob")
            await apoll(lambda: ChatLine("message", "incoming from bob", "bob") in console.shown)
            # Printed above the prompt, then the prompt is drawn again with the typed text intact.
            await apoll(lambda: "incoming from bob" in screen.getvalue()[mark:])
            after = screen.getvalue()[mark:]
            await apoll(lambda: "half a li" in screen.getvalue()[mark + after.index("incoming from bob") :])
            assert buffer.text == "half a li"
            pipe.send_text("ne\r")
            await apoll(lambda: "half a line" in server.lines("alice"), what="the finished line")
            bob.send("/msg alice psst")
            await apoll(lambda: ChatLine("private", "psst", "bob") in console.shown)
            bob.send("\x1b[2J")
            await apoll(lambda: ChatLine("message", "\x1b[2J", "bob") in console.shown)
            await apoll(lambda: "<bob> ^[[2J" in visible(screen.getvalue()), what="the escaped line")
            assert "\x1b[2J" not in screen.getvalue()
            pipe.send_text("\x04")  # Ctrl-D on an empty line
            assert await asyncio.wait_for(task, 10) == 0
        finally:
            bob.close()
        assert server.lines("alice")[-1] == "/quit"

    console_session(server.port, body, nick="alice")


def test_console_ctrl_c_on_an_empty_line_leaves_cleanly_with_130(server: FakeChatServer) -> None:
    async def body(console: Any, pipe: Any, screen: io.StringIO, task: asyncio.Task[int]) -> None:
        await apoll(lambda: console.registered, what="registration")
        pipe.send_text("half")
        await apoll(lambda: console.session.default_buffer.text == "half", what="typed text")
        pipe.send_text("\x03")  # Ctrl-C on a line with text clears it
        await apoll(lambda: console.session.default_buffer.text == "", what="the line cleared")
        assert not task.done()
        pipe.send_text("\x03")  # Ctrl-C on an empty line leaves: /quit, then 130 as every command
        assert await asyncio.wait_for(task, 10) == EXIT_INTERRUPTED
        assert server.lines("alice")[-1] == "/quit"

    console_session(server.port, body, nick="alice")


def test_plain_mode_ctrl_c_exits_130_quietly(server: FakeChatServer) -> None:
    with plain_client(server.port, "--nick", "alice") as proc:
        got = bytearray()
        read_until(proc.stdout, b"You are now known as alice", got)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == EXIT_INTERRUPTED
        assert proc.stderr is not None
        assert proc.stderr.read() == b""


def test_console_nick_prompt_history_and_quit_command(server: FakeChatServer) -> None:
    async def body(console: Any, pipe: Any, screen: io.StringIO, task: asyncio.Task[int]) -> None:
        await apoll(lambda: "Choose a nickname" in screen.getvalue())
        assert not console.registered
        pipe.send_text("carol\r")  # the first plain line is the nickname
        await apoll(lambda: console.registered and console.nick == "carol", what="registration")
        pipe.send_text("first\rsecond\r")
        await apoll(lambda: server.lines("carol")[-2:] == ["first", "second"])
        pipe.send_text("\x1b[A\x1b[A")  # Up, Up: history of typed lines
        await apoll(lambda: console.session.default_buffer.text == "first", what="history recall")
        pipe.send_text("\x15\x12fir")  # Ctrl-U clears, Ctrl-R searches back
        await apoll(lambda: console.session.default_buffer.text == "first", what="reverse search")
        pipe.send_text("\r")  # Enter ends the search; it does not send
        await apoll(lambda: console.session.layout.has_focus(console.session.default_buffer))
        assert server.lines("carol")[-1] == "second"
        pipe.send_text("\x15/quit gone fishing\r")  # Ctrl-U clears, then /quit with a reason
        assert await asyncio.wait_for(task, 10) == 0
        assert server.lines("carol")[-1] == "/quit gone fishing"

    console_session(server.port, body)


def test_console_reconnects_on_enter_and_takes_its_nick_again(server: FakeChatServer) -> None:
    async def body(console: Any, pipe: Any, screen: io.StringIO, task: asyncio.Task[int]) -> None:
        await apoll(lambda: console.registered, what="registration")
        pipe.send_text("/join dev\r")
        await apoll(lambda: console.room == "dev", what="joining dev")
        server.drop_all()
        await apoll(lambda: console.state in ("waiting", "connecting"), what="the client to notice")
        assert any(isinstance(x, str) and "lost: closed by the server" in x for x in console.shown)
        pipe.send_text("\r")  # Enter retries at once
        await apoll(lambda: server.lines().count("/nick alice") == 2, what="the nick sent again")
        await apoll(lambda: server.lines("alice")[-1:] == ["/join dev"], what="the room joined again")
        await apoll(lambda: console.room == "dev" and console.state == "connected")
        pipe.send_text("\x04")
        assert await asyncio.wait_for(task, 10) == 0

    console_session(server.port, body, nick="alice")


def test_console_without_reconnect_exits_6_when_the_connection_drops(server: FakeChatServer) -> None:
    async def body(console: Any, pipe: Any, screen: io.StringIO, task: asyncio.Task[int]) -> None:
        await apoll(lambda: console.registered, what="registration")
        server.drop_all()
        assert await asyncio.wait_for(task, 10) == EXIT_PROTOCOL
        assert "lost: closed by the server" in screen.getvalue()

    console_session(server.port, body, nick="alice", reconnect=False)


# ------------------------------------------------------------------ a real terminal (tmux)


class Tmux:
    def __init__(self, command: str, socket_path: str) -> None:
        # A private server on its own socket: never touches anyone's tmux.
        self.base = ["tmux", "-S", socket_path, "-f", "/dev/null"]
        self.tmux("new-session", "-d", "-x", "80", "-y", "20", "-s", "t", command)

    def tmux(self, *args: str) -> str:
        return subprocess.run([*self.base, *args], capture_output=True, check=True, timeout=10).stdout.decode()

    def screen(self) -> list[str]:
        return self.tmux("capture-pane", "-p", "-t", "t").splitlines()

    def close(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, timeout=10)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_real_terminal_under_tmux(server: FakeChatServer, tmp_path: Any) -> None:
    rc = tmp_path / "rc"
    command = f"cd {ROOT} && {PY} -m socksvc.client.main chat 127.0.0.1 {server.port} --nick alice; echo $? > {rc}"
    term = Tmux(command, str(tmp_path / "tmux.sock"))

    def shows(*rows: str) -> list[str] | None:
        """The screen, if it has all these rows (the prompt is briefly gone while a line prints)."""
        screen = term.screen()
        return screen if all(row in screen for row in rows) else None

    try:
        poll(lambda: any(line.startswith("alice>") for line in term.screen()), what="the prompt")
        term.tmux("send-keys", "-t", "t", "-l", "half typ")
        poll(lambda: "alice> half typ" in term.screen(), what="typed text")
        bob = LineClient(server.port, "bob")
        try:
            bob.send("incoming while typing")
            screen = poll(lambda: shows("<bob> incoming while typing", "alice> half typ"), what="the line")
            # Above the prompt, on its own row; the typed text is intact below it.
            assert screen.index("<bob> incoming while typing") < screen.index("alice> half typ")
            server.send_all(b"<bob> \x1b[2J\x1b[31mred\x07\r\n")
            screen = poll(lambda: shows("<bob> ^[[2J^[[31mred^G", "alice> half typ"), what="the escaped line")
            assert "<bob> incoming while typing" in screen  # the screen was not cleared
            term.tmux("send-keys", "-t", "t", "-l", "ed")
            term.tmux("send-keys", "-t", "t", "Enter")
            poll(lambda: "half typed" in server.lines("alice"), what="the line at the server")
            poll(lambda: "<alice> half typed" in term.screen(), what="our own line shown")
            bob.wait_for("<alice> half typed")
        finally:
            bob.close()
        term.tmux("send-keys", "-t", "t", "C-d")
        poll(lambda: rc.exists() and rc.read_text().endswith("\n"), what="the client to exit")
        assert rc.read_text() == "0\n"
        assert server.lines("alice")[-1] == "/quit"
    finally:
        term.close()


# ------------------------------------------------------------------ the real daemon


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_sigterm_under_tmux_quits_cleanly_and_restores_the_terminal(server: FakeChatServer, tmp_path: Any) -> None:
    rc, pid, tty = tmp_path / "rc", tmp_path / "pid", tmp_path / "stty"
    client = f"{PY} -m socksvc.client.main chat 127.0.0.1 {server.port} --nick tess"
    command = f"cd {ROOT} && sh -c 'echo $$ > {pid}; exec {client}'; echo $? > {rc}; stty -a > {tty}"
    term = Tmux(command, str(tmp_path / "tmux.sock"))
    try:
        poll(lambda: any(line.startswith("tess>") for line in term.screen()), what="the prompt")
        os.kill(int(pid.read_text()), signal.SIGTERM)
        poll(lambda: tty.exists() and "speed" in tty.read_text(), what="the client to exit")
        assert rc.read_text() == "0\n"
        assert server.lines("tess")[-1] == "/quit"
        settings = tty.read_text().split()
        assert "echo" in settings and "icanon" in settings  # not left in raw mode
    finally:
        term.close()


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
@pytest.mark.parametrize("layout", ["leader", "child"])
def test_closing_the_terminal_quits_cleanly(server: FakeChatServer, tmp_path: Any, layout: str) -> None:
    """
    The terminal window closed: the pane's pty goes away (input ends, output
    fails with EIO) and SIGHUP comes, first or a moment later. The client
    says /quit all the same, so the room sees a clean quit. As the
    session's leader (exec'd by the pane's shell) and as a shell's child.
    """
    pid = tmp_path / "pid"
    client = f"{PY} -m socksvc.client.main chat 127.0.0.1 {server.port} --nick hugo"
    inner = f"sh -c 'echo $$ > {pid}; exec {client}'"
    command = f"cd {ROOT} && " + (inner if layout == "leader" else f"{inner}; echo the shell outlives it")
    term = Tmux(command, str(tmp_path / "tmux.sock"))
    try:
        poll(lambda: any(line.startswith("hugo>") for line in term.screen()), what="the prompt")
        term.tmux("kill-session", "-t", "t")  # as a closed window
        poll(lambda: server.lines("hugo")[-1:] == ["/quit"], what="the client's /quit")
        poll(lambda: not _alive(int(pid.read_text())), what="the client to exit")
    finally:
        term.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited


@pytest.fixture(scope="module")
def real_chat_port() -> Iterator[int]:
    """A real daemon's chat service (skipped while the chat type does not exist)."""
    from socksvc.services.catalogue import types

    if "chat" not in types():
        pytest.skip("the daemon has no chat service type yet")
    from tests.support import daemon

    with daemon('[services.chat]\nlisten = ["tcp:0:interface=127.0.0.1"]\n') as d:
        yield d.port("chat")


def test_plain_mode_against_the_real_daemon(real_chat_port: int) -> None:
    port = real_chat_port
    with plain_client(port, "--nick", "bob") as bob:
        assert bob.stdin is not None
        got = bytearray()
        read_until(bob.stdout, b"You are now in", got)
        # Through the real `socksvc` console script when it is installed, else the module.
        script = os.path.join(os.path.dirname(PY), "socksvc")
        argv = [script, "chat"] if os.path.exists(script) else [PY, "-m", "socksvc.client.main", "chat"]
        alice = subprocess.run(
            [*argv, "127.0.0.1", str(port), "--nick", "alice"],
            input=b"hello bob\n/me waves\n/msg bob psst\n",
            capture_output=True,
            timeout=20,
            cwd=ROOT,
        )
        assert alice.returncode == 0, alice.stderr
        out = alice.stdout.decode().splitlines()
        assert "-!- You are now known as alice" in out
        assert "-> *bob* psst" in out
        assert out[-1].startswith("-!- Disconnected")
        read_until(bob.stdout, b"*alice* psst", got)
        assert b"<alice> hello bob\n" in got and b"* alice waves\n" in got
        bob.stdin.close()
        assert bob.wait(10) == 0


def test_plain_mode_refused_nicks_against_the_real_daemon(real_chat_port: int) -> None:
    port = real_chat_port
    holder = LineClient(port, "deploybot")
    try:
        for nick, reason in (("deploybot", "deploybot is taken"), ("admin", "")):
            got = run_client("127.0.0.1", str(port), "--nick", nick, stdin=b"deployed\n")
            assert got.returncode == EXIT_PROTOCOL, got.stderr
            err = got.stderr.decode()
            assert err.startswith(f"socksvc: 127.0.0.1 port {port} refused the nickname {nick!r}: {reason}")
            assert err.count("\n") == 1
        holder.send("/who")
        who = holder.wait_for("-!- Members of")
        assert "deployed" not in who  # the message line never became a nickname
    finally:
        holder.close()


def test_console_against_the_real_daemon(real_chat_port: int) -> None:
    async def body(console: Any, pipe: Any, screen: io.StringIO, task: asyncio.Task[int]) -> None:
        await apoll(lambda: console.registered and console.nick == "zoe" and console.room, what="registration")
        bob = LineClient(real_chat_port, "bob2")
        try:
            pipe.send_text("hi bob2\r")
            await apoll(lambda: bob.has("<zoe> hi bob2"), what="zoe's line at bob2")
            bob.send("hello \x1b[31mzoe")
            await apoll(lambda: any(isinstance(x, ChatLine) and x.nick == "bob2" for x in console.shown))
            got = next(x for x in console.shown if isinstance(x, ChatLine) and x.nick == "bob2")
            assert got.kind == "message"
            assert is_safe(got.text)  # the server sanitised it as well
            await apoll(lambda: "<bob2> hello ^[[31mzoe" in visible(screen.getvalue()), what="bob2's line")
            pipe.send_text("\x04")
            assert await asyncio.wait_for(task, 10) == 0
            bob.wait_for("zoe has quit")
        finally:
            bob.close()

    console_session(real_chat_port, body, nick="zoe")


if __name__ == "__main__":  # pragma: no cover - a manual aid
    srv = FakeChatServer(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    print(f"fake chat server on 127.0.0.1:{srv.port}", flush=True)
    select.select([sys.stdin], [], [])
