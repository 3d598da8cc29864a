"""
The shape of the code: layers enforced by import-linter, no reactor imported
by importing socksvc or loading a config, test modules independent.
"""

from __future__ import annotations

import ast
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept() -> None:
    """`./dev lint` runs lint-imports too; here the suite fails on a broken layer or a cycle."""
    lint = pathlib.Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


_NO_REACTOR = """
import importlib, pkgutil, sys
import socksvc
import socksvc.tap
assert "twisted.internet.reactor" not in sys.modules, "importing socksvc.tap imported the reactor"
for info in pkgutil.walk_packages(socksvc.__path__, "socksvc."):
    importlib.import_module(info.name)
    assert "twisted.internet.reactor" not in sys.modules, f"importing {info.name} imported the reactor"
from socksvc.services.catalogue import load, loads
load(None)
loads('[services.x]\\ntype = "echo"\\nlisten = ["tcp:0", "udp:0", "unix:/tmp/x.sock", "systemd:name=x"]\\n')
assert "twisted.internet.reactor" not in sys.modules, "loading a config imported the reactor"
print("ok")
"""


def test_importing_socksvc_or_loading_a_config_never_imports_the_reactor() -> None:
    """
    twistd chooses and installs the reactor after importing the plugin; a
    module that imports twisted.internet.reactor first (txredisapi,
    prometheus_client.twisted, twisted.words.service and twisted.mail.smtp
    all do at module level) would install the default one under it.
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", _NO_REACTOR], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_no_test_module_imports_another_test_module() -> None:
    """Shared test code lives in tests/support and tests/conftest.py, not in test_*.py files."""
    offenders = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            offenders += [f"{path.name}: {n}" for n in names if n.startswith("tests.test_")]
    assert offenders == []
