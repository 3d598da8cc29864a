"""
The classic services' toolbox: C{socksvc time}, C{daytime}, C{chargen} and
C{discard}, over TCP (or a UNIX socket) or, with C{--udp}, UDP.

- C{time}: the server's RFC 868 time and its offset from the local clock,
  as C{rdate -p} shows it (RFC 868 counts whole seconds, so the offset is
  known to half a second).
- C{daytime}: the server's line, exactly as sent.
- C{chargen}: download throughput, MB/s (10^6 bytes a second).
- C{discard}: upload throughput, MB/s; over TCP the run ends when the
  server, after our half-close, closes too, so every byte counted was taken.

C{--bytes N} or C{--seconds S} (default 5 s) bound a chargen or discard
run. Plain blocking sockets with a deadline on every wait, as the probes.
"""

from __future__ import annotations

import argparse
import select
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from socksvc.client.common import (
    EXIT_CONNECT,
    EXIT_OK,
    EXIT_PROTOCOL,
    EXIT_TIMEOUT,
    ClientError,
    parse_timeout,
    plural,
    refusal,
    say,
    stdout,
)
from socksvc.client.target import (
    Target,
    add_target_arguments,
    connect,
    connection_lost,
    describe,
    refused,
    resolve,
    target_from,
)
from socksvc.wire import CHARGEN_PORT, DAYTIME_PORT, DISCARD_PORT, TIME_PORT

EPOCH_OFFSET = 2208988800
"""Seconds from 1900-01-01 (RFC 868's epoch) to 1970-01-01 (Unix's)."""
MAX_LINE = 64 * 1024
"""Most of a time or daytime answer read: both are a few bytes."""
BLOCK = 1 << 20
DEFAULT_SECONDS = 5.0
UDP_REQUEST = 512
"""chargen over UDP: the request's size (a reply is never larger: at most 512, RFC 864)."""
UDP_DISCARD_SIZE = 1400
"""discard over UDP: bytes a datagram (fits an Ethernet MTU)."""
_SUFFIX = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """argparse type for --bytes: a whole number, 1 or more, with an optional K, M or G (KiB, MiB, GiB)."""
    value = text.strip()
    scale = _SUFFIX.get(value[-1:].upper(), 1) if value else 1
    if scale > 1:
        value = value[:-1]
    if not value.isascii() or not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number of bytes (K, M, G allowed): {text!r}")
    return int(value) * scale


# -- time --------------------------------------------------------------------------


def unix_time(data: bytes, local: float) -> int:
    """The Unix time RFC 868's 4 bytes say, in the 2**32-second era nearest the local clock (so 2036 wraps right)."""
    (value,) = struct.unpack("!I", data)
    era = round((local + EPOCH_OFFSET - value) / 2**32)
    return int(value + era * 2**32 - EPOCH_OFFSET)


def run_time(args: argparse.Namespace) -> int:
    target = _target(args)
    before = time.time()
    data = _datagram(target, b"", args.timeout) if args.udp else _read_all(target, args.timeout, "time")
    after = time.time()
    if len(data) != 4:
        raise ClientError(f"{target} sent {plural(len(data), 'byte')}, not RFC 868's 4", EXIT_PROTOCOL)
    local = (before + after) / 2
    server = unix_time(data, local)
    offset = server + 0.5 - local  # the server's whole second holds its clock somewhere in [server, server + 1)
    stamp = time.strftime("%a %b %e %H:%M:%S UTC %Y", time.gmtime(server))  # as rdate -p prints it
    say(f"{target}: {stamp}")
    side = "ahead of" if offset > 0 else "behind"
    say(f"offset {offset:+.1f} s: the server is {abs(offset):.1f} s {side} the local clock")
    say("(RFC 868 counts whole seconds: the offset is known to +/-0.5 s)")
    return EXIT_OK


# -- daytime -----------------------------------------------------------------------


def run_daytime(args: argparse.Namespace) -> int:
    target = _target(args)
    data = _datagram(target, b"", args.timeout) if args.udp else _read_all(target, args.timeout, "daytime")
    if not data:
        raise ClientError(f"{target} sent nothing", EXIT_PROTOCOL)
    out = stdout()
    out.write(data)
    out.flush()
    return EXIT_OK


# -- chargen and discard -----------------------------------------------------------


