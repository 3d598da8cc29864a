"""
The daemon's service tree: binding, failing loudly on a busy port (in
process and under twistd / twist), --check, and bad configs on the command line.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.logger import capturedLogs

from socksvc.daemon.errors import StartupError
from socksvc.daemon.service import DaemonService
from socksvc.services.catalogue import loads
from tests.conftest import refused, until
from tests.support import TWISTD

TWIST = os.path.join(os.path.dirname(TWISTD), "twist")


@contextlib.contextmanager
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that something else is listening on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def config_text(busy: int) -> str:
    return f"""
[services.echo]
listen = ["tcp:0:interface=127.0.0.1"]

[services.rev]
type = "reverse"
listen = ["tcp:{busy}:interface=127.0.0.1"]
"""


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "socksvc.toml"
    path.write_text(text)
    return str(path)


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), capture_output=True, text=True, timeout=timeout, cwd=tempfile.gettempdir(), stdin=subprocess.DEVNULL
    )


# -- in process --------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_busy_port_stops_start_up_and_unbinds_the_rest() -> None:
    from twisted.internet import reactor

    with busy_port() as port:
        service = DaemonService(loads(config_text(port), "t.toml"), reactor)
        with capturedLogs() as events, pytest.raises(StartupError) as e:
            service.privilegedStartService()
    assert e.value.line == f"service 'rev' cannot listen on 'tcp:{port}:interface=127.0.0.1': Address already in use"
    [bound] = [ev for ev in events if ev.get("event") == "listen"]
    assert bound["service"] == "echo"
    echo_port = int(bound["where"].rpartition(":")[2])
    assert all(listener.port is None for i in service.instances() for listener in i.listeners())
    await until(lambda: refused(echo_port), what=f"port {echo_port} to close")


def test_a_busy_udp_port_stops_start_up_too() -> None:
    from twisted.internet import reactor

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        text = f'[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1", "udp:{port}:interface=127.0.0.1"]\n'
        service = DaemonService(loads(text, "t.toml"), reactor)
        with pytest.raises(StartupError) as e:
            service.privilegedStartService()
    assert e.value.line == (f"service 'echo' cannot listen on 'udp:{port}:interface=127.0.0.1': Address already in use")
    assert all(listener.port is None for i in service.instances() for listener in i.listeners())


@pytest_twisted.ensureDeferred
async def test_start_binds_every_listener_and_stop_unbinds_them(tmp_path: Path) -> None:
    from twisted.internet import reactor

    path = str(tmp_path / "d.sock")
    text = f"""
[services.echo]
listen = ["tcp:0:interface=127.0.0.1", "udp:0:interface=127.0.0.1", "unix:{path}"]
[services.greeting]
listen = ["tcp:0:interface=127.0.0.1"]
"""
    service = DaemonService(loads(text, "t.toml"), reactor)
    with capturedLogs() as events:
        service.privilegedStartService()
        service.startService()
    try:
        echo = service.getServiceNamed("echo")
        tcp, udp, unix = echo.listeners()
        assert all(listener.port is not None for listener in (tcp, udp, unix))
        assert service.udp_ports == {udp.port.getHost().port}
        # One factory for all of a service's stream listeners, one policy.
        assert tcp.port.factory is unix.port.factory
        assert [ev["where"] for ev in events if ev.get("event") == "listen"][1].startswith("udp 127.0.0.1:")
        [ready] = [ev for ev in events if ev.get("event") == "ready"]
        assert (ready["count"], ready["listeners"]) == (2, 4)
        tcp_port = tcp.port.getHost().port
        assert not refused(tcp_port)
    finally:
        await service.stopService()
    assert refused(tcp_port)
    assert not os.path.exists(path) or _unix_refused(path)


def _unix_refused(path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return True
    return False


# -- as a subprocess ---------------------------------------------------------


def _one_line_about(output: str, port: int) -> str:
    lines = [line for line in output.splitlines() if "cannot listen" in line]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    assert f"service 'rev' cannot listen on 'tcp:{port}:interface=127.0.0.1': Address already in use" in lines[0]
    return lines[0]


def _echo_port(output: str) -> int:
    for line in output.splitlines():
        if "echo: listening on tcp 127.0.0.1:" in line:
            return int(line.rpartition(":")[2])
    raise AssertionError(f"echo never listened:\n{output}")


def test_twistd_exits_1_on_a_busy_port(tmp_path: Path) -> None:
    with busy_port() as port:
        out = run(TWISTD, "--nodaemon", "--pidfile=", "socksvc", "--config", write_config(tmp_path, config_text(port)))
    assert out.returncode == 1
    _one_line_about(out.stdout + out.stderr, port)
    assert refused(_echo_port(out.stdout))


def test_twist_exits_1_on_a_busy_port(tmp_path: Path) -> None:
    with busy_port() as port:
        out = run(TWIST, "socksvc", "--config", write_config(tmp_path, config_text(port)))
    assert out.returncode == 1
    line = _one_line_about(out.stdout + out.stderr, port)
    assert line.startswith("socksvc: service 'rev'")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may bind ports below 1024")
def test_a_port_not_permitted_stops_start_up(tmp_path: Path) -> None:
    text = '[services.echo]\nlisten = ["tcp:7:interface=127.0.0.1"]\n'
    out = run(TWIST, "socksvc", "--config", write_config(tmp_path, text))
    assert out.returncode == 1
    assert "service 'echo' cannot listen on 'tcp:7:interface=127.0.0.1': Permission denied" in out.stderr


@pytest.mark.parametrize("runner", ["twistd", "twist"])
def test_check_binds_nothing_and_exits_0(tmp_path: Path, runner: str) -> None:
    with busy_port() as port:
        path = write_config(tmp_path, config_text(port))
        cmd = [TWISTD, "--nodaemon", "--pidfile=", "socksvc"] if runner == "twistd" else [TWIST, "socksvc"]
        out = run(*cmd, "--config", path, "--check")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout == f"socksvc: {path}: OK, 2 services, 2 listeners\n"
    assert "listening on" not in out.stdout + out.stderr


@pytest.mark.parametrize("runner", ["twistd", "twist"])
def test_check_of_a_bad_config_exits_1_with_one_line(tmp_path: Path, runner: str) -> None:
    path = write_config(tmp_path, '[services.echo]\nlisten = ["tcp:0"]\nmax_conections = 3\n')
    cmd = [TWISTD, "--nodaemon", "--pidfile=", "socksvc"] if runner == "twistd" else [TWIST, "socksvc"]
    out = run(*cmd, "--config", path, "--check")
    assert out.returncode == 1
    assert (
        out.stderr
        == f'socksvc: {path}: services.echo.max_conections = 3: unknown key; did you mean "max_connections"?\n'
    )
    assert out.stdout == ""


def test_a_bad_config_without_check_exits_1_too(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.toml")
    out = run(TWISTD, "--nodaemon", "--pidfile=", "socksvc", "--config", missing)
    assert out.returncode == 1
    assert out.stderr == f"socksvc: {missing}: cannot read config file: No such file or directory\n"


# -- what the listeners are: backlog, UNIX socket mode and directory -------------------


def _ss_backlog(args: list[str], where: str) -> int:
    """The backlog `ss` reports for a listening socket (its Send-Q column)."""
    out = subprocess.run(["ss", "-lnH", *args], capture_output=True, text=True, timeout=30, check=True).stdout
    for line in out.splitlines():
        fields = line.split()
        if where in fields:
            return int(fields[fields.index(where) - 1] if args == ["-t"] else fields[3])
    raise AssertionError(f"{where} not in ss output:\n{out}")


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
@pytest_twisted.ensureDeferred
async def test_listeners_have_the_backlog_we_say(tmp_path: Path) -> None:
    """
    Twisted's default backlog of 50 stalled bursts of connections: the
    default is the kernel's somaxconn, and backlog= sets one per spec.
    """
    from twisted.internet import reactor

    from socksvc.config.listen import default_backlog

    path = tmp_path / "echo.sock"
    text = f"""
