"""
The smtp service's settings and state: where mail is filed, TLS, AUTH, the
counters, and the chat announcement.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import attrs
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorProcess
from twisted.logger import Logger

from socksvc.config.settings import (
    MAX_RATE,
    MAX_TIMEOUT,
    as_bool,
    as_choice,
    as_float,
    as_int,
    as_list,
    as_str,
    setting,
)
from socksvc.core.service import ServiceContext, ServiceStatus
from socksvc.services.mail.durable import SyncerPool, SyncError
from socksvc.services.mail.maildir import Draft, Maildir, check_creatable, clean_tmp, default_maildir, folder_name
from socksvc.services.mail.smtp.envelope import announcement
from socksvc.services.mail.syncwire import sync_paths
from socksvc.services.mail.tls import PemFile, parse_pem, tls_options
from socksvc.services.mail.users import AuthLimiter, PasswordChecker, Users, parse_users
from socksvc.util.ratelimit import RateLimitedLog, TokenBucket

log = Logger(namespace="socksvc")

ANNOUNCE_BURST = 5
ANNOUNCE_SUMMARY = 10.0
"""Seconds after which the messages an over-rate announcement left out are counted in one notice."""


def parse_hostname(value: Any) -> str:
    text: str = as_str(max_len=255)(value)
    if text and not (text.isascii() and text.isprintable() and " " not in text):
        raise ValueError("a host name is printable ASCII without spaces")
    return text


def parse_maildir(value: Any) -> str:
    text: str = as_str(max_len=4096)(value)
    if text and not os.path.isabs(text):
        raise ValueError("must be an absolute path")
    return text


def parse_domain(value: Any) -> str:
    text: str = as_str(nonempty=True, max_len=255)(value)
    try:
        text = text.strip().rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise ValueError("not a domain name") from None
    if not text or any(not (c.isalnum() or c in "-.") for c in text):
        raise ValueError("not a domain name")
    return text


def maildir_path(settings: Any) -> str:
    """A service's Maildir: the configured one, or the default place (L{default_maildir})."""
    return str(settings.maildir) or default_maildir()


def check_maildir(settings: Any, maildir: bool) -> None:
    """The config-time check that the Maildir can be made (C{--check}'s OK means the first message files)."""
    try:
        check_creatable(maildir_path(settings), maildir)
    except ValueError as e:
        err = ValueError(str(e))
        err.key = "maildir"  # type: ignore[attr-defined]
        raise err from None


@attrs.frozen
class SmtpSettings:
    """Keys of an smtp service."""

    hostname: str = setting("", parse_hostname, "the name in the greeting and Received headers; empty = this host's")
    maildir: str = setting(
        "",
        parse_maildir,
        "Maildir to file into; empty = $STATE_DIRECTORY/mail, else ~/.local/share/socksvc/mail",
        path=True,
    )
    per_recipient: bool = setting(False, as_bool, "one Maildir per recipient address under maildir, not one for all")
    domains: tuple[str, ...] = setting(
        (), as_list(parse_domain), "recipient domains taken; others get 550 (nothing is relayed); empty = any"
    )
    max_message_size: int = setting(
        25 << 20, as_int(minimum=1024, maximum=1 << 40), "octets per message (SIZE); bigger gets 552"
    )
    max_recipients: int = setting(100, as_int(minimum=1, maximum=100000), "recipients per message; more get 452")
    command_timeout: float = setting(
        300.0, as_float(minimum=0.1, maximum=MAX_TIMEOUT), "seconds to wait for a command (then 421)"
    )
    data_timeout: float = setting(
        300.0, as_float(minimum=0.1, maximum=MAX_TIMEOUT), "seconds to wait for more data in DATA (then 421)"
    )
    tls_certificate: PemFile | None = setting(None, parse_pem, "PEM certificate (then chain) for STARTTLS", path=True)
    tls_key: PemFile | None = setting(None, parse_pem, "PEM private key; empty = in the certificate file", path=True)
    require_tls: bool = setting(False, as_bool, "refuse MAIL before STARTTLS (530)")
    auth: str = setting(
        "off", as_choice("off", "any", "users"), 'AUTH: "off", "any" (any password), "users" (the users file; required)'
    )
    users: Users | None = setting(
        None, parse_users, 'users file (NAME:SCRYPT-HASH lines) for auth = "users"', path=True
    )
    auth_rate: float = setting(
        5.0, as_float(minimum=0.1, maximum=MAX_RATE), "password checks a second for this service"
    )
    announce: str = setting("", as_str(max_len=64), "chat room of this daemon told of each message filed")
    announce_rate: float = setting(
        1.0, as_float(minimum=0.01, maximum=MAX_RATE), "announcements a second (bursts of 5), then one sum"
    )
    fsync: bool = setting(
        True, as_bool, "fsync each message and its directory before the 250; false only for benchmarks and throwaways"
    )
    trace: bool = setting(True, as_bool, "start each filed message with Return-Path and Received (RFC 5321 4.4)")

    def __attrs_post_init__(self) -> None:
        if self.auth == "users" and self.users is None:
            _fail("users", 'auth = "users" needs users = "/path/to/users-file"')
        if self.users is not None and self.auth != "users":
            _fail("users", 'set auth = "users" to check passwords against it')
        if self.require_tls and self.tls_certificate is None:
            _fail("require_tls", "needs tls_certificate (for STARTTLS)")
        tls_options(self.tls_certificate, self.tls_key)  # TLSConfigError names the key
        check_maildir(self, not self.per_recipient)


