"""
Password hashes (stdlib C{hashlib.scrypt}) for every file of users socksvc
reads: the mail services' users files and the admin listener's basic-auth
file. One format, passlib's, so either tool can make them:

    $scrypt$ln=14,r=8,p=1$SALT$HASH

C{ln} is log2 of scrypt's N; SALT and HASH are base64 without padding, with
C{.} for C{+} (passlib's "ab64"). C{socksvc passwd NAME} prints a
C{NAME:HASH} line, C{socksvc mail hash} a bare hash. Parameters are bounded
(memory at most 64 MiB, work at most 2**20 N*r*p) so a users file cannot
make one check take the daemon's memory or minutes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
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


def hash_password(
    password: str,
    *,
    ln: int = DEFAULT_LN,
    r: int = DEFAULT_R,
    p: int = DEFAULT_P,
    log2n: int | None = None,
    salt: bytes | None = None,
) -> str:
    """A new hash of C{password} (C{log2n} is C{ln} by another name; a random salt unless given)."""
    if log2n is not None:
        ln = log2n
    check_params(ln, r, p)
    h = ScryptHash(ln, r, p, os.urandom(SALT_SIZE) if salt is None else salt, b"")
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


MAX_NAME = 64
_NAME = re.compile(r"[^\x00-\x20:\x7f]{1,64}")


def check_hash(text: str) -> None:
    """Raise ValueError (a short reason) if C{text} is not a usable hash."""
    try:
        parse_hash(text)
    except ValueError as e:
        raise ValueError(f"{e} (make one with `socksvc passwd NAME`)") from None


def verify_password(password: str, hashed: str) -> bool:
    """Does C{password} match C{hashed}? False for anything that is not a hash (constant-time comparison)."""
    try:
        h = parse_hash(hashed)
    except ValueError:
        return False
    return verify(password.encode("utf-8", "surrogatepass"), h)


def check_name(name: str) -> None:
    """Raise ValueError unless C{name} can be a user in a password file."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"a user name is 1 to {MAX_NAME} printable characters, without spaces or ':'")


def parse_password_file(text: str) -> dict[str, str]:
    """
    C{NAME:HASH} lines to {name: hash}; blank lines and C{#} comments
    skipped. ValueError naming the line for a bad one, a name given twice,
    or a file with no user.
    """
    users: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, hashed = line.partition(":")
        if not sep or not _NAME.fullmatch(name):
            raise ValueError(f"line {number}: expected NAME:HASH (a name of 1 to {MAX_NAME} printable characters)")
        try:
            check_hash(hashed)
        except ValueError as e:
            raise ValueError(f"line {number}: {e}") from None
        if name in users:
            raise ValueError(f"line {number}: user {name!r} given twice")
        users[name] = hashed
    if not users:
        raise ValueError("no users in the password file")
    return users