[services.echo]
listen = ["tcp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1:backlog=7", "unix:{path}"]
"""
    service = DaemonService(loads(text, "t.toml"), reactor, handle_signals=False)
    service.privilegedStartService()
    service.startService()
    try:
        default, seven, _unix = (listener.port for listener in service.instance("echo").listeners())
        assert _ss_backlog(["-t"], f"127.0.0.1:{default.getHost().port}") == default_backlog()
        assert _ss_backlog(["-t"], f"127.0.0.1:{seven.getHost().port}") == 7
        assert _ss_backlog(["-x"], str(path)) == default_backlog()
        assert default_backlog() > 50
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_a_unix_socket_is_0660_and_its_mode_can_be_set(tmp_path: Path) -> None:
    from twisted.internet import reactor

    text = f'[services.echo]\nlisten = ["unix:{tmp_path}/a.sock", "unix:{tmp_path}/b.sock:mode=600"]\n'
    service = DaemonService(loads(text, "t.toml"), reactor, handle_signals=False)
    service.privilegedStartService()
    try:
        assert stat.S_IMODE(os.stat(tmp_path / "a.sock").st_mode) == 0o660
        assert stat.S_IMODE(os.stat(tmp_path / "b.sock").st_mode) == 0o600
    finally:
        await service.stopService()


def test_a_unix_socket_directory_gone_by_the_start_says_what_to_do(tmp_path: Path) -> None:
    """Once: "[Errno 2] No such file or directory: '30623' -> b'/run/socksvc/echo.sock.lock'"."""
    from twisted.internet import reactor

    run = tmp_path / "run"
    run.mkdir()
    service = DaemonService(loads(f'[services.echo]\nlisten = ["unix:{run}/echo.sock"]\n', "t.toml"), reactor)
    run.rmdir()  # after the config was checked
    with pytest.raises(StartupError) as e:
        service.privilegedStartService()
    assert e.value.line == (
        f"service 'echo' cannot listen on 'unix:{run}/echo.sock': the socket's directory {run} does not exist: "
        "create it (under systemd, RuntimeDirectory= makes one in /run, see docs/systemd.md)"
    )


@pytest.mark.parametrize("runner", ["twistd", "twist"])
def test_check_names_a_missing_socket_directory(tmp_path: Path, runner: str) -> None:
    missing = tmp_path / "run" / "socksvc"
    path = write_config(tmp_path, f'[services.echo]\nlisten = ["unix:{missing}/echo.sock"]\n')
    cmd = [TWISTD, "--nodaemon", "--pidfile=", "socksvc"] if runner == "twistd" else [TWIST, "socksvc"]
    out = run(*cmd, "--config", path, "--check")
    assert out.returncode == 1
    assert out.stderr.startswith(f'socksvc: {path}: services.echo.listen[0] = "unix:')  # the value, shortened
    assert out.stderr.endswith(
        f": the socket's directory {missing} does not exist: create it "
        "(under systemd, RuntimeDirectory= makes one in /run, see docs/systemd.md)\n"
    )
    assert out.stderr.count("\n") == 1
