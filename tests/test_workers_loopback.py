"""
Worker processes for real: `twistd -n socksvc` with `[daemon] workers = 2`
on loopback, port 0.

Which worker holds a connection is read from /proc (the worker process
whose socket has the client's port as its peer), never guessed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import Daemon, daemon, echo_round_trip, recv_all, recv_exactly
from tests.support.systemd import ACTIVATE, activated, connect_retry, free_port, notify_socket, wait_for_text
from tests.support.tls import self_signed

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs Linux /proc")

LO = "127.0.0.1"
SERVING = re.compile(r"worker (\d+) \(pid (\d+)\) serving")


def config(body: str, workers: int = 2, daemon_keys: str = "") -> str:
    return f"[daemon]\nworkers = {workers}\n{daemon_keys}\n{body}"


def workers(d: Daemon) -> dict[int, int]:
    """Slot -> pid of the workers serving now (the latest of each slot)."""
    d.read(timeout=0.2)
    return {int(slot): int(pid) for slot, pid in SERVING.findall(d.output)}


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _inodes(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                out.add(target[8:-1])
    return out


def peers_held(pid: int) -> set[int]:
    """The peer ports of the established TCP connections process C{pid} holds."""
    inodes = _inodes(pid)
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table, encoding="ascii") as f:
            for line in list(f)[1:]:
                parts = line.split()
                if parts[3] == "01" and parts[9] in inodes:  # ESTABLISHED
                    ports.add(int(parts[2].rsplit(":", 1)[1], 16))
    return ports


def holder(sock: socket.socket, pids: dict[int, int]) -> int | None:
    """The slot of the worker serving the client socket C{sock}."""
    port = sock.getsockname()[1]
    for slot, pid in pids.items():
        if port in peers_held(pid):
            return slot
    return None


def echo_once(sock: socket.socket, data: bytes = b"ping") -> bytes:
    sock.sendall(data)
    return recv_exactly(sock, len(data))


def until(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        select.select([], [], [], 0.05)
    return bool(predicate())


@contextlib.contextmanager
def clients(port: int, n: int) -> Iterator[list[socket.socket]]:
    """C{n} echo clients, opened one after another, each answered once (as bench/load.py opens them)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.create_connection((LO, port), timeout=10)
            assert echo_once(s) == b"ping"
            socks.append(s)
        yield socks
    finally:
        for s in socks:
            s.close()


EVERY = """
[services.echo]
listen = ["tcp:0:interface=127.0.0.1", "udp:0:interface=127.0.0.1", "unix:{sock}:mode=0660"]
[services.greeting]
listen = ["tcp:0:interface=127.0.0.1"]
[services.reverse]
listen = ["tcp:0:interface=127.0.0.1"]
[services.chat]
listen = ["tcp:0:interface=127.0.0.1"]
"""


def test_two_workers_serve_every_service(tmp_path: Path) -> None:
    sock_path = tmp_path / "echo.sock"
    with daemon(config(EVERY.format(sock=sock_path))) as d:
        pids = workers(d)
        assert set(pids) == {0, 1} and os.getpid() not in pids.values()
        with socket.create_connection((LO, d.port("echo")), timeout=10) as s:
            assert echo_round_trip(s, b"hello\n") == b"hello\n"
        with socket.create_connection((LO, d.port("greeting")), timeout=10) as s:
            assert recv_all(s) == b"Thank you for connecting\r\n"
        with socket.create_connection((LO, d.port("reverse")), timeout=10) as s:
            s.sendall(b"abc\n")
            assert recv_exactly(s, 4) == b"cba\n"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(10)
            u.sendto(b"datagram", (LO, d.port("echo", "udp")))
            assert u.recvfrom(100)[0] == b"datagram"
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(sock_path))
            assert echo_round_trip(s, b"unix\n") == b"unix\n"
        # The supervisor made the UNIX socket with its mode; no worker changed or removed it.
        assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o660
        with socket.create_connection((LO, d.port("chat")), timeout=10) as s:
            s.sendall(b"alice\n")
            got = b""
            while b"You are now in lobby" not in got:
                chunk = s.recv(4096)
                assert chunk
                got += chunk
            assert holder(s, pids) == 0  # chat: worker 0 alone
        d.read(until="closed after")
        assert re.search(r"\[socksvc#info w[01]\] echo: .* closed after", d.output)
        assert "Traceback" not in d.output


def test_connections_spread_over_both_workers() -> None:
    with daemon(config('[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1"]\n')) as d:
        pids = workers(d)
        with clients(d.port("echo"), 16) as socks:
            per = [0, 0]
            for s in socks:
                slot = holder(s, pids)
                assert slot is not None
                per[slot] += 1
        assert min(per) > 0 and max(per) <= 1.5 * min(per), per


def test_sigkill_of_a_worker_loses_only_its_connections_and_is_replaced() -> None:
    with daemon(config('[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1"]\n')) as d:
        pids = workers(d)
        port = d.port("echo")
        with clients(port, 8) as socks:
            slots = [holder(s, pids) for s in socks]
            assert set(slots) == {0, 1}
            os.kill(pids[0], signal.SIGKILL)
            killed_at = time.monotonic()
            for s, slot in zip(socks, slots, strict=True):
                if slot == 1:
                    assert echo_once(s, b"still here") == b"still here"
                else:
                    with contextlib.suppress(OSError):
                        assert echo_once(s) == b""  # its worker is gone: closed or reset
            d.read(until=f"worker 0 (pid {pids[0]}) killed by SIGKILL")
            assert until(lambda: workers(d)[0] != pids[0], 5.0), d.output
            assert time.monotonic() - killed_at < 5.0
            assert alive(workers(d)[0])
            with clients(port, 6) as more:
                # The replacement serves; holding nothing yet, it is given the new connections first.
                assert 0 in {holder(s, workers(d)) for s in more}
            for s, slot in zip(socks, slots, strict=True):
                if slot == 1:
                    assert echo_once(s, b"and now") == b"and now"
        assert "Traceback" not in d.output


def test_no_worker_survives_a_sigkilled_supervisor() -> None:
    with daemon(config('[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1"]\n')) as d:
        pids = workers(d)
        assert all(alive(p) for p in pids.values())
        d.proc.kill()
        d.proc.wait(10)
        assert until(lambda: not any(alive(p) for p in pids.values()), 10.0)


def test_reload_adds_and_removes_a_service_and_changes_a_limit() -> None:
    first = (
        '[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
        '[services.reverse]\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
    )
    second = (
        '[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1"]\nmax_connections = 2\n'
        '[services.greeting]\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
    )
    with daemon(config(first)) as d:
        pids = workers(d)
        echo, reverse = d.port("echo"), d.port("reverse")
        with clients(echo, 2) as kept:
            assert d.config_path is not None
            Path(d.config_path).write_text(config(second))
            d.signal(signal.SIGHUP)
            d.read(until="the reload applied in 2 of 2 workers")
            assert "1 added, 1 removed" in d.output
            with pytest.raises(OSError):
                socket.create_connection((LO, reverse), timeout=5).close()
            with socket.create_connection((LO, d.port("greeting")), timeout=10) as s:
                assert recv_all(s) == b"Thank you for connecting\r\n"
            # The two kept connections, on whichever workers, count against the new cap of 2.
            with socket.create_connection((LO, echo), timeout=10) as s:
                assert s.recv(100) == b"socksvc: too many connections, try again later\r\n"
            for s in kept:
                assert echo_once(s, b"kept") == b"kept"
        assert workers(d) == pids  # nobody was restarted
        assert "Traceback" not in d.output


def test_caps_hold_for_the_daemon_as_a_whole() -> None:
    body = '[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1"]\nmax_connections = 3\n'
    body += '[services.lab]\ntype = "echo"\nlisten = ["tcp:0:interface=127.0.0.1"]\nmax_per_source = 3\n'
    with daemon(config(body)) as d:
        pids = workers(d)
        with clients(d.port("echo"), 3) as socks:
            # Both workers hold some (the balancer lets one be at most 2 ahead), and the cap is on the sum.
            assert {holder(s, pids) for s in socks} == {0, 1}
            with socket.create_connection((LO, d.port("echo")), timeout=10) as s:
                assert s.recv(100) == b"socksvc: too many connections, try again later\r\n"
        with clients(d.port("lab"), 3) as socks:
            assert {holder(s, pids) for s in socks} == {0, 1}
            with socket.create_connection((LO, d.port("lab")), timeout=10) as s:
                assert s.recv(100) == b"socksvc: too many connections from your address\r\n"
        assert until(lambda: "too many connections from your address" in d.read(timeout=0.2))


