"""
`socksvc chat [HOST] [PORT] [--nick NAME]`: the console chat client.

On a terminal it is an interactive console (prompt_toolkit): lines from the
server print above the input line, nicknames in colours, notices dimmed,
private messages highlighted, Up/Down recall typed lines, Tab completes
commands and nicknames, Ctrl-D or /quit leaves, a lost connection is retried
automatically with backoff (Enter retries at once). When stdin is not a
terminal (or with --plain) it is a plain line client for scripts: stdin lines
are sent, server lines are printed, escaped, to stdout.

See docs/chat-client.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from socksvc.client.common import parse_nonnegative
from socksvc.client.target import Target, add_target_arguments, connect, target_from
from socksvc.wire import CHAT_PORT

DEFAULT_TIMEOUT = 10.0


def _nick(text: str) -> str:
    if not text or any(c.isspace() for c in text) or not text.isprintable():
        raise argparse.ArgumentTypeError(f"a nickname is one word of printable characters: {text!r}")
    return text


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_target_arguments(
        p,
        CHAT_PORT,
        timeout=DEFAULT_TIMEOUT,
        timeout_help="seconds to wait for a connection, and in plain mode for the answer to --nick",
    )
    p.add_argument("--nick", "-n", metavar="NAME", type=_nick, help="take this nickname on connect (and on reconnect)")
    p.add_argument("--no-color", "--no-colour", dest="color", action="store_false", help="no colours (or set NO_COLOR)")
    p.add_argument("--timestamps", action="store_true", help="show local time on lines the server sent untimed")
    p.add_argument("--plain", action="store_true", help="plain line mode even on a terminal (for scripts)")
    p.add_argument(
        "--no-reconnect", dest="reconnect", action="store_false", help="exit (status 6) when the connection drops"
    )
    p.add_argument(
        "--drain",
        type=parse_nonnegative,
        default=2.0,
        metavar="S",
        help="plain mode: wait after stdin ends (default 2)",
    )


def register(subparsers: Any) -> None:
    """Add the `chat` subcommand to the `socksvc` command line."""
    p = subparsers.add_parser(
        "chat",
        help="join a socksvc chat server (interactive, or plain lines when stdin is not a terminal)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    add_arguments(p)
    p.set_defaults(run=run)


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def run(args: argparse.Namespace) -> int:
    """Run the client as the command line asked; return the exit code (errors raise ClientError)."""
    target = target_from(args)
    if args.plain or not _interactive():
        return run_plain_mode(target, args)
    return asyncio.run(_run_console(target, args))


def run_plain_mode(target: Target, args: argparse.Namespace) -> int:
    from socksvc.client.chat.plain import run_plain

    sock = connect(target, args.timeout)
    return run_plain(
        sock,
        target,
        stdin_fd=sys.stdin.fileno(),
        stdout=sys.stdout.buffer,
        nick=args.nick,
        answer_timeout=args.timeout,
        drain=args.drain,
        timestamps=args.timestamps,
    )


async def _run_console(target: Target, args: argparse.Namespace) -> int:
    from socksvc.client.chat.console import ChatConsole
    from socksvc.client.chat.net import open_stream
    from socksvc.client.chat.terminal import terminal_input

    reader, writer = await open_stream(target, args.timeout)
    color = args.color and not os.environ.get("NO_COLOR")
    console = ChatConsole(
        target,
        nick=args.nick,
        reconnect=args.reconnect,
        color=color,
        timestamps=args.timestamps,
        connect_timeout=args.timeout,
        input=terminal_input(),
    )
    return await console.run(reader, writer)
