"""
The exchange loop under the TCP probes, and the meters that judge replies.

Plain blocking sockets (see L{socksvc.client.common} for why). Where bytes
must flow both ways at once (stdin to the server while its replies come
back) L{exchange} moves them with select, holding at most L{CHUNK} * 4
bytes of unsent input, so a large stdin never deadlocks against a server
that pauses reading while we are not reading its replies. A meter says what
the server still owes and sees every reply chunk first: an echo that
differs, or a refusal line, never reaches the output.
"""

from __future__ import annotations

import os
import re
import select
import socket
import time
from collections.abc import Callable
from typing import Any, BinaryIO

from socksvc.client.common import EXIT_PROTOCOL, EXIT_TIMEOUT, REFUSAL_MAX, ClientError, refusal
from socksvc.client.target import Target, connection_lost, refused
from socksvc.wire import REFUSAL, REVERSE_TOO_LONG

CHUNK = 65536
MAX_PENDING = 4 * CHUNK  # unsent input we hold before we stop reading stdin


class Mismatch(Exception):
    """Raised by a meter: a reply that is not what was expected (an echo that differs, a refusal line)."""


class Differs(ClientError):
    """An echo reply that is not what was sent (and not a refusal line)."""


class Meter:
    """
    What the server still owes us: bytes for echo (lines for reverse, see
    L{LineMeter}). It also sees every reply chunk before the output does
    (L{on_received} returns what to show, and may raise) and keeps the
    first bytes of the reply, to recognise a refusal line (L{refusal}).
    """

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self.head = bytearray()  # the first REFUSAL_MAX bytes received
        self.sent_head = bytearray()  # the first REFUSAL_MAX bytes sent

    def on_sent(self, data: bytes) -> None:
        self._keep_sent(data)
        self.sent += len(data)

    def on_received(self, data: bytes) -> bytes:
        self.keep_received(data)
        self.received += len(data)
        return data

    def keep_received(self, data: bytes) -> None:
        if len(self.head) < REFUSAL_MAX:
            self.head += data[: REFUSAL_MAX - len(self.head)]

    def _keep_sent(self, data: bytes) -> None:
        if len(self.sent_head) < REFUSAL_MAX:
            self.sent_head += data[: REFUSAL_MAX - len(self.sent_head)]

    def flush(self) -> bytes:
        """Output held back, when the server has closed."""
        return b""

    def owed(self) -> bool:
        return self.received < self.sent

    def refusal(self) -> str | None:
        """The reason if what the server sent so far is a refusal line, else None."""
        return refusal(bytes(self.head))


class EchoMeter(Meter):
    """
    An echo reply must be what was sent, byte for byte: a chunk that is not
    raises L{Mismatch} before it reaches the output. Holds the bytes sent and
    not yet echoed (no more than are in flight).
    """

    def __init__(self) -> None:
        super().__init__()
        self.expect = bytearray()

    def on_sent(self, data: bytes) -> None:
        super().on_sent(data)
        self.expect += data

    def on_received(self, data: bytes) -> bytes:
        self.keep_received(data)
        self.received += len(data)
        if len(data) > len(self.expect) or self.expect[: len(data)] != data:
            raise Mismatch()
        del self.expect[: len(data)]
        return data

    def refusal(self) -> str | None:
        if bytes(self.sent_head).startswith(bytes(self.head)):
            return None  # what came back is what we sent: an echo, whatever it says
        return super().refusal()


_TOO_LONG_HEAD, _TOO_LONG_TAIL = REVERSE_TOO_LONG.encode("ascii").split(b"{max_line}")
TOO_LONG = re.compile(re.escape(_TOO_LONG_HEAD) + rb"\d{1,19}" + re.escape(_TOO_LONG_TAIL))
"""The reverse service's last line for a line over its C{max_line} (then it closes)."""
TOO_LONG_MAX = len(_TOO_LONG_HEAD) + 19 + len(_TOO_LONG_TAIL) + 2
"""The longest that line can be, with its CRLF."""


class ServerSaid(Exception):
    """Raised by a meter: the server answered a line with its error line (the text, safe to print)."""

    def __init__(self, text: str, line: int, before: bytes = b"") -> None:
        super().__init__(text)
        self.text = text
        self.line = line
        self.before = before
        """The replies received before that line, to show."""