class Run:
    """How far a chargen or discard run has gone, and when it is done."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.limit: int | None = args.bytes
        self.seconds = args.seconds if args.seconds is not None else (None if args.bytes else DEFAULT_SECONDS)
        self.start = time.monotonic()
        self.end: float | None = self.start + self.seconds if self.seconds is not None else None
        self.count = 0

    def done(self) -> bool:
        if self.limit is not None and self.count >= self.limit:
            return True
        return self.end is not None and time.monotonic() >= self.end

    def want(self, most: int) -> int:
        """Bytes to move next: C{most}, or what is left of --bytes."""
        return most if self.limit is None else max(0, min(most, self.limit - self.count))

    def report(self, what: str, target: Target, kind: str, note: str = "") -> None:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.count / elapsed / 1e6
        say(f"{what} {target} ({kind}): {self.count:,} bytes in {elapsed:.3f} s, {rate:.1f} MB/s{note}")


def run_chargen(args: argparse.Namespace) -> int:
    target = _target(args)
    run = Run(args)
    try:
        if args.udp:
            _chargen_udp(target, run, args.timeout)
        else:
            _chargen_tcp(target, run, args.timeout)
    except KeyboardInterrupt:
        run.report("chargen from", target, "udp" if args.udp else "tcp", " (interrupted)")
        raise
    run.report("chargen from", target, "udp" if args.udp else "tcp")
    return EXIT_OK


def _chargen_tcp(target: Target, run: Run, timeout: float) -> None:
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    with connect(target, timeout) as sock:
        first = True
        while not run.done():
            try:
                n = sock.recv_into(view, run.want(BLOCK))
            except TimeoutError:
                raise ClientError(f"no data from {target} within {timeout:g} s", EXIT_TIMEOUT) from None
            except OSError as e:
                raise connection_lost(target, e) from None
            if first and (reason := refusal(bytes(view[:n]))) is not None:
                raise refused(target, reason)
            first = False
            if not n:
                run.report("chargen from", target, "tcp")
                raise ClientError(f"{target} closed the connection after {run.count:,} bytes", EXIT_PROTOCOL)
            run.count += n


def _chargen_udp(target: Target, run: Run, timeout: float) -> None:
    request = b"\0" * UDP_REQUEST
    with _udp_socket(target) as sock:
        replies = 0
        while not run.done():
            reply = _exchange(sock, target, request, timeout if not replies else min(timeout, 1.0))
            if reply is None:
                if not replies:
                    raise ClientError(
                        f"no reply from {target} (udp) within {timeout:g} s"
                        " (a chargen whose UDP side is off answers nothing)",
                        EXIT_TIMEOUT,
                    )
                continue
            replies += 1
            run.count += len(reply)


def run_discard(args: argparse.Namespace) -> int:
    target = _target(args)
    run = Run(args)
    note = ""
    try:
        if args.udp:
            _discard_udp(target, run)
            note = ", sent (UDP discard never answers: what arrived is not known)"
        else:
            note = _discard_tcp(target, run, args.timeout)
    except KeyboardInterrupt:
        run.report("discard to", target, "udp" if args.udp else "tcp", " (interrupted)")
        raise
    run.report("discard to", target, "udp" if args.udp else "tcp", note)
    return EXIT_OK


def _discard_tcp(target: Target, run: Run, timeout: float) -> str:
    block = memoryview(b"\xa5" * BLOCK)
    with connect(target, timeout) as sock:
        try:
            while not run.done():
                size = run.want(BLOCK)
                sock.sendall(block[:size])
                run.count += size
            sock.shutdown(socket.SHUT_WR)
        except TimeoutError:
            raise ClientError(f"{target} took nothing for {timeout:g} s", EXIT_TIMEOUT) from None
        except OSError as e:
            raise _why_closed(sock, target, e) from None
        # Its close says it has read everything (RFC 863 servers close after our half-close).
        try:
            while data := sock.recv(BLOCK):
                if (reason := refusal(data)) is not None:
                    raise refused(target, reason)
        except TimeoutError:
            return f" (no close from the server within {timeout:g} s of our last byte: counted to the last send)"
        except OSError as e:
            raise connection_lost(target, e) from None
    return ""


def _why_closed(sock: socket.socket, target: Target, error: OSError) -> ClientError:
    """A send failed: a refusal line waiting to be read says why; else the connection was lost."""
    try:
        data = sock.recv(4096, socket.MSG_DONTWAIT)
    except OSError:
        data = b""
    reason = refusal(data)
    return refused(target, reason) if reason is not None else connection_lost(target, error)


def _discard_udp(target: Target, run: Run) -> None:
    block = b"\xa5" * UDP_DISCARD_SIZE
    with _udp_socket(target) as sock:
        while not run.done():
            size = run.want(UDP_DISCARD_SIZE)
            try:
                sock.send(block[:size])
            except OSError as e:  # refused: an earlier datagram's ICMP port unreachable
                raise ClientError(f"cannot reach {target} (udp): {describe(e)}", EXIT_CONNECT) from None
            run.count += size


# -- the pieces ----------------------------------------------------------------------


def _target(args: argparse.Namespace) -> Target:
    return target_from(args, "udp" if args.udp else "tcp")  # (udp refuses unix:PATH itself)


def _read_all(target: Target, timeout: float, what: str) -> bytes:
    """Everything a one-answer service sends before it closes (at most MAX_LINE); a refusal line is an error."""
    got = bytearray()
    with connect(target, timeout) as sock:
        while len(got) < MAX_LINE:
            try:
                chunk = sock.recv(MAX_LINE - len(got))
            except TimeoutError:
                raise ClientError(f"no {what} from {target} within {timeout:g} s", EXIT_TIMEOUT) from None
            except OSError as e:
                if (reason := refusal(bytes(got))) is not None:
                    raise refused(target, reason) from None
                raise connection_lost(target, e) from None
            if not chunk:
                break
            got += chunk
    if (reason := refusal(bytes(got))) is not None:
        raise refused(target, reason)
    return bytes(got)


def _udp_socket(target: Target) -> socket.socket:
    """A UDP socket connected to the target's first address (so only its replies arrive, and ICMP errors show)."""
    family, sockaddr = resolve(target, socket.SOCK_DGRAM)[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.connect(sockaddr)
    except OSError as e:
        sock.close()
        raise ClientError(f"cannot reach {target} (udp): {describe(e)}", EXIT_CONNECT) from None
    return sock


def _exchange(sock: socket.socket, target: Target, request: bytes, wait: float) -> bytes | None:
    """Send C{request}, return the reply, or None when none came within C{wait} seconds."""
    try:
        sock.send(request)
        ready, _, _ = select.select([sock], [], [], wait)
        if not ready:
            return None
        return sock.recv(65536)
    except ConnectionRefusedError:
        raise ClientError(
            f"cannot reach {target} (udp): nothing listens there (port unreachable)", EXIT_CONNECT
        ) from None
    except OSError as e:
        raise ClientError(f"cannot reach {target} (udp): {describe(e)}", EXIT_CONNECT) from None


def _datagram(target: Target, request: bytes, timeout: float) -> bytes:
    """One request, one reply, over UDP; no reply within C{timeout} is exit 5."""
    with _udp_socket(target) as sock:
        reply = _exchange(sock, target, request, timeout)
    if reply is None:
        raise ClientError(f"no reply from {target} (udp) within {timeout:g} s", EXIT_TIMEOUT)
    return reply


# -- registration ------------------------------------------------------------------


def _command(
    subparsers: Any, name: str, port: int, help_text: str, description: str, run: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(name, help=help_text, description=description)
    add_target_arguments(p, port)
    p.add_argument("--udp", "-u", action="store_true", help="over UDP instead of TCP")
    p.set_defaults(run=run)
    return p


def _bounds(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--bytes", "-b", type=parse_size, metavar="N", help="stop after N bytes (K, M, G: KiB, MiB, GiB)"
    )
    group.add_argument(
        "--seconds", type=parse_timeout, metavar="S", help=f"stop after S seconds (default {DEFAULT_SECONDS:g})"
    )


def register(subparsers: Any) -> None:
    """Add the time, daytime, chargen and discard subcommands."""
    _command(
        subparsers,
        "time",
        TIME_PORT,
        f"the server's RFC 868 time and its offset from the local clock, like rdate -p (default port {TIME_PORT})",
        "Ask a time (RFC 868) service for its time, over TCP or UDP, and print it with its offset from the "
        "local clock, as rdate -p does (RFC 868 counts whole seconds: the offset is known to half a second).",
        run_time,
    )
    _command(
        subparsers,
        "daytime",
        DAYTIME_PORT,
        f"print a daytime (RFC 867) service's line (default port {DAYTIME_PORT})",
        "Ask a daytime (RFC 867) service for its line, over TCP or UDP, and print it exactly as sent.",
        run_daytime,
    )
    chargen = _command(
        subparsers,
        "chargen",
        CHARGEN_PORT,
        f"download throughput from a chargen (RFC 864) service, MB/s (default port {CHARGEN_PORT})",
        "Read from a chargen (RFC 864) service for --seconds S (default 5) or --bytes N and print the "
        "rate in MB/s (10^6 bytes a second). Over UDP, 512-byte requests, one at a time.",
        run_chargen,
    )
    _bounds(chargen)
    discard = _command(
        subparsers,
        "discard",
        DISCARD_PORT,
        f"upload throughput to a discard (RFC 863) service, MB/s (default port {DISCARD_PORT})",
        "Send to a discard (RFC 863) service for --seconds S (default 5) or --bytes N and print the rate "
        "in MB/s (10^6 bytes a second). Over TCP the run ends when the server closes after our half-close, "
        "so every byte counted was taken; over UDP it counts what was sent.",
        run_discard,
    )
    _bounds(discard)
