"""
C{socksvc mail}: send a message over SMTP, list, read and delete messages
over POP3, and make a password hash for a users file.

    socksvc mail send [TARGET] --from A --to B [--to C] [--subject S] [--starttls] [--auth USER]
    socksvc mail list [TARGET] --user U [--stls]
    socksvc mail read N [TARGET] --user U [--stls]
    socksvc mail delete N [TARGET] --user U [--stls]
    socksvc mail hash

The body of C{send} is standard input (like mail(1)); what is printed is
the server's final reply. The network half is L{socksvc.client.mailnet}.
"""

from __future__ import annotations

import argparse
import email.header
import email.policy
import email.utils
import getpass
import os
import sys
from email.message import EmailMessage
from typing import Any

from socksvc.client.common import EXIT_OK, EXIT_PROTOCOL, EXIT_USAGE, ClientError, parse_count, say, stdin, stdout
from socksvc.client.mailnet import PASSWORD_ENV, errors, password, pop3_session, shown, smtp_session
from socksvc.client.target import add_target_arguments, target_from
from socksvc.util.passwords import hash_password
from socksvc.util.visible import UNSAFE_STRICT, visible
from socksvc.wire import POP3_PORT, SMTP_PORT

MAX_BODY = 64 << 20
"""Octets of standard input sent as a body at most."""


def address(text: str) -> str:
    """argparse type for --from and --to: one address, no display name, no line breaks."""
    value = text.strip()
    if not value or any(c in value for c in "<>\r\n\0 ") or len(value) > 254:
        raise argparse.ArgumentTypeError(f"not an address (user@domain): {text!r}")
    return value


def _no_password(text: str) -> str:
    raise argparse.ArgumentTypeError(
        f"not on the command line (every user of this host can see it): use --password-file or ${PASSWORD_ENV}"
    )


