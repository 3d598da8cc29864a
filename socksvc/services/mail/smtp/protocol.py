"""
The SMTP server protocol: twisted.mail's ESMTP with socksvc's input path.

L{protocol_class} composes L{SMTPServer} with C{twisted.mail.smtp.ESMTP};
twisted.mail supplies the address grammar (C{SMTP.mail_re}, C{rcpt_re},
C{Address}) and the TLS switch-over, twisted.cred checks passwords. The
input path is socksvc's own, because Twisted's SMTP server
 - keeps an over-long line in its buffer and answers every later read with
   another 500 (memory grows with the line);
 - after a too-long line in DATA drops back to command mode, so the rest of
   the message is read as commands (a smuggling hole);
 - goes on with commands pipelined behind STARTTLS in the clear buffer (the
   STARTTLS injection of CVE-2011-0411);
 - hands each message to its delivery line by line, with no size limit.
Here a line is at most L{MAX_AUTH_LINE} octets in memory, DATA goes through
L{socksvc.services.mail.smtp.data.DataReader} straight to a Maildir file, input
behind STARTTLS is dropped, and every reply carries an RFC 3463 enhanced
status code (but the greeting and EHLO/HELO's, as RFC 2034 says). The
transaction (MAIL, RCPT, DATA) is L{socksvc.services.mail.smtp.transaction},
AUTH L{socksvc.services.mail.smtp.auth}.

Replies to pipelined commands (RFC 2920) come in order: every command is
answered before the next is read, and while a message is being made durable
(the fsyncs done by the syncer child) input waits, paused.
"""

from __future__ import annotations

import functools
from typing import Any

from twisted.internet.interfaces import IDelayedCall, ISSLTransport, ITLSTransport
from twisted.logger import Logger
from twisted.python.failure import Failure

from socksvc.core.protocols import StreamProtocol
from socksvc.services.mail.maildir import Draft, Maildir
from socksvc.services.mail.smtp import data as mdata
from socksvc.services.mail.smtp.auth import AuthMixin
from socksvc.services.mail.smtp.envelope import peer_text
from socksvc.services.mail.smtp.state import SmtpContext
from socksvc.services.mail.smtp.transaction import TransactionMixin
from socksvc.services.mail.users import is_local

log = Logger(namespace="socksvc")

MAX_COMMAND = 512
"""Octets of a command line with its CRLF (RFC 5321 4.5.3.1.4)."""
MAX_MAIL = MAX_COMMAND + 26 + 14 + 500
"""MAIL FROM may be longer by what SIZE (RFC 1870), BODY and AUTH= (RFC 4954) add."""
MAX_AUTH_LINE = 12288
"""An AUTH command or response line (RFC 4954 4): the longest line kept in memory."""
HOLD_MAX = 65536
"""Octets read while a message is being made durable before reading pauses."""

HELP = "2.0.0 socksvc SMTP: EHLO HELO MAIL RCPT DATA RSET NOOP VRFY HELP QUIT STARTTLS AUTH; RFC 5321"


