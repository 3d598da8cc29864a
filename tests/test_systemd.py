"""
systemd integration: sd_notify against a real AF_UNIX datagram socket, the
watchdog on a fake clock, systemd: listen specs, socket activation end to end
with systemd-socket-activate, and the shipped units through systemd-analyze.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock

from socksvc.config.listen import parse_listen, parse_systemd_spec
from socksvc.config.loader import ConfigError
from socksvc.daemon import systemd
from socksvc.daemon.errors import StartupError
from socksvc.daemon.service import DaemonService
from socksvc.services.catalogue import loads
from tests.support import TWISTD, daemon, echo_round_trip
from tests.support.systemd import (
    ACTIVATE,
    PortsReactor,
    activated,
    connect_retry,
    fields,
    free_port,
    notify_socket,
    wait_for_text,
)

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "systemd"


# -- a notify socket ---------------------------------------------------------------


# -- Notifier ----------------------------------------------------------------------


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_notifier_sends_to_a_real_socket(abstract: bool) -> None:
    with notify_socket(abstract) as ns:
        notifier = systemd.Notifier.from_environment({"NOTIFY_SOCKET": ns.env})
        assert notifier.enabled
        assert notifier.send("READY=1", "STATUS=all good")
        assert ns.receive("READY=1") == ["READY=1\nSTATUS=all good"]
        notifier.close()


def test_notifier_is_silent_without_notify_socket() -> None:
    notifier = systemd.Notifier.from_environment({})
    assert not notifier.enabled
    assert notifier.send("READY=1") is False
    assert notifier.sent == []


def test_notifier_survives_a_missing_socket(tmp_path: Path) -> None:
    notifier = systemd.Notifier(str(tmp_path / "nobody-listens"))
    assert notifier.send("READY=1") is False  # logged once, never raised
    assert notifier.send("WATCHDOG=1") is False


@given(st.text(max_size=40))
@settings(max_examples=60)
def test_notify_address_parser(value: str) -> None:
    addr = systemd.notify_address(value)
    if value.startswith("@"):
        assert isinstance(addr, bytes) and addr.startswith(b"\0")
        assert addr[1:].decode("utf-8", "surrogateescape") == value[1:]
    elif value.startswith("/"):
        assert addr == value
    else:
        assert addr is None


@given(st.one_of(st.none(), st.text(max_size=12), st.integers(-5, 10**9).map(str)))
@settings(max_examples=60)
def test_watchdog_interval_parser(value: str | None) -> None:
    env = {} if value is None else {"WATCHDOG_USEC": value}
    got = systemd.watchdog_interval(env)
    try:
        usec = int(value) if value is not None else 0
    except ValueError:
        usec = 0
    assert got == (usec / 2_000_000 if usec > 0 else None)


def test_watchdog_is_for_the_named_pid_only() -> None:
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}) == 0.5
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}) is None


# -- Supervisor on a fake clock ----------------------------------------------------------


def test_watchdog_pings_at_half_the_interval_from_the_reactor_clock() -> None:
    with notify_socket() as ns:
        clock = Clock()
        sup = systemd.Supervisor(clock, systemd.Notifier(ns.env), lambda: "fine", watchdog=5.0, interval=60.0)
        sup.started()
        ns.receive("WATCHDOG=1")  # one at once
        assert [m for m in ns.messages if m == "WATCHDOG=1"] == ["WATCHDOG=1"]
        clock.advance(4.9)
        assert "WATCHDOG=1" not in ns.pending()[2:]
        clock.advance(0.1)
        ns.receive("WATCHDOG=1")
        clock.advance(5.0)
        clock.advance(5.0)
        got = ns.pending()
        assert got.count("WATCHDOG=1") == 4
        assert fields(got[0]) == {"READY": "1", "STATUS": "fine"}
        sup.stopping()
        clock.advance(50.0)
        after = ns.receive("STOPPING=1")
        assert after.count("WATCHDOG=1") == 4  # no pings once stopping
        assert fields(after[-1])["STOPPING"] == "1"


def test_status_is_refreshed_every_few_seconds() -> None:
    with notify_socket() as ns:
        clock = Clock()
        figures = iter(["echo 0", "echo 1", "echo 2"])
        sup = systemd.Supervisor(clock, systemd.Notifier(ns.env), lambda: next(figures), interval=5.0)
        sup.started()
        clock.advance(5.0)
        clock.advance(5.0)
        ns.receive("STATUS=echo 2")
        assert [fields(m).get("STATUS") for m in ns.messages] == ["echo 0", "echo 1", "echo 2"]


def test_status_that_raises_does_not_stop_the_daemon() -> None:
    with notify_socket() as ns:

        def broken() -> str:
            raise RuntimeError("boom")

        sup = systemd.Supervisor(Clock(), systemd.Notifier(ns.env), broken)
        sup.started()
        assert fields(ns.receive("READY=1")[0])["STATUS"] == "running"


def test_reloading_carries_monotonic_usec() -> None:
    with notify_socket() as ns:
        sup = systemd.Supervisor(Clock(), systemd.Notifier(ns.env), lambda: "ok", monotonic=lambda: 1234567)
        sup.reloading()
        sup.reloaded()
        got = ns.receive("READY=1")
        assert fields(got[0])["RELOADING"] == "1"
        assert fields(got[0])["MONOTONIC_USEC"] == "1234567"
        assert fields(got[1]) == {"READY": "1", "STATUS": "ok"}


def test_real_monotonic_usec_is_clock_monotonic() -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert before <= systemd.monotonic_usec()


def test_supervisor_without_notify_socket_starts_no_timers() -> None:
    clock = Clock()
    sup = systemd.Supervisor(clock, systemd.Notifier(None), lambda: "x", watchdog=1.0)
    sup.started()
    assert clock.getDelayedCalls() == []
    sup.stopping()


# -- the daemon's notifications, in process ----------------------------------------------


CONFIG = """
[services.echo]
listen = ["tcp:0:interface=127.0.0.1", "udp:0:interface=127.0.0.1"]
[services.greeting]
listen = ["tcp:0:interface=127.0.0.1"]
"""


ECHO_ONLY = """
[services.echo]
listen = ["tcp:0:interface=127.0.0.1"]
"""


def test_ready_only_after_every_listener_is_bound() -> None:
    with notify_socket() as ns:
        reactor = PortsReactor()
        svc = DaemonService(loads(CONFIG, "<test>"), reactor, notifier=systemd.Notifier(ns.env))
        svc.privilegedStartService()
        assert ns.pending() == []  # bound, but not started yet
        assert len(reactor.listening) == 3
        svc.startService()
        ready = fields(ns.receive("READY=1")[0])
        assert ready["STATUS"] == "0 connections: echo 0, greeting 0"
        svc.stopService()
        assert fields(ns.receive("STOPPING=1")[-1])["STOPPING"] == "1"
        assert reactor.listening == set()


def test_no_ready_when_a_listener_cannot_bind() -> None:
    with notify_socket() as ns:
        text = '[services.echo]\nlisten = ["systemd:name=nowhere"]\n'
        svc = DaemonService(loads(text, "<test>"), PortsReactor(), notifier=systemd.Notifier(ns.env))
        with pytest.raises(StartupError, match="no socket named 'nowhere'"):
            svc.privilegedStartService()
        got = ns.pending()  # a local datagram is queued by the time send returns
        assert len(got) == 1 and got[0].startswith("STATUS=start-up failed: service 'echo' cannot listen")
        assert "nowhere" in got[0]


# -- daemon as a subprocess: READY after bind, WATCHDOG, RELOADING, STOPPING ---------------


def test_daemon_subprocess_notifies_ready_watchdog_reload_and_stop() -> None:
    with notify_socket(abstract=True) as ns:
        env = {"NOTIFY_SOCKET": ns.env, "WATCHDOG_USEC": "400000"}
        with daemon(CONFIG, env=env, ready=False) as d:
            ns.receive("READY=1")
            # READY came after binding: the ports it logged accept at once.
            d.read(until="services on")
            with socket.create_connection(("127.0.0.1", d.port("greeting")), timeout=5) as s:
                assert s.recv(100) == b"Thank you for connecting\r\n"
            ready = fields(next(m for m in ns.messages if "READY=1" in m))
            assert ready["STATUS"].endswith("echo 0, greeting 0")
            ns.receive("WATCHDOG=1")
            n = len(ns.messages)
            d.signal(signal.SIGHUP)
            got = ns.receive("RELOADING=1")
            ns.messages = got[n:]
            reloading = fields(next(m for m in ns.messages if "RELOADING=1" in m))
            assert int(reloading["MONOTONIC_USEC"]) > 0
            after = ns.receive("READY=1")
            assert after.index(next(m for m in after if "READY=1" in m)) > after.index(
                next(m for m in after if "RELOADING=1" in m)
            )
            d.read(until="reloaded")
            d.signal(signal.SIGTERM)
            ns.receive("STOPPING=1")
            # twistd re-raises the signal after a clean stop; systemd counts SIGTERM as success.
            assert d.proc.wait(10) in (0, -signal.SIGTERM)
            assert "socksvc: stopping" in d.read()


def test_sighup_the_moment_ready_arrives_reloads_instead_of_killing() -> None:
    """systemd may send SIGHUP (ExecReload=kill -HUP) as soon as it reads READY=1."""
    for _attempt in range(3):
        with notify_socket() as ns, daemon(ECHO_ONLY, env={"NOTIFY_SOCKET": ns.env}, ready=False) as d:
            ns.receive("READY=1")
            d.signal(signal.SIGHUP)
            out = d.read(until="reloaded")  # returns early if the daemon died
            assert "reloaded" in out and d.proc.poll() is None, (d.proc.returncode, out)
            ns.receive("RELOADING=1")
    # While stopping, a connection that does not read keeps the daemon up for
    # close_grace seconds: a SIGHUP then must not kill it either.
    with (
        notify_socket() as ns,
        daemon(ECHO_ONLY, env={"NOTIFY_SOCKET": ns.env}) as d,
        socket.create_connection(("127.0.0.1", d.port("echo")), timeout=5) as c,
    ):
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # One round trip first: the daemon's loop runs and holds this connection
        # (a SIGTERM before that would find nothing to wait for, and the
        # daemon could be exiting, its handlers gone, when the SIGHUP comes).
        c.sendall(b"x")
        assert c.recv(1) == b"x"
        c.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            for _ in range(4096):  # the daemon's write buffer fills, then it stops reading
                c.send(b"x" * 65536)
        d.signal(signal.SIGTERM)
        ns.receive("STOPPING=1")
        d.signal(signal.SIGHUP)
        assert d.proc.wait(10) in (0, -signal.SIGTERM)


# -- systemd: listen specs ----------------------------------------------------------


def test_systemd_listen_specs_parse() -> None:
    assert parse_listen("systemd:name=echo").kind == "inherited"
    assert parse_systemd_spec("systemd:name=echo") == ("echo", None)
    assert parse_systemd_spec("systemd:domain=INET:index=0") == (None, 0)
    for bad, why in [
        ("systemd:", "expected key=value"),
        ("systemd:echo", "expected key=value"),
        ("systemd:name=", "not a FileDescriptorName"),
        ("systemd:name=a:index=1", "need name=NAME"),
        ("systemd:domain=INET", "need name=NAME"),
        ("systemd:port=7", "unknown systemd option 'port'"),
        ("systemd:domain=IPX:name=x", "not INET"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_listen(bad)


def test_systemd_listen_spec_in_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"services\.echo\.listen\[0\] = \"systemd:nam=echo\""):
        loads('[services.echo]\nlisten = ["systemd:nam=echo"]\n', "f.toml")


@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"), min_size=1))
@settings(max_examples=80)
def test_any_fdname_round_trips(name: str) -> None:
    assert parse_systemd_spec(f"systemd:name={name}") == (name, None)


@given(st.text(max_size=30))
@settings(max_examples=100)
def test_parse_spec_never_crashes(rest: str) -> None:
    try:
        name, index = parse_systemd_spec("systemd:" + rest)
    except ValueError:
        return
    assert (name is None) != (index is None)


@given(
    count=st.integers(0, 6),
    names=st.lists(st.text(alphabet="abc-", min_size=1, max_size=4), max_size=6),
    same_pid=st.booleans(),
)
@settings(max_examples=60)
def test_read_environment(count: int, names: list[str], same_pid: bool) -> None:
    env = {"LISTEN_FDS": str(count), "LISTEN_PID": "1234" if same_pid else "99", "LISTEN_FDNAMES": ":".join(names)}
    got = systemd.read_environment(env, 1234)
    if not same_pid:
        assert got is None
        return
    assert got is not None
    assert got.fds == tuple(range(3, 3 + count))
    assert got.names == (tuple(names) if len(names) == count else ("unknown",) * count)


def test_read_environment_rejects_garbage() -> None:
    got = systemd.read_environment({"LISTEN_FDS": "lots", "LISTEN_PID": "7"}, 7)
    assert got is not None and "not a number" in got.problem
    assert systemd.read_environment({}, 7) is None


def test_sockets_for_names_several_and_explains_missing() -> None:
    found = systemd.Inherited((3, 4, 5), ("echo", "echo", "chat"))
    assert systemd.sockets_for("systemd:name=echo", found) == [3, 4]
    assert systemd.sockets_for("systemd:index=2", found) == [5]
    with pytest.raises(LookupError, match=r"no socket named 'greeting' was passed .*passed: chat, echo"):
        systemd.sockets_for("systemd:name=greeting", found)
    with pytest.raises(LookupError, match="no LISTEN_FDS"):
        systemd.sockets_for("systemd:name=greeting", systemd.Inherited())
    with pytest.raises(LookupError, match="out of range"):
        systemd.sockets_for("systemd:index=3", found)


def test_inherited_takes_what_twisted_already_consumed(monkeypatch: pytest.MonkeyPatch) -> None:
    from twisted.internet import endpoints
    from twisted.python.systemd import ListenFDs

    monkeypatch.delenv("LISTEN_FDS", raising=False)
    monkeypatch.setenv("LISTEN_FDNAMES", "echo:chat")
    monkeypatch.setattr(endpoints._SystemdParser, "_sddaemon", ListenFDs([3, 4], ("echo", "chat")))
    try:
        found = systemd.inherited(refresh=True)
        assert found.fds == (3, 4) and found.names == ("echo", "chat")
        assert systemd.inherited() is found  # read once, shared
    finally:
        monkeypatch.undo()
        systemd.inherited(refresh=True)


def test_inherited_reads_the_environment_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_FDNAMES", "greeting")
    try:
        found = systemd.inherited(refresh=True)
        assert found.fds == (3,) and found.names == ("greeting",)
        assert os.environ["LISTEN_FDS"] == "1"  # left for Twisted's own parser
    finally:
        monkeypatch.undo()
        systemd.inherited(refresh=True)


def test_adopt_chooses_by_socket_type() -> None:
    reactor = MemoryReactorClock()
    stream_sock = socket.socket()
    stream_sock.bind(("127.0.0.1", 0))
    dgram_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    idle_sock = socket.socket()
    with stream_sock, dgram_sock, idle_sock:
        with pytest.raises(ValueError, match="not listening"):
            systemd.adopt(reactor, stream_sock.fileno(), lambda: "factory", None, 9000)
        stream_sock.listen()
        systemd.adopt(reactor, stream_sock.fileno(), lambda: "factory", None, 9000)
        assert reactor.adoptedPorts[-1] == (stream_sock.fileno(), socket.AF_INET, "factory")
        with pytest.raises(ValueError, match="serves streams only"):
            systemd.adopt(reactor, dgram_sock.fileno(), lambda: "factory", None, 9000)
        systemd.adopt(reactor, dgram_sock.fileno(), None, lambda: "proto", 9000)
        assert reactor.adoptedPorts[-1] == (dgram_sock.fileno(), socket.AF_INET, "proto", 9000)
        with pytest.raises(ValueError, match="serves datagrams only"):
            systemd.adopt(reactor, stream_sock.fileno(), None, lambda: "proto", 9000)
    with pytest.raises(ValueError, match="not a usable socket"):
        systemd.adopt(reactor, 1_000_000, lambda: "f", None, 9000)


# -- socket activation end to end ---------------------------------------------------------

needs_activate = pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate is not installed")


@needs_activate
def test_socket_activation_tcp_by_name() -> None:
    echo, greet = free_port(), free_port()
    config = '[services.echo]\nlisten = ["systemd:name=echo"]\n[services.greeting]\nlisten = ["systemd:name=greet"]\n'
    # A tcp: spec as well: checking it imports twisted.internet.endpoints, which consumes LISTEN_FDS first.
    config += '[services.reverse]\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
    with activated(config, "-l", f"127.0.0.1:{echo}", "-l", f"127.0.0.1:{greet}", "--fdname=echo:greet") as (
        proc,
        log,
    ):
        with connect_retry(echo) as s:  # the first connection starts the daemon; it is answered
            got = echo_round_trip(s, b"activated\n")
        assert got == b"activated\n"
        with socket.create_connection(("127.0.0.1", greet), timeout=5) as s:
            assert s.recv(100) == b"Thank you for connecting\r\n"
        out = wait_for_text(log, "services on")
        assert f"echo: listening on tcp 127.0.0.1:{echo}" in out
        assert f"greeting: listening on tcp 127.0.0.1:{greet}" in out
        assert proc.poll() is None

        # Reload: drop greeting (its inherited socket stays open, unserved), then bring it back changed.
        config_path = Path(proc.args[-1])  # type: ignore[index]
        with socket.create_connection(("127.0.0.1", echo), timeout=5) as kept:
            config_path.write_text(config.replace('[services.greeting]\nlisten = ["systemd:name=greet"]\n', ""))
            proc.send_signal(signal.SIGHUP)
            assert "1 removed" in wait_for_text(log, "1 removed")
            config_path.write_text(config.replace('"systemd:name=greet"]', '"systemd:name=greet"]\nmessage = "back"'))
            proc.send_signal(signal.SIGHUP)
            assert "1 added" in wait_for_text(log, "1 added")
            with socket.create_connection(("127.0.0.1", greet), timeout=5) as s:
                assert s.recv(100) == b"back\r\n"
            kept.sendall(b"same connection")
            assert kept.recv(100) == b"same connection"
        assert "Traceback" not in log.read_text()


@needs_activate
def test_socket_activation_udp() -> None:
    port = free_port(socket.SOCK_DGRAM)
    config = '[services.echo]\nlisten = ["systemd:name=echo-udp"]\n'
    with activated(config, "--datagram", "-l", f"127.0.0.1:{port}", "--fdname=echo-udp") as (proc, log):
        assert "Listening on" in wait_for_text(log, "Listening on")  # else the first datagram is lost
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(10)
            u.sendto(b"first", ("127.0.0.1", port))  # starts the daemon, which then answers it
            assert u.recvfrom(100)[0] == b"first"
            u.sendto(b"second", ("127.0.0.1", port))
            assert u.recvfrom(100)[0] == b"second"
        assert f"echo: listening on udp 127.0.0.1:{port}" in wait_for_text(log, "services on")
        assert proc.poll() is None


@needs_activate
def test_socket_activation_unix_stream(tmp_path: Path) -> None:
    path = tmp_path / "echo.sock"
    config = '[services.reverse]\nlisten = ["systemd:name=rev"]\n'
    with activated(config, "-l", str(path), "--fdname=rev") as (_proc, log):
        deadline = time.monotonic() + 10
        while not path.exists() and time.monotonic() < deadline:
            select.select([], [], [], 0.05)
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(path))
            s.sendall(b"abc\n")
            assert s.recv(100) == b"cba\n"
        assert f"reverse: listening on unix {path}" in wait_for_text(log, "services on")


@needs_activate
def test_socket_activation_missing_name_is_a_startup_error() -> None:
    port = free_port()
    config = '[services.echo]\nlisten = ["systemd:name=echo"]\n'
    with activated(config, "-l", f"127.0.0.1:{port}", "--fdname=other") as (proc, log):
        with contextlib.suppress(OSError), connect_retry(port) as s:
            s.recv(10)
        assert proc.wait(15) == 1
        out = log.read_text()
        assert "no socket named 'echo' was passed (FileDescriptorName= passed: other)" in out
        assert "Traceback" not in out


def test_systemd_spec_without_activation_is_a_startup_error() -> None:
    config = '[services.echo]\nlisten = ["systemd:name=echo"]\n'
    with daemon(config, ready=False) as d:
        assert d.proc.wait(15) == 1
        out = d.read()
        assert "service 'echo' cannot listen on 'systemd:name=echo': no socket named 'echo' was passed" in out


# -- the shipped units ----------------------------------------------------------------

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
SOCKETS = sorted(p.name for p in UNITS.glob("*.socket"))


def staged(tmp: Path, activated: bool) -> Path:
    """The units as installed: ExecStart pointed at this venv (verify checks it exists)."""
    for unit in UNITS.glob("socksvc*.s*"):
        text = unit.read_text().replace("/opt/socksvc/bin/twistd", TWISTD)
        (tmp / unit.name).write_text(text)
    if activated:
        dropins = tmp / "socksvc.service.d"
        dropins.mkdir()
        for conf in (UNITS / "socket-activated").glob("*.conf"):
            shutil.copy(conf, dropins / conf.name)
    return tmp / "socksvc.service"


def exposure(unit: Path) -> tuple[float, str]:
    assert ANALYZE is not None
    proc = subprocess.run(
        [ANALYZE, "security", "--offline=yes", "--no-pager", str(unit)], capture_output=True, text=True, timeout=60
    )
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout)
    assert m, proc.stdout + proc.stderr
    return float(m.group(1)), proc.stdout


def test_units_exist_and_are_consistent() -> None:
    service = (UNITS / "socksvc.service").read_text()
    assert "Type=notify" in service
    assert "ExecStart=/opt/socksvc/bin/twistd --nodaemon --pidfile= socksvc --config /etc/socksvc/socksvc.toml" in (
        service
    )
    assert "ExecReload=kill -HUP $MAINPID" in service
    assert re.search(r"^WatchdogSec=\d+", service, re.M)
    assert "Restart=on-failure" in service
    assert "DynamicUser=yes" in service
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in service
    config = loads((ROOT / "etc" / "socksvc.toml").read_text(), "etc/socksvc.toml")
    names = {parse_systemd_spec(s.text)[0] for svc in config.services for s in svc.listen if s.scheme == "systemd"}
    declared = set()
    for sock in SOCKETS:
        text = (UNITS / sock).read_text()
        m = re.search(r"^FileDescriptorName=(\S+)", text, re.M)
        assert m, sock
        declared.add(m.group(1))
        assert "Service=socksvc.service" in text
    assert (
        names
        == declared
        == {"echo", "greeting", "chat", "reverse", "discard", "daytime", "time", "chargen", "smtp", "pop3"}
    )
    dropin = (UNITS / "socket-activated" / "socket-activation.conf").read_text()
    for sock in SOCKETS:
        assert sock in dropin


@needs_analyze
@pytest.mark.parametrize("activated", [False, True], ids=["capability", "socket-activated"])
def test_units_verify(tmp_path: Path, activated: bool) -> None:
    assert ANALYZE is not None
    unit = staged(tmp_path, activated)
    units = [str(unit)] + [str(tmp_path / s) for s in SOCKETS]
    proc = subprocess.run([ANALYZE, "verify", "--man=no", *units], capture_output=True, text=True, timeout=60)
    problems = [line for line in (proc.stdout + proc.stderr).splitlines() if "socksvc" in line]
    assert proc.returncode == 0 and not problems, proc.stdout + proc.stderr


@needs_analyze
@pytest.mark.parametrize(("activated", "limit"), [(False, 2.0), (True, 1.0)], ids=["capability", "socket-activated"])
def test_units_security_exposure(tmp_path: Path, activated: bool, limit: float) -> None:
    level, report = exposure(staged(tmp_path, activated))
    assert level <= limit, report
    held = [line for line in report.splitlines() if "CAP_NET_(BIND_SERVICE" in line or "AmbientCapabilities" in line]
    assert len(held) == 2, report
    if activated:
        assert all(line.startswith("✓") for line in held), held  # no capability at all
    else:
        assert all(line.startswith("✗") for line in held), held  # just the one it needs
