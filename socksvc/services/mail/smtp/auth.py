"""
SMTP AUTH (RFC 4954) with the PLAIN (RFC 4616) and LOGIN mechanisms, checked
by twisted.cred (L{socksvc.services.mail.users.PasswordChecker}).

Offered only after STARTTLS, or on a loopback or UNIX listener, where a
password crossing in the clear stays on the host. Off by default; C{auth =
"any"} takes any name and password (a sink that lets applications configured
with a password send), C{auth = "users"} checks the users file and makes
AUTH a condition of MAIL. A connection gets three failed attempts; the
service checks at most C{auth_rate} passwords a second.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

from twisted.cred.credentials import UsernamePassword
from twisted.python.failure import Failure

from socksvc.services.mail.smtp.state import SmtpContext
from socksvc.services.mail.users import MAX_FAILURES

PLAIN = b"PLAIN"
LOGIN = b"LOGIN"
USERNAME_PROMPT = base64.b64encode(b"Username:").decode("ascii")
PASSWORD_PROMPT = base64.b64encode(b"Password:").decode("ascii")


class AuthMixin:
    """The AUTH command and its exchange, for L{socksvc.services.mail.smtp.protocol.SMTPServer}."""

    context: SmtpContext
    helo: str | None
    esmtp: bool
    sender: str | None
    secure: bool
    local: bool
    authenticated: bool

    if TYPE_CHECKING:  # provided by SMTPServer

        def reply(self, code: int, text: str) -> None: ...

        def close(self, code: int, text: str, why: str) -> None: ...

    def auth_start(self) -> None:
        """Nobody is authenticated (a new connection, or after STARTTLS)."""
        self.user: str | None = None
        self.authenticated = False
        self.auth_step: tuple[bytes, list[bytes]] | None = None
        self.auth_failures = 0

    def auth_offered(self) -> bool:
        return self.context.settings.auth != "off" and (self.secure or self.local)

    def smtp_AUTH(self, arg: bytes) -> None:
        mech, _, initial = arg.partition(b" ")
        mech = mech.upper()
        if self.context.settings.auth == "off":
            self.reply(502, "5.5.1 AUTH not available")
        elif not self.auth_offered():
            self.reply(538, "5.7.11 Encryption required for requested authentication mechanism")
        elif self.helo is None or not self.esmtp:
            self.reply(503, "5.5.1 Send EHLO first")
        elif self.user is not None:
            self.reply(503, "5.5.1 Already authenticated")
        elif self.sender is not None:
            self.reply(503, "5.5.1 AUTH not allowed during a mail transaction")
        elif mech not in (PLAIN, LOGIN):
            self.reply(504, "5.5.4 Unrecognized authentication type")
        elif not self.context.state.limiter.allow():
            self.reply(454, "4.7.0 Temporary authentication failure: too many attempts, try again later")
        else:
            self.auth_step = (mech, [])
            if initial and initial != b"=":
                self.auth_response(initial.strip())
            elif initial == b"=" and mech == PLAIN:
                self.auth_response(b"")
            else:
                self.reply(334, USERNAME_PROMPT if mech == LOGIN else "")

    def auth_response(self, line: bytes) -> None:
        """One line of the exchange (base64), or C{*} to cancel."""
        assert self.auth_step is not None
        mech, got = self.auth_step
        if line == b"*":
            self.auth_step = None
            self.reply(501, "5.7.0 Authentication aborted")
            return
        try:
            decoded = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            self.auth_step = None
            self.reply(501, "5.5.2 Cannot decode the response (base64)")
            return
        if mech == LOGIN:
            got.append(decoded)
            if len(got) < 2:
                self.reply(334, PASSWORD_PROMPT)
                return
            username, password = got
        else:
            parts = decoded.split(b"\0")
            if len(parts) != 3 or (parts[0] and parts[0] != parts[1]):
                self.auth_step = None
                self.reply(501, "5.5.2 Malformed PLAIN response (authzid NUL authcid NUL password)")
                return
            _, username, password = parts
        self.auth_step = None
        checker = self.context.state.checker
        assert checker is not None
        d = checker.requestAvatarId(UsernamePassword(username, password))
        d.addCallbacks(self.auth_passed, self.auth_refused)

    def auth_passed(self, avatar: Any) -> None:
        self.user = bytes(avatar).decode("utf-8")
        self.authenticated = True
        self.reply(235, "2.7.0 Authentication successful")

    def auth_refused(self, failure: Failure) -> None:
        self.auth_failures += 1
        self.context.state.rejected("auth")
        if self.auth_failures >= MAX_FAILURES:
            self.close(421, "4.7.0 Too many failed authentications", "authentication failed")
        else:
            self.reply(535, "5.7.8 Authentication credentials invalid")
