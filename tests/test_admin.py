"""
The admin HTTP listener: the real daemon (`twistd -n socksvc`) on port 0,
asked with urllib: routes, headers (CSP, no-store, nosniff), read-only, the
policy layer in front of it, HTTP basic auth from a password file (and its
reload); the password file format and the auth checker's limits, with a
fake clock.
"""

from __future__ import annotations

import base64
import json
import signal
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from socksvc.config.schema import PasswordFile
from socksvc.daemon import auth
from socksvc.util.passwords import check_hash, hash_password, parse_password_file, verify_password
from tests.support import daemon
from tests.support.tls import self_signed

BASE = """
[daemon]
http = ["tcp:0:interface=127.0.0.1"]
{extra}
[services.echo]
listen = ["tcp:0:interface=127.0.0.1", "udp:0:interface=127.0.0.1"]
[services.chat]
listen = ["tcp:0:interface=127.0.0.1"]
"""


def get(port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, Any, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def fast_hash(password: str) -> str:
    return hash_password(password, log2n=4)  # cheap for tests; the default is 2**14


# -- over HTTP -----------------------------------------------------------------


def test_routes_headers_and_read_only() -> None:
    with daemon(BASE.format(extra="")) as d:
        port = d.port("admin/http")
        status, headers, body = get(port, "/")
        assert status == 200
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        assert b'<script src="status.js" defer></script>' in body
        csp = headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "require-trusted-types-for 'script'" in csp and "unsafe-inline" not in csp
        assert headers["Cache-Control"] == "no-store"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Server"] == "socksvc"
        for path, kind in [
            ("/status.js", "text/javascript"),
            ("/status.css", "text/css"),
            ("/favicon.svg", "image/svg+xml"),
            ("/status.json", "application/json"),
        ]:
            status, headers, _ = get(port, path)
            assert (status, headers["Content-Type"].split(";")[0]) == (200, kind), path
            assert headers["Cache-Control"] == "no-store"
        status, headers, body = get(port, "/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert b'socksvc_connections{service="echo"} 0.0' in body
        status, headers, body = get(port, "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
        assert headers["Content-Type"].startswith("application/openmetrics-text")
        assert body.endswith(b"# EOF\n")
        assert get(port, "/nothing")[0] == 404
        for method in ("POST", "PUT", "DELETE"):  # 405 Not Allowed, or 501 for methods twisted.web does not know
            for path in ("/metrics", "/", "/status.json"):
                assert get(port, path, method=method)[0] in (405, 501), (method, path)
        assert get(port, "/metrics", method="POST")[0] == 405
        status, headers, body = get(port, "/metrics", method="HEAD")
        assert status == 200 and body == b""


def test_status_json_counts_a_client() -> None:
    with daemon(BASE.format(extra="")) as d:
        port = d.port("admin/http")
        before = json.loads(get(port, "/status.json")[2])
        assert [s["name"] for s in before["services"]] == ["echo", "chat"]
        echo = before["services"][0]
        assert echo["connections"] == 0 and echo["listeners"][0].startswith("tcp 127.0.0.1:")
        assert before["admin"]["name"] == "admin/http"
        assert before["config"] == d.config_path
        assert before["reload"]["last_ok"] is True
        assert before["process"]["open_fds"] > 0
        with socket.create_connection(("127.0.0.1", d.port("chat")), timeout=10) as s:
            s.sendall(b"alice\n")
            while b"now in" not in s.recv(4096):
                pass
            after = json.loads(get(port, "/status.json")[2])
        chat = after["services"][1]
        assert chat["connections"] == 1
        assert chat["chat"]["members"] == 1
        assert chat["chat"]["names"] == ["alice"]
        assert chat["chat"]["room_list"] == [{"name": "lobby", "members": 1, "topic": ""}]


def test_the_policy_layer_guards_the_admin_listener() -> None:
    with daemon(BASE.format(extra='http_deny = ["127.0.0.0/8"]')) as d:
        status, _headers, body = get(d.port("admin/http"), "/metrics")
        assert status == 403
        assert body == b"socksvc: access denied\r\n"
        assert "admin/http: refused 127.0.0.1" in d.read(until="access denied")
    with daemon(BASE.format(extra="http_max_connections = 1")) as d:
        port = d.port("admin/http")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as held:
            held.sendall(b"GET /status.json HTTP/1.1\r\nHost: x\r\n\r\n")
            assert held.recv(100).startswith(b"HTTP/1.1 200")  # admitted, kept alive
            status, _, body = get(port, "/metrics")
            assert status == 503
            assert body == b"socksvc: too many connections, try again later\r\n"


def test_basic_auth_from_a_password_file_and_its_reload(tmp_path: Path) -> None:
    passwd = tmp_path / "admin.passwd"
    passwd.write_text(f"# admins\nops:{fast_hash('s3cret')}\n")
    with daemon(BASE.format(extra=f'http_auth = "{passwd}"')) as d:
        port = d.port("admin/http")
        status, headers, body = get(port, "/metrics")
        assert status == 401
        assert headers["WWW-Authenticate"] == 'Basic realm="socksvc", charset="UTF-8"'
        assert b"socksvc_" not in body
        assert get(port, "/status.json", basic("ops", "wrong"))[0] == 401
        assert get(port, "/status.json", basic("nobody", "s3cret"))[0] == 401
        assert get(port, "/", basic("ops", "s3cret"))[0] == 200
        assert get(port, "/metrics", basic("ops", "s3cret"))[0] == 200
        # A reload reads the file again: the old password stops working.
        passwd.write_text(f"ops:{fast_hash('n3w')}\n")
        d.signal(signal.SIGHUP)
        for _ in range(100):  # the reload is done once the new password works (time.sleep-free)
            if get(port, "/metrics", basic("ops", "n3w"))[0] == 200:
                break
        assert get(port, "/metrics", basic("ops", "n3w"))[0] == 200
        assert get(port, "/metrics", basic("ops", "s3cret"))[0] in (401, 429)


def test_over_tls(tmp_path: Path) -> None:
    """An ssl: admin listener: the counting transport in front of TLS, and HTTPS for Prometheus."""
    key_path, cert_path = self_signed(tmp_path)
    spec = f"ssl:0:interface=127.0.0.1:privateKey={key_path}:certKey={cert_path}"
    with daemon(BASE.format(extra="").replace('["tcp:0:interface=127.0.0.1"]', f'["{spec}"]', 1)) as d:
        context = ssl.create_default_context(cafile=str(cert_path))
        url = f"https://localhost:{d.port('admin/http')}/status.json"
        with urllib.request.urlopen(url, timeout=10, context=context) as r:
            assert r.headers["Content-Security-Policy"].startswith("default-src 'none'")
            figures = json.loads(r.read())
        assert figures["admin"]["accepted"] == 1
        assert figures["admin"]["bytes_in"] > 0


def test_a_bad_password_file_stops_start_up_with_one_line(tmp_path: Path) -> None:
    passwd = tmp_path / "admin.passwd"
    passwd.write_text("ops:plaintext\n")
    with daemon(BASE.format(extra=f'http_auth = "{passwd}"'), ready=False) as d:
        assert d.proc.wait(30) == 1
        out = d.read()
    assert f'daemon.http_auth = "{passwd}": password file: line 1: not an scrypt hash' in out
    assert "Traceback" not in out


# -- the password file and the checker -----------------------------------------


def test_hash_and_verify() -> None:
    hashed = fast_hash("pä55 word")
    check_hash(hashed)
    assert hashed.startswith("$scrypt$ln=4,r=8,p=1$")
    assert verify_password("pä55 word", hashed)
    assert not verify_password("pä55 word ", hashed)
    assert not verify_password("x", "not a hash")
    assert hash_password("x", log2n=4) != hash_password("x", log2n=4)  # salted


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "no users"),
        ("# only a comment\n", "no users"),
        ("ops\n", "line 1: expected NAME:HASH"),
        (":$scrypt$ln=4,r=8,p=1$AAAA$AAAAAAAAAAAAAAAAAAAAAA\n", "line 1: expected NAME:HASH"),
        (
            "ops:$scrypt$ln=4,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA\nops:$scrypt$ln=4,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA\n",
            "given twice",
        ),
        ("ops:$scrypt$ln=40,r=8,p=1$AAAA$AAAAAAAAAAAAAAAAAAAAAA\n", "out of range"),
        ("ops:$scrypt$ln=20,r=32,p=16$AAAA$AAAAAAAAAAAAAAAAAAAAAA\n", "over 64 MiB"),
        ("ops:{SHA}abc\n", "not an scrypt hash"),
    ],
)
def test_bad_password_files(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace("$", r"\$")):
        parse_password_file(text)