class ReverseMeter(Meter):
    """
    A reply line for every line sent. A reply line is held back until it is
    whole while it may still be one of the server's own lines rather than a
    reversed one: the daemon's refusal (C{socksvc: REASON}, the first line
    only) raises L{Mismatch}; the reverse service's error for a line over
    its C{max_line} (L{TOO_LONG}) raises L{ServerSaid}. Neither is printed as
    if it were reversed text, unless the line we sent reads that way
    reversed (then it is the reply).
    """

    def __init__(self) -> None:
        super().__init__()
        self.line = bytearray()  # the start of the reply line being received, while held
        self.holding = True  # is the current reply line held back?
        self.sending = bytearray()  # the start of the line being sent (enough to tell a look-alike)
        self.sending_len = 0
        self.lookalikes: set[int] = set()  # lines sent that, reversed, read as the server's error line

    def on_sent(self, data: bytes) -> None:
        self._keep_sent(data)
        for piece in _pieces(data):
            self.sending_len += len(piece)
            if len(self.sending) < TOO_LONG_MAX:
                self.sending += piece[: TOO_LONG_MAX - len(self.sending)]
            if piece.endswith(b"\n"):
                if self.sending_len <= TOO_LONG_MAX and TOO_LONG.fullmatch(_bare(self.sending)[::-1]):
                    self.lookalikes.add(self.sent)
                self.sent += 1
                self.sending.clear()
                self.sending_len = 0

    def on_received(self, data: bytes) -> bytes:
        self.keep_received(data)
        shown = bytearray()
        for piece in _pieces(data):
            whole = piece.endswith(b"\n")
            try:
                if not self.holding:
                    shown += piece
                else:
                    self.line += piece
                    if whole:
                        shown += self._release()
                    elif not self._may_be_the_servers(self.line):
                        shown += self._release()
                        self.holding = False
            except ServerSaid as e:
                e.before = bytes(shown)
                raise
            if whole:
                self.received += 1
                self.holding = True
        return bytes(shown)

    def _may_be_the_servers(self, line: bytearray) -> bool:
        if self.received == 0 and not decided(line):
            return True
        if len(line) > TOO_LONG_MAX:
            return False
        head = bytes(line[: len(_TOO_LONG_HEAD)])
        return _TOO_LONG_HEAD.startswith(head)

    def _release(self) -> bytes:
        """The held line, judged: shown, or raised as the server's own line."""
        line = bytes(self.line)
        self.line.clear()
        if self.received == 0 and self.refusal() is not None:
            raise Mismatch()  # the caller reports the refusal
        if TOO_LONG.fullmatch(_bare(line)) and self.received not in self.lookalikes:
            raise ServerSaid(_bare(line).decode("ascii"), self.received + 1)
        return line

    def flush(self) -> bytes:
        return self._release() if self.line else b""

    def refusal(self) -> str | None:
        reason = super().refusal()
        if reason is None:
            return None
        first, newline, _ = bytes(self.sent_head).partition(b"\n")
        if newline and first.rstrip(b"\r")[::-1].startswith(REFUSAL):
            return None  # our own first line, reversed, reads "socksvc: ..."
        return reason


def _pieces(data: bytes) -> list[bytes]:
    """C{data} cut after each LF (the last piece may have none)."""
    pieces = data.split(b"\n")
    last = pieces.pop()
    return [piece + b"\n" for piece in pieces] + ([last] if last else [])


def _bare(line: bytes | bytearray) -> bytes:
    """A line without its line end."""
    return bytes(line).rstrip(b"\n").rstrip(b"\r")


