"""
Real-socket chat clients for the loopback tests: a line user (what nc does),
a L{ChatClient} that keeps every line and can wait for a chat bus to take its
nickname, and the real IRC programs driven through their own interfaces (WeeChat's
FIFO and log files, ii's in/out files). Each waits for what it expects with
a deadline; none sleeps to synchronise.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import select
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

WEECHAT = shutil.which("weechat-headless")
II = shutil.which("ii")
WEECHAT_PLUGINS = "/usr/lib/x86_64-linux-gnu/weechat/plugins"


T = TypeVar("T")


def weechat_missing() -> str | None:
    """Why a WeeChat test cannot run here, or None."""
    if WEECHAT is None:
        return "weechat-headless is missing (apt-get install weechat-headless weechat-plugins; .ci/run does)"
    if not glob.glob(os.path.join(WEECHAT_PLUGINS, "fifo.so")) and not glob.glob("/usr/lib/*/weechat/plugins/fifo.so"):
        return "WeeChat's fifo plugin is missing (apt-get install weechat-plugins; .ci/run does)"
    return None


def wait_until(check: Callable[[], T], what: str, timeout: float = 20.0, poll: Callable[[], None] | None = None) -> T:
    """
    Poll C{check} (a file read, a Redis query) until it gives something
    true, and give that; or fail saying C{what} never happened. Between two
    looks C{poll} runs (reading sockets, say), or a short pause.
    """
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        if poll is not None:
            poll()
        else:
            select.select([], [], [], 0.05)


def read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


class LineUser:
    """A line client on a real socket (what nc or telnet users do)."""

    def __init__(self, port: int, nick: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        self.lines: list[str] = []
        self.send(nick)
        self.wait_for("-!- You are now in lobby*")

    def send(self, *lines: str) -> None:
        self.sock.sendall("".join(line + "\n" for line in lines).encode())

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        """The first line equal to C{text} (or starting with it, when it ends with *)."""
        deadline = time.monotonic() + timeout
        prefix = text[:-1] if text.endswith("*") else None
        while True:
            for i, line in enumerate(self.lines):
                if line == text or (prefix is not None and line.startswith(prefix)):
                    del self.lines[: i + 1]
                    return line
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"never got {text!r}; last lines {self.lines[-5:]!r}")
            ready, _, _ = select.select([self.sock], [], [], min(left, 0.5))
            if ready:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise AssertionError(f"closed before {text!r}")
                self.buf += chunk
                *done, self.buf = self.buf.split(b"\r\n")
                self.lines += [x.decode("utf-8", "replace") for x in done]

    def close(self) -> None:
        self.sock.close()


UNREACHABLE = "-!- error: nickname refused: the chat bus is unreachable; try again shortly"


class ChatClient:
    """
    A line client on a real socket: C{lines} is what came and is not yet
    waited for, C{seen} every line ever received; C{closed} once the server
    closed it. L{register} sends a nickname again while the chat bus is not
    connected yet. C{rcvbuf} shrinks its receive buffer (a slow reader).
    """

    def __init__(self, port: int, host: str = "127.0.0.1", rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect: it sizes the window the peer sees
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect((host, port))
        self.sock.setblocking(False)
        self.buf = b""
        self.lines: list[str] = []
        self.seen: list[str] = []
        self.closed = False

    @property
    def local_port(self) -> int:
        return int(self.sock.getsockname()[1])

    def send(self, *lines: str) -> None:
        self.sock.setblocking(True)
        try:
            self.sock.sendall("".join(line + "\n" for line in lines).encode())
        finally:
            self.sock.setblocking(False)

    def pump(self, timeout: float) -> None:
        """Read what arrives within C{timeout} seconds (a wait for data, returning at the first)."""
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return
        try:
            chunk = self.sock.recv(65536)
        except BlockingIOError:
            return
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.closed = True
            return
        self.buf += chunk
        *done, self.buf = self.buf.split(b"\r\n")
        got = [x.decode("utf-8", "replace") for x in done]
        self.lines += got
        self.seen += got

    def wait_for(self, text: str, timeout: float = 20.0, *, search: bool = False) -> list[str]:
        """
        The lines up to and including the first equal to C{text} (starting
        with it, when it ends with *; matching the regex, with C{search});
        they are taken off C{lines}.
        """
        deadline = time.monotonic() + timeout
        prefix = text[:-1] if text.endswith("*") else None
        while True:
            for i, line in enumerate(self.lines):
                if (
                    line == text
                    or (search and re.search(text, line) is not None)
                    or (not search and prefix is not None and line.startswith(prefix))
                ):
                    got, self.lines = self.lines[: i + 1], self.lines[i + 1 :]
                    return got
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                raise AssertionError(f"never got {text!r}; last lines {self.lines[-8:]!r}")
            self.pump(min(left, 0.5))

    def register(self, nick: str, timeout: float = 20.0) -> list[str]:
        """
        Take C{nick} and land in a room; while the bus is not connected (the
        refusal says so), try again each time the previous refusal came
        back, until C{timeout}. The lines up to "You are now in".
        """
        deadline = time.monotonic() + timeout
        self.send(nick)
        while True:
            got = self.wait_for(
                r"^-!- (You are now in |error: nickname refused)", max(0.1, deadline - time.monotonic()), search=True
            )
            if got[-1].startswith("-!- You are now in "):
                return got
            if got[-1] != UNREACHABLE or time.monotonic() > deadline:
                raise AssertionError(f"{nick} refused: {got[-1]!r}")
            self.pump(0.2)  # a pause before asking again (returns early only if a line comes)
            self.send(nick)

    def close(self) -> None:
        self.sock.close()


class WeeChat:
    """weechat-headless connected to our IRC port, in #lobby; input through its FIFO, output from its logs."""

    def __init__(self, port: int, nick: str, home: str) -> None:
        self.home = home
        commands = ";".join(
            [
                "/set logger.file.flush_delay 0",
                f"/set irc.server_default.nicks {nick}",
                "/set irc.server_default.autojoin #lobby",
                f"/server add t 127.0.0.1/{port} -notls",
                "/connect t",
            ]
        )
        assert WEECHAT is not None
        self.proc = subprocess.Popen(
            [WEECHAT, "--dir", home, "--stdout", "-P", "irc,logger,fifo", "-r", commands],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.channel_log = os.path.join(home, "logs", "irc.t.#lobby.weechatlog")
        wait_until(lambda: "has joined #lobby" in read_text(self.channel_log), "WeeChat to join #lobby")
        wait_until(lambda: bool(glob.glob(os.path.join(home, "weechat_fifo_*"))), "WeeChat's FIFO")
        self.fifo = glob.glob(os.path.join(home, "weechat_fifo_*"))[0]

    def say(self, text: str) -> None:
        """Type C{text} in the #lobby buffer (a line starting with / is a command)."""
        with open(self.fifo, "w", encoding="utf-8") as f:
            f.write(f"irc.t.#lobby *{text}\n")

    def saw(self, pattern: str) -> bool:
        """Has #lobby's log a line matching the regex C{pattern} (time TAB prefix TAB message)?"""
        return re.search(pattern, read_text(self.channel_log), re.MULTILINE) is not None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Ii:
    """ii (irc it) connected to our IRC port, in #lobby: its in FIFO and out file."""

    def __init__(self, port: int, nick: str, prefix: str) -> None:
        assert II is not None
        self.proc = subprocess.Popen(
            [II, "-s", "127.0.0.1", "-p", str(port), "-n", nick, "-i", prefix],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.server = os.path.join(prefix, "127.0.0.1")
        wait_until(
            lambda: (
                " 001 " in read_text(os.path.join(self.server, "out"))
                or "Welcome" in read_text(os.path.join(self.server, "out"))
            ),
            "ii to register",
        )
        self.write(os.path.join(self.server, "in"), "/j #lobby")
        self.channel = os.path.join(self.server, "#lobby")
        wait_until(lambda: "has joined #lobby" in read_text(os.path.join(self.channel, "out")), "ii to join #lobby")

    @staticmethod
    def write(fifo: str, line: str) -> None:
        with open(fifo, "w", encoding="utf-8") as f:
            f.write(line + "\n")

    def say(self, text: str) -> None:
        self.write(os.path.join(self.channel, "in"), text)

    def saw(self, pattern: str) -> bool:
        return re.search(pattern, read_text(os.path.join(self.channel, "out")), re.MULTILINE) is not None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[str]:
    path = tempfile.mkdtemp(prefix=prefix)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
