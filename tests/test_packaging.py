"""
Packaging: a wheel installed into a fresh venv lists the socksvc plugin in
`twistd --help` and installs the `socksvc` script; the editable install in
.venv lists the plugin too, and so does the one a fresh clone's `./dev` makes
(setuptools' default editable mode, no deprecated `compat`); twisted/plugins
is a namespace with no __init__.py.

The wheel and fresh set-up tests are marked slow (about a minute each: a
build, a venv, an install from pip's cache); `pytest -m "not slow"` leaves
them out.
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


def copy_tree(dest: Path) -> Path:
    """The source tree as a fresh clone has it (no venv, caches or build output)."""
    shutil.copytree(
        ROOT,
        dest,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "dropin.cache"
        ),
    )
    return dest


def lists_socksvc(twistd: Path, cwd: Path) -> None:
    """`twistd --help` lists the socksvc plugin and `--help-reactors` the socksvc reactor."""
    out = run([twistd, "--help"], cwd=cwd)
    assert any(line.split()[:1] == ["socksvc"] for line in out.stdout.splitlines()), out.stdout
    reactors = run([twistd, "--help-reactors"], cwd=cwd)
    assert any(line.split()[:1] == ["socksvc"] for line in reactors.stdout.splitlines()), reactors.stdout


def test_dev_uses_no_deprecated_editable_mode() -> None:
    dev = (ROOT / "dev").read_text()
    assert "pip install" in dev
    assert "editable_mode" not in dev and "compat" not in dev


def test_the_editable_install_lists_the_plugin(tmp_path: Path) -> None:
    # From a directory that is not the source tree, so only the install can provide the plugin.
    lists_socksvc(VENV_BIN / "twistd", tmp_path)


@pytest.mark.slow
def test_a_fresh_dev_set_up_lists_the_plugin_without_a_deprecation(tmp_path: Path) -> None:
    """What the README's first command does in a fresh clone: ./dev makes .venv and installs socksvc editable."""
    src = copy_tree(tmp_path / "clone")
    out = run([src / "dev", "test", "--version"], cwd=src, timeout=600)
    said = out.stdout + out.stderr
    assert "pytest" in said  # ./dev got as far as running pytest
    assert "editable mode is transitional" not in said and "Deprecat" not in said, said
    site = list((src / ".venv" / "lib").glob("python3*/site-packages"))
    [pth] = [p for s in site for p in s.glob("__editable__.socksvc-*.pth")]
    assert pth.read_text().split() == [str(src.resolve())]  # the tree itself on sys.path, no import hook
    lists_socksvc(src / ".venv" / "bin" / "twistd", tmp_path)
    # An edit in the tree is live (it is an editable install), the plugin file included.
    where = run([src / ".venv" / "bin" / "python", "-c", "import socksvc; print(socksvc.__file__)"], cwd=tmp_path)
    assert where.stdout.strip() == str(src.resolve() / "socksvc" / "__init__.py")


@pytest.mark.slow
def test_a_wheel_in_a_fresh_venv_lists_the_plugin(tmp_path: Path) -> None:
    # Build from a copy, so concurrent runs never share setuptools' build/ directory.
    src = copy_tree(tmp_path / "src")
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

    lists_socksvc(bin_ / "twistd", tmp_path)
    sub = run([bin_ / "twistd", "socksvc", "--help"], cwd=tmp_path)
    assert "--config=" in sub.stdout
    script = run([bin_ / "socksvc", "--help"], cwd=tmp_path)
    assert "usage: socksvc" in script.stdout
