"""
The network half of C{socksvc mail}: SMTP and POP3 sessions (the standard
library's smtplib and poplib) on a socket from L{socksvc.client.target}, so
the target grammar, UNIX sockets, timeouts and error wording are every other
command's; TLS; passwords; and every failure as one L{ClientError}.

A password never comes from the command line: C{--password-file FILE} (its
first line), else the C{SOCKSVC_PASSWORD} environment variable, else a
prompt on the terminal. It is never sent in the clear except to a loopback
address or a UNIX socket: elsewhere C{--starttls} (SMTP) or C{--stls}
(POP3) is required.
"""

from __future__ import annotations

import contextlib
import getpass
import ipaddress
import os
import poplib
import smtplib
import socket
import ssl
import sys
from collections.abc import Iterator
from typing import Any

from socksvc.client.common import EXIT_PROTOCOL, EXIT_TIMEOUT, EXIT_USAGE, ClientError
from socksvc.client.target import Target, connect, connection_lost, refused
from socksvc.util.visible import UNSAFE_STRICT, visible
from socksvc.wire import REFUSAL_PREFIX

PASSWORD_ENV = "SOCKSVC_PASSWORD"
MAX_PASSWORD_FILE = 4096


def shown(text: str | bytes) -> str:
    """Server text made safe for a terminal, one line."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return visible(" ".join(text.split()), UNSAFE_STRICT)


def password(args: Any, prompt: str) -> str:
    """The password: --password-file, else $SOCKSVC_PASSWORD, else a prompt on the terminal."""
    path = getattr(args, "password_file", None)
    if path:
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_PASSWORD_FILE + 1)
        except OSError as e:
            raise ClientError(f"cannot read the password file {path!r}: {e.strerror}", EXIT_USAGE) from None
        if len(data) > MAX_PASSWORD_FILE:
            raise ClientError(f"the password file {path!r} is over {MAX_PASSWORD_FILE} bytes", EXIT_USAGE)
        return data.decode("utf-8", "replace").splitlines()[0] if data.strip() else ""
    env = os.environ.get(PASSWORD_ENV)
    if env is not None:
        return env
    if not (sys.stdin is not None and sys.stdin.isatty()) and not os.path.exists("/dev/tty"):
        raise ClientError(f"no password: give --password-file FILE or set {PASSWORD_ENV}", EXIT_USAGE)
    try:
        return getpass.getpass(prompt)
    except (OSError, EOFError):
        raise ClientError(f"no password: give --password-file FILE or set {PASSWORD_ENV}", EXIT_USAGE) from None


def tls_context(args: Any) -> ssl.SSLContext:
    """Verifying by default (the system's CAs, or --cafile); --insecure verifies nothing."""
    if getattr(args, "insecure", False):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    try:
        return ssl.create_default_context(cafile=getattr(args, "cafile", None))
    except (OSError, ssl.SSLError) as e:
        why = getattr(e, "strerror", None) or e
        raise ClientError(f"cannot read --cafile {args.cafile!r}: {why}", EXIT_USAGE) from None


def is_local(sock: socket.socket) -> bool:
    """Connected to a loopback address or over a UNIX socket: a password may cross in the clear."""
    if sock.family == socket.AF_UNIX:
        return True
    try:
        ip = ipaddress.ip_address(sock.getpeername()[0].partition("%")[0])
    except (OSError, ValueError):
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


@contextlib.contextmanager
def errors(target: Target, timeout: float, doing: str) -> Iterator[None]:
    """Map what smtplib, poplib, ssl and sockets raise to one ClientError line."""
    try:
        yield
    except ClientError:
        raise
    except smtplib.SMTPResponseException as e:
        raise ClientError(f"{target} refused {doing}: {e.smtp_code} {shown(e.smtp_error)}", EXIT_PROTOCOL) from None
    except smtplib.SMTPNotSupportedError:
        raise ClientError(f"{target} does not offer {doing}", EXIT_PROTOCOL) from None
    except smtplib.SMTPServerDisconnected:
        raise ClientError(f"{target} closed the connection during {doing}", EXIT_PROTOCOL) from None
    except poplib.error_proto as e:
        said = e.args[0] if e.args and isinstance(e.args[0], bytes | str) else str(e)
        raise ClientError(f"{target} refused {doing}: {shown(said)}", EXIT_PROTOCOL) from None
    except ssl.SSLError as e:
        raise ClientError(f"TLS with {target} failed: {shown(e.reason or str(e))}", EXIT_PROTOCOL) from None
    except TimeoutError:
        raise ClientError(f"no reply from {target} within {timeout:g} s", EXIT_TIMEOUT) from None
    except smtplib.SMTPException as e:
        raise ClientError(f"{target}: {shown(str(e))}", EXIT_PROTOCOL) from None
    except OSError as e:
        raise connection_lost(target, e) from None


def greeted(sock: socket.socket, target: Target, timeout: float) -> None:
    """
    Wait for the server's first words; a socksvc refusal line
    (C{socksvc: REASON}, then the daemon closes) is exit 6 with its reason.
    """
    with errors(target, timeout, "the connection"):
        first = sock.recv(4, socket.MSG_PEEK | socket.MSG_WAITALL)
        if not first:
            raise ClientError(f"{target} closed the connection without a greeting", EXIT_PROTOCOL)
        if REFUSAL_PREFIX.encode().startswith(first):
            line = sock.recv(1024).split(b"\n", 1)[0]
            raise refused(target, shown(line[len(REFUSAL_PREFIX) :]))


def not_ready(target: Target, line: str | bytes) -> ClientError:
    return ClientError(f"{target} is not ready: {shown(line)}", EXIT_PROTOCOL)


class _SMTP(smtplib.SMTP):
    """smtplib on a socket we connected (the target grammar, UNIX sockets, our errors)."""

    def __init__(self, sock: socket.socket, host: str, timeout: float) -> None:
        self._given = sock
        super().__init__(local_hostname="localhost", timeout=timeout)
        self._host = host  # what STARTTLS checks the certificate against (smtplib sets it only when it connects)

    def _get_socket(self, host: Any, port: Any, timeout: Any) -> socket.socket:
        return self._given


def smtp_session(target: Target, timeout: float, args: Any) -> smtplib.SMTP:
    """Connected, greeted, EHLO said, STARTTLS and AUTH done as asked."""
    sock = connect(target, timeout)
    greeted(sock, target, timeout)
    with errors(target, timeout, "the connection"):
        client = _SMTP(sock, target.host if target.path is None else "localhost", timeout)
        code, msg = client.connect("localhost", 0)  # the socket is connected already: this reads the greeting
        if code != 220:
            client.close()
            raise not_ready(target, f"{code} {msg.decode('utf-8', 'replace')}")
        client.ehlo()
    if args.starttls:
        with errors(target, timeout, "STARTTLS"):
            if not client.has_extn("starttls"):
                raise ClientError(f"{target} does not offer STARTTLS", EXIT_PROTOCOL)
            client.starttls(context=tls_context(args))
            client.ehlo()
    if args.auth:
        if not args.starttls and not is_local(sock):
            raise ClientError(f"the password would cross to {target} in the clear: add --starttls", EXIT_USAGE)
        secret = password(args, f"Password for {args.auth} at {target}: ")
        with errors(target, timeout, "AUTH"):
            client.login(args.auth, secret)
    return client


class _POP3(poplib.POP3):
    def __init__(self, sock: socket.socket, host: str, timeout: float) -> None:
        self._given = sock
        super().__init__(host, 0, timeout)  # the host is what STLS checks the certificate against

    def _create_socket(self, timeout: Any) -> socket.socket:
        return self._given


def pop3_session(target: Target, timeout: float, args: Any) -> poplib.POP3:
    """Connected, STLS done as asked, logged in."""
    sock = connect(target, timeout)
    greeted(sock, target, timeout)
    with errors(target, timeout, "the connection"):
        try:
            client = _POP3(sock, target.host if target.path is None else "localhost", timeout)
        except poplib.error_proto as e:
            sock.close()
            said = e.args[0] if e.args and isinstance(e.args[0], bytes | str) else str(e)
            raise not_ready(target, said) from None
    if args.stls:
        with errors(target, timeout, "STLS"):
            client.stls(context=tls_context(args))
    elif not is_local(sock):
        raise ClientError(f"the password would cross to {target} in the clear: add --stls", EXIT_USAGE)
    secret = password(args, f"Password for {args.user} at {target}: ")
    with errors(target, timeout, "the login"):
        client.user(args.user)
        client.pass_(secret)
    return client
