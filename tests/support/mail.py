"""
Helpers for the mail tests: a certificate, a users file, an SMTP or POP3
session on a string transport (with STARTTLS recorded), and a real daemon's
mail ports.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.interfaces import ITLSTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from socksvc.core.service import ServiceContext
from socksvc.services.catalogue import types
from socksvc.util.passwords import hash_password
from tests.support import context

TUTORIAL_MESSAGE = """From: From Person <from@fromdomain.com>
To: To Person <to@todomain.com>
Subject: SMTP e-mail test

This is a test e-mail message.
"""
"""The message of the smtplib tutorial, as it is written there."""


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A key and a certificate for localhost (and 127.0.0.1)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = tmp / "key.pem", tmp / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


_HASHES: dict[str, str] = {}


def users_file(tmp: Path, users: dict[str, tuple[str, str]]) -> Path:
    """A users file: name -> (password, mailbox address or "")."""
    lines = []
    for name, (password, mailbox) in users.items():
        if password not in _HASHES:  # scrypt takes a while: one hash per password per test run
            _HASHES[password] = hash_password(password, ln=10)
        lines.append(f"{name}:{_HASHES[password]}" + (f":{mailbox}" if mailbox else ""))
    path = tmp / "users"
    path.write_text("\n".join(lines) + "\n")
    return path


@implementer(ITLSTransport)
class TLSStringTransport(StringTransport):
    """A string transport that records startTLS (and says it can)."""

    tls: Any = None
    written_before_tls = b""

    def startTLS(self, contextFactory: Any, normal: bool = True) -> None:
        self.tls = contextFactory
        self.written_before_tls = self.value()


class Session:
    """An SMTP or POP3 protocol over a L{TLSStringTransport}; C{send} returns the reply lines."""

    def __init__(self, ctx: ServiceContext, host: str = "127.0.0.1", peer: str = "127.0.0.1") -> None:
        self.ctx = ctx
        stype = types()[ctx.type]
        assert stype.stream is not None
        host_addr: Any = UNIXAddress("/tmp/x.sock") if host == "unix" else IPv4Address("TCP", host, 25)
        peer_addr = IPv4Address("TCP", peer, 40000)
        self.proto: Any = stype.stream(ctx).buildProtocol(peer_addr)
        self.transport = TLSStringTransport(hostAddress=host_addr, peerAddress=peer_addr)
        self.proto.makeConnection(self.transport)
        self.seen = 0

    def output(self) -> bytes:
        data = self.transport.value()[self.seen :]
        self.seen = len(self.transport.value())
        return data

    def lines(self) -> list[str]:
        return [line for line in self.output().decode("utf-8", "replace").split("\r\n") if line]

    def send(self, data: bytes | str) -> list[str]:
        self.proto.dataReceived(data.encode() if isinstance(data, str) else data)
        self.pump()
        return self.lines()

    def pump(self) -> None:
        """Drive a pull producer (POP3's RETR) as a real transport would."""
        for _ in range(100000):
            producer = self.transport.producer
            if producer is None or self.transport.streaming:
                return
            producer.resumeProducing()

    def codes(self, data: bytes | str) -> list[int]:
        return [int(line[:3]) for line in self.send(data) if line[3:4] == " "]

    @property
    def clock(self) -> Clock:
        clock: Clock = self.ctx.reactor
        return clock

    def close(self) -> None:
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        self.proto.connectionLost(Failure(ConnectionDone()))


def smtp_context(tmp: Path, body: str = "", name: str = "smtp") -> ServiceContext:
    return context("smtp", f'maildir = "{tmp / "mail"}"\n{body}', name=name)


def pop3_context(tmp: Path, body: str = "") -> ServiceContext:
    return context("pop3", f'maildir = "{tmp / "mail"}"\n{body}')


def new_files(root: Path) -> list[Path]:
    """The files in a Maildir's new/ (sorted)."""
    new = root / "new"
    return sorted(new.iterdir()) if new.is_dir() else []


def tmp_files(root: Path) -> list[str]:
    found = []
    for dirpath, _dirs, files in os.walk(root):
        if os.path.basename(dirpath) == "tmp":
            found += files
    return found


def ehlo(session: Session, name: str = "client.example") -> list[str]:
    return session.send(f"EHLO {name}\r\n")


class SmtpClient:
    """A plain blocking SMTP client on a socket, for saying what real clients would not."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 20.0) -> None:
        import socket

        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.greeting = self.reply()

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self) -> str:
        """One whole reply (multi-line replies joined by newlines)."""
        lines = [self.line()]
        while lines[-1][3:4] == b"-":
            lines.append(self.line())
        return "\n".join(x.decode("utf-8", "replace") for x in lines)

    def say(self, data: bytes | str, replies: int = 1) -> list[str]:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)
        return [self.reply() for _ in range(replies)]

    def code(self, data: bytes | str) -> int:
        return int(self.say(data)[0][:3])

    def close(self) -> None:
        self.sock.close()


def daemon_port(d: Any, service: str) -> int:
    port: int = d.port(service)
    return port
