"""
Paths in a config start at the config file's directory (the daemon's working
directory is / under systemd); keys that exclude each other.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from socksvc.config.loader import ConfigError
from socksvc.services.catalogue import load, loads
from tests.support import TWISTD


def _etc(tmp_path: Path, body: str) -> Path:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "quotes.txt").write_text("a quote\n")
    (etc / "run").mkdir()
    config = etc / "socksvc.toml"
    config.write_text(body)
    return config


def test_relative_paths_start_at_the_config_files_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _etc(
        tmp_path,
        '[services.greeting]\nlisten = ["tcp:0", "unix:run/greeting.sock"]\nquotes = "quotes.txt"\n',
    )
    monkeypatch.chdir("/")
    greeting = load(str(config)).service("greeting")
    assert greeting.settings.quotes.path == str(tmp_path / "etc" / "quotes.txt")
    assert greeting.settings.quotes.lines == ("a quote",)
    assert greeting.listen[1].path == str(tmp_path / "etc" / "run" / "greeting.sock")
    # A config given by a relative path too.
    monkeypatch.chdir(tmp_path)
    assert load("etc/socksvc.toml").service("greeting").settings.quotes.path == str(tmp_path / "etc" / "quotes.txt")


def test_text_without_a_file_takes_paths_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "q.txt").write_text("q\n")
    monkeypatch.chdir(tmp_path)
    config = loads('[services.greeting]\nlisten = ["tcp:0"]\nquotes = "q.txt"\n')
    assert config.service("greeting").settings.quotes.path == str(tmp_path / "q.txt")


def test_check_resolves_relative_paths_wherever_it_runs(tmp_path: Path) -> None:
    config = _etc(tmp_path, '[services.greeting]\nlisten = ["tcp:0"]\nquotes = "quotes.txt"\n')
    out = subprocess.run(
        [TWISTD, "--nodaemon", "--pidfile=", "socksvc", "--config", str(config), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"socksvc: {config}: OK, 1 service, 1 listener\n"


def test_message_and_quotes_together_are_an_error(tmp_path: Path) -> None:
    config = _etc(tmp_path, '[services.greeting]\nlisten = ["tcp:0"]\nmessage = "hi"\nquotes = "quotes.txt"\n')
    with pytest.raises(ConfigError) as e:
        load(str(config))
    assert str(e.value) == f'{config}: services.greeting.quotes = "quotes.txt": set message or quotes, not both'


def test_a_missing_relative_quotes_file_names_the_resolved_path(tmp_path: Path) -> None:
    config = _etc(tmp_path, '[services.greeting]\nlisten = ["tcp:0"]\nquotes = "nope.txt"\n')
    with pytest.raises(ConfigError) as e:
        load(str(config))
    line = str(e.value)
    assert line.endswith(": cannot read quotes file: No such file or directory")
    shown = line.split(" = ", 1)[1].rsplit(": cannot read", 1)[0]
    resolved = os.path.join(tmp_path, "etc", "nope.txt")
    assert shown == f'"{resolved}"' or (shown.endswith("...") and resolved.startswith(shown[1:-3]))
