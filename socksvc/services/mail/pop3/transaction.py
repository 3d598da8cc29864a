"""
The POP3 transaction state (RFC 1939 5): STAT, LIST, UIDL, RETR, TOP, DELE,
RSET, NOOP, and QUIT's UPDATE; for
L{socksvc.services.mail.pop3.protocol.Pop3Session}.

Every message number is checked here (a syntax error, no such message, or a
message marked deleted: one -ERR line each). RETR and TOP send through
Twisted's file producer as a long operation of Twisted's POP3 (pipelined
commands queue behind it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.protocols.basic import FileSender
from twisted.python.failure import Failure

from socksvc.services.mail.pop3.mailbox import MaildirMailbox
from socksvc.services.mail.pop3.state import Pop3Context


class TransactionMixin:
    """The commands of a logged-in session."""

    context: Pop3Context
    transport: Any
    mbox: MaildirMailbox | None
    closing: bool
    line_start: bool
    bytes_out: int
    headers_plus: Any

    if TYPE_CHECKING:  # provided by Pop3Session and twisted.mail.pop3.POP3

        def successResponse(self, message: Any = "") -> None: ...

        def failResponse(self, message: Any = b"") -> None: ...

        def sendLine(self, line: bytes) -> None: ...

        def transformChunk(self, chunk: bytes) -> bytes: ...

        def logout(self) -> None: ...

        def _longOperation(self, d: Any) -> Any: ...

    def number(self, args: tuple[bytes, ...], count: int = 1) -> int | None:
        """The message number argument (0-based), or None after answering -ERR."""
        assert self.mbox is not None
        if len(args) != count or not args[0].isdigit() or len(args[0]) > 9:
            self.failResponse(b"Syntax: a message number")
            return None
        i = int(args[0]) - 1
        if not self.mbox.exists(i):
            self.failResponse(b"no such message" if not 0 <= i < len(self.mbox.entries) else b"message deleted")
            return None
        return i

    def do_STAT(self, *args: bytes) -> None:
        assert self.mbox is not None
        live = self.mbox.live()
        self.successResponse(f"{len(live)} {sum(s for _, s in live)}")

    def do_LIST(self, *args: bytes) -> None:
        assert self.mbox is not None
        if args:
            i = self.number(args)
            if i is not None:
                self.successResponse(f"{i + 1} {self.mbox.entries[i].size}")
            return
        live = self.mbox.live()
        self.successResponse(f"{len(live)} messages")
        self.send_listing([f"{n} {size}".encode() for n, size in live])

    def do_UIDL(self, *args: bytes) -> None:
        assert self.mbox is not None
        if args:
            i = self.number(args)
            if i is not None:
                self.successResponse(b"%d %s" % (i + 1, self.mbox.entries[i].uid))
            return
        self.successResponse(b"")
        entries = self.mbox.entries
        self.send_listing([b"%d %s" % (n, entries[n - 1].uid) for n, _ in self.mbox.live()])

    def send_listing(self, lines: list[bytes]) -> None:
        data = b"".join(line + b"\r\n" for line in lines) + b".\r\n"
        self.bytes_out += len(data)
        transport: Any = self.transport
        transport.write(data)

    def do_DELE(self, *args: bytes) -> None:
        i = self.number(args)
        if i is not None and self.mbox is not None:
            self.mbox.deleteMessage(i)
            self.successResponse(f"message {i + 1} deleted")

    def do_RETR(self, *args: bytes) -> Any:
        i = self.number(args)
        if i is None or self.mbox is None:
            return None
        self.context.state.counters["retrieved"] += 1
        return self.send_message(i, lambda fp: fp, f"{self.mbox.entries[i].size} octets")

    def do_TOP(self, *args: bytes) -> Any:
        if len(args) != 2 or not args[1].isdigit() or len(args[1]) > 9:
            self.failResponse(b"Syntax: TOP message lines")
            return None
        i = self.number(args[:1])
        if i is None:
            return None
        lines = int(args[1])
        return self.send_message(i, lambda fp: self.headers_plus(fp, lines), "top follows")

    def send_message(self, i: int, wrap: Any, response: str) -> Any:
        """
        A message (or its top) as a multi-line response: Twisted's file
        producer, one chunk as the transport asks, pipelined commands queued
        behind it (Twisted's long operation). A client that goes away meanwhile
        just ends the transfer.
        """
        assert self.mbox is not None
        try:
            fp = self.mbox.getMessage(i)
        except ValueError as e:
            self.failResponse(str(e))
            return None
        self.successResponse(response)
        self.line_start = True
        transport: Any = self.transport
        transport.unregisterProducer()  # the transport's own pause-reading producer, back after the transfer
        d = FileSender().beginFileTransfer(wrap(fp), transport, self.transformChunk)

        def sent(last: bytes) -> None:
            self.sendLine(b"." if last == b"\n" else b"\r\n.")
            if transport.connected and not transport.disconnecting:
                transport.registerProducer(transport, True)
                transport.resumeProducing()  # reading may have stopped while the old registration was paused

        def stopped(failure: Failure) -> None:
            transport: Any = self.transport
            if transport is not None:
                transport.loseConnection()

        d.addCallbacks(sent, stopped)
        return self._longOperation(d)

    def do_NOOP(self, *args: bytes) -> None:
        self.successResponse()

    def do_RSET(self, *args: bytes) -> None:
        assert self.mbox is not None
        self.mbox.undeleteMessages()
        self.successResponse(f"{len(self.mbox.live())} messages")

    def do_LAST(self, *args: bytes) -> None:
        self.failResponse(b"LAST is not supported (RFC 1725 dropped it)")

    def do_QUIT(self, *args: bytes) -> None:
        """The UPDATE state: the messages marked deleted go now."""
        self.closing = True
        if self.mbox is not None:
            try:
                self.mbox.sync()
            except OSError as e:
                self.failResponse(f"some messages could not be deleted: {e.strerror}")
            else:
                self.context.state.counters["deleted"] += self.mbox.removed
                self.successResponse(f"bye ({self.mbox.removed} messages deleted)")
        else:
            self.successResponse(b"bye")
        self.logout()
        transport: Any = self.transport
        transport.loseConnection()
