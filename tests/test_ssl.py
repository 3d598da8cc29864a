"""An ssl: listen spec, end to end: the daemon serves echo over TLS."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from socksvc.config import loader
from socksvc.config.loader import ConfigError
from socksvc.services.catalogue import loads, types
from tests.support import daemon, recv_exactly
from tests.support.tls import self_signed


@contextlib.contextmanager
def _tls_service(tmp_path: Path, service: str, extra: str = "") -> Iterator[ssl.SSLSocket]:
    """The daemon serving C{service} on an ssl: listener, and a TLS client connected to it."""
    key, cert = self_signed(tmp_path)
    config = f'[services.{service}]\nlisten = ["ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"]\n{extra}'
    with daemon(config) as d:
        ctx = ssl.create_default_context(cafile=str(cert))
        with (
            socket.create_connection(("127.0.0.1", d.port(service)), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost") as s,
        ):
            yield s


def test_echo_over_tls(tmp_path: Path) -> None:
    with _tls_service(tmp_path, "echo") as s:
        s.sendall(b"over tls\x00\xff")
        assert recv_exactly(s, 10) == b"over tls\x00\xff"


def test_greeting_over_tls(tmp_path: Path) -> None:
    # A plain TCP greeting never gets a transport (QuickPort); over TLS it
    # goes the usual way, handshake and all.
    with _tls_service(tmp_path, "greeting", 'message = "hello over tls"\n') as s:
        got = b""
        while len(got) < 16 and (chunk := s.recv(100)):
            got += chunk
        assert got == b"hello over tls\r\n"


def test_a_missing_key_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    text = f'[services.echo]\nlisten = ["ssl:0:privateKey={missing}"]\n'
    try:
        loads(text, "t.toml")
    except ConfigError as e:
        line = str(e)
    else:
        raise AssertionError("no error")
    assert line.startswith('t.toml: services.echo.listen[0] = "ssl:0:privateKey=')
    assert "\n" not in line


# -- the files an ssl: spec names go through the guarded reader ----------------


def _load_error(text: str, base_dir: str | None = None) -> str:
    with pytest.raises(ConfigError) as e:
        loader.loads(text, "t.toml", types(), base_dir)
    line = str(e.value)
    assert "\n" not in line
    return line


def test_a_fifo_key_is_refused_at_once(tmp_path: Path) -> None:
    """Twisted's own parser would block opening it (and --check with it, and a reload)."""
    fifo = tmp_path / "key.fifo"
    os.mkfifo(fifo)
    line = _load_error(f'[services.echo]\nlisten = ["ssl:0:privateKey={fifo}"]\n')
    assert line.endswith(f"cannot read key file {fifo}: not a regular file")


def test_dev_zero_as_a_key_is_refused(tmp_path: Path) -> None:
    """Twisted's own parser would read it until memory ran out."""
    key, _cert = self_signed(tmp_path)
    line = _load_error(f'[services.echo]\nlisten = ["ssl:0:privateKey={key}:certKey=/dev/zero"]\n')
    assert line.endswith("cannot read certificate file /dev/zero: not a regular file")


def test_a_huge_key_file_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.pem"
    with open(big, "wb") as f:
        f.truncate((1 << 20) + 1)
    line = _load_error(f'[services.echo]\nlisten = ["ssl:0:privateKey={big}"]\n')
    assert line.endswith(f"key file {big} is over 1 MiB")


def test_a_key_that_does_not_match_the_certificate_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    key_a, _ = self_signed(tmp_path / "a")
    _, cert_b = self_signed(tmp_path / "b")
    line = _load_error(f'[services.echo]\nlisten = ["ssl:0:privateKey={key_a}:certKey={cert_b}"]\n')
    assert f"cannot use key {key_a} with certificate {cert_b}: " in line


def test_garbage_pem_is_a_config_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key\n")
    line = _load_error(f'[services.echo]\nlisten = ["ssl:0:privateKey={junk}"]\n')
    assert f"cannot use key {junk} with certificate {junk}: " in line


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (":dhParameters=dh.pem", "dhParameters is not supported"),
        (":sslmethod=Context", "sslmethod 'Context' is not one of TLS_METHOD"),
        (":extraCertChain=empty.pem", "certificate chain file"),
    ],
)
def test_ssl_options_are_checked(tmp_path: Path, extra: str, reason: str) -> None:
    key, cert = self_signed(tmp_path)
    (tmp_path / "empty.pem").write_text("")
    line = _load_error(f'[services.echo]\nlisten = ["ssl:0:privateKey={key}:certKey={cert}{extra}"]\n', str(tmp_path))
    assert reason in line


def test_an_ssl_spec_needs_a_key() -> None:
    line = _load_error('[services.echo]\nlisten = ["ssl:0"]\n')
    assert line.endswith("ssl listen spec needs privateKey=FILE (and certKey=FILE, unless the key file holds both)")


def test_relative_key_paths_start_at_the_config_files_directory(tmp_path: Path) -> None:
    """The daemon's working directory (/ under systemd) does not matter."""
    etc = tmp_path / "etc"
    etc.mkdir()
    self_signed(etc)
    config = etc / "socksvc.toml"
    config.write_text('[services.echo]\nlisten = ["ssl:0:privateKey=key.pem:certKey=cert.pem"]\n')
    spec = loader.load(str(config), types()).service("echo").listen[0]
    assert spec.tls is not None
    assert (spec.tls.key_path, spec.tls.cert_path) == (str(etc / "key.pem"), str(etc / "cert.pem"))
    assert spec.tls.key == (etc / "key.pem").read_bytes()
    assert "BEGIN" not in repr(spec)  # the key's bytes never reach a log line


def test_a_chain_file_is_served(tmp_path: Path) -> None:
    key, cert = self_signed(tmp_path)
    spec = (
        loader.loads(
            f'[services.echo]\nlisten = ["ssl:0:privateKey={key}:certKey={cert}:extraCertChain={cert}"]\n',
            "t.toml",
            types(),
        )
        .services[0]
        .listen[0]
    )
    assert spec.tls is not None and spec.tls.chain == (cert.read_bytes(),)