def _checker(clock: Clock, users: dict[str, str]) -> auth.BasicAuth:
    return auth.BasicAuth(PasswordFile("/x", tuple(users.items())), clock)


def _header(user: str, password: str) -> bytes:
    return basic(user, password)["Authorization"].encode()


def test_a_good_credential_is_remembered_and_a_reload_forgets_it() -> None:
    clock = Clock()
    checker = _checker(clock, {"ops": fast_hash("pw")})
    assert checker.check(_header("ops", "pw"), "127.0.0.1") == auth.OK
    for _ in range(50):  # far over every rate limit: no scrypt check needed
        assert checker.check(_header("ops", "pw"), "127.0.0.1") == auth.OK
    assert checker.checks == 1
    clock.advance(auth.REMEMBER + 1)
    assert checker.check(_header("ops", "pw"), "127.0.0.1") == auth.OK
    assert checker.checks == 2
    checker.reconfigure(PasswordFile("/x", (("ops", fast_hash("other")),)))
    assert checker.check(_header("ops", "pw"), "127.0.0.1") == auth.DENIED


def test_password_checks_are_rate_limited_per_source_and_overall() -> None:
    clock = Clock()
    checker = _checker(clock, {"ops": fast_hash("pw")})
    verdicts = [checker.check(_header("ops", f"guess{n}"), "192.0.2.1") for n in range(10)]
    assert verdicts == [auth.DENIED] * auth.CHECKS_PER_SOURCE_BURST + [auth.LIMITED] * 5
    assert checker.checks == auth.CHECKS_PER_SOURCE_BURST
    others = [checker.check(_header("ops", "guess"), f"198.51.100.{n}") for n in range(20)]
    assert others.count(auth.DENIED) == auth.CHECKS_OVERALL_BURST - auth.CHECKS_PER_SOURCE_BURST
    clock.advance(1)
    assert checker.check(_header("ops", "pw"), "203.0.113.9") == auth.OK


@pytest.mark.parametrize(
    "header",
    [None, b"", b"Bearer abc", b"Basic !!!", b"Basic " + base64.b64encode(b"no-colon"), b"Basic " + b"A" * 2000],
)
def test_malformed_credentials_are_denied_without_a_check(header: bytes | None) -> None:
    checker = _checker(Clock(), {"ops": fast_hash("pw")})
    assert checker.check(header, "127.0.0.1") == auth.DENIED
    assert checker.checks == 0
