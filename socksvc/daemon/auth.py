"""
HTTP basic auth for the admin listener, against a file of scrypt hashes.

An scrypt check costs tens of milliseconds of the reactor's time on
purpose, so it is spent sparingly: a credential that passed is remembered
(by an HMAC of the header under a per-process random key, never the
password) for L{REMEMBER} seconds, so Prometheus scraping every 15 s and a
status page polling every 2 s cost one check, not one per request; checks
of credentials not remembered are rate limited per source (IPv4 address or
IPv6 /64) and overall, and a request over either limit gets 429 without any
check at all. A reload with a changed file forgets what was remembered.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
from typing import Any

from socksvc.config.schema import PasswordFile
from socksvc.util.passwords import hash_password, verify_password
from socksvc.util.ratelimit import SourceLimiter, TokenBucket

REMEMBER = 300.0
"""Seconds a credential that passed is taken without another scrypt check."""
REMEMBERED_MAX = 256
"""Credentials remembered at most (the oldest forgotten first)."""
CHECKS_PER_SOURCE = 1.0
CHECKS_PER_SOURCE_BURST = 5
CHECKS_OVERALL = 4.0
CHECKS_OVERALL_BURST = 10
MAX_HEADER = 1024
"""A longer Authorization header is refused unread."""

OK = "ok"
DENIED = "denied"
LIMITED = "limited"


@functools.cache
def _dummy() -> str:
    """Checked for an unknown name, so a wrong name costs what a wrong password costs."""
    return hash_password("socksvc: no such user", salt=b"\0" * 16)


class BasicAuth:
    """The admin listener's users, and what was checked lately."""

    def __init__(self, users: PasswordFile, clock: Any) -> None:
        self.clock = clock
        self._key = os.urandom(32)
        self.users: dict[str, str] = {}
        self._remembered: dict[bytes, float] = {}
        self._per_source = SourceLimiter(CHECKS_PER_SOURCE, CHECKS_PER_SOURCE_BURST, 4096)
        self._overall = TokenBucket(CHECKS_OVERALL, CHECKS_OVERALL_BURST, clock.seconds())
        self.failures = 0
        self.checks = 0
        self.reconfigure(users)

    def reconfigure(self, users: PasswordFile) -> None:
        new = dict(users.users)
        if new != self.users:
            self._remembered.clear()
        self.users = new

    def check(self, header: bytes | None, source: str) -> str:
        """L{OK}, L{DENIED} (no or wrong credentials) or L{LIMITED} (too many checks: try later)."""
        if not header or len(header) > MAX_HEADER:
            return DENIED
        scheme, _, encoded = header.strip().partition(b" ")
        if scheme.lower() != b"basic":
            return DENIED
        now = self.clock.seconds()
        digest = hmac.new(self._key, encoded.strip(), hashlib.sha256).digest()
        until = self._remembered.get(digest)
        if until is not None and until > now:
            return OK
        try:
            name, sep, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, ValueError):
            return DENIED
        if not sep:
            return DENIED
        if not self._per_source.allow(source, now) or not self._overall.take(now):
            return LIMITED
        self.checks += 1
        hashed = self.users.get(name)
        ok = verify_password(password, hashed if hashed is not None else _dummy()) and hashed is not None
        if not ok:
            self.failures += 1
            return DENIED
        if len(self._remembered) >= REMEMBERED_MAX:
            for old in sorted(self._remembered, key=self._remembered.__getitem__)[: REMEMBERED_MAX // 4]:
                del self._remembered[old]
        self._remembered[digest] = now + REMEMBER
        return OK
