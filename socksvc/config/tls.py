"""
TLS material for C{ssl:} listen specs, read when the config is loaded.

Twisted's own C{ssl:} endpoint parser reads the key and certificate files
itself, with no limit and no check of what they are (a FIFO hangs it,
C{/dev/zero} reads until memory runs out). socksvc reads them here instead,
through the guarded reader, and checks that they make a usable server
context (the key matches the certificate) before anything is bound; the
daemon builds its TLS listener from the bytes read here (L{TLSFiles.options}).
"""

from __future__ import annotations

from typing import Any

import attrs

from socksvc.util.files import read_named_file

MAX_PEM_FILE = 1 << 20
"""A key, certificate or chain file: PEM text, a few KiB; anything over 1 MiB is a mistake."""

METHODS = ("TLS_METHOD", "TLS_SERVER_METHOD", "SSLv23_METHOD", "TLSv1_2_METHOD")
"""C{sslmethod=} values accepted (OpenSSL method names; the default negotiates the best)."""


@attrs.frozen
class TLSFiles:
    """The PEM bytes an C{ssl:} listen spec names (compared by content: a renewed certificate is a change)."""

    key_path: str
    cert_path: str
    key: bytes = attrs.field(repr=False)
    cert: bytes = attrs.field(repr=False)
    chain: tuple[bytes, ...] = attrs.field(default=(), repr=False)
    method: str | None = None

    def options(self) -> Any:
        """A Twisted C{CertificateOptions} for a server (raises when the files are unusable)."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from OpenSSL import SSL
        from twisted.internet import ssl

        # cryptography's objects, which pyOpenSSL takes directly (its own
        # X509 and PKey are deprecated there; Twisted's annotations still
        # name them, hence the Any).
        kw: dict[str, Any] = {
            "privateKey": serialization.load_pem_private_key(self.key, password=None),
            "certificate": x509.load_pem_x509_certificate(self.cert),
            "extraCertChain": [x509.load_pem_x509_certificate(pem) for pem in self.chain] or None,
        }
        if self.method is not None:
            kw["method"] = getattr(SSL, self.method)
        return ssl.CertificateOptions(**kw)


_CERT = b"-----BEGIN CERTIFICATE-----"
_CERT_END = b"-----END CERTIFICATE-----"


def _split_certificates(data: bytes) -> tuple[bytes, ...]:
    out = []
    rest = data
    while (start := rest.find(_CERT)) >= 0:
        end = rest.find(_CERT_END, start)
        if end < 0:
            break
        out.append(rest[start : end + len(_CERT_END)] + b"\n")
        rest = rest[end + len(_CERT_END) :]
    return tuple(out)


def load_tls(
    private_key: str, cert_key: str | None, sslmethod: str | None, chain_path: str | None, dh_parameters: str | None
) -> TLSFiles:
    """
    Read and check what an C{ssl:} spec names (paths already absolute);
    raise L{ValueError} with a one-line reason.
    """
    if dh_parameters is not None:
        raise ValueError("dhParameters is not supported (ECDHE key exchange, on by default, needs no parameter file)")
    if sslmethod is not None and sslmethod not in METHODS:
        raise ValueError(f"sslmethod {sslmethod!r} is not one of " + ", ".join(METHODS))
    key = read_named_file(private_key, MAX_PEM_FILE, "key file")
    cert_path = cert_key or private_key
    cert = key if cert_path == private_key else read_named_file(cert_path, MAX_PEM_FILE, "certificate file")
    chain: tuple[bytes, ...] = ()
    if chain_path is not None:
        chain = _split_certificates(read_named_file(chain_path, MAX_PEM_FILE, "certificate chain file"))
        if not chain:
            raise ValueError(f"certificate chain file {chain_path} holds no PEM certificate")
    files = TLSFiles(private_key, cert_path, key, cert, chain, sslmethod)
    try:
        files.options().getContext()  # loads both, and checks that the key matches the certificate
    except Exception as e:  # OpenSSL's errors are lists of tuples; say it in one line
        raise ValueError(f"cannot use key {private_key} with certificate {cert_path}: {_openssl_reason(e)}") from None
    return files


def _openssl_reason(error: Exception) -> str:
    args = error.args[0] if error.args else None
    if isinstance(args, list) and args and isinstance(args[-1], tuple) and args[-1]:
        return str(args[-1][-1])
    text = " ".join(str(error).split())
    return text[:200] or error.__class__.__name__
