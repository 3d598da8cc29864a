"""
A rediss:// bus: a real redis-server speaking TLS only (its certificate
self-signed for localhost), two socksvc daemons trusting it through
bus_ca_file; and a daemon that does not trust it (the system's store)
refuses the connection, says why, and keeps serving.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import daemon
from tests.support.netclients import UNREACHABLE, ChatClient
from tests.support.redis import RedisServer, installed, pick_port
from tests.support.tls import self_signed


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, int, Path]]:
    if not installed():
        pytest.skip("redis-server not installed")
    key, cert = self_signed(tmp_path)
    port = pick_port()
    tls = ["--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key)]
    server = RedisServer(tcp=False, extra=[*tls, "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"])
    try:
        server.start()
    except Exception as e:  # a redis-server built without TLS says so on its command line
        server.close()
        pytest.skip(f"redis-server cannot serve TLS here: {e}")
    try:
        yield server, port, cert
    finally:
        server.close()


def config(port: int, extra: str = "") -> str:
    return f'[services.chat]\nlisten = ["tcp:0:interface=127.0.0.1"]\nbus = "rediss://localhost:{port}"\n{extra}\n'


def test_two_nodes_over_tls(tls_redis: tuple[RedisServer, int, Path]) -> None:
    _server, port, cert = tls_redis
    trust = f'bus_ca_file = "{cert}"'
    with daemon(config(port, trust)) as a, daemon(config(port, trust)) as b:
        a.read(until="chat bus connected")
        b.read(until="chat bus connected")
        alice, bob = ChatClient(a.port("chat")), ChatClient(b.port("chat"))
        try:
            alice.register("alice")
            bob.register("bob")
            bob.send("over tls")
            alice.wait_for("<bob> over tls")
        finally:
            alice.close()
            bob.close()


def test_an_untrusted_certificate_is_refused_and_said(tls_redis: tuple[RedisServer, int, Path]) -> None:
    _server, port, _cert = tls_redis
    with daemon(config(port)) as d:  # the system's trust store: a self-signed certificate is not in it
        out = d.read(until="chat bus unreachable")
        assert "certificate" in out.lower() or "verify" in out.lower(), out[-2000:]
        c = ChatClient(d.port("chat"))
        try:
            c.send("carol")
            c.wait_for(UNREACHABLE)
        finally:
            c.close()
