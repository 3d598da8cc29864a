"""
The C{socksvc} console script: one argparse parser, a subcommand a module.

Each subcommand module has C{register(subparsers)}, which adds its parser
with C{set_defaults(run=fn)}; C{fn(args)} returns the exit code or raises
L{ClientError}, which becomes one line on stderr and its exit code. Ctrl-C
exits 130 quietly; a closed standard output (C{socksvc ... | head}) exits
quietly as well.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Sequence
from typing import NoReturn

from socksvc.client import classic, lookup, mail, passwd, probes, status, udp
from socksvc.client.chat import command as chat
from socksvc.client.common import EXIT_CODES, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, PROG, ClientError

MODULES = (probes, udp, classic, chat, mail, lookup, status, passwd)


def version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version

        return dist_version("socksvc")
    except PackageNotFoundError:
        return "unknown"


def _epilog() -> str:
    lines = [
        "targets (every command that connects):",
        "  nothing (localhost, the command's port), HOST, HOST PORT, [IPv6] PORT,",
        "  or unix:PATH (every command but udp and --udp); the command's MESSAGE or TEXT follows",
        "",
        "exit codes (every command):",
    ]
    for code, text in sorted(EXIT_CODES.items()):
        lines += textwrap.wrap(text, 79, initial_indent=f"  {code:<5}", subsequent_indent=" " * 7)
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Client and toolbox for the socksvc daemon's services (echo, greeting, reverse, UDP echo, "
            "time, daytime, chargen, discard, chat, mail)."
        ),
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", "-V", action="version", version=f"{PROG} {version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in MODULES:
        module.register(subparsers)
    for command in subparsers.choices.values():
        command.set_defaults(command_parser=command)  # its own usage for its own errors
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    """Parse C{argv} (default sys.argv[1:]), run the subcommand, return its exit code."""
    try:
        parser = build_parser()
        try:
            args, extra = parser.parse_known_args(argv)
            if extra:  # a command's extra words are that command's usage error, not the top level's
                args.command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
        except SystemExit as e:  # --help, --version, or a usage error (argparse printed it)
            return e.code if isinstance(e.code, int) else EXIT_USAGE
        return int(args.run(args))
    except ClientError as e:
        print(f"{PROG}: {e.message}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_ERROR


def _quiet_stdout() -> None:
    """Standard output was closed under us: point it at /dev/null so the exit flush is silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The console script: exits with the subcommand's code (via SystemExit)."""
    raise SystemExit(run(argv))


if __name__ == "__main__":
    main()
