"""
Several hosts on one machine: network namespaces joined by a bridge.

    with Lab(3) as lab:                 # hosts 0, 1, 2
        lab.exec_prefix(0)              # ["ip", "netns", "exec", NAME]
        lab.address(1)                  # "10.X.Y.2"
        lab.link_down(2); lab.link_up(2)

Layout: each host is a namespace C{svlab-PID-N-hI} with C{lo} up and one
C{eth0} at 10.X.Y.(I+1)/24; its veth peer C{hI} is a port of the bridge
C{br0}, which lives in a namespace of its own (C{svlab-PID-N-br}). One more
veth, C{svlPIDcN} in the ROOT namespace at 10.X.Y.254/24, is a bridge port
too, so the test process and its clients reach every host address directly
(one L2 segment, no routing or forwarding sysctls anywhere).

Why the bridge is in its own namespace: the root namespace gains one
interface (not a bridge and N veths); root's firewall (Docker's FORWARD
policy, br_netfilter calling iptables for bridged frames) never sees the
lab's traffic; and deleting that one namespace destroys every veth pair at
once, so a teardown cannot leave ports behind.

X.Y come from the pid and the lab's counter (10.200.0.0 to 10.255.255.0),
skipping a /24 the root namespace already routes (another session's lab).

link_down(host) sets the host's bridge port down: the host's eth0 loses
carrier and frames in either direction are dropped silently, like a pulled
cable: new connections time out, established ones stall and retransmit,
and recover after link_up(host) if TCP has not given up.

Teardown (exit, or atexit for a lab never closed) kills what still runs in
the lab's namespaces (processes the test started there), deletes them and
the root veth. A new lab first deletes stale ones of this scheme whose pid
is dead. Without root, C{ip}, or a working C{ip netns add} it skips.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import itertools
import os
import re
import shutil
import signal
import subprocess
from types import TracebackType

import pytest

_counter = itertools.count(1)
_open: set[Lab] = set()
_mine: set[str] = set()
_NAME = re.compile(r"^svlab-(\d+)-(\d+)-")
_ROOT_LINK = re.compile(r"^svl(\d+)c(\d+)$")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def unavailable() -> str | None:
    """Why a lab cannot be built here (one line), or None."""
    if shutil.which("ip") is None:
        return "ip (iproute2) not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"svlab-{os.getpid()}-0-probe"
    done = ip("netns", "add", probe, check=False)
    if done.returncode != 0:
        return f"ip netns add failed: {(done.stderr.strip().splitlines() or ['?'])[0]}"
    ip("netns", "del", probe, check=False)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def namespaces() -> list[str]:
    """The names of `ip netns list`."""
    return [line.split()[0] for line in ip("netns", "list", check=False).stdout.splitlines() if line.strip()]


def root_links() -> list[str]:
    """Interface names in the root namespace."""
    out = ip("-o", "link", "show", check=False).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


def _stale(pid: int) -> bool:
    return not _alive(pid) or pid == os.getpid()


def cleanup_stale() -> None:
    """Delete namespaces and root veths of this scheme left by dead processes (or an earlier us, same pid)."""
    for name in namespaces():
        m = _NAME.match(name)
        if m and name not in _mine and _stale(int(m.group(1))):
            ip("netns", "del", name, check=False)
    for link in root_links():
        m = _ROOT_LINK.match(link)
        if m and link not in _mine and _stale(int(m.group(1))):
            ip("link", "del", link, check=False)


def _subnet(pid: int, n: int) -> ipaddress.IPv4Network:
    """A free 10.X.Y.0/24 with X >= 200, from the pid and counter."""
    routed = ip("-4", "route", "show", "table", "all", check=False).stdout
    start = (pid * 8 + n) % (56 * 256)
    for i in range(56 * 256):
        k = (start + i) % (56 * 256)
        net = ipaddress.IPv4Network(f"10.{200 + k // 256}.{k % 256}.0/24")
        if str(net.network_address)[:-1] not in routed:
            return net
    raise RuntimeError("no free 10.x.y.0/24")


class Lab:
    """N hosts (network namespaces) on one bridge, reachable from the root namespace."""

    def __init__(self, hosts: int = 2) -> None:
        assert 1 <= hosts <= 200
        self.count = hosts
        self.pid = os.getpid()
        self.n = next(_counter)
        base = f"svlab-{self.pid}-{self.n}"
        self.bridge_ns = f"{base}-br"
        self.names = [f"{base}-h{i}" for i in range(hosts)]
        self.root_link = f"svl{self.pid}c{self.n}"
        self.network = ipaddress.IPv4Network("10.200.0.0/24")
        self.root_address = ""
        self.closed = False

    @property
    def hosts(self) -> range:
        return range(self.count)

    def name(self, host: int) -> str:
        """The namespace of host C{host}."""
        return self.names[host]

    def exec_prefix(self, host: int) -> list[str]:
        """The command prefix that runs a program in that host's namespace."""
        return ["ip", "netns", "exec", self.names[host]]

    def address(self, host: int) -> str:
        """The host's IPv4 address on the lab network."""
        return str(self.network.network_address + host + 1)

    def run(self, host: int, *cmd: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a command in that host's namespace to the end (text output captured)."""
        return subprocess.run(
            [*self.exec_prefix(host), *cmd], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )

    def link_down(self, host: int) -> None:
        """Cut the host off the lab network (its bridge port down); its processes keep running."""
        ip("-n", self.bridge_ns, "link", "set", f"h{host}", "down")

    def link_up(self, host: int) -> None:
        ip("-n", self.bridge_ns, "link", "set", f"h{host}", "up")

    # -- building and removing ---------------------------------------------------

    def __enter__(self) -> Lab:
        reason = unavailable()
        if reason:
            pytest.skip(reason)
        cleanup_stale()
        _open.add(self)
        _mine.update([self.bridge_ns, *self.names, self.root_link])
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _build(self) -> None:
        self.network = _subnet(self.pid, self.n)
        prefix = self.network.prefixlen
        br = self.bridge_ns
        ip("netns", "add", br)
        ip("-n", br, "link", "set", "lo", "up")
        ip("-n", br, "link", "add", "br0", "type", "bridge", "forward_delay", "0", "stp_state", "0")
        ip("-n", br, "link", "set", "br0", "up")
        for i, ns in enumerate(self.names):
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", br, "link", "add", f"h{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            ip("-n", br, "link", "set", f"h{i}", "master", "br0", "up")
            ip("-n", ns, "addr", "add", f"{self.address(i)}/{prefix}", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
        self.root_address = str(self.network.network_address + 254)
        ip("link", "add", self.root_link, "type", "veth", "peer", "name", "root", "netns", br)
        ip("-n", br, "link", "set", "root", "master", "br0", "up")
        ip("addr", "add", f"{self.root_address}/{prefix}", "dev", self.root_link)
        ip("link", "set", self.root_link, "up")

    def close(self) -> None:
        """Remove everything (best effort, every step tried); raises if something is left."""
        if self.closed:
            return
        self.closed = True
        _open.discard(self)
        for ns in [*self.names, self.bridge_ns]:
            pids = ip("netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for ns in [*self.names, self.bridge_ns]:
            ip("netns", "del", ns, check=False)
        if self.root_link in root_links():
            ip("link", "del", self.root_link, check=False)
        left = [ns for ns in [*self.names, self.bridge_ns] if ns in namespaces()]
        left += [self.root_link] if self.root_link in root_links() else []
        if left:
            raise RuntimeError(f"lab teardown left {left}")

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            with contextlib.suppress(Exception):
                self.close()  # the test's own failure is the one to report


@atexit.register
def _close_all() -> None:
    for lab in list(_open):
        with contextlib.suppress(Exception):
            lab.close()