def _secrets(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--password", type=_no_password, help=argparse.SUPPRESS)
    parser.add_argument(
        "--password-file",
        metavar="FILE",
        help=f"read the password from FILE's first line (else ${PASSWORD_ENV}, else a prompt)",
    )
    parser.add_argument("--cafile", metavar="FILE", help="CA certificates to check the server's TLS certificate with")
    parser.add_argument("--insecure", action="store_true", help="accept any TLS certificate (a local test sink)")


def register(subparsers: Any) -> None:
    """Add the mail command and its subcommands."""
    mail = subparsers.add_parser(
        "mail",
        help=f"send mail over SMTP (default port {SMTP_PORT}); list, read, delete it over POP3 ({POP3_PORT})",
        description="Send a message over SMTP, or list, read and delete messages over POP3.",
    )
    sub = mail.add_subparsers(dest="mail_command", metavar="SUBCOMMAND", required=True)

    send = sub.add_parser("send", help="send standard input as a message", description=SEND_DOC, allow_abbrev=False)
    add_target_arguments(send, SMTP_PORT, timeout=30.0)
    send.add_argument("--from", dest="sender", type=address, required=True, metavar="A", help="the sender")
    send.add_argument("--to", dest="to", type=address, action="append", required=True, metavar="B", help="a recipient")
    send.add_argument("--subject", "-s", default=None, metavar="S", help="the Subject header")
    send.add_argument(
        "--starttls", action="store_true", help="switch to TLS first (required to send a password off this host)"
    )
    send.add_argument("--auth", metavar="USER", help="authenticate as USER (password: see --password-file)")
    _secrets(send)
    send.set_defaults(run=run_send, command_parser=send)

    for name, doc in (("list", "list the messages"), ("read", "print message N"), ("delete", "delete message N")):
        p = sub.add_parser(name, help=doc, description=f"POP3: {doc}.", allow_abbrev=False)
        if name != "list":
            p.add_argument("number", type=parse_count, metavar="N", help="the message number (from list)")
        add_target_arguments(p, POP3_PORT, timeout=30.0)
        p.add_argument("--user", required=True, metavar="U", help="the POP3 user name")
        p.add_argument("--stls", action="store_true", help="switch to TLS first (required off this host)")
        _secrets(p)
        p.set_defaults(run=RUNS[name], command_parser=p)

    hashed = sub.add_parser(
        "hash",
        help="print an scrypt hash of a password, for a users file",
        description=f"Print a hash of a password (a prompt, twice; or --password-file, or ${PASSWORD_ENV}) "
        "for the users file of the smtp and pop3 services: NAME:HASH[:ADDRESS].",
        allow_abbrev=False,
    )
    hashed.add_argument("--password-file", metavar="FILE", help="read the password from FILE's first line")
    hashed.add_argument("--password", type=_no_password, help=argparse.SUPPRESS)
    hashed.set_defaults(run=run_hash, command_parser=hashed)


SEND_DOC = (
    "Send standard input as the body of a message (like mail(1)) to an SMTP server, and print its final "
    "reply. From, To, Subject, Date and Message-ID headers are added; a body that is not UTF-8 is refused."
)


def message(args: argparse.Namespace, body: bytes) -> bytes:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ClientError("standard input is not UTF-8 text", EXIT_USAGE) from None
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = args.sender
    msg["To"] = ", ".join(args.to)
    if args.subject is not None:
        msg["Subject"] = " ".join(args.subject.split())
    msg["Date"] = email.utils.formatdate(localtime=True)
    msg["Message-ID"] = email.utils.make_msgid(domain=args.sender.rpartition("@")[2] or "localhost")  # no getfqdn
    msg.set_content(text)
    return msg.as_bytes()


def run_send(args: argparse.Namespace) -> int:
    target = target_from(args)
    body = stdin().read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise ClientError(f"standard input is over {MAX_BODY >> 20} MiB", EXIT_USAGE)
    data = message(args, body)
    client = smtp_session(target, args.timeout, args)
    with errors(target, args.timeout, "the message"):
        options = [f"SIZE={len(data)}"] if client.has_extn("size") else []
        if client.has_extn("8bitmime") and max(data, default=0) > 127:
            options.append("BODY=8BITMIME")
        code, reply = client.mail(args.sender, options)
        if code != 250:
            client.quit()
            raise ClientError(f"{target} refused the sender {args.sender}: {code} {shown(reply)}", EXIT_PROTOCOL)
        for rcpt in args.to:
            code, reply = client.rcpt(rcpt)
            if code not in (250, 251):
                client.rset()
                client.quit()
                raise ClientError(f"{target} refused recipient {rcpt}: {code} {shown(reply)}", EXIT_PROTOCOL)
        code, reply = client.data(data)
        if code != 250:
            raise ClientError(f"{target} refused the message: {code} {shown(reply)}", EXIT_PROTOCOL)
        say(f"{code} {shown(reply)}")
        client.quit()
    return EXIT_OK


def _header(value: str | None) -> str:
    if not value:
        return ""
    try:
        text = str(email.header.make_header(email.header.decode_header(value)))
    except Exception:  # a malformed encoded word: as it came
        text = value
    return " ".join(text.split())


def run_list(args: argparse.Namespace) -> int:
    target = target_from(args)
    client = pop3_session(target, args.timeout, args)
    with errors(target, args.timeout, "LIST"):
        _resp, listing, _octets = client.list()
        for entry in listing:
            number, _, size = entry.decode("ascii", "replace").partition(" ")
            _resp, lines, _octets = client.top(int(number), 0)
            headers = email.message_from_bytes(b"\r\n".join(lines) + b"\r\n", policy=email.policy.compat32)
            sender, subject = _header(headers["From"]), _header(headers["Subject"])
            say(visible(f"{number}\t{size}\t{sender}\t{subject}", UNSAFE_STRICT))
        client.quit()
    return EXIT_OK


def run_read(args: argparse.Namespace) -> int:
    target = target_from(args)
    client = pop3_session(target, args.timeout, args)
    with errors(target, args.timeout, f"RETR {args.number}"):
        _resp, lines, _octets = client.retr(args.number)
        client.quit()
    out = stdout()
    if sys.stdout.isatty():  # a stranger's message must not drive the terminal
        out.write(b"".join(visible(x.decode("utf-8", "replace"), UNSAFE_STRICT).encode() + b"\n" for x in lines))
    else:
        out.write(b"".join(line + b"\n" for line in lines))
    out.flush()
    return EXIT_OK


def run_delete(args: argparse.Namespace) -> int:
    target = target_from(args)
    client = pop3_session(target, args.timeout, args)
    with errors(target, args.timeout, f"DELE {args.number}"):
        client.dele(args.number)
        reply = client.quit()
    say(shown(reply))
    return EXIT_OK


def run_hash(args: argparse.Namespace) -> int:
    if args.password_file or os.environ.get(PASSWORD_ENV) is not None:
        secret = password(args, "")
    else:
        try:
            secret = getpass.getpass("Password: ")
            if getpass.getpass("Again: ") != secret:
                raise ClientError("the passwords differ", EXIT_USAGE)
        except (OSError, EOFError):
            raise ClientError(f"no password: give --password-file FILE or set {PASSWORD_ENV}", EXIT_USAGE) from None
    if not secret:
        raise ClientError("an empty password", EXIT_USAGE)
    say(hash_password(secret))
    return EXIT_OK


RUNS = {"list": run_list, "read": run_read, "delete": run_delete}
