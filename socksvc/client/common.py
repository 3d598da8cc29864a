"""
Shared pieces of the C{socksvc} client: errors, exit codes, option values, output.

The network probes use plain blocking sockets (with select where two
directions must move at once), outside any reactor: each probe is one short
synchronous exchange, so a reactor buys nothing, and the functions can be
called from anywhere (including a test process whose reactor is already
running) without touching global reactor state.

Every user error is a L{ClientError}: one line on stderr and a small exit
code (L{EXIT_CODES}); L{socksvc.client.main} prints it. Nothing here prints
a traceback. Where to connect (targets, resolving, connecting) is
L{socksvc.client.target}.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from typing import BinaryIO

from socksvc.util.visible import UNSAFE_STRICT, visible
from socksvc.wire import REFUSAL

PROG = "socksvc"

# Exit codes: the one table, for every command. socksvc --help prints EXIT_CODES;
# docs/client.md has the same table, word for word (tests/test_client_exits.py checks).
EXIT_OK = 0
EXIT_ERROR = 1  # anything else: standard output closed, a local I/O error; udp: no reply at all
EXIT_USAGE = 2  # bad command line (argparse uses 2 as well)
EXIT_NOT_FOUND = 3  # unknown host, name, address, service or URL scheme
EXIT_CONNECT = 4  # cannot connect: refused, no such socket, unreachable, ...
EXIT_TIMEOUT = 5  # no connection, no (complete) reply, no answer to --nick within --timeout
EXIT_PROTOCOL = 6  # connected, then refused, the server's error, reset, closed early, or a wrong reply
EXIT_INTERRUPTED = 130  # Ctrl-C

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_ERROR: (
        "other error: standard output closed, a local I/O or unexpected socket error; "
        "for udp, also: no reply came back at all (as ping)"
    ),
    EXIT_USAGE: (
        "bad command line: a bad host, port, option value or URL, a word too many; "
        "mail: no password given, or one that would cross to another host in the clear"
    ),
    EXIT_NOT_FOUND: "unknown host, name, address (no reverse name), service name or URL scheme",
    EXIT_CONNECT: "cannot connect: connection refused, no such UNIX socket, network or host unreachable",
    EXIT_TIMEOUT: "timed out: connecting, waiting for a (complete) reply, or for the answer to chat's --nick",
    EXIT_PROTOCOL: (
        "connected, then: refused by the daemon (socksvc: REASON), the server's error line "
        "(reverse: a line too long; mail: an SMTP 4xx/5xx or POP3 -ERR reply), a chat nickname refused, "
        "reset or closed early (chat: other than after /quit), an echo that differs, "
        "or a time answer that is not 4 bytes"
    ),
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}


class ClientError(Exception):
    """A user-facing failure: C{str()} is the one line to print, C{code} the exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def usage_error(message: str) -> ClientError:
    return ClientError(message, EXIT_USAGE)


# -- option values ---------------------------------------------------------


def parse_timeout(text: str) -> float:
    """argparse type for --timeout: positive seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (0 < value <= 86400):  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 86400 seconds: {text!r}")
    return value


def parse_nonnegative(text: str) -> float:
    """argparse type for --interval: seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (0 <= value <= 86400):
        raise argparse.ArgumentTypeError(f"must be between 0 and 86400 seconds: {text!r}")
    return value


def parse_count(text: str) -> int:
    """argparse type for --count: a whole number, 1 or more."""
    return _whole(text, 1)


def parse_nonnegative_int(text: str) -> int:
    """argparse type for a count or size where 0 means something: a whole number, 0 or more."""
    return _whole(text, 0)


def _whole(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {minimum} or more: {text!r}")
    return value


# -- refusals ----------------------------------------------------------------

REFUSAL_MAX = 1024
"""Reply bytes kept to recognise a refusal line (the longest reason is under 64)."""


def refusal(data: bytes) -> str | None:
    """
    The reason, made safe to print, when C{data} starts with a socksvc
    refusal line (C{socksvc: REASON}); None when it does not.
    """
    if not data.startswith(REFUSAL):
        return None
    line = data[len(REFUSAL) : REFUSAL_MAX].split(b"\n", 1)[0].rstrip(b"\r")
    reason = visible(line.decode("utf-8", "replace"), UNSAFE_STRICT).strip()
    return reason or "no reason given"


# -- output ------------------------------------------------------------------


def stdout() -> BinaryIO:
    """The binary standard output (looked up at call time, so tests can capture it)."""
    return sys.stdout.buffer


def stdin() -> BinaryIO:
    """The binary standard input (looked up at call time; empty when the process has none)."""
    if sys.stdin is None:
        return io.BytesIO()
    return sys.stdin.buffer


def argv_bytes(text: str) -> bytes:
    """A command-line argument back as the bytes the user typed (binary-safe)."""
    return os.fsencode(text)


def say(text: str) -> None:
    """One line of text on standard output."""
    out = stdout()
    out.write(text.encode("utf-8", "replace") + b"\n")
    out.flush()


def plural(count: int, noun: str) -> str:
    """C{count} and C{noun}, in the plural unless the count is 1: C{1 byte}, C{0 bytes}, C{2 round trips}."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def statistics(name: str, noun: str, sent: int, received: int, rtts_ms: list[float], elapsed: float) -> list[str]:
    """
    The closing lines of a ping-like run, in one wording for echo --count
    and udp: C{--- NAME statistics ---}, C{N NOUNs sent, N received, N.N%
    loss, time N ms}, and the round-trip times when any came back.
    """
    loss = 0.0 if sent == 0 else 100.0 * (sent - received) / sent
    lines = [
        f"--- {name} statistics ---",
        f"{plural(sent, noun)} sent, {received} received, {loss:.1f}% loss, time {elapsed * 1000:.0f} ms",
    ]
    if rtts_ms:
        avg = sum(rtts_ms) / len(rtts_ms)
        lines.append(f"rtt min/avg/max = {min(rtts_ms):.3f}/{avg:.3f}/{max(rtts_ms):.3f} ms")
    return lines
