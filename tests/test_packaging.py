"""
Packaging: a wheel installed into a fresh venv lists the socksvc plugin in
`twistd --help` and installs the `socksvc` script; the editable install in
.venv lists the plugin too; twisted/plugins is a namespace with no __init__.py.

The wheel test is marked slow (about a minute: a build, a venv, an install
from pip's cache); `pytest -m "not slow"` leaves it out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def clean_env() -> dict[str, str]:
    """The environment without anything that would put the source tree on sys.path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def run(args: list[str | Path], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=clean_env()
    )
    assert out.returncode == 0, f"{args} failed:\n{out.stdout}\n{out.stderr}"
    return out


def test_no_init_in_twisted_plugins() -> None:
    assert (ROOT / "twisted" / "plugins" / "socksvc_plugin.py").exists()
    assert (ROOT / "twisted" / "plugins" / "socksvc_reactor.py").exists()
    assert not (ROOT / "twisted" / "plugins" / "__init__.py").exists()
    assert not (ROOT / "twisted" / "__init__.py").exists()


def test_the_editable_install_lists_the_plugin(tmp_path: Path) -> None:
    # From a directory that is not the source tree, so only the install can provide the plugin.
    out = run([VENV_BIN / "twistd", "--help"], cwd=tmp_path)
    assert any(line.split()[:1] == ["socksvc"] for line in out.stdout.splitlines()), out.stdout
    reactors = run([VENV_BIN / "twistd", "--help-reactors"], cwd=tmp_path)
    assert any(line.split()[:1] == ["socksvc"] for line in reactors.stdout.splitlines()), reactors.stdout


@pytest.mark.slow
def test_a_wheel_in_a_fresh_venv_lists_the_plugin(tmp_path: Path) -> None:
    # Build from a copy, so concurrent runs never share setuptools' build/ directory.
    src = tmp_path / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "dropin.cache"
        ),
    )
    wheels = tmp_path / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", ".", "-w", wheels], cwd=src, timeout=300)
    [wheel] = list(wheels.glob("socksvc-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "twisted/plugins/socksvc_plugin.py" in names
    assert "twisted/plugins/socksvc_reactor.py" in names
    assert "socksvc/tap.py" in names
    assert "twisted/plugins/__init__.py" not in names
    assert "twisted/__init__.py" not in names

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv], cwd=tmp_path, timeout=300)
    bin_ = venv / "bin"
    run([bin_ / "python", "-m", "pip", "install", "-q", wheel], cwd=tmp_path, timeout=300)

    # The package comes from the venv, not the source tree.
    where = run([bin_ / "python", "-c", "import socksvc.tap; print(socksvc.tap.__file__)"], cwd=tmp_path)
    assert where.stdout.strip().startswith(str(venv))

    help_ = run([bin_ / "twistd", "--help"], cwd=tmp_path)
    assert any(line.split()[:1] == ["socksvc"] for line in help_.stdout.splitlines()), help_.stdout
    sub = run([bin_ / "twistd", "socksvc", "--help"], cwd=tmp_path)
    assert "--config=" in sub.stdout
    reactors = run([bin_ / "twistd", "--help-reactors"], cwd=tmp_path)
    assert any(line.split()[:1] == ["socksvc"] for line in reactors.stdout.splitlines()), reactors.stdout
    script = run([bin_ / "socksvc", "--help"], cwd=tmp_path)
    assert "usage: socksvc" in script.stdout
