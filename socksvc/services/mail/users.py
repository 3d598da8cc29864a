"""
The mail services' users file, and checking passwords against it.

One user a line, C{NAME:HASH} or C{NAME:HASH:MAILBOX}; blank lines and lines
starting with C{#} are skipped. HASH is an scrypt hash
(L{socksvc.util.passwords}; C{socksvc mail hash} prints one). MAILBOX, for
POP3, is the recipient address whose Maildir the user reads (the SMTP
service's C{per_recipient} folder for it); without one the user reads the
service's C{maildir} itself (the catch-all). SMTP AUTH ignores MAILBOX.

The file is read through the guarded reader when the config loads (so
C{--check} and a reload catch every mistake, with its line number), and
held in the settings: a reload re-reads it.

Checking a password costs tens of milliseconds of CPU in the reactor (scrypt
is meant to be slow). L{AuthLimiter} bounds how many checks a service does a
second, and a connection gets L{MAX_FAILURES} failed attempts; an unknown
user is checked against a dummy hash so the answer takes as long.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import attrs
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.address import UNIXAddress
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from socksvc.util.files import read_setting_text
from socksvc.util.passwords import DUMMY, ScryptHash, parse_hash, verify
from socksvc.util.ratelimit import TokenBucket

MAX_USERS_FILE = 1 << 20
MAX_USERS = 10000
MAX_FAILURES = 3
"""Failed logins one connection may make; the next ends it."""
USER_NAME = re.compile(r"[A-Za-z0-9._@+=-]{1,64}")


@attrs.frozen
class MailUser:
    """One line of the users file."""

    name: str
    hashed: ScryptHash
    mailbox: str
    """An address (POP3 reads its per-recipient folder), or "" for the catch-all Maildir."""


@attrs.frozen
class Users:
    """A users file, read when the config loads."""

    path: str
    entries: tuple[MailUser, ...]
    by_name: dict[str, MailUser] = attrs.field(eq=False, repr=False)

    def find(self, name: str) -> MailUser | None:
        return self.by_name.get(name)


def parse_users(value: Any) -> Users | None:
    """The C{users} key: a path ("" for none), read and checked now."""
    if not isinstance(value, str):
        raise ValueError("expected a file path string")
    if not value:
        return None
    text = read_setting_text(value, MAX_USERS_FILE, "users file")
    entries: list[MailUser] = []
    by_name: dict[str, MailUser] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition(":")
        hashed_text, _, mailbox = rest.partition(":")
        where = f"line {number} of the users file"
        if not USER_NAME.fullmatch(name):
            raise ValueError(f"{where}: a user name is 1 to 64 of A-Z a-z 0-9 . _ @ + = -")
        if name in by_name:
            raise ValueError(f"{where}: user {name} appears twice")
        try:
            hashed = parse_hash(hashed_text)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        mailbox = mailbox.strip()
        if mailbox and (len(mailbox) > 254 or not mailbox.isprintable() or " " in mailbox):
            raise ValueError(f"{where}: a mailbox is an address (at most 254 characters, no spaces)")
        user = MailUser(name, hashed, mailbox)
        entries.append(user)
        by_name[name] = user
        if len(entries) > MAX_USERS:
            raise ValueError(f"users file has over {MAX_USERS} users")
    return Users(value, tuple(entries), by_name)


class AuthLimiter:
    """Password checks a second for one service (a token bucket; bursts of twice the rate, at least 1)."""

    def __init__(self, rate: float, clock: Any) -> None:
        self.clock = clock
        self.bucket = TokenBucket(rate, max(1.0, 2 * rate), clock.seconds())

    def reconfigure(self, rate: float) -> None:
        self.bucket.rate = rate
        self.bucket.burst = max(1.0, 2 * rate)

    def allow(self) -> bool:
        return self.bucket.take(self.clock.seconds())


@implementer(ICredentialsChecker)
class PasswordChecker:
    """
    twisted.cred's checker over a users file; with C{users} None, any name
    and password are accepted (C{auth = "any"}). The avatar id is the user
    name (bytes, valid UTF-8).
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, users: Users | None) -> None:
        self.users = users

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        username, password = credentials.username, credentials.password
        if not isinstance(username, bytes) or not isinstance(password, bytes) or not username:
            return fail(UnauthorizedLogin())
        try:
            name = username.decode("utf-8")
        except UnicodeDecodeError:
            return fail(UnauthorizedLogin())
        if self.users is None:
            return succeed(username)
        user = self.users.find(name)
        ok = verify(password, user.hashed if user is not None else DUMMY)
        if ok and user is not None:
            return succeed(username)
        return fail(UnauthorizedLogin())


def is_local(host: Any) -> bool:
    """
    Is a listening address (the transport's C{getHost()}) loopback or a UNIX
    socket? Only there may a password cross without TLS.
    """
    if isinstance(host, UNIXAddress):
        return True
    try:
        ip = ipaddress.ip_address(getattr(host, "host", ""))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback
