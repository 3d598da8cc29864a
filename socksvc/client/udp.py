"""
C{socksvc udp}: ping a UDP echo service.

Sends C{--count} datagrams one after another, waits up to C{--timeout}
seconds for each to come back unchanged, and prints a line per reply with
its round-trip time, then a summary (sent, received, loss, min/avg/max), the
way ping does. Plain blocking sockets with a deadline on every wait: this
runs outside any reactor and cannot hang.

Exit status: 0 when at least one reply came back, 1 when none did (100%
loss, as ping); otherwise the codes of L{socksvc.client.common} (2 bad
command line, 3 unknown host, 1 a socket error).
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import attrs

from socksvc.client.common import (
    EXIT_NOT_FOUND,
    ClientError,
    argv_bytes,
    parse_nonnegative,
    parse_nonnegative_int,
    plural,
    statistics,
    usage_error,
)
from socksvc.client.target import Target, add_target_arguments, describe, resolve, target_from
from socksvc.wire import ECHO_PORT

DEFAULT_PORT = ECHO_PORT
DEFAULT_SIZE = 56
"""Bytes in a generated datagram, as ping's default (and echo --count's probe)."""
MAX_PAYLOAD_V4 = 65507
"""The largest UDP payload over IPv4: 65535 - 20 (IP header) - 8 (UDP header)."""
MAX_PAYLOAD_V6 = 65527
"""The largest UDP payload over IPv6 without jumbograms: 65535 - 8."""

UDP_HINT = "to send a message: socksvc udp HOST PORT MESSAGE"

EXIT_OK = 0
EXIT_LOSS = 1
"""No reply at all (100% loss), as ping."""


def register(subparsers: Any) -> None:
    """Add the C{udp} subcommand to the C{socksvc} console script."""
    p = subparsers.add_parser(
        "udp",
        help="ping a UDP echo service: round-trip times and loss",
        description=(
            "Send datagrams to a UDP echo service and time their return, like ping. "
            "Exit status: 0 if any reply came back, 1 if none did (as ping); "
            "the others as for every command (socksvc --help)."
        ),
    )
    add_arguments(p)
    p.set_defaults(run=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_target_arguments(
        p,
        DEFAULT_PORT,
        timeout=2.0,
        port_help="UDP port number or service name",
        timeout_help="seconds to wait for each reply",
        unix=False,
    )
    p.add_argument(
        "message",
        nargs="?",
        default=None,
        metavar="MESSAGE",
        help="what to send, as typed (default: a generated payload with a sequence number)",
    )
    p.add_argument(
        "-c",
        "--count",
        type=parse_nonnegative_int,
        default=1,
        metavar="N",
        help="datagrams to send; 0 = until Ctrl-C (default 1)",
    )
    p.add_argument(
        "-i",
        "--interval",
        type=parse_nonnegative,
        default=1.0,
        metavar="S",
        help="seconds from one send to the next when the reply came early (default 1)",
    )
    p.add_argument(
        "-s",
        "--size",
        type=parse_nonnegative_int,
        default=None,
        metavar="N",
        help=f"bytes per datagram, 0 to {MAX_PAYLOAD_V4} ({MAX_PAYLOAD_V6} over IPv6); not with MESSAGE",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print only the summary")


# -- the work ----------------------------------------------------------------


@attrs.define
class Stats:
    """What happened to the datagrams sent so far."""

    sent: int = 0
    received: int = 0
    rtts: list[float] = attrs.field(factory=list)

    def summary(self, target: Target, elapsed: float) -> list[str]:
        """The closing lines, in the words of echo --count (L{statistics})."""
        rtts_ms = [rtt * 1000 for rtt in self.rtts]
        return statistics(f"{target} udp echo", "datagram", self.sent, self.received, rtts_ms, elapsed)


def make_payload(seq: int, size: int | None) -> bytes:
    """
    The generated payload for probe C{seq}: a header, padded or cut to
    C{size} (L{DEFAULT_SIZE} when None: the same size whatever the process
    id or the sequence number, as ping's).
    """
    head = f"socksvc udp seq={seq} pid={os.getpid()} ".encode()
    if size is None:
        size = DEFAULT_SIZE
    if size <= len(head):
        return head[:size]
    pad = bytes(range(32, 127))
    body = (pad * (size // len(pad) + 1))[: size - len(head)]
    return head + body


def show_addr(sockaddr: Any) -> str:
    """An address we send to, in every command's words (C{HOST port PORT})."""
    return str(Target(str(sockaddr[0]), int(sockaddr[1])))


class Pinger:
    """One run of C{socksvc udp}: a connected UDP socket, probes, and their stats."""

    def __init__(
        self,
        args: argparse.Namespace,
        out: TextIO,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.args = args
        self.out = out
        self.clock = clock
        self.stats = Stats()
        self.sock: socket.socket | None = None
        self.family: int = socket.AF_INET
        self.sockaddr: Any = None

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def payload(self, seq: int) -> bytes:
        if self.args.message is not None:
            return argv_bytes(self.args.message)
        return make_payload(seq, self.args.size)

    def open(self, family: int, sockaddr: Any) -> None:
        self.close()
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            # connect(): the kernel then passes us only datagrams from the target,
            # and reports an ICMP port unreachable as ECONNREFUSED.
            sock.connect(sockaddr)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.sock, self.family, self.sockaddr = sock, family, sockaddr

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def check_size(self, size: int) -> None:
        limit = MAX_PAYLOAD_V6 if self.family == socket.AF_INET6 else MAX_PAYLOAD_V4
        if size > limit:
            raise usage_error(f"{size} bytes is more than a UDP datagram can carry here ({limit} at most)")

    def probe(self, seq: int) -> str:
        """
        Send probe C{seq} and wait for it: "ok", "timeout" or "refused".
        Other socket errors raise L{OSError}.
        """
        assert self.sock is not None
        data = self.payload(seq)
        self.check_size(len(data))
        sent_at = self.clock()
        try:
            self.sock.send(data)
        except ConnectionRefusedError:
            # An ICMP unreachable from an earlier datagram, reported on this call.
            return "refused"
        self.stats.sent += 1
        deadline = sent_at + self.args.timeout
        while True:
            left = deadline - self.clock()
            if left <= 0:
                return "timeout"
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                continue
            try:
                reply = self.sock.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionRefusedError:
                return "refused"
            if reply != data:
                continue  # a late reply to an earlier probe, or not an echo: not this one
            rtt = self.clock() - sent_at
            self.stats.received += 1
            self.stats.rtts.append(rtt)
            if not self.args.quiet:
                where = show_addr(self.sockaddr)
                self.say(f"{plural(len(reply), 'byte')} from {where}: seq={seq} time={rtt * 1000:.3f} ms")
            return "ok"

    def pause(self, since: float) -> None:
        """Wait out the rest of the interval, dropping stray datagrams."""
        assert self.sock is not None
        deadline = since + self.args.interval
        while (left := deadline - self.clock()) > 0:
            ready, _, _ = select.select([self.sock], [], [], left)
            if ready:
                try:
                    self.sock.recv(65536)
                except OSError:
                    pass

    def run(self) -> int:
        args = self.args
        if args.message is not None and args.size is not None:
            raise usage_error("give MESSAGE or --size, not both")
        target = target_from(args, "udp", rest="message", hint=UDP_HINT)
        addrs = [(f, a) for f, a in resolve(target, socket.SOCK_DGRAM) if f in (socket.AF_INET, socket.AF_INET6)]
        if not addrs:
            raise ClientError(f"cannot resolve host {target.host!r}: no IPv4 or IPv6 address", EXIT_NOT_FOUND)
        index = 0
        self.open(*addrs[index])
        self.check_size(len(self.payload(1)))
        start = self.clock()
        if not args.quiet:
            size = plural(len(self.payload(1)), "byte")
            self.say(f"UDP ECHO {target} ({self.sockaddr[0]}): {size} per datagram")
        seq = 0
        refused_only = True
        interrupted = False
        try:
            while args.count == 0 or seq < args.count:
                seq += 1
                started = self.clock()
                result = self.probe(seq)
                if result == "refused" and refused_only and index + 1 < len(addrs):
                    # Nothing listens at this address (say ::1 for "localhost"
                    # while the daemon is on 127.0.0.1): try the next one.
                    index += 1
                    self.stats = Stats()
                    self.open(*addrs[index])
                    self.check_size(len(self.payload(seq)))
                    if not args.quiet:
                        self.say(f"(nothing on that address; trying {show_addr(self.sockaddr)})")
                    seq -= 1
                    continue
                if result == "ok":
                    refused_only = False
                elif result == "timeout":
                    refused_only = False
                    if not args.quiet:
                        self.say(f"seq={seq}: no reply within {args.timeout:g} s")
                elif not args.quiet:
                    where = show_addr(self.sockaddr)
                    self.say(f"seq={seq}: port unreachable (nothing listening on UDP {where})")
                if result == "refused" and self.stats.sent < seq:
                    self.stats.sent += 1  # the refusal came on send: it still counts as sent and lost
                if args.count == 0 or seq < args.count:
                    self.pause(started)
        except KeyboardInterrupt:
            self.say("")
            interrupted = True
        finally:
            self.close()
        for line in self.stats.summary(target, self.clock() - start):
            self.say(line)
        if interrupted:
            raise KeyboardInterrupt  # the summary is out; exit 130, as every command
        return EXIT_OK if self.stats.received else EXIT_LOSS


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """
    The C{socksvc udp} command; gives the exit status. A bad argument, an
    unknown host or a socket error raises L{ClientError} (one line).
    """
    pinger = Pinger(args, out or sys.stdout)
    try:
        return pinger.run()
    except BrokenPipeError:
        raise  # our standard output was closed, not the socket: the command line exits 1, quietly
    except OSError as e:
        where = show_addr(pinger.sockaddr) if pinger.sockaddr is not None else str(args.host)
        raise ClientError(f"udp {where}: {describe(e)}") from None
    finally:
        pinger.close()
