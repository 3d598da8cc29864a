"""
Pure pieces of an SMTP transaction: MAIL FROM parameters, the trace header
a filed message starts with, and what the announcement says.
"""

from __future__ import annotations

import email.utils
from collections.abc import Sequence
from typing import Any

from twisted.internet.address import UNIXAddress

Reply = tuple[int, str]
"""An SMTP reply: code, and text (starting with the enhanced status code where one is due)."""

MAX_PATH = 256
"""Octets of a reverse- or forward-path, angle brackets included (RFC 5321 4.5.3.1.3)."""


def mail_params(opts: bytes | None, max_size: int, esmtp: bool) -> Reply | None:
    """
    Check MAIL FROM's parameters (RFC 5321 4.1.1.11 and the extensions we
    offer): the reply that refuses them, or None when they are fine.
    SIZE=n over C{max_size} is refused at once (RFC 1870: 552).
    """
    if not opts or not opts.strip():
        return None
    if not esmtp:
        return 555, "5.5.4 MAIL FROM parameters need EHLO, not HELO"
    for item in opts.split():
        key, eq, value = item.partition(b"=")
        name = key.upper()
        if name == b"SIZE":
            if not eq or not value.isdigit() or len(value) > 20:
                return 501, "5.5.4 Syntax: SIZE=number"
            if int(value) > max_size:
                return 552, "5.3.4 Message size exceeds fixed maximum message size"
        elif name == b"BODY":
            if value.upper() not in (b"7BIT", b"8BITMIME"):
                return 501, "5.5.4 Syntax: BODY=7BIT or BODY=8BITMIME"
        elif name == b"AUTH":
            continue  # RFC 4954 5: the submitter's identity; nothing to relay it to
        elif name == b"SMTPUTF8":
            return 555, "5.6.7 SMTPUTF8 is not offered by this server"
        else:
            shown = key[:32].decode("ascii", "replace")
            return 555, f"5.5.4 MAIL FROM parameter {shown} not recognized"
    return None


def peer_text(peer: Any) -> str:
    """How the Received header names the client's end."""
    if isinstance(peer, UNIXAddress):
        return "unix socket"
    host = getattr(peer, "host", "")
    return f"[{host}]" if host else "unknown"


def trace(
    *,
    sender: str,
    recipients: Sequence[str],
    helo: str,
    peer: str,
    host: str,
    protocol: str,
    ident: str,
    when: float,
) -> bytes:
    """
    Return-Path and Received (RFC 5321 4.4), LF line ends, folded: what a
    message filed here starts with. Every part is ASCII the protocol has
    already checked (HELO's argument, addresses Twisted's grammar parsed).
    """
    date = email.utils.formatdate(when, usegmt=True)
    lines = [
        f"Return-Path: <{sender}>",
        f"Received: from {helo} ({peer})",
        f"\tby {host} (socksvc) with {protocol} id {ident}",
    ]
    if len(recipients) == 1:
        lines.append(f"\tfor <{recipients[0]}>;")
    else:
        lines[-1] += ";"
    lines.append(f"\t{date}")
    return ("\n".join(lines) + "\n").encode("ascii", "replace")


ANNOUNCE_RECIPIENTS = 3


def announcement(sender: str, recipients: Sequence[str], subject: str) -> str:
    """One line: C{mail for TO from FROM: SUBJECT} (the chat escapes it)."""
    shown = ", ".join(recipients[:ANNOUNCE_RECIPIENTS])
    more = len(recipients) - ANNOUNCE_RECIPIENTS
    if more > 0:
        shown += f" and {more} more"
    text = f"mail for {shown} from {sender or '<>'}"
    return f"{text}: {subject}" if subject else text