class SMTPServer(TransactionMixin, AuthMixin, StreamProtocol):
    """One SMTP session (see the module doc); composed with Twisted's ESMTP by L{protocol_class}."""

    context: SmtpContext
    # From twisted.mail.smtp, set on the composed class by protocol_class().
    address: Any
    address_error: type[Exception]
    mail_re: Any
    rcpt_re: Any
    startedTLS: bool

    def connectionMade(self) -> None:
        super().connectionMade()
        transport: Any = self.transport
        self.buf = bytearray()
        self.skipping = False
        self.closing = False
        self.tls_now = False
        self.busy = False
        self.waiting = False
        self.held = bytearray()
        self.helo: str | None = None
        self.esmtp = False
        self.sender: str | None = None
        self.rcpts: list[str] = []
        self.draft: Draft | None = None
        self.boxes: list[Maildir] = []
        self.reader: mdata.DataReader | None = None
        self.secure = ISSLTransport.providedBy(transport)
        self.local = is_local(transport.getHost())
        self.auth_start()
        self.timer: IDelayedCall | None = None
        self.reply(220, f"{self.context.state.host} ESMTP socksvc")
        self.arm()

    # -- output, timeouts ----------------------------------------------------------

    def reply(self, code: int, text: str) -> None:
        data = f"{code} {text}\r\n".encode("ascii", "replace")
        self.bytes_out += len(data)
        transport: Any = self.transport
        transport.write(data)

    def reply_lines(self, code: int, lines: list[str]) -> None:
        out = [f"{code}-{line}\r\n" for line in lines[:-1]] + [f"{code} {lines[-1]}\r\n"]
        data = "".join(out).encode("ascii", "replace")
        self.bytes_out += len(data)
        transport: Any = self.transport
        transport.write(data)

    def close(self, code: int, text: str, why: str) -> None:
        self.reply(code, text)
        self.closing = True
        self.close_reason = why
        transport: Any = self.transport
        transport.loseConnection()

    def arm(self) -> None:
        """(Re)start the timeout: data_timeout in DATA, else command_timeout (RFC 5321 4.5.3.2)."""
        s = self.context.settings
        seconds = s.data_timeout if self.reader is not None else s.command_timeout
        if self.timer is not None and self.timer.active():
            self.timer.reset(seconds)
        else:
            self.timer = self.context.reactor.callLater(seconds, self.timed_out)

    def timed_out(self) -> None:
        self.timer = None
        if self.closing:
            return
        self.give_up()
        self.close(421, f"4.4.2 {self.context.state.host} Error: timeout exceeded", "timeout")

    @property
    def idle_exempt(self) -> bool:
        """command_timeout and data_timeout apply (with the RFC's 421), not the policy's idle sweeper."""
        return True

    def connectionLost(self, reason: Failure = Failure(Exception("connection lost"))) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        self.give_up()
        super().connectionLost(reason)

    def give_up(self) -> None:
        """Drop a message being received: nothing of it stays."""
        self.reader = None
        if self.draft is not None:
            self.draft.abort()
            self.draft = None

    # -- input -----------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self.closing:
            return
        if self.busy:
            self.held += data
            if len(self.held) > HOLD_MAX:
                transport: Any = self.transport
                transport.pauseProducing()
            return
        self.arm()
        self.process(data)

    def process(self, data: bytes) -> None:
        while data and not self.closing:
            if self.reader is not None:
                rest = self.reader.feed(data)
                if self.reader.problem is not None and self.draft is not None:
                    self.draft.abort()
                    self.draft = None
                if rest is None:
                    return
                data = rest
                self.end_of_data()
            else:
                data = self.commands(data)
            if self.busy and data:
                self.held[:0] = data
                self.waiting = True
                transport: Any = self.transport
                transport.pauseProducing()
                return

    def commands(self, data: bytes) -> bytes:
        """Run the complete command lines in C{data}; what follows a switch to DATA (or a pause) is returned."""
        buf = self.buf
        buf += data
        start = 0
        while not self.closing:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            line = bytes(buf[start:end])
            start = end + 1
            if self.skipping:
                self.skipping = False
                self.too_long()
            else:
                self.line(line)
            if self.tls_now:  # RFC 3207: nothing sent before the TLS handshake counts
                self.tls_now = False
                self.buf = bytearray()
                return b""
            if self.reader is not None or self.busy:
                rest = bytes(buf[start:])
                self.buf = bytearray()
                return rest
        del buf[:start]
        if len(buf) > MAX_AUTH_LINE:
            self.skipping = True
            self.buf = bytearray()
        return b""

    def too_long(self) -> None:
        if self.auth_step is not None:
            self.auth_step = None
            self.reply(500, "5.5.6 Authentication Exchange line is too long")
        else:
            self.reply(500, "5.5.2 Line too long")

    def line(self, line: bytes) -> None:
        self.touched = True
        if not line.endswith(b"\r"):
            self.reply(500, "5.5.2 Syntax error: lines end with CRLF (RFC 5321 2.3.8)")
            return
        line = line[:-1]
        if self.auth_step is not None:
            self.auth_response(line)
            return
        verb, _, arg = line.strip(b" ").partition(b" ")
        name = verb.upper()
        if b"\0" in line or b"\r" in line:
            self.reply(500, "5.5.2 Syntax error")
            return
        limit = MAX_AUTH_LINE if name == b"AUTH" else MAX_MAIL if name == b"MAIL" else MAX_COMMAND
        if len(line) + 2 > limit:
            self.reply(500, "5.5.2 Line too long")
            return
        handler = getattr(self, "smtp_" + name.decode("ascii"), None) if name.isalpha() and name.isascii() else None
        if handler is None:
            self.reply(500, "5.5.1 Command unrecognized")
            return
        handler(arg.strip(b" "))

    # -- session commands ---------------------------------------------------------------

    def hello(self, arg: bytes, esmtp: bool) -> None:
        verb = "EHLO" if esmtp else "HELO"
        if not arg or len(arg) > 255 or not (arg.isascii() and arg.decode("ascii").isprintable()) or b" " in arg:
            self.reply(501, f"Syntax: {verb} your-domain-name")
            return
        self.reset()
        self.helo = arg.decode("ascii")
        self.esmtp = esmtp
        state = self.context.state
        transport: Any = self.transport
        first = f"{state.host} Hello {self.helo} {peer_text(transport.getPeer())}"
        if not esmtp:
            self.reply(250, first)
            return
        ext = [first, f"SIZE {self.context.settings.max_message_size}", "8BITMIME", "PIPELINING"]
        ext.append("ENHANCEDSTATUSCODES")
        if state.tls is not None and not self.secure:
            ext.append("STARTTLS")
        if self.auth_offered():
            ext.append("AUTH PLAIN LOGIN")
        ext.append("HELP")
        self.reply_lines(250, ext)

    def smtp_EHLO(self, arg: bytes) -> None:
        self.hello(arg, True)

    def smtp_HELO(self, arg: bytes) -> None:
        self.hello(arg, False)

    def smtp_RSET(self, arg: bytes) -> None:
        if arg:
            self.reply(501, "5.5.4 Syntax: RSET")
            return
        self.reset()
        self.reply(250, "2.0.0 Ok")

    def smtp_NOOP(self, arg: bytes) -> None:
        self.reply(250, "2.0.0 Ok")

    def smtp_VRFY(self, arg: bytes) -> None:
        if not arg:
            self.reply(501, "5.5.4 Syntax: VRFY address")
            return
        self.reply(252, "2.5.0 Cannot VRFY user, but will accept message and attempt delivery")

    def smtp_EXPN(self, arg: bytes) -> None:
        self.reply(502, "5.5.1 EXPN not available")

    def smtp_HELP(self, arg: bytes) -> None:
        self.reply(214, HELP)

    def smtp_QUIT(self, arg: bytes) -> None:
        self.close(221, "2.0.0 Bye", "")

    def smtp_STARTTLS(self, arg: bytes) -> None:
        transport: Any = self.transport
        if arg:
            self.reply(501, "5.5.4 Syntax: STARTTLS")
        elif self.context.state.tls is None:
            self.reply(502, "5.5.1 STARTTLS not available")
        elif self.secure:
            self.reply(503, "5.5.1 TLS already active")
        elif self.helo is None:
            self.reply(503, "5.5.1 Send EHLO first")
        elif not ITLSTransport.providedBy(transport):
            self.reply(454, "4.7.0 TLS not available on this connection")
        else:
            self.reply(220, "2.0.0 Ready to start TLS")
            transport.startTLS(self.context.state.tls)
            self.secure = self.startedTLS = True
            self.tls_now = True
            # RFC 3207 4.2: forget everything learnt before TLS (EHLO, AUTH, the transaction).
            self.helo = None
            self.reset()
            self.auth_start()


@functools.cache
def protocol_class() -> type[SMTPServer]:
    """
    L{SMTPServer} on C{twisted.mail.smtp.ESMTP}. Called when a listener's
    factory is first built, after twistd (or tap.makeService) has installed
    the reactor: twisted.mail.smtp imports twisted.internet.reactor at module
    level, which would install the default reactor under twistd's choice.
    The reactor rule, not a lazy import to dodge a cycle.
    """
    from twisted.mail import smtp

    class ESMTPServer(SMTPServer, smtp.ESMTP):  # type: ignore[misc]
        address = smtp.Address
        address_error = smtp.AddressError
        mail_re = smtp.SMTP.mail_re
        rcpt_re = smtp.SMTP.rcpt_re

        def __init__(self) -> None:
            smtp.ESMTP.__init__(self)

    return ESMTPServer
