"""
`socksvc status [URL]`: the admin listener's figures in the terminal, from
the real daemon; auth, errors and exit codes; attacker text made visible.
"""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path
from typing import Any

import pytest

from socksvc.client import main as client_main
from socksvc.client import status
from socksvc.client.common import EXIT_CONNECT, EXIT_OK, EXIT_PROTOCOL, EXIT_USAGE
from socksvc.util.passwords import hash_password, parse_password_file, verify_password
from tests.support import daemon

CONFIG = """
[daemon]
http = ["tcp:0:interface=127.0.0.1"]
{extra}
[services.echo]
listen = ["tcp:0:interface=127.0.0.1", "udp:0:interface=127.0.0.1"]
max_connections = 5
[services.chat]
listen = ["tcp:0:interface=127.0.0.1"]
"""


def run(argv: list[str], capsys: Any) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        client_main.main(argv)
    out, err = capsys.readouterr()
    assert isinstance(exc.value.code, int)
    return exc.value.code, out, err


@pytest.mark.parametrize(
    ("typed", "url"),
    [
        (None, "http://127.0.0.1:9107/status.json"),
        ("localhost", "http://localhost:9107/status.json"),
        ("127.0.0.1:8000", "http://127.0.0.1:8000/status.json"),
        ("[::1]:8000", "http://[::1]:8000/status.json"),
        ("http://h.example/socksvc/", "http://h.example/socksvc/status.json"),
        ("https://h.example:8443", "https://h.example:8443/status.json"),
        ("http://h.example:1/x/status.json", "http://h.example:1/x/status.json"),
    ],
)
def test_the_url(typed: str | None, url: str) -> None:
    assert status.status_url(typed) == url


@pytest.mark.parametrize("typed", ["ftp://x/", "http://", "http://h:99999/"])
def test_bad_urls_are_usage_errors(typed: str, capsys: Any) -> None:
    code, out, err = run(["status", typed], capsys)
    assert code == EXIT_USAGE and out == ""
    assert err.startswith("socksvc: ") and err.count("\n") == 1


def test_status_of_a_running_daemon(capsys: Any) -> None:
    with daemon(CONFIG.format(extra="")) as d:
        port = d.port("admin/http")
        with socket.create_connection(("127.0.0.1", d.port("chat")), timeout=10) as s:
            s.sendall(b"alice\n/topic \x1b[2J\x1b]0;pwned\x07 hello\n")
            got = b""
            while b"set the topic" not in got:
                got += s.recv(4096)
            code, out, err = run(["status", f"127.0.0.1:{port}"], capsys)
        assert (code, err) == (EXIT_OK, "")
        lines = out.splitlines()
        assert lines[0].startswith(f"socksvc 0.1.0 at http://127.0.0.1:{port}/status.json: pid {d.proc.pid}, up ")
        table = {line.split()[0]: line.split()[1:] for line in lines if line.startswith(("echo ", "chat "))}
        assert table["echo"][:2] == ["0", "5"]
        assert table["chat"][:1] == ["1"]
        assert "  chat: 1 members, 1 rooms, 0 lines" in out
        assert "\x1b" not in out and "\x07" not in out
        assert "    lobby (1): ^[[2J^[]0;pwned^G hello" in out
        code, out, _ = run(["status", "--json", f"http://127.0.0.1:{port}/"], capsys)
        assert code == EXIT_OK
        assert [s["name"] for s in json.loads(out)["services"]] == ["echo", "chat"]


def test_auth(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    passwd = tmp_path / "admin.passwd"
    passwd.write_text(f"ops:{hash_password('pw', log2n=4)}\n")
    with daemon(CONFIG.format(extra=f'http_auth = "{passwd}"')) as d:
        url = f"127.0.0.1:{d.port('admin/http')}"
        code, out, err = run(["status", url], capsys)
        assert code == EXIT_PROTOCOL and out == ""
        assert "needs a user name and password (--user NAME" in err
        monkeypatch.setenv(status.PASSWORD_ENV, "pw")
        code, out, err = run(["status", "--user", "ops", url], capsys)
        assert (code, err) == (EXIT_OK, "")
        assert "echo" in out
        monkeypatch.setenv(status.PASSWORD_ENV, "wrong")
        assert run(["status", "-u", "ops", url], capsys)[0] == EXIT_PROTOCOL
        d.signal(signal.SIGTERM)


def test_connection_refused(capsys: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        code, out, err = run(["status", f"127.0.0.1:{port}"], capsys)
    assert code == EXIT_CONNECT and out == ""
    assert err == f"socksvc: http://127.0.0.1:{port}/status.json: Connection refused\n"


def test_render_makes_every_name_visible() -> None:
    evil = "\x1b[31mred\u202e"
    figures = {
        "version": evil,
        "pid": 1,
        "uptime": 3700,
        "started": 0,
        "config": evil,
        "reload": {"count": 1, "last_time": 10, "last_ok": False, "last_error": evil},
        "process": {"rss_bytes": 2048, "cpu_seconds": 1.5, "open_fds": 9, "max_fds": 1024},
        "services": [
            {
                "name": evil,
                "listeners": [evil],
                "connections": 1,
                "limit": 0,
                "peak": 1,
                "accepted": 1,
                "refused": {evil: 1},
                "bytes_in": 1,
                "bytes_out": 2,
                "chat": {
                    "members": 1,
                    "rooms": 1,
                    "lines": 0,
                    "dropped": {},
                    "room_list": [{"name": evil, "members": 1, "topic": evil}],
                },
            }
        ],
    }
    text = "\n".join(status.render(figures, "http://x/status.json"))
    assert "\x1b" not in text and "\u202e" not in text
    assert "  bus:" not in text  # a chat without a bus
    bus = {"up": 0, "nodes": 3, "queued": 5, "lines_held": 7, "lines_lost": 2, "entries_dropped": 1, "collisions": 0}
    figures["services"][0]["chat"]["bus"] = bus  # type: ignore[index]
    text = "\n".join(status.render(figures, "http://x/status.json"))
    assert "  bus: DOWN, 3 nodes, 5 queued, 7 held, 2 lost, 1 bad entries, 0 collisions" in text
    assert "^[[31mred\\u202e" in text
    assert "FAILED: ^[[31mred" in text
    assert "up 1h 1m 40s" in text


def test_not_the_admin_listener(capsys: Any) -> None:
    """Something else on the port (echo answers with the request; chat with its welcome): one line, exit 6."""
    with daemon(CONFIG.format(extra="")) as d:
        for service in ("echo", "chat"):
            code, out, err = run(["status", "-t", "3", f"127.0.0.1:{d.port(service)}"], capsys)
            assert code == EXIT_PROTOCOL, (service, err)
            assert out == "" and err.count("\n") == 1
            assert "not an HTTP reply" in err or "not socksvc's status JSON" in err


def test_passwd_prints_a_line_the_daemon_reads(capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(status.PASSWORD_ENV, "s3cret")
    code, out, err = run(["passwd", "ops"], capsys)
    assert (code, err) == (EXIT_OK, "")
    users = parse_password_file(out)
    assert list(users) == ["ops"]
    assert verify_password("s3cret", users["ops"])
    assert run(["passwd", "a:b"], capsys)[0] == EXIT_USAGE
    monkeypatch.delenv(status.PASSWORD_ENV)
    code, _, err = run(["passwd", "ops"], capsys)  # no terminal under pytest
    assert code == EXIT_USAGE and status.PASSWORD_ENV in err
