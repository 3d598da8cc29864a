"""
The pop3 service's settings and state: the users, which Maildir each reads,
TLS, the sessions' locks and the counters.
"""

from __future__ import annotations

import os
from typing import Any

import attrs
from twisted.internet.task import Cooperator

from socksvc.config.settings import MAX_RATE, MAX_TIMEOUT, as_bool, as_float, setting
from socksvc.core.service import ServiceContext, ServiceStatus
from socksvc.services.mail.maildir import check_creatable, default_maildir, folder_name
from socksvc.services.mail.pop3.mailbox import Locks
from socksvc.services.mail.tls import PemFile, parse_pem, tls_options
from socksvc.services.mail.users import AuthLimiter, PasswordChecker, Users, parse_users


def parse_maildir(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a path string")
    if value and not os.path.isabs(value):
        raise ValueError("must be an absolute path")
    return value


def _fail(key: str, reason: str) -> None:
    err = ValueError(reason)
    err.key = key  # type: ignore[attr-defined]
    raise err


@attrs.frozen
class Pop3Settings:
    """Keys of a pop3 service."""

    maildir: str = setting(
        "",
        parse_maildir,
        "the Maildir (or, per user, the folders) to read; empty = the smtp service's default",
        path=True,
    )
    users: Users | None = setting(
        None,
        parse_users,
        "users file (NAME:SCRYPT-HASH[:ADDRESS] lines); empty = any name and password, on loopback and UNIX only",
        path=True,
    )
    tls_certificate: PemFile | None = setting(None, parse_pem, "PEM certificate (then chain) for STLS", path=True)
    tls_key: PemFile | None = setting(None, parse_pem, "PEM private key; empty = in the certificate file", path=True)
    allow_plaintext: bool = setting(
        False, as_bool, "allow USER/PASS without TLS on listeners that are not loopback or UNIX"
    )
    command_timeout: float = setting(
        600.0, as_float(minimum=0.1, maximum=MAX_TIMEOUT), "seconds without a command before the session ends"
    )
    auth_rate: float = setting(
        5.0, as_float(minimum=0.1, maximum=MAX_RATE), "password checks a second for this service"
    )

    def __attrs_post_init__(self) -> None:
        tls_options(self.tls_certificate, self.tls_key)  # TLSConfigError names the key
        try:
            check_creatable(self.maildir or default_maildir(), maildir=False)
        except ValueError as e:
            _fail("maildir", str(e))


class Pop3State:
    """One pop3 service's live state."""

    def __init__(self, context: ServiceContext[Pop3Settings, Pop3State]) -> None:
        self.context = context
        self.reactor = context.reactor
        self.locks = Locks()
        self.limiter = AuthLimiter(context.settings.auth_rate, self.reactor)
        self.counters: dict[str, int] = {"logins": 0, "failed_logins": 0, "retrieved": 0, "deleted": 0}
        self.cooperator = Cooperator(scheduler=lambda f: self.reactor.callLater(0, f))
        self.reconfigure(context.settings)

    def reconfigure(self, settings: Pop3Settings) -> None:
        self.settings = settings
        self.tls = tls_options(settings.tls_certificate, settings.tls_key)
        self.checker = PasswordChecker(settings.users)
        self.limiter.reconfigure(settings.auth_rate)
        self.root = settings.maildir or default_maildir()

    def mailbox_path(self, user: str) -> str:
        """The Maildir C{user} reads: its address's folder, or the catch-all."""
        users = self.settings.users
        entry = users.find(user) if users is not None else None
        if entry is None or not entry.mailbox:
            return self.root
        return os.path.join(self.root, folder_name(entry.mailbox))

    def shutdown(self) -> None:
        self.cooperator.stop()

    def status(self) -> ServiceStatus:
        return ServiceStatus(counters=dict(self.counters))


Pop3Context = ServiceContext[Pop3Settings, Pop3State]