def test_systemd_ready_status_and_watchdog_wait_for_every_worker() -> None:
    with notify_socket() as ns:
        env = {"NOTIFY_SOCKET": ns.env, "WATCHDOG_USEC": "2000000"}
        body = '[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1"]\n[services.chat]\nlisten = ["tcp:0"]\n'
        with daemon(config(body), env=env, ready=False) as d:
            messages = ns.receive("READY=1", timeout=30)
            d.read(until="services on")
            before_ready = d.output.split("services on")[0]
            assert len(SERVING.findall(before_ready)) == 2  # READY=1 only once both serve
            ready = next(m for m in messages if "READY=1" in m.split("\n"))
            assert "STATUS=2 of 2 workers up; 0 connections: echo 0, chat 0 (0 users)" in ready
            ns.receive("WATCHDOG=1", timeout=10)
            d.signal(signal.SIGTERM)
            ns.receive("STOPPING=1", timeout=10)
            assert d.proc.wait(20) in (0, -signal.SIGTERM)


def test_stop_tells_chat_members_and_exits_0() -> None:
    body = '[services.chat]\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
    with daemon(config(body)) as d:
        with socket.create_connection((LO, d.port("chat")), timeout=10) as s:
            s.sendall(b"alice\n")
            got = b""
            while b"You are now in lobby" not in got:
                got += s.recv(4096)
            d.signal(signal.SIGTERM)
            rest = recv_all(s)
        assert b"server is shutting down" in rest
        assert d.proc.wait(20) in (0, -signal.SIGTERM)  # as one process: twistd re-raises SIGTERM
        out = d.read()
        assert "worker 0 (pid" in out and "exited with status 0" in out
        assert "worker 1 (pid" in out and "Traceback" not in out


def test_json_log_lines_say_which_worker() -> None:
    body = '[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
    with daemon(config(body, daemon_keys='log_format = "json"'), ready=False) as d:
        d.read(until='"event": "ready"')
        records = [json.loads(line) for line in d.output.splitlines() if line.startswith("{")]
        listen = next(r for r in records if r["event"] == "listen")
        port = int(listen["where"].rsplit(":", 1)[1])
        with socket.create_connection((LO, port), timeout=10) as s:
            assert echo_round_trip(s, b"json\n") == b"json\n"
        d.read(until='"event": "close"')
        records = [json.loads(line) for line in d.output.splitlines() if line.startswith("{")]
        close = next(r for r in records if r["event"] == "close")
        assert close["worker"] in (0, 1) and close["service"] == "echo" and "system" not in close
        assert "worker" not in listen  # the supervisor's own lines have none


@pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate is not installed")
def test_socket_activation_with_two_workers() -> None:
    port = free_port()
    body = config('[services.echo]\nlisten = ["systemd:name=echo"]\n')
    with activated(body, "-l", f"127.0.0.1:{port}", "--fdname=echo") as (proc, log):
        with connect_retry(port) as first:  # starts the daemon; the queued connection is served
            assert echo_round_trip(first, b"activated\n") == b"activated\n"
        out = wait_for_text(log, "services on", 30)
        assert "2 workers" in out
        pids = {int(slot): int(pid) for slot, pid in SERVING.findall(out)}
        with clients(port, 6) as socks:
            assert {holder(s, pids) for s in socks} == {0, 1}
        assert proc.poll() is None


def test_admin_listener_shows_every_workers_figures() -> None:
    body = '[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
    keys = 'http = ["tcp:0:interface=127.0.0.1"]'
    with daemon(config(body, daemon_keys=keys)) as d:
        pids = workers(d)
        admin = d.port("admin/http")

        def status() -> dict[str, Any]:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/status.json", timeout=10) as r:
                return dict(json.loads(r.read()))

        with clients(d.port("echo"), 4) as socks:
            assert {holder(s, pids) for s in socks} == {0, 1}
            assert until(lambda: status()["services"][0]["connections"] == 4)
            figures = status()
            echo = figures["services"][0]
            assert figures["workers"] == 2 and echo["workers"] == 2
            assert echo["listeners"] == [f"tcp 127.0.0.1:{d.port('echo')}"]
            assert echo["accepted"] >= 4 and echo["limit"] == 1024
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10) as r:
            assert b'socksvc_connections_accepted_total{service="echo"}' in r.read()


def test_a_workers_change_starts_and_stops_workers_keeping_the_others_connections() -> None:
    body = '[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
    with daemon(config(body, workers=2)) as d:
        assert d.config_path is not None
        port = d.port("echo")
        with clients(port, 6) as socks:
            pids = workers(d)
            slots = [holder(s, pids) for s in socks]
            assert set(slots) == {0, 1}
            Path(d.config_path).write_text(config(body, workers=3))
            d.signal(signal.SIGHUP)
            d.read(until="worker 2 (pid")
            assert until(lambda: 2 in workers(d) and alive(workers(d)[2]))
            for s in socks:
                assert echo_once(s, b"three") == b"three"
            Path(d.config_path).write_text(config(body, workers=1))
            d.signal(signal.SIGHUP)
            d.read(until="3 workers become 1")
            assert until(lambda: not alive(pids[1]) and not alive(workers(d)[2]))
            for s, slot in zip(socks, slots, strict=True):
                if slot == 0:
                    assert echo_once(s, b"one") == b"one"  # worker 0's clients never noticed
            with socket.create_connection((LO, port), timeout=10) as s:
                assert echo_once(s, b"new") == b"new"
                assert holder(s, {0: pids[0]}) == 0
        assert "Traceback" not in d.output


def test_tls_with_two_workers(tmp_path: Path) -> None:
    key, cert = self_signed(tmp_path)
    body = f'[services.echo]\nlisten = ["ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"]\n'
    with daemon(config(body)) as d:
        pids = workers(d)
        ctx = ssl.create_default_context(cafile=str(cert))
        held: list[ssl.SSLSocket] = []
        try:
            for n in range(4):
                raw = socket.create_connection((LO, d.port("echo")), timeout=10)
                s = ctx.wrap_socket(raw, server_hostname="localhost")
                s.sendall(b"tls %d" % n)
                assert recv_exactly(s, 5) == b"tls %d" % n
                held.append(s)
            assert {holder(s, pids) for s in held} == {0, 1}  # both workers speak TLS
        finally:
            for s in held:
                s.close()


def test_the_toolbox_sees_no_difference() -> None:
    """socksvc echo --count, udp, greet and reverse print the same against one process and two workers."""
    body = (
        '[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1", "udp:0:interface=127.0.0.1"]\n'
        '[services.greeting]\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
        '[services.reverse]\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
    )
    socksvc = os.path.join(os.path.dirname(sys.executable), "socksvc")
    said: list[list[str]] = []
    for n in (1, 2):
        with daemon(config(body, workers=n)) as d:

            def run(*args: str) -> str:
                proc = subprocess.run([socksvc, *args], capture_output=True, text=True, timeout=30)
                assert proc.returncode == 0, proc.stdout + proc.stderr
                # What differs between any two runs: ports, times.
                return re.sub(r"\d+\.\d+|port \d+|time \d+ ms", "N", proc.stdout)

            said.append(
                [
                    run("echo", "--count", "5", "-i", "0.05", LO, str(d.port("echo")), "ping"),
                    run("udp", "--count", "5", "-i", "0.05", LO, str(d.port("echo", "udp"))),
                    run("greet", LO, str(d.port("greeting"))),
                    run("reverse", LO, str(d.port("reverse")), "abc"),
                ]
            )
    one, two = said
    assert one == two
    assert "5 messages sent, 5 received" in two[0] and "5 datagrams sent, 5 received" in two[1]
    assert two[2] == "Thank you for connecting\n" and two[3] == "cba\n"
