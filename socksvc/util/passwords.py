"""
Hashed passwords for the admin listener's HTTP basic auth (stdlib scrypt).

A password file has one C{NAME:HASH} line per user; blank lines and lines
starting with C{#} are skipped. C{HASH} is
C{$scrypt$ln=LOG2N,r=R,p=P$SALT$KEY}, salt and key in unpadded base64 (the
same shape as passlib's and libxcrypt's scrypt strings, so a line reads at a
glance). C{socksvc passwd NAME} prints such a line. The daemon never sees a
clear-text password except in a request, and compares keys in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re

LOG2_N = 14
"""scrypt cost: N = 2**14, r = 8, p = 1 (16 MiB, tens of milliseconds): the usual interactive setting."""
R = 8
P = 1
SALT_BYTES = 16
KEY_BYTES = 32
MAX_LOG2_N = 20
"""A file asking for more (1 GiB of memory a check) is refused when it is read."""
MAX_NAME = 64

_HASH = re.compile(r"\$scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$([A-Za-z0-9+/]{1,88})\$([A-Za-z0-9+/]{16,88})")
_NAME = re.compile(r"[^\x00-\x20:\x7f]{1,64}")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: bytes, salt: bytes, log2n: int, r: int, p: int, length: int) -> bytes:
    memory = 128 * r * (2**log2n) * p + (1 << 20)
    return hashlib.scrypt(password, salt=salt, n=2**log2n, r=r, p=p, maxmem=memory, dklen=length)


def hash_password(password: str, *, log2n: int = LOG2_N, salt: bytes | None = None) -> str:
    """The C{$scrypt$...} string for C{password} (a fresh random salt unless given)."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    key = _scrypt(password.encode("utf-8"), salt, log2n, R, P, KEY_BYTES)
    return f"$scrypt$ln={log2n},r={R},p={P}${_b64(salt)}${_b64(key)}"


def check_hash(text: str) -> None:
    """Raise ValueError (a short reason) if C{text} is not a usable C{$scrypt$} string."""
    m = _HASH.fullmatch(text)
    if m is None:
        raise ValueError("not a $scrypt$ln=N,r=R,p=P$SALT$KEY hash (make one with `socksvc passwd NAME`)")
    log2n, r, p = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if not 1 <= log2n <= MAX_LOG2_N or not 1 <= r <= 32 or not 1 <= p <= 16:
        raise ValueError(f"scrypt parameters out of range (ln 1..{MAX_LOG2_N}, r 1..32, p 1..16)")
    if 128 * r * (2**log2n) * p > 1 << 30:
        raise ValueError("scrypt parameters need over 1 GiB of memory")


def verify_password(password: str, hashed: str) -> bool:
    """Does C{password} match C{hashed} (a string L{check_hash} accepts)? Constant-time comparison."""
    m = _HASH.fullmatch(hashed)
    if m is None:
        return False
    log2n, r, p = int(m.group(1)), int(m.group(2)), int(m.group(3))
    want = _unb64(m.group(5))
    got = _scrypt(password.encode("utf-8", "surrogatepass"), _unb64(m.group(4)), log2n, r, p, len(want))
    return hmac.compare_digest(got, want)


def check_name(name: str) -> None:
    """Raise ValueError unless C{name} can be a user in a password file."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"a user name is 1 to {MAX_NAME} printable characters, without spaces or ':'")


def parse_password_file(text: str) -> dict[str, str]:
    """
    C{NAME:HASH} lines to {name: hash}. ValueError naming the line for a
    bad one, a name given twice, or a file with no user.
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
