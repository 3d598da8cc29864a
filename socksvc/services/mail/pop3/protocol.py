"""
The POP3 server protocol: twisted.mail's POP3 with socksvc's command layer.

L{protocol_class} composes L{Pop3Session} with C{twisted.mail.pop3.POP3}.
Twisted's class supplies the queueing of pipelined commands behind a long
operation (a RETR or TOP, sent through Twisted's file producer) and TOP's
header reader; socksvc supplies the rest, because Twisted's POP3 server
 - logs a traceback and answers "bad protocol or server: ValueError" for a
   non-numeric message number; with its Maildir mailbox, lets DELE out of
   range raise out of dataReceived and moves a file into .Trash on DELE (so
   a dropped session loses it: RFC 1939 6 says it must not);
 - leaves the client without an answer when a message file has vanished, and
   logs a traceback when a client goes away in the middle of a RETR;
 - counts messages marked deleted in STAT;
 - byte-stuffs a dot at the start of a line only when the line does not begin
   a chunk of the file;
 - has no STLS and offers USER over any connection, with an APOP timestamp
   in the greeting for passwords it cannot hold.
The commands of a logged-in session are L{socksvc.services.mail.pop3.transaction}.

Logins: USER/PASS, checked by twisted.cred against the users file (without
one, any name and password, on loopback and UNIX listeners only); only over
TLS (STLS, RFC 2595) or on a loopback or UNIX listener unless
C{allow_plaintext}; three failures end the session.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from twisted.cred.credentials import UsernamePassword
from twisted.internet.interfaces import ISSLTransport, ITLSTransport
from twisted.python.failure import Failure

from socksvc.core.protocols import StreamProtocol
from socksvc.services.mail.pop3.mailbox import MaildirMailbox
from socksvc.services.mail.pop3.state import Pop3Context
from socksvc.services.mail.pop3.transaction import TransactionMixin
from socksvc.services.mail.users import MAX_FAILURES, is_local
from socksvc.util.lines import LineSplitter, TooLong

MAX_LINE = 510
"""A command line without its CRLF (RFC 2449 allows 255 octets; passwords may need more)."""
HOLD_MAX = 65536
PRE_LOGIN = frozenset({b"CAPA", b"USER", b"PASS", b"STLS", b"QUIT", b"APOP", b"AUTH"})
LOGGED_IN_ONLY = frozenset({b"STAT", b"LIST", b"RETR", b"DELE", b"NOOP", b"RSET", b"UIDL", b"TOP", b"LAST"})


class Pop3Session(TransactionMixin, StreamProtocol):
    """One POP3 session (see the module doc)."""

    context: Pop3Context
    self_producer = True  # a peer that pipelines and never reads pauses us (RETR swaps in a file producer)
    mbox: MaildirMailbox | None
    blocked: list[tuple[bytes, tuple[bytes, ...]]] | None
    headers_plus: Any
    """twisted.mail.pop3's header-plus-N-lines reader for TOP (set by protocol_class)."""

    if TYPE_CHECKING:  # provided by twisted.mail.pop3.POP3

        def setTimeout(self, period: float | None) -> Any: ...

        def resetTimeout(self) -> None: ...

        def lineReceived(self, line: bytes) -> None: ...

    def connectionMade(self) -> None:
        super().connectionMade()
        transport: Any = self.transport
        self.splitter = LineSplitter(MAX_LINE)
        self.held = bytearray()
        self.closing = False
        self.tls_now = False
        self.secure = ISSLTransport.providedBy(transport)
        self.local = is_local(transport.getHost())
        self.user_name: bytes | None = None
        self.failures = 0
        self.line_start = True
        self.lock: str | None = None
        self.schedule = self.context.state.cooperator.coiterate
        self.timeOut = self.context.settings.command_timeout
        self.successResponse("socksvc POP3 server ready")
        self.setTimeout(self.timeOut)

    def callLater(self, period: float, func: Any) -> Any:
        """TimeoutMixin's timer, on the service's reactor (a clock in tests)."""
        return self.context.reactor.callLater(period, func)

    @property
    def idle_exempt(self) -> bool:
        return True  # command_timeout applies (RFC 1939's autologout), not the policy's sweeper

    def timeoutConnection(self) -> None:
        """RFC 1939 3: autologout closes without the UPDATE state (nothing is deleted) and says nothing."""
        self.close_reason = "timeout"
        transport: Any = self.transport
        transport.loseConnection()

    def connectionLost(self, reason: Failure = Failure(Exception("connection lost"))) -> None:
        self.setTimeout(None)
        self.logout()
        super().connectionLost(reason)

    def readConnectionLost(self) -> None:
        """The peer half-closed: during RETR the file producer is registered, not ours; let it finish."""
        if self.blocked is None:
            super().readConnectionLost()
        else:
            transport: Any = self.transport
            transport.loseConnection()

    def logout(self) -> None:
        if self.mbox is not None:
            self.mbox.close()
            self.mbox = None
        if self.lock is not None:
            self.context.state.locks.release(self.lock)
            self.lock = None

    # -- output (counted) ---------------------------------------------------------------

    def sendLine(self, line: bytes) -> None:
        self.bytes_out += len(line) + 2
        transport: Any = self.transport
        transport.write(line + b"\r\n")

    def successResponse(self, message: Any = "") -> None:
        text = message if isinstance(message, bytes) else str(message).encode("utf-8")
        self.sendLine(b"+OK " + text if text else b"+OK")

    def failResponse(self, message: Any = b"") -> None:
        text = message if isinstance(message, bytes) else str(message).encode("utf-8")
        self.sendLine(b"-ERR " + text if text else b"-ERR")

    def transformChunk(self, chunk: bytes) -> bytes:
        """A piece of a stored message as sent: CRLF line ends, a dot at a line start doubled (RFC 1939 3)."""
        data = chunk.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if self.line_start and data[:1] == b".":
            data = b"." + data
        data = data.replace(b"\r\n.", b"\r\n..")
        if data:
            self.line_start = data.endswith(b"\n")
        self.bytes_out += len(data)
        return data

    # -- input -----------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self.closing:
            return
        if self.blocked is not None:  # a transfer is running: its queue holds what came with it
            self.held += data
            if len(self.held) > HOLD_MAX:
                transport: Any = self.transport
                transport.pauseProducing()
            return
        for line in self.splitter.feed(data):
            if self.closing:
                return
            if isinstance(line, TooLong):
                self.failResponse(b"line too long")
                continue
            self.touched = True
            self.lineReceived(line)
            if self.tls_now:  # RFC 2595 4: nothing sent before the TLS handshake counts
                self.tls_now = False
                self.splitter = LineSplitter(MAX_LINE)
                return

    def _unblock(self, _: object) -> None:
        super()._unblock(_)  # type: ignore[misc]
        if self.blocked is None and self.held:
            held, self.held = bytes(self.held), bytearray()
            transport: Any = self.transport
            if transport is not None and transport.connected:
                transport.resumeProducing()
                self.dataReceived(held)

    def state_COMMAND(self, line: bytes) -> None:
        parts = line.split(b" ")
        self.processCommand(*parts)

    def processCommand(self, command: bytes, *args: bytes) -> Any:
        if self.blocked is not None:
            self.blocked.append((command, args))
            return None
        name = command.upper()
        handler = getattr(self, "do_" + name.decode("ascii"), None) if name.isalpha() and name.isascii() else None
        if handler is None or name in (b"RPOP",):
            self.failResponse(b"unknown command")
        elif self.mbox is None and name in LOGGED_IN_ONLY:
            self.failResponse(b"not logged in (USER and PASS first)")
        elif self.mbox is not None and name in (b"USER", b"PASS", b"STLS", b"APOP", b"AUTH"):
            self.failResponse(b"already logged in")
        else:
            return handler(*args)
        return None

    # -- the authorization state --------------------------------------------------------

    def plaintext_ok(self) -> bool:
        return self.secure or self.local or self.context.settings.allow_plaintext

    def do_CAPA(self, *args: bytes) -> None:
        caps = [b"TOP", b"UIDL", b"RESP-CODES", b"PIPELINING", b"IMPLEMENTATION socksvc"]
        if self.mbox is None and self.plaintext_ok():
            caps.append(b"USER")
        if self.mbox is None and self.context.state.tls is not None and not self.secure:
            caps.append(b"STLS")
        self.successResponse(b"Capability list follows")
        for cap in caps:
            self.sendLine(cap)
        self.sendLine(b".")

    def do_STLS(self, *args: bytes) -> None:
        transport: Any = self.transport
        if args:
            self.failResponse(b"Syntax: STLS")
        elif self.context.state.tls is None or not ITLSTransport.providedBy(transport):
            self.failResponse(b"STLS not available")
        elif self.secure:
            self.failResponse(b"TLS already active")
        else:
            self.successResponse(b"Begin TLS negotiation now")
            transport.startTLS(self.context.state.tls)
            self.secure = True
            self.tls_now = True
            self.user_name = None

    def do_APOP(self, *args: bytes) -> None:
        self.failResponse(b"APOP not available (passwords are stored hashed); use USER and PASS")

    def do_AUTH(self, *args: bytes) -> None:
        self.failResponse(b"AUTH not available; use USER and PASS")

    def do_USER(self, *args: bytes) -> None:
        if not self.plaintext_ok():
            self.failResponse(b"USER/PASS need TLS on this connection: send STLS first")
        elif len(args) != 1 or not args[0] or len(args[0]) > 64:
            self.failResponse(b"Syntax: USER name")
        else:
            self.user_name = args[0]
            self.successResponse(b"send PASS")

    def do_PASS(self, *words: bytes) -> None:
        user, self.user_name = self.user_name, None
        state = self.context.state
        if user is None or not self.plaintext_ok():
            self.failResponse(b"USER first")
        elif self.context.settings.users is None and not self.local:
            self.failResponse(b"[AUTH] without a users file, logins are taken on loopback and UNIX listeners only")
        elif not state.limiter.allow():
            self.failResponse(b"[SYS/TEMP] too many login attempts; try again later")
        else:
            d = state.checker.requestAvatarId(UsernamePassword(user, b" ".join(words)))
            d.addCallbacks(self.logged_in, self.refused)

    def logged_in(self, avatar: Any) -> None:
        state = self.context.state
        path = state.mailbox_path(bytes(avatar).decode("utf-8"))
        if not state.locks.take(path):
            self.failResponse(b"[IN-USE] the mailbox is open in another session")
            return
        self.lock = path
        self.mbox = MaildirMailbox(path)
        state.counters["logins"] += 1
        live = self.mbox.live()
        self.successResponse(f"{len(live)} messages ({sum(s for _, s in live)} octets)")

    def refused(self, failure: Failure) -> None:
        self.failures += 1
        self.context.state.counters["failed_logins"] += 1
        self.failResponse(b"[AUTH] authentication failed")
        if self.failures >= MAX_FAILURES:
            self.closing = True
            self.close_reason = "authentication failed"
            transport: Any = self.transport
            transport.loseConnection()


@functools.cache
def protocol_class() -> type[Pop3Session]:
    """
    L{Pop3Session} on C{twisted.mail.pop3.POP3}. Called when a listener's
    factory is first built, after the reactor is installed: twisted.mail.pop3
    imports twisted.mail.smtp, which imports twisted.internet.reactor at
    module level. The reactor rule, not a lazy import to dodge a cycle.
    """
    from twisted.mail import pop3

    class POP3Server(Pop3Session, pop3.POP3):  # type: ignore[misc]
        headers_plus = pop3._HeadersPlusNLines

    return POP3Server