def exchange(
    sock: socket.socket,
    target: Target,
    *,
    data: bytes = b"",
    source: BinaryIO | None = None,
    sink: Callable[[bytes], None],
    meter: Meter,
    timeout: float,
    end_lines: bool = False,
) -> None:
    """
    Send C{data}, then everything from C{source} (until its end), while
    handing every reply chunk to C{sink}; return once the input has ended
    and C{meter} says nothing more is owed.

    The timeout counts only while we are waiting on the server (input still
    unsent, or replies owed, or input ended): a person idle at a terminal
    is not timed out. C{end_lines} adds a final LF to input that does not
    end with one (a line service would drop an unterminated last line).
    """
    fd = _fileno(source)
    pending = bytearray(data)
    last = data[-1:]
    source_done = source is None
    if source is not None and fd is None:  # no descriptor to select on: read it all now
        more = source.read()
        pending += more
        last = more[-1:] or last
        source_done = True
    if source_done and end_lines and last not in (b"", b"\n"):
        pending += b"\n"
    sock.setblocking(False)
    progress = time.monotonic()
    while True:
        if source_done and not pending and not meter.owed():
            return
        readers: list[Any] = [sock]
        if not source_done and len(pending) < MAX_PENDING:
            readers.append(fd)
        writers = [sock] if pending else []
        waiting = bool(pending) or meter.owed() or source_done
        wait: float | None = None
        if waiting:
            wait = timeout - (time.monotonic() - progress)
            if wait <= 0:
                raise ClientError(f"no reply from {target} within {timeout:g} s", EXIT_TIMEOUT)
        ready_r, ready_w, _ = select.select(readers, writers, [], wait)
        if sock in ready_w:
            try:
                n = sock.send(pending[:CHUNK])
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as e:
                raise lost(target, e, sock, meter) from None
            if n:
                meter.on_sent(bytes(pending[:n]))
                del pending[:n]
                progress = time.monotonic()
        if sock in ready_r:
            try:
                chunk = sock.recv(CHUNK)
            except (BlockingIOError, InterruptedError):
                chunk = None
            except OSError as e:
                raise lost(target, e, sock, meter) from None
            if chunk == b"":
                reason = meter.refusal()
                if reason is not None:
                    raise refused(target, reason)
                rest = _flushed(target, meter)
                if rest:
                    sink(rest)
                if pending or meter.owed():
                    raise ClientError(f"{target} closed the connection before replying in full", EXIT_PROTOCOL)
                if source_done:
                    return
                raise ClientError(f"{target} closed the connection", EXIT_PROTOCOL)
            if chunk:
                _received(target, meter, chunk, sink)
                progress = time.monotonic()
        if fd is not None and fd in ready_r:
            more = os.read(fd, CHUNK)
            if more:
                pending += more
                last = more[-1:]
            else:
                source_done = True
                if end_lines and last not in (b"", b"\n"):
                    pending += b"\n"
            progress = time.monotonic()


def _fileno(source: BinaryIO | None) -> int | None:
    if source is None:
        return None
    try:
        return source.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def _received(target: Target, meter: Meter, chunk: bytes, sink: Callable[[bytes], None]) -> None:
    """
    Hand what of C{chunk} is to be shown to C{sink}; a refusal line, an echo
    that differs or the server's error line raises instead (after the
    replies before it are shown).
    """
    try:
        shown = meter.on_received(chunk)
    except ServerSaid as e:
        if e.before:
            sink(e.before)
        raise said(target, e) from None
    except Mismatch:
        reason = meter.refusal()
        if reason is not None:
            raise refused(target, reason) from None
        raise Differs(f"the reply from {target} differs from what was sent", EXIT_PROTOCOL) from None
    if shown:
        sink(shown)


def _flushed(target: Target, meter: Meter) -> bytes:
    """What the meter still held when the server closed (it may be the server's error line)."""
    try:
        return meter.flush()
    except ServerSaid as e:
        raise said(target, e) from None


def said(target: Target, error: ServerSaid) -> ClientError:
    """The error for a server that answered a line with its own error line (exit 6)."""
    return ClientError(f"{target} answered line {error.line}: {error.text}", EXIT_PROTOCOL)


def lost(target: Target, error: OSError, sock: socket.socket | None = None, meter: Meter | None = None) -> ClientError:
    """
    The error for a connection that failed under us. A daemon that refuses
    a connection sends its reason and closes; when our own sending makes
    that close a reset, the reason may still be waiting to be read.
    """
    if sock is not None and meter is not None:
        for _ in range(REFUSAL_MAX // 64):
            try:
                more = sock.recv(REFUSAL_MAX, socket.MSG_DONTWAIT)
            except OSError:
                break
            if not more:
                break
            try:
                meter.on_received(more)  # not shown: we are failing; only to find the server's last word
            except ServerSaid as e:
                return said(target, e)
            except Mismatch:
                pass  # kept: refusal() below reads it
        reason = meter.refusal()
        if reason is not None:
            return refused(target, reason)
    return connection_lost(target, error)


def writer(out: BinaryIO) -> Callable[[bytes], None]:
    def sink(chunk: bytes) -> None:
        out.write(chunk)
        out.flush()

    return sink


def decided(head: bytes | bytearray) -> bool:
    """True once the start of a reply shows whether it is a refusal line: a whole line, or enough to tell."""
    if not head.startswith(REFUSAL[: len(head)]):
        return True  # cannot become "socksvc: "
    return b"\n" in head or len(head) >= REFUSAL_MAX
