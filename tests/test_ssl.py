"""An ssl: listen spec, end to end: the daemon serves echo over TLS."""

from __future__ import annotations

import contextlib
import datetime
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from socksvc.config.loader import ConfigError
from socksvc.services.catalogue import loads
from tests.support import daemon, recv_exactly


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = tmp / "key.pem", tmp / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@contextlib.contextmanager
def _tls_service(tmp_path: Path, service: str, extra: str = "") -> Iterator[ssl.SSLSocket]:
    """The daemon serving C{service} on an ssl: listener, and a TLS client connected to it."""
    key, cert = _self_signed(tmp_path)
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
