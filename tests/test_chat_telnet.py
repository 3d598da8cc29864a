"""
Telnet clients in chat: the filter at the byte level, the chat protocol
with it, and the real inetutils telnet under tmux (Ctrl-C, character mode).

inetutils telnet sends C{IAC IP IAC DO TIMING-MARK} for Ctrl-C and then
throws away everything it receives until the server answers the timing mark
(RFC 860); in character mode its Enter is C{CR NUL} (RFC 854).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socksvc.services.chat.sanitize import IAC, TIMING_MARK, TelnetFilter
from tests.support import daemon
from tests.support.chat import Chat

WILL, WONT, DO, DONT, SB, SE, IP = 251, 252, 253, 254, 250, 240, 244
ECHO, SGA, NAWS = 1, 3, 31


def cmd(*codes: int) -> bytes:
    return bytes((IAC, *codes))


# -- the filter, byte by byte ------------------------------------------------


def test_ctrl_c_is_answered_with_will_timing_mark() -> None:
    f = TelnetFilter()
    assert f.feed(b"hi\r\n" + cmd(IP) + cmd(DO, TIMING_MARK)) == b"hi\r\n"
    assert f.take_replies() == cmd(WILL, TIMING_MARK)
    assert f.take_replies() == b""  # once


def test_other_options_are_refused_and_refusals_never_answered() -> None:
    f = TelnetFilter()
    f.feed(cmd(DO, SGA) + cmd(DO, ECHO) + cmd(WILL, NAWS) + cmd(WONT, ECHO) + cmd(DONT, SGA))
    assert f.take_replies() == cmd(WONT, SGA) + cmd(WONT, ECHO) + cmd(DONT, NAWS)


def test_subnegotiation_and_escaped_iac() -> None:
    f = TelnetFilter()
    assert f.feed(cmd(SB, NAWS) + b"\x00\x50" + cmd(IAC) + b"\x00\x18" + cmd(SE) + b"a" + cmd(IAC) + b"b") == (
        b"a\xffb"
    )
    assert f.take_replies() == b""


def test_cr_nul_is_a_line_end_even_split() -> None:
    f = TelnetFilter()
    assert f.feed(b"one\r\x00two\r") == b"one\r\ntwo\r"
    assert f.feed(b"\x00") == b"\n"
    assert f.feed(b"\x00") == b"\x00"  # a NUL not after a CR is data
    assert TelnetFilter(cr=True).feed(b"\x00x") == b"\nx"


def test_replies_are_bounded_the_same_in_one_read_or_byte_by_byte() -> None:
    flood = cmd(DO, SGA) * 10000 + cmd(DO, TIMING_MARK)
    whole = TelnetFilter()
    whole.feed(flood)  # one pass: the C-level path
    slow = TelnetFilter()
    for i in range(len(flood)):
        slow.feed(flood[i : i + 1])  # the byte loop
    assert whole.commands == slow.commands == 10001
    replies = whole.take_replies()
    assert replies == slow.take_replies()
    assert 4096 <= len(replies) <= 4096 + 2


def model(data: bytes) -> tuple[bytes, bytes]:
    """What the filter should make of a whole stream: a plain reading of RFC 854/860, byte by byte."""
    out, replies = bytearray(), bytearray()
    cr = False
    i, n = 0, len(data)
    while i < n:
        b = data[i]
        if b != IAC:
            out.append(10 if cr and b == 0 else b)
            cr = b == 13
            i += 1
            continue
        if i + 1 >= n:
            break
        c = data[i + 1]
        if c == IAC:
            out.append(IAC)
            cr = False
            i += 2
        elif WILL <= c <= DONT:
            if i + 2 >= n:
                break
            option = data[i + 2]
            if c == DO:
                replies += cmd(WILL if option == TIMING_MARK else WONT, option)
            elif c == WILL:
                replies += cmd(DONT, option)
            i += 3
        elif c == SB:
            j = i + 2
            while j < n and not (data[j] == IAC and j + 1 < n and data[j + 1] == SE):
                j += 2 if data[j] == IAC else 1
            i = j + 2
        else:
            i += 2
    return bytes(out), bytes(replies)


tokens = st.lists(
    st.sampled_from(
        [
            b"\xff",
            cmd(IAC),
            cmd(IP),
            cmd(DO, TIMING_MARK),
            cmd(DO, ECHO),
            cmd(WILL, NAWS),
            cmd(WONT, SGA),
            cmd(DONT, TIMING_MARK),
            cmd(SB, NAWS),
            cmd(SE),
            b"\r",
            b"\x00",
            b"\n",
            b"\r\x00",
            b"\r\n",
            b"hi",
            bytes([WILL]),
            bytes([SE]),
        ]
    )
    | st.binary(max_size=4),
    max_size=16,
).map(b"".join)


def run(chunks: list[bytes]) -> tuple[bytes, bytes]:
    f = TelnetFilter()
    out = b"".join(f.feed(c) for c in chunks)
    return out, f.take_replies()


@given(tokens)
def test_any_telnet_stream_split_at_every_byte_gives_the_same_as_the_model(data: bytes) -> None:
    whole = run([data])
    out, replies = model(data)
    assert whole[1] == replies
    # The model stops at an unfinished command at the very end; the filter holds it.
    assert whole[0] == out
    for cut in range(len(data) + 1):
        assert run([data[:cut], data[cut:]]) == whole
    assert run([data[i : i + 1] for i in range(len(data))]) == whole


# -- the chat protocol with a telnet client ----------------------------------


def test_chat_answers_ctrl_c_and_keeps_delivering() -> None:
    chat = Chat()
    alice = chat.connect("alice")
    bob = chat.connect()
    bob.raw(b"bob\r\n")
    bob.raw(b"hello one\r\n")
    assert alice.lines()[-1] == "<bob> hello one"
    seen = len(bob.output())
    bob.raw(cmd(IP) + cmd(DO, TIMING_MARK))
    assert bob.output()[seen:] == cmd(WILL, TIMING_MARK)
    alice.send("still there?")
    assert bob.output().endswith(b"<alice> still there?\r\n")
    bob.raw(b"yes\r\n")
    assert alice.lines()[-1] == "<bob> yes"


def test_character_mode_enter_is_cr_nul() -> None:
    chat = Chat()
    alice = chat.connect("alice")
    bob = chat.connect()
    for byte in b"bob\r\x00typed a key at a time\r\x00":
        bob.raw(bytes([byte]))
    assert alice.lines()[-1] == "<bob> typed a key at a time"
    assert bob.member.nick == "bob"


def test_telnet_commands_are_charged_to_the_connection() -> None:
    """A client sending only telnet no-ops spends its byte budget like any bytes: it is slowed, then cut off."""
    chat = Chat("input_byte_rate = 100\ninput_burst = 1\nthrottle_kick = 5")
    bob = chat.connect("bob")
    bob.raw(cmd(241) * 100)  # IAC NOP: 200 bytes, twice the budget
    assert bob.transport.producerState == "paused"
    for _ in range(10):
        chat.clock.advance(1)
        bob.raw(cmd(241) * 100)
    assert bob.transport.disconnected
    assert bob.proto.close_reason == "sending too fast"


# -- the real telnet under tmux ------------------------------------------------


def poll(check: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Tmux:
    def __init__(self, command: str, socket_path: str) -> None:
        # A private server on its own socket: never touches anyone's tmux.
        self.base = ["tmux", "-S", socket_path, "-f", "/dev/null"]
        self.tmux("new-session", "-d", "-x", "100", "-y", "30", "-s", "t", command)

    def tmux(self, *args: str) -> str:
        return subprocess.run([*self.base, *args], capture_output=True, check=True, timeout=10).stdout.decode()

    def keys(self, text: str, enter: bool = True) -> None:
        self.tmux("send-keys", "-t", "t", "-l", text)
        if enter:
            self.tmux("send-keys", "-t", "t", "Enter")

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t")

    def close(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, timeout=10)


class Peer:
    """A plain socket member of the room."""

    def __init__(self, port: int, nick: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.got = b""
        self.sock.sendall(nick.encode() + b"\n")
        self.wait(b"-!- You are now in ")

    def wait(self, text: bytes) -> None:
        while text not in self.got:
            chunk = self.sock.recv(4096)
            assert chunk, f"closed before {text!r}: {self.got[-300:]!r}"
            self.got += chunk

    def say(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\n")


TELNET = shutil.which("telnet")
NEEDS = "telnet (inetutils-telnet) and tmux are needed"


@pytest.mark.skipif(TELNET is None or shutil.which("tmux") is None, reason=NEEDS)
def test_real_telnet_ctrl_c_then_character_mode(tmp_path: Path) -> None:
    with daemon('[services.chat]\nlisten = ["tcp:0:interface=127.0.0.1"]\n') as d:
        port = d.port("chat")
        term = Tmux(f"{TELNET} 127.0.0.1 {port}", str(tmp_path / "tmux.sock"))
        try:
            poll(lambda: "-!- Choose a nickname" in term.screen(), "the welcome")
            term.keys("alice")
            poll(lambda: "-!- You are now in lobby" in term.screen(), "registration")
            bob = Peer(port, "bob")
            try:
                term.keys("line before ctrl-c")
                bob.wait(b"<alice> line before ctrl-c")
                term.tmux("send-keys", "-t", "t", "C-c")
                time.sleep(0.3)  # the client's IAC IP IAC DO TM reaches the server and is answered
                term.keys("line after ctrl-c")
                bob.wait(b"<alice> line after ctrl-c")
                bob.say("bob still heard")
                poll(lambda: "<bob> bob still heard" in term.screen(), "the room's line after Ctrl-C")
                # Character mode: every key goes at once, Enter is CR NUL.
                term.tmux("send-keys", "-t", "t", "C-]")
                poll(lambda: "telnet>" in term.screen(), "the telnet prompt")
                term.keys("mode character")
                time.sleep(0.3)
                term.keys("typed in character mode")
                bob.wait(b"<alice> typed in character mode")
                bob.say("and back")
                poll(lambda: "<bob> and back" in term.screen(), "the room's line in character mode")
            finally:
                bob.sock.close()
        finally:
            term.close()