def _sync_now(paths: list[str]) -> None:
    """Blocking: for a test clock only (it cannot start processes)."""
    failed = sync_paths([os.fsencode(p) for p in paths])
    if failed:
        index, error = failed[0]
        raise SyncError(f"{paths[index]}: {error}")


def _fail(key: str, reason: str) -> None:
    err = ValueError(reason)
    err.key = key  # type: ignore[attr-defined]
    raise err


class SmtpState:
    """One smtp service's live state."""

    def __init__(self, context: ServiceContext[SmtpSettings, SmtpState]) -> None:
        self.context = context
        self.reactor = context.reactor
        self.counters: dict[str, int] = {"accepted": 0, "bytes": 0}
        self.limiter = AuthLimiter(context.settings.auth_rate, self.reactor)
        self._announced = TokenBucket(1.0, ANNOUNCE_BURST, self.reactor.seconds())
        self._unannounced = 0
        self._summary: IDelayedCall | None = None
        self._errors = RateLimitedLog(self.reactor)
        self.syncer: SyncerPool | None = None
        self.reconfigure(context.settings)
        removed = clean_tmp(self.root, self.settings.per_recipient)
        if removed:
            log.info(
                "{service}: removed {count} unfinished messages from an earlier run in {maildir}",
                event="mail_cleanup",
                service=context.name,
                count=removed,
                maildir=self.root,
            )

    def reconfigure(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self.host = settings.hostname or socket.gethostname() or "localhost"
        self.tls = tls_options(settings.tls_certificate, settings.tls_key)
        users = settings.users if settings.auth == "users" else None
        self.checker = None if settings.auth == "off" else PasswordChecker(users)
        self.limiter.reconfigure(settings.auth_rate)
        self._announced.rate = settings.announce_rate
        self.root = maildir_path(settings)
        self._catch_all = Maildir(self.root)
        if not settings.fsync and self.syncer is not None:
            self.syncer.stop()
            self.syncer = None

    def shutdown(self) -> None:
        if self.syncer is not None:
            self.syncer.stop()  # what is in flight is answered, then the child exits
            self.syncer = None
        if self._summary is not None and self._summary.active():
            self._summary.cancel()
        self._summary = None

    def status(self) -> ServiceStatus:
        return ServiceStatus(counters=dict(self.counters))

    # -- filing ---------------------------------------------------------------------

    def mailbox_for(self, recipient: str) -> Maildir:
        if not self.settings.per_recipient:
            return self._catch_all
        return Maildir(os.path.join(self.root, folder_name(recipient)))

    def commit(self, draft: Draft, boxes: list[Maildir]) -> Deferred[str]:
        """
        File a complete message (L{Draft.seal}, L{Draft.publish}); with fsync
        on, the file is fsynced before it is published and its directories
        after, by the syncer child (L{sync}). Fires with its name; on an error
        nothing of it is left.
        """
        if not self.settings.fsync:
            return maybeDeferred(draft.finish, boxes, False)
        return Deferred.fromCoroutine(self._durably(draft, boxes))

    async def _durably(self, draft: Draft, boxes: list[Maildir]) -> str:
        try:
            await self.sync([draft.seal()])
            final, paths = draft.publish(boxes)
        except BaseException:
            draft.abort()
            raise
        try:
            await self.sync(paths)
        except BaseException:
            draft.withdraw()
            raise
        return final

    def sync(self, paths: list[str]) -> Deferred[None]:
        """
        fsync C{paths}, in order, without waiting here: the syncer child
        (L{Syncer}, started on first use) does it and answers over AMP. A test
        clock (no processes) gets it done at once.
        """
        if not IReactorProcess.providedBy(self.reactor):
            return maybeDeferred(_sync_now, paths)
        if self.syncer is None:
            self.syncer = SyncerPool(self.reactor, self.context.name)
        return self.syncer.sync(paths)

    def filed(self, sender: str, recipients: list[str], subject: str, size: int, name: str) -> None:
        self.counters["accepted"] += 1
        self.counters["bytes"] += size
        log.info(
            "{service}: filed {size} bytes from <{sender}> for {count} recipients as {name}",
            event="mail",
            service=self.context.name,
            size=size,
            sender=sender,
            count=len(recipients),
            name=name,
        )
        if self.settings.announce:
            self.announce(announcement(sender, recipients, subject))

    def rejected(self, reason: str) -> None:
        key = f"rejected_{reason}"
        self.counters[key] = self.counters.get(key, 0) + 1

    def store_failed(self, error: BaseException) -> None:
        self.rejected("store")
        text = getattr(error, "strerror", None) or str(error)

        def emit(held: int) -> None:
            more = f" (and {held} more)" if held else ""
            log.error(
                "{service}: cannot store mail in {maildir}: {error}{more}",
                event="mail_error",
                service=self.context.name,
                maildir=self.root,
                error=text,
                more=more,
            )

        self._errors("store", emit)

    # -- announcing -----------------------------------------------------------------

    def announce(self, text: str) -> None:
        """Post to the chat room, at most announce_rate a second; the rest are summed up later."""
        if self._announced.take(self.reactor.seconds()):
            self.context.notices.post(self.settings.announce, text)
            return
        self._unannounced += 1
        if self._summary is None:
            self._summary = self.reactor.callLater(ANNOUNCE_SUMMARY, self._sum_up)

    def _sum_up(self) -> None:
        self._summary = None
        count, self._unannounced = self._unannounced, 0
        if count and self.settings.announce:
            self.context.notices.post(self.settings.announce, f"mail: {count} more messages filed (not announced)")


SmtpContext = ServiceContext[SmtpSettings, SmtpState]
