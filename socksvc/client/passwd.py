"""
C{socksvc passwd NAME}: one line for the admin listener's password file.

Prints C{NAME:$scrypt$...} (L{socksvc.util.passwords}); append it to the
file C{[daemon] http_auth} names, then reload the daemon. The password comes
from C{SOCKSVC_PASSWORD}, or is asked twice on the terminal; it is never an
argument (it would show in C{ps} and the shell's history).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

from socksvc.client.common import EXIT_OK, ClientError, say, usage_error
from socksvc.client.status import PASSWORD_ENV
from socksvc.util.passwords import check_name, hash_password


def run_passwd(args: argparse.Namespace) -> int:
    try:
        check_name(args.name)
    except ValueError as e:
        raise usage_error(str(e)) from None
    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        if not sys.stdin or not sys.stdin.isatty():
            raise usage_error(f"give the password in {PASSWORD_ENV}, or run this on a terminal")
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise ClientError("the two passwords differ")
    if not password:
        raise usage_error("an empty password")
    say(f"{args.name}:{hash_password(password)}")
    return EXIT_OK


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "passwd",
        help="a NAME:HASH line for the admin listener's password file (http_auth)",
        description=(
            "Print NAME:HASH (scrypt) for the file [daemon] http_auth names; append it there and reload "
            f"the daemon. The password comes from {PASSWORD_ENV} or is asked twice on the terminal."
        ),
    )
    parser.add_argument("name", metavar="NAME", help="the user name")
    parser.set_defaults(run=run_passwd)
