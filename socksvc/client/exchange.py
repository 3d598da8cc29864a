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
import select
import socket
import time
from collections.abc import Callable
from typing import Any, BinaryIO

from socksvc.client.common import EXIT_PROTOCOL, EXIT_TIMEOUT, REFUSAL_MAX, ClientError, refusal
from socksvc.client.target import Target, connection_lost, refused
from socksvc.wire import REFUSAL

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


class LineMeter(Meter):
    """A reply line for every line sent."""

    def on_sent(self, data: bytes) -> None:
        self._keep_sent(data)
        self.sent += data.count(b"\n")

    def on_received(self, data: bytes) -> bytes:
        self.keep_received(data)
        self.received += data.count(b"\n")
        return data


class ReverseMeter(LineMeter):
    """
    Lines, and the first reply line is held back until it is whole, so a
    refusal line (C{socksvc: REASON}) is reported as an error, not printed
    as if it were the reversed text.
    """

    def __init__(self) -> None:
        super().__init__()
        self.held: bytearray | None = bytearray()  # None once the first line is shown

    def on_received(self, data: bytes) -> bytes:
        data = super().on_received(data)
        if self.held is None:
            return data
        self.held += data
        if not decided(self.held):
            return b""
        return self._release()

    def _release(self) -> bytes:
        if self.refusal() is not None:
            raise Mismatch()  # the caller reports the refusal
        held = bytes(self.held or b"")
        self.held = None
        return held

    def flush(self) -> bytes:
        return b"" if self.held is None else self._release()

    def refusal(self) -> str | None:
        reason = super().refusal()
        if reason is None:
            return None
        first, newline, _ = bytes(self.sent_head).partition(b"\n")
        if newline and first.rstrip(b"\r")[::-1].startswith(REFUSAL):
            return None  # our own first line, reversed, reads "socksvc: ..."
        return reason


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
                rest = meter.flush()
                if rest:
                    sink(rest)
                if pending or meter.owed():
                    raise ClientError(f"{target} closed the connection before replying in full", EXIT_PROTOCOL)
                if source_done:
                    return
                raise ClientError(f"{target} closed the connection", EXIT_PROTOCOL)
            if chunk:
                shown = _received(target, meter, chunk)
                if shown:
                    sink(shown)
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


def _received(target: Target, meter: Meter, chunk: bytes) -> bytes:
    """What of C{chunk} to show; a refusal line (or an echo that differs) raises instead."""
    try:
        shown = meter.on_received(chunk)
    except Mismatch:
        reason = meter.refusal()
        if reason is not None:
            raise refused(target, reason) from None
        raise Differs(f"the reply from {target} differs from what was sent", EXIT_PROTOCOL) from None
    return shown


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
            meter.keep_received(more)
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
