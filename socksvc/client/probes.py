"""
The TCP probes: C{socksvc echo}, C{socksvc greet}, C{socksvc reverse}.

Each connects (L{socksvc.client.target.connect}) and moves bytes through
L{socksvc.client.exchange.exchange}, which checks every reply before it is
shown; greet reads until the server closes.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from socksvc.client.common import (
    EXIT_OK,
    EXIT_PROTOCOL,
    EXIT_TIMEOUT,
    ClientError,
    argv_bytes,
    parse_count,
    parse_nonnegative,
    plural,
    refusal,
    say,
    statistics,
    stdin,
    stdout,
    usage_error,
)
from socksvc.client.exchange import CHUNK, Differs, EchoMeter, ReverseMeter, decided, exchange, lost, writer
from socksvc.client.target import Target, add_target_arguments, connect, peer, refused, target_from
from socksvc.wire import ECHO_PORT, GREETING_PORT, REVERSE_PORT

MAX_GREETING = 64 * 1024  # a greeting is under 512 bytes; stop reading well past that
DEFAULT_PAYLOAD = b"socksvc echo probe 0123456789abcdefghijklmnopqrstuvwxyz\n"  # 56 bytes, as ping


# -- echo ----------------------------------------------------------------------


ECHO_HINT = "to send a message: socksvc echo HOST PORT MESSAGE, or pipe it on stdin"
REVERSE_HINT = "to reverse text: socksvc reverse HOST PORT TEXT, or pipe lines on stdin"


def run_echo(args: argparse.Namespace) -> int:
    target = target_from(args, rest="message", hint=ECHO_HINT)
    if args.count is None:
        return _echo_once(args, target)
    return _echo_count(args, target)


def _echo_once(args: argparse.Namespace, target: Target) -> int:
    out = stdout()
    with connect(target, args.timeout) as sock:
        if args.message is not None:
            data = argv_bytes(args.message)
            exchange(sock, target, data=data, sink=writer(out), meter=EchoMeter(), timeout=args.timeout)
            if data and not data.endswith(b"\n"):
                out.write(b"\n")  # the prompt on a line of its own; the reply itself was exact
                out.flush()
        else:
            exchange(sock, target, source=stdin(), sink=writer(out), meter=EchoMeter(), timeout=args.timeout)
    return EXIT_OK


def _payload(args: argparse.Namespace) -> bytes:
    if args.message is not None:
        data = argv_bytes(args.message)
    else:
        source = stdin()
        data = DEFAULT_PAYLOAD if source.isatty() else source.read()
    if not data:
        raise usage_error("echo --count needs a message that is not empty")
    return data


def _echo_count(args: argparse.Namespace, target: Target) -> int:
    payload = _payload(args)
    times: list[float] = []
    rounds = 0
    start = time.monotonic()
    with connect(target, args.timeout) as sock:
        address = peer(sock, target)
        via = "" if address.path is not None else f" ({address.host})"
        say(f"ECHO {target}{via}: {plural(len(payload), 'byte')}, {plural(args.count, 'round trip')}")
        try:
            for seq in range(1, args.count + 1):
                if seq > 1 and args.interval:
                    time.sleep(args.interval)
                rounds += 1
                got = bytearray()
                t0 = time.perf_counter()
                try:  # EchoMeter checks every byte: once it returns, got == payload
                    exchange(sock, target, data=payload, sink=got.extend, meter=EchoMeter(), timeout=args.timeout)
                except Differs:
                    raise ClientError(
                        f"reply {seq} from {target} differs from what was sent ({len(payload)} bytes)", EXIT_PROTOCOL
                    ) from None
                rtt = (time.perf_counter() - t0) * 1000.0
                times.append(rtt)
                say(f"{plural(len(got), 'byte')} from {address}: seq={seq} time={rtt:.3f} ms")
        finally:
            _summary(target, rounds, times, time.monotonic() - start)
    return EXIT_OK


def _summary(target: Target, rounds: int, times: list[float], elapsed: float) -> None:
    for line in statistics(f"{target} echo", "message", rounds, len(times), times, elapsed):
        say(line)


# -- greet ---------------------------------------------------------------------


def run_greet(args: argparse.Namespace) -> int:
    target = target_from(args)
    out = stdout()
    got = 0
    head: bytearray | None = bytearray()  # the start of the greeting, held until it cannot be a refusal line
    with connect(target, args.timeout) as sock:
        while got < MAX_GREETING:
            try:
                chunk = sock.recv(min(CHUNK, MAX_GREETING - got))
            except TimeoutError:
                raise ClientError(f"no greeting from {target} within {args.timeout:g} s", EXIT_TIMEOUT) from None
            except OSError as e:
                if head and (reason := refusal(bytes(head))) is not None:
                    raise refused(target, reason) from None
                raise lost(target, e) from None
            if not chunk:
                break
            got += len(chunk)
            if head is not None:
                head += chunk
                if not decided(head):
                    continue
                chunk, head = bytes(head), None
                if (reason := refusal(chunk)) is not None:
                    raise refused(target, reason)
            out.write(chunk)
            out.flush()
    if head:
        if (reason := refusal(bytes(head))) is not None:
            raise refused(target, reason)
        out.write(head)
        out.flush()
    if not got:
        raise ClientError(f"{target} closed the connection without a greeting", EXIT_PROTOCOL)
    return EXIT_OK


# -- reverse -------------------------------------------------------------------


def run_reverse(args: argparse.Namespace) -> int:
    target = target_from(args, rest="text", hint=REVERSE_HINT)
    out = stdout()
    with connect(target, args.timeout) as sock:
        if args.text is not None:
            data = argv_bytes(args.text)
            exchange(
                sock, target, data=data, sink=writer(out), meter=ReverseMeter(), timeout=args.timeout, end_lines=True
            )
        else:
            exchange(
                sock,
                target,
                source=stdin(),
                sink=writer(out),
                meter=ReverseMeter(),
                timeout=args.timeout,
                end_lines=True,
            )
    return EXIT_OK


# -- registration --------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add the echo, greet and reverse subcommands."""
    echo = subparsers.add_parser(
        "echo",
        help=f"send a message to an echo service and print the reply (default port {ECHO_PORT})",
        description=(
            "Send MESSAGE (or standard input, byte for byte, when there is no MESSAGE) to an echo "
            "service and print what comes back. With --count, send it N times on one connection and "
            "print each round-trip time and min/avg/max, like ping (standard input is read once for "
            "the payload; from a terminal a 56-byte probe is sent)."
        ),
    )
    add_target_arguments(echo, ECHO_PORT)
    echo.add_argument("message", nargs="?", metavar="MESSAGE", help="what to send (default: standard input)")
    echo.add_argument("--count", "-c", type=parse_count, metavar="N", help="round trips to time, like ping")
    echo.add_argument(
        "--interval",
        "-i",
        type=parse_nonnegative,
        default=1.0,
        metavar="S",
        help="seconds between round trips with --count (default 1, 0 = back to back)",
    )
    echo.set_defaults(run=run_echo)

    greet = subparsers.add_parser(
        "greet",
        help=f"print a greeting service's message (default port {GREETING_PORT})",
        description="Connect to a greeting (RFC 865 style) service and print what it says before it closes.",
    )
    add_target_arguments(greet, GREETING_PORT)
    greet.set_defaults(run=run_greet)

    reverse = subparsers.add_parser(
        "reverse",
        help=f"send lines to a reverse service and print them reversed (default port {REVERSE_PORT})",
        description=(
            "Send TEXT (or the lines of standard input when there is no TEXT) to a reverse service "
            "and print each line as it comes back, reversed."
        ),
    )
    add_target_arguments(reverse, REVERSE_PORT)
    reverse.add_argument("text", nargs="?", metavar="TEXT", help="a line to reverse (default: standard input)")
    reverse.set_defaults(run=run_reverse)
