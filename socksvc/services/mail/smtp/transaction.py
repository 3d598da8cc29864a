"""
The SMTP transaction (RFC 5321 3.3): MAIL, RCPT, DATA, and the end of the
data, where a message is filed or refused; for
L{socksvc.services.mail.smtp.protocol.SMTPServer}.

The addresses go through twisted.mail's grammar (C{SMTP.mail_re},
C{rcpt_re}, C{Address}, set on the composed class); the data through
L{socksvc.services.mail.smtp.data.DataReader} into a
L{socksvc.services.mail.maildir.Draft}. A complete message is filed by the
state (L{socksvc.services.mail.smtp.state.SmtpState.commit}: the fsyncs
done by the syncer child); input waits meanwhile, so pipelined replies stay in order.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from twisted.python.failure import Failure

from socksvc.services.mail.maildir import Draft, Maildir
from socksvc.services.mail.smtp import data as mdata
from socksvc.services.mail.smtp.envelope import MAX_PATH, Reply, mail_params, peer_text, trace
from socksvc.services.mail.smtp.state import SmtpContext

PROBLEM_REPLIES: dict[str, Reply] = {
    mdata.SIZE: (552, "5.3.4 Message size exceeds fixed maximum message size"),
    mdata.LONG: (500, "5.5.2 Line too long: at most 1000 octets with CRLF (RFC 5321 4.5.3.1.6)"),
    mdata.BARE: (554, "5.6.0 Message refused: a bare CR or LF (lines end with CRLF, RFC 5321 2.3.8)"),
    mdata.NUL: (554, "5.6.0 Message refused: a NUL byte in the text"),
    mdata.WRITE: (451, "4.3.0 Local error in processing: the message could not be stored"),
}
CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
"""No control character belongs in an address (RFC 5321 4.1.2: qtextSMTP, atext)."""


class TransactionMixin:
    """MAIL, RCPT, DATA and what follows the final dot."""

    context: SmtpContext
    transport: Any
    helo: str | None
    esmtp: bool
    secure: bool
    user: str | None
    closing: bool
    busy: bool
    waiting: bool
    held: bytearray
    sender: str | None
    rcpts: list[str]
    draft: Draft | None
    boxes: list[Maildir]
    reader: mdata.DataReader | None
    address: Any
    address_error: type[Exception]
    mail_re: Any
    rcpt_re: Any

    if TYPE_CHECKING:  # provided by SMTPServer

        def reply(self, code: int, text: str) -> None: ...

        def arm(self) -> None: ...

        def give_up(self) -> None: ...

        def process(self, data: bytes) -> None: ...

    def reset(self) -> None:
        """No transaction (RSET, EHLO, STARTTLS, the end of one)."""
        self.sender = None
        self.rcpts = []

    def smtp_MAIL(self, arg: bytes) -> None:
        s = self.context.settings
        if self.helo is None:
            self.reply(503, "5.5.1 Send EHLO or HELO first")
        elif self.sender is not None:
            self.reply(503, "5.5.1 Sender already given (RSET to start over)")
        elif s.require_tls and not self.secure:
            self.reply(530, "5.7.0 Must issue a STARTTLS command first")
        elif s.auth == "users" and self.user is None:
            self.reply(530, "5.7.0 Authentication required")
        elif not arg.isascii():
            self.reply(553, "5.6.7 Non-ASCII address: this server does not offer SMTPUTF8")
        elif CONTROL.search(arg):
            self.reply(501, "5.5.2 Syntax error: a control character")
        else:
            m = self.mail_re.match(arg)
            if m is None:
                self.reply(501, "5.5.4 Syntax: MAIL FROM:<address>")
                return
            path = m.group("path")
            if len(path) > MAX_PATH:
                self.reply(501, "5.1.7 Path too long")
                return
            try:
                address = self.address(path, b"")
            except self.address_error:
                self.reply(553, "5.1.7 Bad sender address syntax")
                return
            problem = mail_params(m.group("opts"), s.max_message_size, self.esmtp)
            if problem is not None:
                self.context.state.rejected("size" if problem[0] == 552 else "syntax")
                self.reply(*problem)
                return
            self.sender = bytes(address).decode("ascii")
            self.rcpts = []
            self.reply(250, "2.1.0 Sender OK")

    def smtp_RCPT(self, arg: bytes) -> None:
        s = self.context.settings
        if self.sender is None:
            self.reply(503, "5.5.1 Need MAIL before RCPT")
            return
        if len(self.rcpts) >= s.max_recipients:
            self.context.state.rejected("recipients")
            self.reply(452, "4.5.3 Too many recipients")
            return
        if not arg.isascii():
            self.reply(553, "5.6.7 Non-ASCII address: this server does not offer SMTPUTF8")
            return
        if CONTROL.search(arg):
            self.reply(501, "5.5.2 Syntax error: a control character")
            return
        m = self.rcpt_re.match(arg)
        if m is None:
            self.reply(501, "5.5.4 Syntax: RCPT TO:<address>")
            return
        if m.group("opts"):
            self.reply(555, "5.5.4 RCPT TO parameters not recognized")
            return
        path = m.group("path")
        try:
            if len(path) > MAX_PATH:
                raise self.address_error("too long")
            address = self.address(path, b"")
        except self.address_error:
            self.reply(553, "5.1.3 Bad recipient address syntax")
            return
        local, domain = address.local.decode("ascii"), address.domain.decode("ascii").lower().rstrip(".")
        if not domain and local.lower() == "postmaster":
            recipient = "postmaster"
        elif not local or not domain:
            self.reply(553, "5.1.3 Recipient address needs a local part and a domain")
            return
        elif s.domains and domain not in s.domains:
            self.context.state.rejected("relay")
            self.reply(550, "5.7.1 Relaying denied: not a domain this server takes mail for")
            return
        else:
            recipient = f"{local}@{domain}"
        if recipient not in self.rcpts:
            self.rcpts.append(recipient)
        self.reply(250, "2.1.5 Recipient OK")

    def smtp_DATA(self, arg: bytes) -> None:
        if arg:
            self.reply(501, "5.5.4 Syntax: DATA")
            return
        if self.sender is None:
            self.reply(503, "5.5.1 Need MAIL before DATA")
            return
        if not self.rcpts:
            self.reply(554, "5.5.1 No valid recipients")
            return
        state, s = self.context.state, self.context.settings
        self.boxes = list(dict.fromkeys(state.mailbox_for(r) for r in self.rcpts))
        transport: Any = self.transport
        try:
            self.draft = Draft(self.boxes[0])
            if s.trace:
                self.draft.write(self.trace_header(transport))
        except OSError as e:
            self.give_up()
            state.store_failed(e)
            self.reset()
            self.reply(451, "4.3.0 Cannot store mail now, try again later")
            return
        self.reader = mdata.DataReader(self.draft.write, s.max_message_size)
        self.arm()
        self.reply(354, "End data with <CR><LF>.<CR><LF>")

    def trace_header(self, transport: Any) -> bytes:
        assert self.draft is not None and self.sender is not None
        protocol = "ESMTP" if self.esmtp else "SMTP"
        if self.esmtp and self.secure:
            protocol += "S"
        if self.esmtp and self.user is not None:
            protocol += "A"
        return trace(
            sender=self.sender,
            recipients=self.rcpts,
            helo=self.helo or "unknown",
            peer=peer_text(transport.getPeer()),
            host=self.context.state.host,
            protocol=protocol,
            ident=self.draft.name.rsplit(".", 1)[0],
            when=self.context.reactor.seconds(),
        )

    def end_of_data(self) -> None:
        reader, draft, boxes = self.reader, self.draft, self.boxes
        sender, rcpts = self.sender or "", self.rcpts
        assert reader is not None
        self.reader = self.draft = None
        self.reset()
        self.arm()
        state = self.context.state
        if reader.problem is not None or draft is None:
            if draft is not None:
                draft.abort()
            problem = reader.problem or mdata.WRITE
            if reader.error is not None:
                state.store_failed(reader.error)
            state.rejected(problem)
            self.reply(*PROBLEM_REPLIES[problem])
            return
        self.busy = True
        d = state.commit(draft, boxes)

        def filed(name: str) -> None:
            state.filed(sender, rcpts, mdata.subject_of(bytes(reader.headers)), reader.size, name)
            if not self.closing and self.transport is not None:
                self.reply(250, f"2.0.0 Ok: filed as {name.split(',', 1)[0]}")

        def failed(failure: Failure) -> None:
            state.store_failed(failure.value or Exception("unknown"))
            if not self.closing and self.transport is not None:
                self.reply(451, "4.3.0 Local error in processing: the message could not be stored")

        d.addCallbacks(filed, failed)
        d.addBoth(self.settled)

    def settled(self, _: object) -> None:
        """The message is filed (or not) and answered: read on."""
        self.busy = False
        if not self.waiting and not self.held:
            return  # it settled at once (or nothing came meanwhile): process() goes on with what follows
        self.waiting = False
        held, self.held = bytes(self.held), bytearray()
        transport: Any = self.transport
        if self.closing or not transport.connected:
            return
        transport.resumeProducing()
        self.arm()
        self.process(held)
