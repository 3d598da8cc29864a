"""
STARTTLS (SMTP) and STLS (POP3): the certificate and key files.

Both are read through the guarded reader when the config loads and checked
there (a PEM certificate, a key that matches it), so C{--check} catches a
wrong file and a reload picks up a renewed certificate. The settings hold
the bytes; the state builds Twisted's C{CertificateOptions} from them.
"""

from __future__ import annotations

import re
from typing import Any

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from twisted.internet import ssl

from socksvc.util.files import read_setting_file

MAX_PEM_FILE = 1 << 20
_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


@attrs.frozen
class PemFile:
    """A PEM file as read when the config loaded."""

    path: str
    data: bytes = attrs.field(repr=False)


def parse_pem(value: Any) -> PemFile | None:
    """A certificate or key file path ("" for none), read now."""
    if not isinstance(value, str):
        raise ValueError("expected a file path string")
    if not value:
        return None
    data = read_setting_file(value, MAX_PEM_FILE, "PEM file")
    if b"-----BEGIN " not in data:
        raise ValueError("not a PEM file")
    return PemFile(value, data)


class TLSConfigError(ValueError):
    """A certificate problem; C{key} names the setting (the config loader reports it)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.key = key


def tls_options(certificate: PemFile | None, key: PemFile | None) -> ssl.CertificateOptions | None:
    """
    Server TLS options for a certificate file (leaf first, then any chain)
    and a key file (None: the key is in the certificate file), or None
    without a certificate. TLSConfigError says what is wrong.
    """
    if certificate is None:
        if key is not None:
            raise TLSConfigError("tls_key", "a key without tls_certificate")
        return None
    blocks = _CERT.findall(certificate.data)
    if not blocks:
        raise TLSConfigError("tls_certificate", "no PEM certificate in the file")
    try:
        chain = [x509.load_pem_x509_certificate(b) for b in blocks]
    except ValueError:
        raise TLSConfigError("tls_certificate", "not a valid PEM certificate") from None
    try:
        pkey = serialization.load_pem_private_key((key or certificate).data, password=None)
    except (ValueError, TypeError):
        where = "tls_key" if key is not None else "tls_certificate"
        raise TLSConfigError(where, "no valid PEM private key (unencrypted) in the file") from None
    options = ssl.CertificateOptions(
        privateKey=pkey,  # type: ignore[arg-type]
        certificate=chain[0],  # type: ignore[arg-type]
        extraCertChain=chain[1:],  # type: ignore[arg-type]
    )
    try:
        options.getContext()
    except SSL.Error:
        raise TLSConfigError("tls_key", "the key does not match the certificate") from None
    return options
