"""
tests/support/netns.Lab: hosts in network namespaces on one bridge reach
each other and are reached from the root namespace; link_down cuts a host
off until link_up; teardown leaves nothing behind.
"""

from __future__ import annotations

import select
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support.netns import Lab, namespaces, root_links

# An echo server on the host's address, port 0; it prints the port it bound.
SERVER = """
import socket, sys
s = socket.create_server((sys.argv[1], 0))
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    while data := c.recv(65536):
        c.sendall(data)
    c.close()
"""

CLIENT = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])) as c:
    c.sendall(b"ping")
    print(c.recv(100).decode())
"""


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab(3) as lab:
        yield lab


@pytest.fixture
def echo(lab: Lab) -> Iterator[tuple[str, int]]:
    """An echo server on host 0: its (address, port)."""
    addr = lab.address(0)
    proc = subprocess.Popen(
        [*lab.exec_prefix(0), sys.executable, "-c", SERVER, addr], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield addr, port
    finally:
        proc.kill()
        proc.wait()


def round_trip(address: tuple[str, int], timeout: float = 5.0) -> bytes:
    with socket.create_connection(address, timeout=timeout) as c:
        c.sendall(b"ping")
        return c.recv(100)


def from_host(lab: Lab, host: int, address: tuple[str, int], timeout: float = 5.0) -> subprocess.CompletedProcess[str]:
    return lab.run(host, sys.executable, "-c", CLIENT, address[0], str(address[1]), str(timeout))


def test_hosts_have_distinct_addresses_on_one_private_subnet(lab: Lab) -> None:
    addrs = [lab.address(h) for h in lab.hosts]
    assert len(set(addrs)) == 3 and lab.root_address not in addrs
    assert all(a.startswith("10.") and a.rsplit(".", 1)[0] == lab.root_address.rsplit(".", 1)[0] for a in addrs)
    assert lab.exec_prefix(1) == ["ip", "netns", "exec", lab.name(1)]
    shown = lab.run(1, "ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
    assert f"{lab.address(1)}/24" in shown


def test_root_and_other_hosts_reach_a_server_in_a_namespace(lab: Lab, echo: tuple[str, int]) -> None:
    assert round_trip(echo) == b"ping"
    done = from_host(lab, 2, echo)
    assert done.returncode == 0 and done.stdout.strip() == "ping", done.stderr


def test_the_server_is_not_on_the_root_namespace_loopback(lab: Lab, echo: tuple[str, int]) -> None:
    # bound to the lab address inside the namespace: nothing of it on root's 127.0.0.1
    with pytest.raises(OSError):
        round_trip(("127.0.0.1", echo[1]), timeout=1)


def test_link_down_cuts_the_host_off_and_link_up_restores_it(lab: Lab, echo: tuple[str, int]) -> None:
    assert round_trip(echo) == b"ping"
    lab.link_down(0)
    with pytest.raises(OSError):  # a timeout (frames dropped) or host unreachable
        round_trip(echo, timeout=1)
    assert from_host(lab, 1, echo, timeout=1).returncode != 0
    lab.link_up(0)
    assert round_trip(echo) == b"ping"
    assert from_host(lab, 1, echo).stdout.strip() == "ping"


def test_an_established_connection_stalls_while_down_and_recovers(lab: Lab, echo: tuple[str, int]) -> None:
    with socket.create_connection(echo, timeout=5) as c:
        c.sendall(b"one")
        assert c.recv(100) == b"one"
        lab.link_down(0)
        c.sendall(b"two")  # buffered: TCP retransmits into the void
        assert select.select([c], [], [], 0.5)[0] == []
        lab.link_up(0)
        c.settimeout(15)
        assert c.recv(100) == b"two"


def test_teardown_leaves_no_namespace_or_veth() -> None:
    with Lab(2) as lab:
        names = [lab.bridge_ns, *lab.names]
        assert set(names) <= set(namespaces()) and lab.root_link in root_links()
        # a process left running in a host does not keep its namespace alive
        stray = subprocess.Popen([*lab.exec_prefix(0), sys.executable, "-c", "import time; time.sleep(600)"])
    assert not set(names) & set(namespaces())
    assert lab.root_link not in root_links()
    assert stray.wait(10) is not None


def test_teardown_after_a_failure_in_the_block() -> None:
    with pytest.raises(ZeroDivisionError), Lab(1) as lab:
        names = [lab.bridge_ns, *lab.names]
        1 / 0  # noqa: B018
    assert not set(names) & set(namespaces())
    assert lab.root_link not in root_links()
