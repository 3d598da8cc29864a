"""The twistd plugin glue: Options, makeService, --check, and plugin discovery."""

from __future__ import annotations

import ast
import os
import subprocess
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from socksvc.daemon.errors import StartupError
from socksvc.daemon.service import DaemonService
from socksvc.tap import Options, makeService
from tests.support import TWISTD

ROOT = Path(__file__).resolve().parent.parent
GOOD = '[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1", "udp:0:interface=127.0.0.1"]\n'


def test_options() -> None:
    options = Options()
    options.parseOptions([])
    assert (options["config"], options["check"]) == (None, 0)
    options = Options()
    options.parseOptions(["--config", "/etc/socksvc.toml", "--check"])
    assert (options["config"], options["check"]) == ("/etc/socksvc.toml", 1)
    options = Options()
    options.parseOptions(["-c", "x.toml"])
    assert options["config"] == "x.toml"


def test_make_service_builds_the_tree_without_binding() -> None:
    service = makeService({"config": None}, reactor=Clock())
    assert isinstance(service, DaemonService)
    names = [i.name for i in service.instances()]
    assert {"echo", "greeting", "reverse"} <= set(names)
    echo = service.getServiceNamed("echo")
    assert [listener.spec.text for listener in echo.listeners()] == [
        "tcp:7007:interface=127.0.0.1",
        "udp:7007:interface=127.0.0.1",
    ]
    assert all(listener.port is None for i in service.instances() for listener in i.listeners())
    assert service.udp_ports == {7007, 7009, 7013, 7017, 7037}


def test_make_service_on_a_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(GOOD)
    options = Options()
    options.parseOptions(["--config", str(path)])
    service = makeService(options, reactor=Clock())
    assert [i.name for i in service.instances()] == ["echo"]
    assert service.config.source == str(path)


def test_a_bad_config_stops_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[services.echo]\nlisten = ["tcp:0"]\nmax_conections = 3\n')
    with pytest.raises(StartupError) as e:
        makeService({"config": str(path)}, reactor=Clock())
    expected = f'{path}: services.echo.max_conections = 3: unknown key; did you mean "max_connections"?'
    assert e.value.line == expected
    # A SystemExit whose code is the text: Python prints it and exits 1.
    assert isinstance(e.value, SystemExit)
    assert e.value.code == f"socksvc: {expected}"


def test_check_reports_and_exits_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.toml"
    path.write_text(GOOD)
    with pytest.raises(SystemExit) as e:
        makeService({"config": str(path), "check": 1}, reactor=Clock())
    assert e.value.code == 0
    assert capsys.readouterr().out == f"socksvc: {path}: OK, 1 service, 2 listeners\n"


def test_check_of_a_bad_config_exits_one(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[services.echo]\n")
    with pytest.raises(StartupError) as e:
        makeService({"config": str(path), "check": 1}, reactor=Clock())
    assert e.value.line == f'{path}: services.echo.listen: missing; give a list such as ["tcp:7007"]'


def test_the_plugin_is_found_by_twisted() -> None:
    from twisted.application.service import IServiceMaker
    from twisted.plugin import getPlugins

    from twisted.plugins import socksvc_plugin  # noqa: F401  (importable as a plugin module)

    makers = {p.tapname: p for p in getPlugins(IServiceMaker)}
    assert "socksvc" in makers
    assert makers["socksvc"].module == "socksvc.tap"


@pytest.mark.parametrize(
    ("file", "maker", "args"),
    [
        ("socksvc_plugin.py", "ServiceMaker", ["socksvc", "socksvc.tap"]),
        ("socksvc_reactor.py", "Reactor", ["socksvc", "socksvc.daemon.reactor"]),
    ],
)
def test_each_plugin_file_is_one_line(file: str, maker: str, args: list[str]) -> None:
    tree = ast.parse((ROOT / "twisted" / "plugins" / file).read_text())
    assignments = [node for node in tree.body if isinstance(node, ast.Assign)]
    assert len(assignments) == 1
    call = assignments[0].value
    assert isinstance(call, ast.Call) and getattr(call.func, "id", None) == maker
    assert [ast.literal_eval(a) for a in call.args[:2]] == args


def test_twisted_plugins_has_no_init() -> None:
    assert not (ROOT / "twisted" / "__init__.py").exists()
    assert not (ROOT / "twisted" / "plugins" / "__init__.py").exists()


def test_twistd_socksvc_help_lists_the_options() -> None:
    out = subprocess.run(
        [TWISTD, "socksvc", "--help"], capture_output=True, text=True, timeout=60, cwd=os.path.dirname(TWISTD)
    )
    assert out.returncode == 0, out.stderr
    assert "--config=" in out.stdout
    assert "--check" in out.stdout


def test_make_service_keeps_twistds_options_for_the_log_observer_choice() -> None:
    """twistd's parsed options reach the daemon, which decides its text observer from them."""
    from twisted.scripts.twistd import ServerOptions

    server = ServerOptions()
    server.parseOptions(["--nodaemon", "--logfile=/tmp/socksvc-test.log", "socksvc"])
    service = makeService(server.subOptions, Clock())
    assert service.twistd_options is server
    assert makeService(Options(), Clock()).twistd_options is None
