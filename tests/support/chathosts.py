"""
Chat nodes on the hosts of a L{tests.support.netns.Lab}, and line clients for them.

- L{start_nodes}: one `twistd -n socksvc` per host, started at once, each in
  its host's namespace with a chat that listens on the host's address and
  uses the given bus; L{Node} wraps the L{tests.support.Daemon} with the
  address clients connect to, and L{Node.check} says it is still running
  and logged no traceback.
- L{Chatter}: a chat line client on a plain blocking socket (normally in
  this process's namespace, reaching the host over the lab's bridge):
  every line it got is kept in order in C{lines}; L{Chatter.wait_for}
  reads until a line matches (each match consumes the lines up to it).
- L{netns_socket}: a TCP socket that lives in another network namespace
  (made there by this thread through setns(2) and handed back), so a
  client can stay reachable to a host while that host's link is down.

The pause in L{Chatter.listen} and L{pump} is a scenario's pace (a line
every half second), not a way to wait for something: waits are reads with
deadlines.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import select
import socket
import time
from collections.abc import Callable, Iterable, Iterator

from tests.support import Daemon, start_daemon
from tests.support.netns import Lab

CLONE_NEWNET = 0x40000000
UNREACHABLE = "the chat bus is unreachable; try again shortly"
TRACE = re.compile(r"Traceback|Unhandled [Ee]rror")


def netns_socket(namespace: str) -> socket.socket:
    """A new IPv4 TCP socket in the network namespace C{namespace} (`ip netns` name)."""
    libc = ctypes.CDLL(None, use_errno=True)

    def enter(fd: int) -> None:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns: {os.strerror(err)}")

    with open("/proc/thread-self/ns/net") as home, open(f"/run/netns/{namespace}") as there:
        enter(there.fileno())
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        finally:
            enter(home.fileno())
    return sock


class Node:
    """A chat node (a twistd process) on one lab host."""

    def __init__(self, host: int, address: str, daemon: Daemon) -> None:
        self.host = host
        self.address = address
        self.daemon = daemon
        self.killed = False
        """Killed on purpose: not checked at the end."""

    @property
    def port(self) -> int:
        return self.daemon.port("chat")

    @property
    def pid(self) -> int:
        return self.daemon.proc.pid

    def drain(self) -> None:
        """Read what the daemon printed so far (its pipe must not fill)."""
        if self.daemon.proc.stdout is not None and not self.daemon.proc.stdout.closed:
            self.daemon.read(timeout=0.001)

    def running(self) -> bool:
        return self.daemon.proc.poll() is None

    def check(self) -> None:
        """Still running, and no traceback in its output."""
        self.drain()
        assert self.running(), f"node on host {self.host} exited:\n{self.daemon.output[-4000:]}"
        m = TRACE.search(self.daemon.output)
        assert m is None, f"node on host {self.host} logged an error:\n{self.daemon.output[m.start() - 2000 :][:6000]}"

    def stop(self) -> None:
        self.daemon.stop()
        if self.daemon.config_path:
            with contextlib.suppress(OSError):
                os.unlink(self.daemon.config_path)


def node_config(address: str, bus: str, cluster: str, node_timeout: int = 3, extra: str = "") -> str:
    return (
        "[services.chat]\n"
        f'listen = ["tcp:0:interface={address}"]\n'
        f'bus = "{bus}"\n'
        f'cluster = "{cluster}"\n'
        f"node_timeout = {node_timeout}\n"
        "flood_rate = 0\n"
        "idle_timeout = 0\n"
        f"{extra}"
    )


def start_nodes(
    lab: Lab, hosts: Iterable[int], bus: str, cluster: str, connected: bool = True, **kw: object
) -> list[Node]:
    """A chat node on each host (started together), once each serves (and, if C{connected}, reached its bus)."""
    nodes: list[Node] = []
    try:
        for h in hosts:
            config = node_config(lab.address(h), bus, cluster, **kw)  # type: ignore[arg-type]
            d = start_daemon(config, ready=False, prefix=lab.exec_prefix(h))
            nodes.append(Node(h, lab.address(h), d))
        for n in nodes:
            n.daemon.read(until="services on", timeout=30)
        if connected:
            for n in nodes:
                n.daemon.read(until="chat bus connected", timeout=30)
    except BaseException:
        for n in nodes:
            n.stop()
        raise
    return nodes


@contextlib.contextmanager
def running_nodes(
    lab: Lab, hosts: Iterable[int], bus: str, cluster: str, connected: bool = True, **kw: object
) -> Iterator[list[Node]]:
    """L{start_nodes} for a with block: checked (unless killed on purpose: C{node.killed}) and stopped after."""
    nodes = start_nodes(lab, hosts, bus, cluster, connected, **kw)
    ok = False
    try:
        yield nodes
        ok = True
    finally:
        try:
            if ok:
                for n in nodes:
                    if not n.killed:
                        n.check()
        finally:
            for n in nodes:
                n.stop()


class Chatter:
    """A line client of the chat, on a blocking socket; C{lines}: everything received, in order."""

    def __init__(self, node: Node, sock: socket.socket | None = None, drains: Iterable[Node] = ()) -> None:
        self.node = node
        self.sock = sock if sock is not None else socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect((node.address, node.port))
        self.sock.settimeout(None)
        self.buf = b""
        self.lines: list[str] = []
        self.pos = 0
        self.nick = ""
        self.closed = False
        self.drains = list(drains) or [node]
        self.wait_for("-!- Welcome to socksvc chat")

    def send(self, *lines: str) -> None:
        self.sock.sendall("".join(line + "\n" for line in lines).encode())

    def register(self, nick: str, timeout: float = 15.0) -> None:
        """
        Take C{nick} and land in lobby; asked again while the node says its
        bus is unreachable (a node that has just started, or whose bus is
        coming back, refuses names until it has synced).
        """
        deadline = time.monotonic() + timeout
        while True:
            self.send(nick)
            line = self.wait_for(lambda s: s.startswith(("-!- error: nickname refused", "-!- You are now known as")))
            if line == f"-!- You are now known as {nick}":
                break
            assert line.endswith(UNREACHABLE), f"{nick}: {line}"
            assert time.monotonic() < deadline, f"{nick} still refused after {timeout}s: {line}"
            pump([self], 0.2)
        self.wait_for("-!- You are now in lobby*", timeout)
        self.nick = nick

    def receive(self, wait: float) -> bool:
        """Read what arrives within C{wait} seconds (at most one read); False when the server closed."""
        for n in self.drains:
            n.drain()
        if self.closed:
            return False
        ready, _, _ = select.select([self.sock], [], [], max(0.0, wait))
        if not ready:
            return True
        chunk = self.sock.recv(65536)
        if not chunk:
            self.closed = True
            return False
        self.buf += chunk
        *done, self.buf = self.buf.split(b"\n")
        self.lines += [x.decode("utf-8", "replace").removesuffix("\r") for x in done]
        return True

    def find(self, match: Callable[[str], bool]) -> str | None:
        for i in range(self.pos, len(self.lines)):
            if match(self.lines[i]):
                self.pos = i + 1
                return self.lines[i]
        return None

    def wait_for(self, text: str | Callable[[str], bool], timeout: float = 15.0) -> str:
        """
        The next line (after the last one matched) equal to C{text}, starting
        with it when it ends with *, or for which C{text} is true.
        """
        if callable(text):
            match = text
        elif text.endswith("*"):
            match = lambda line: line.startswith(text[:-1])  # noqa: E731
        else:
            match = lambda line: line == text  # noqa: E731
        deadline = time.monotonic() + timeout
        while True:
            found = self.find(match)
            if found is not None:
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.nick or '?'} never got {text!r}; last lines {self.lines[-8:]!r}")
            if not self.receive(min(left, 0.5)):
                raise AssertionError(f"{self.nick or '?'}: closed before {text!r}; last lines {self.lines[-8:]!r}")

    def who(self, room: str = "lobby", timeout: float = 15.0) -> list[str]:
        """The members /who lists (one reply line: rooms here stay small)."""
        self.send("/who")
        line = self.wait_for(f"-!- Members of {room} (*", timeout)
        return sorted(line.split(": ", 1)[1].split(", "))

    def close(self) -> None:
        self.sock.close()


def pump(chatters: Iterable[Chatter], seconds: float) -> None:
    """Let C{seconds} pass (the scenario's pace), reading what every chatter receives meanwhile."""
    chatters = list(chatters)
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        for c in chatters:
            c.receive(0)
        ready, _, _ = select.select([c.sock for c in chatters], [], [], min(left, 0.1))
        for c in chatters:
            if c.sock in ready:
                c.receive(0)


def wait_until(check: Callable[[], bool], what: str, chatters: Iterable[Chatter], timeout: float = 20.0) -> None:
    """Read on every chatter until C{check()} holds; fail saying C{what} never happened."""
    chatters = list(chatters)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            tails = {c.nick: c.lines[-6:] for c in chatters}
            raise AssertionError(f"timed out waiting for {what}; last lines {tails!r}")
        pump(chatters, 0.1)
