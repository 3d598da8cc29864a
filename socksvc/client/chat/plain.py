"""
Plain line mode: the chat client for scripts (stdin is not a terminal).

Lines read from stdin are sent as they are; every line the server sends is
written to stdout, escaped (no control character from the network ever reaches
stdout) and otherwise unchanged, so scripts can parse the documented formats.
With a nickname given, ``/nick NAME`` goes first and stdin waits for the
server's answer, so a line of stdin is never tried as a nickname and a
refused nickname is an error. When stdin ends, the client sends ``/quit`` and waits for the server to close
(so the replies to the last lines still arrive), but no longer than C{drain}
seconds after the last byte it managed to send; when the server closes first,
the client exits at once.

One select() loop over the socket and stdin: it works for pipes, regular files
and /dev/null alike, and needs no event loop or thread.
"""

from __future__ import annotations

import os
import select
import socket
import time
from collections.abc import Callable
from typing import BinaryIO

from socksvc.client.chat.format import classify, decode, escape, plain
from socksvc.client.common import EXIT_OK, EXIT_PROTOCOL, EXIT_TIMEOUT, ClientError, refusal
from socksvc.client.target import Target, connection_lost, refused
from socksvc.util.lines import LineSplitter, TooLong
from socksvc.wire import (
    CHAT_DISCONNECTED,
    CHAT_ERROR_TEXT,
    CHAT_NICK_ACCEPTED,
    CHAT_NICK_REFUSED,
    CHAT_QUIT,
    CHAT_SHUTDOWN,
)

MAX_LINE = 1 << 20
"""Longest server line shown (longer ones are replaced by a note)."""
SEND_BUFFER_MAX = 1 << 16
"""Stop reading stdin while this much is waiting to be sent."""


def run_plain(
    sock: socket.socket,
    target: Target,
    *,
    stdin_fd: int,
    stdout: BinaryIO,
    nick: str | None = None,
    answer_timeout: float = 10.0,
    drain: float = 2.0,
    timestamps: bool = False,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """
    Chat over the connected C{sock} until stdin ends (then drain) or the
    server closes. With C{nick}, C{/nick NICK} goes first and stdin is not
    read until the server has answered it: no line of stdin is ever taken
    as a nickname; a refused nickname is an error (exit 6), no answer within
    C{answer_timeout} seconds too (exit 5). Returns 0 when stdin ended and
    the server let us go; anything else raises L{ClientError} (exit 6): the
    daemon refused us (its
    first line is C{socksvc: REASON}: the access list or a connection limit;
    never printed as a chat line), the connection failed, or the server
    closed it other than in answer to our C{/quit} (with its reason, C{-!-
    Disconnected: REASON}, when it gave one).
    """
    sock.setblocking(False)
    out = bytearray()
    answer_by: float | None = None  # waiting for the answer to /nick until then
    if nick:
        out += b"/nick " + nick.encode("utf-8") + b"\n"
        answer_by = clock() + answer_timeout
    splitter = LineSplitter(MAX_LINE)
    stdin_open = True
    stdin_tail = b""  # the last byte read from stdin, to end a final unterminated line
    deadline: float | None = None
    first = True  # no line from the server yet: the first may be a refusal
    last_notice = ""  # the server's last notice: why it closed, when it says

    def show(lines: list[bytes | TooLong]) -> None:
        nonlocal first, last_notice, answer_by
        text = []
        refusal_text = None
        if first and lines:
            first = False
            line = lines[0]
            reason = None if isinstance(line, TooLong) else refusal(line)
            if reason is not None:
                raise refused(target, reason)
        for line in lines:
            if isinstance(line, TooLong):
                text.append("-!- (a line longer than 1 MiB was skipped)")
                continue
            decoded = decode(line)
            said = classify(decoded)
            if said.kind == "notice" and not said.history:
                last_notice = said.text
                if answer_by is not None and refusal_text is None:
                    if said.text.startswith(CHAT_NICK_ACCEPTED):
                        answer_by = None  # stdin may be read now
                    elif said.text.startswith(CHAT_ERROR_TEXT):
                        refusal_text = said.text
            text.append(plain(decoded, time.strftime("%H:%M") if timestamps else ""))
            if refusal_text is not None:
                break  # the lines up to the refusal are shown; we are leaving
        if not text:
            return
        try:
            stdout.write(("\n".join(text) + "\n").encode("utf-8"))
            stdout.flush()
        except ValueError:  # closed under us: as a closed pipe (the command line exits 1, quietly)
            raise BrokenPipeError() from None
        if refusal_text is not None:
            raise nick_refused(target, nick or "", refusal_text)

    try:
        while True:
            readers: list[int | socket.socket] = [sock]
            if stdin_open and answer_by is None and len(out) < SEND_BUFFER_MAX:
                readers.append(stdin_fd)
            writers = [sock] if out else []
            until = deadline if answer_by is None else answer_by
            timeout = None if until is None else max(0.0, until - clock())
            ready_r, ready_w, _ = select.select(readers, writers, [], timeout)
            if answer_by is not None and clock() >= answer_by and not ready_r:
                raise ClientError(f"no answer to /nick from {target} within {answer_timeout:g} s", EXIT_TIMEOUT)
            if not ready_r and not ready_w and deadline is not None and clock() >= deadline:
                break
            if sock in ready_w:
                try:
                    sent = sock.send(out)
                except BlockingIOError:
                    sent = 0
                except OSError as e:
                    raise connection_lost(target, e) from None
                del out[:sent]
                if sent and not stdin_open:
                    deadline = clock() + drain  # drain counts from the last byte sent
            if stdin_fd in ready_r:
                data = os.read(stdin_fd, 65536)
                if data:
                    out += data
                    stdin_tail = data[-1:]
                else:
                    stdin_open = False
                    if stdin_tail not in (b"", b"\n"):
                        out += b"\n"
                    out += b"/quit\n"
                    deadline = clock() + drain
            if sock in ready_r:
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as e:
                    raise connection_lost(target, e) from None
                if not data:
                    rest = splitter.feed(b"\n") if splitter.pending else []
                    show(rest)
                    if last_notice != CHAT_QUIT:
                        raise closed(target, last_notice)
                    break
                show(splitter.feed(data))
    finally:
        sock.close()
    return EXIT_OK


def nick_refused(target: Target, nick: str, notice: str) -> ClientError:
    """The error for a C{--nick} the server did not take (taken, reserved, not allowed): exit 6."""
    reason = notice[len(CHAT_NICK_REFUSED) :] if notice.startswith(CHAT_NICK_REFUSED) else notice
    reason = reason.removeprefix(CHAT_ERROR_TEXT)
    return ClientError(f"{target} refused the nickname {escape(repr(nick))}: {escape(reason)}", EXIT_PROTOCOL)


def closed(target: Target, notice: str) -> ClientError:
    """The error for a server that closed the connection without our C{/quit}: exit 6."""
    why = notice[len(CHAT_DISCONNECTED) :] if notice.startswith(CHAT_DISCONNECTED) else ""
    if notice == CHAT_SHUTDOWN:
        why = notice
    return ClientError(f"{target} closed the connection" + (f": {escape(why)}" if why else ""), EXIT_PROTOCOL)
