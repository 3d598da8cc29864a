"""
Password hashes for the mail services' users files: scrypt (stdlib
C{hashlib.scrypt}), written in passlib's format so either tool can make them:

    $scrypt$ln=14,r=8,p=1$SALT$HASH

C{ln} is log2 of scrypt's N; SALT and HASH are base64 without padding, with
C{.} for C{+} (passlib's "ab64"). The client's C{socksvc mail hash} prints
one. Parameters are bounded (memory at most 64 MiB, work at most 2**20 N*r*p)
so a users file cannot make one check take the daemon's memory or minutes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from typing import NamedTuple

PREFIX = "$scrypt$"
DEFAULT_LN = 14
"""N = 2**14, r = 8: 16 MiB and some tens of milliseconds per check."""
DEFAULT_R = 8
DEFAULT_P = 1
SALT_SIZE = 16
HASH_SIZE = 32
MAX_MEMORY = 64 << 20
"""scrypt's memory, 128 * r * N bytes, at most this."""
MAX_WORK = 1 << 20
"""N * r * p at most this (N = 2**17 with r = 8, p = 1)."""


class ScryptHash(NamedTuple):
    """One parsed hash."""

    ln: int
    r: int
    p: int
    salt: bytes
    digest: bytes


def _ab64_encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=").replace("+", ".")


def _ab64_decode(text: str) -> bytes:
    if not text or any(c not in _AB64 for c in text):
        raise ValueError("not base64")
    text = text.replace(".", "+")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise ValueError("not base64") from None


_AB64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789./")


def _scrypt(password: bytes, h: ScryptHash, size: int) -> bytes:
    n = 1 << h.ln
    return hashlib.scrypt(
        password, salt=h.salt, n=n, r=h.r, p=h.p, maxmem=128 * h.r * (n + h.p + 2) + (1 << 20), dklen=size
    )


def check_params(ln: int, r: int, p: int) -> None:
    """ValueError unless scrypt with these parameters stays within the bounds."""
    if not (1 <= ln <= 24 and 1 <= r <= 64 and 1 <= p <= 16):
        raise ValueError("scrypt parameters out of range")
    n = 1 << ln
    if 128 * r * n > MAX_MEMORY:
        raise ValueError(f"scrypt parameters need over {MAX_MEMORY >> 20} MiB")
    if n * r * p > MAX_WORK:
        raise ValueError("scrypt parameters are too costly (N*r*p over 2**20)")


def hash_password(password: str, *, ln: int = DEFAULT_LN, r: int = DEFAULT_R, p: int = DEFAULT_P) -> str:
    """A new hash of C{password} with a random salt."""
    check_params(ln, r, p)
    h = ScryptHash(ln, r, p, os.urandom(SALT_SIZE), b"")
    digest = _scrypt(password.encode("utf-8"), h, HASH_SIZE)
    return f"{PREFIX}ln={ln},r={r},p={p}${_ab64_encode(h.salt)}${_ab64_encode(digest)}"


def parse_hash(text: str) -> ScryptHash:
    """A hash as written; ValueError (a short reason) when it is not one this module can check."""
    if not text.startswith(PREFIX):
        raise ValueError("not an scrypt hash ($scrypt$ln=...,r=...,p=...$salt$hash)")
    parts = text[len(PREFIX) :].split("$")
    if len(parts) != 3:
        raise ValueError("an scrypt hash has three $-separated parts after $scrypt$")
    params: dict[str, int] = {}
    for item in parts[0].split(","):
        key, eq, value = item.partition("=")
        if not eq or key not in ("ln", "r", "p") or key in params or not value.isdigit() or len(value) > 3:
            raise ValueError("scrypt parameters are ln=N,r=N,p=N")
        params[key] = int(value)
    if len(params) != 3:
        raise ValueError("scrypt parameters are ln=N,r=N,p=N")
    check_params(params["ln"], params["r"], params["p"])
    salt, digest = _ab64_decode(parts[1]), _ab64_decode(parts[2])
    if not 8 <= len(salt) <= 64 or not 16 <= len(digest) <= 64:
        raise ValueError("scrypt salt or hash has an odd length")
    return ScryptHash(params["ln"], params["r"], params["p"], salt, digest)


def verify(password: bytes, h: ScryptHash) -> bool:
    """Does C{password} match (constant-time comparison)?"""
    return hmac.compare_digest(_scrypt(password, h, len(h.digest)), h.digest)


DUMMY = ScryptHash(DEFAULT_LN, DEFAULT_R, DEFAULT_P, b"\0" * SALT_SIZE, b"\0" * HASH_SIZE)
"""Checked against for an unknown user, so its answer takes as long as a known user's."""
