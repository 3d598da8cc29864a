"""
Where the client connects: the one target grammar of every command
(nothing, C{HOST}, C{HOST PORT}, C{[IPv6] PORT}, C{unix:PATH}), the one
L{Target}, the one wording for socket errors (L{describe}), and connecting
(every address of a name in turn, within one deadline) with a failure as
one L{ClientError} line and its exit code. The chat console's asyncio
connect (L{socksvc.client.chat.net}) uses the same pieces.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import socket
import time
from typing import Any

import attrs

from socksvc.client.common import (
    EXIT_CONNECT,
    EXIT_NOT_FOUND,
    EXIT_PROTOCOL,
    EXIT_TIMEOUT,
    ClientError,
    parse_timeout,
    usage_error,
)
from socksvc.util.visible import UNSAFE_STRICT, visible

DEFAULT_HOST = "localhost"
DEFAULT_TIMEOUT = 5.0
UNIX = "unix:"
"""A HOST that starts so names a UNIX socket: C{unix:PATH}."""


# -- parsing -----------------------------------------------------------------


def parse_host(text: str) -> str:
    """
    A host as given on the command line: a name, an IPv4 address, or an
    IPv6 address (bare, or in [brackets], optionally with a %zone).
    Returns the form to hand to getaddrinfo (no brackets).
    """
    host = text.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not _is_ipv6(host):
            raise usage_error(f"not an IPv6 address in brackets: {text!r}")
        return host
    if host.startswith("[") and "]:" in host:
        raise usage_error(f"not a host name or address: {text!r} (give the port as a separate argument)")
    if not host or any(c.isspace() or c in "[]/" for c in host) or "\x00" in host:
        raise usage_error(f"not a host name or address: {text!r}")
    if ":" in host and not _is_ipv6(host):
        raise usage_error(f"not a host name or address: {text!r} (give the port as a separate argument)")
    return host


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text.partition("%")[0])
    except ValueError:
        return False
    return not text.endswith("%")


def parse_port(text: str, proto: str = "tcp") -> int:
    """A port number (1-65535) or a service name known to getservbyname."""
    value = text.strip()
    if value.isascii() and value.isdigit():
        port = int(value)
        if 1 <= port <= 65535:
            return port
        raise usage_error(f"port out of range (1-65535): {text!r}")
    if not value or not value.isascii() or any(c.isspace() for c in value) or "\x00" in value:
        raise usage_error(f"not a port number or service name: {text!r}")
    try:
        return socket.getservbyname(value, proto)
    except OSError:
        raise ClientError(
            f"unknown service name {value!r} (not a port number, not in /etc/services for {proto})", EXIT_NOT_FOUND
        ) from None


@attrs.frozen
class Target:
    """
    Where a client connects: TCP (or UDP) C{host} and C{port}, or the UNIX
    socket C{path}. C{hint} is added to a failed name lookup (see
    L{target_from}); it is not part of the target's identity.
    """

    host: str = DEFAULT_HOST
    port: int = 0
    path: str | None = None
    hint: str = attrs.field(default="", eq=False, repr=False)

    def __str__(self) -> str:
        """The one form every message uses: C{HOST port PORT}, or C{unix:PATH}."""
        if self.path is not None:
            return UNIX + visible(self.path, UNSAFE_STRICT)
        return f"{self.host} port {self.port}"


def add_target_arguments(
    parser: argparse.ArgumentParser,
    default_port: int,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    port_help: str = "number or service name",
    timeout_help: str = "seconds to wait for a connection or a reply",
    unix: bool = True,
) -> None:
    """
    The [HOST] [PORT] positionals and --timeout (-t), the same for every
    command that connects. HOST may be C{unix:PATH} (then no PORT) where
    C{unix} is true; L{target_from} reads them.
    """
    host_help = f"name or address, [IPv6] too (default {DEFAULT_HOST})"
    if unix:
        host_help = f"name or address, [IPv6] too, or unix:PATH (default {DEFAULT_HOST})"
    parser.add_argument("host", nargs="?", default=None, metavar="HOST", help=host_help)
    parser.add_argument("port", nargs="?", default=None, metavar="PORT", help=f"{port_help} (default {default_port})")
    parser.add_argument(
        "--timeout",
        "-t",
        type=parse_timeout,
        default=timeout,
        metavar="S",
        help=f"{timeout_help} (default {timeout:g})",
    )
    parser.set_defaults(default_port=default_port)


def target_from(args: argparse.Namespace, proto: str = "tcp", *, rest: str | None = None, hint: str = "") -> Target:
    """
    The target of C{args} (from L{add_target_arguments}). The grammar is
    the same for every command: nothing (the default host and port),
    C{HOST}, C{HOST PORT}, C{[IPv6] PORT}, or C{unix:PATH}. After
    C{unix:PATH} there is no PORT: the next positional is the command's
    C{rest} argument (its MESSAGE or TEXT), moved there from C{args.port}.
    C{hint} is added when C{HOST} alone was given and names no host (say,
    C{socksvc echo hello}).
    """
    host_text = DEFAULT_HOST if args.host is None else args.host
    if host_text.startswith(UNIX):
        if proto != "tcp":
            raise usage_error(f"{proto} has no UNIX sockets: give HOST and PORT, not {host_text!r}")
        path = host_text[len(UNIX) :]
        if not path or "\x00" in path:
            raise usage_error(f"not a UNIX socket path: {host_text!r}")
        if args.port is not None:
            if rest is None or getattr(args, rest) is not None:
                raise usage_error(f"unix:PATH takes no PORT: {args.port!r}")
            setattr(args, rest, args.port)
            args.port = None
        return Target(path=path)
    host = parse_host(host_text)
    port = parse_port(str(args.default_port) if args.port is None else args.port, proto)
    alone = args.host is not None and args.port is None and (rest is None or getattr(args, rest) is None)
    return Target(host, port, hint=hint if alone else "")


# -- connecting --------------------------------------------------------------

_ERRNO_TEXT = {
    errno.ECONNREFUSED: "connection refused",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "no route to host",
    errno.ECONNRESET: "connection reset",
    errno.EPIPE: "connection reset",
    errno.EADDRNOTAVAIL: "address not available",
    errno.ETIMEDOUT: "timed out",
    errno.EACCES: "permission denied",
    errno.EPERM: "not permitted",
    errno.ENOENT: "no such socket",
    errno.ENOTSOCK: "not a socket",
}


_KIND_ERRNO: tuple[tuple[type[OSError], int], ...] = (
    (ConnectionRefusedError, errno.ECONNREFUSED),
    (ConnectionResetError, errno.ECONNRESET),
    (BrokenPipeError, errno.EPIPE),
    (FileNotFoundError, errno.ENOENT),
)


def describe(error: BaseException) -> str:
    """
    A socket error (connecting, resolving, or on a connection) in a few
    lower-case words, the one wording every command uses.
    """
    if isinstance(error, TimeoutError) and error.errno is None:
        return "timed out"
    if not isinstance(error, OSError):
        return str(error) or type(error).__name__
    if isinstance(error, (socket.gaierror, socket.herror)):
        pass  # resolver codes, not errno values: use their own text
    elif error.errno in _ERRNO_TEXT:
        return _ERRNO_TEXT[error.errno]
    elif error.errno is None:  # raised by Python code (asyncio, tests) rather than the kernel
        for kind, code in _KIND_ERRNO:
            if isinstance(error, kind):
                return _ERRNO_TEXT[code]
    text = error.strerror or str(error) or type(error).__name__
    return text[:1].lower() + text[1:]


def resolve_failed(target: Target, error: BaseException) -> ClientError:
    """The error for a name that does not resolve (exit 3), with the target's hint."""
    reason = "not a valid host name" if isinstance(error, UnicodeError) else describe(error)
    hint = f" ({target.hint})" if target.hint else ""
    return ClientError(f"cannot resolve host {target.host!r}: {reason}{hint}", EXIT_NOT_FOUND)


def addresses(target: Target, infos: list[Any]) -> list[tuple[int, Any]]:
    """The (family, sockaddr) pairs of getaddrinfo's answer; none is an error."""
    if not infos:
        raise resolve_failed(target, OSError("no addresses"))
    return [(family, sockaddr) for family, _type, _proto, _canon, sockaddr in infos]


def resolve(target: Target, kind: socket.SocketKind = socket.SOCK_STREAM) -> list[tuple[int, Any]]:
    """The (family, sockaddr) pairs for a target, in getaddrinfo order."""
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=kind)
    except (socket.gaierror, UnicodeError) as e:
        raise resolve_failed(target, e) from None
    return addresses(target, infos)


class Attempts:
    """
    Connecting to each address of a target in turn: which failure to
    report. When addresses fail differently, the last failure that is not
    "refused" is the one reported (a refusal at ::1 says less than a
    timeout at 127.0.0.1).
    """

    def __init__(self, target: Target, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self.worst: BaseException | None = None

    def failed(self, error: BaseException) -> None:
        if self.worst is None or getattr(error, "errno", None) != errno.ECONNREFUSED:
            self.worst = error

    def error(self) -> ClientError:
        """The one error for the whole attempt: cannot connect (exit 4), or timed out (exit 5)."""
        worst = self.worst or TimeoutError()
        if isinstance(worst, TimeoutError) or getattr(worst, "errno", None) == errno.ETIMEDOUT:
            return ClientError(f"cannot connect to {self.target}: timed out after {self.timeout:g} s", EXIT_TIMEOUT)
        return ClientError(f"cannot connect to {self.target}: {describe(worst)}", EXIT_CONNECT)


def connect(target: Target, timeout: float) -> socket.socket:
    """
    A connected stream socket (blocking, with C{timeout} set): the UNIX
    socket, or each address of the host in turn within one overall
    deadline. Failure is one L{ClientError}: unknown host (L{EXIT_NOT_FOUND}),
    refused or unreachable (L{EXIT_CONNECT}), timed out (L{EXIT_TIMEOUT}).
    """
    attempts = Attempts(target, timeout)
    if target.path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(target.path)
        except OSError as e:
            sock.close()
            attempts.failed(e)
            raise attempts.error() from None
        return sock
    deadline = time.monotonic() + timeout
    for family, sockaddr in resolve(target):
        left = deadline - time.monotonic()
        if left <= 0:
            attempts.failed(TimeoutError())
            break
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(left)
        try:
            sock.connect(sockaddr)
        except OSError as e:
            sock.close()
            attempts.failed(e)
            continue
        sock.settimeout(timeout)
        nodelay(sock)
        return sock
    raise attempts.error()


def nodelay(sock: socket.socket) -> None:
    """Small writes leave at once (TCP only; nothing to do on a UNIX socket)."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def refused(target: Target, reason: str) -> ClientError:
    """The error for a daemon that refused us (access list, connection limits): exit 6."""
    return ClientError(f"{target} refused us: {reason}", EXIT_PROTOCOL)


def connection_lost(target: Target, error: BaseException) -> ClientError:
    """The error for a connection that failed under us once made: exit 6."""
    if getattr(error, "errno", None) in (errno.ECONNRESET, errno.EPIPE):
        return ClientError(f"connection to {target} reset by the server", EXIT_PROTOCOL)
    return ClientError(f"connection to {target} failed: {describe(error)}", EXIT_PROTOCOL)


def peer(sock: socket.socket, target: Target) -> Target:
    """The address C{sock} actually connected to (one of C{target}'s), as a target of its own."""
    if target.path is not None:
        return target
    try:
        addr = sock.getpeername()
    except OSError:
        return target
    return Target(str(addr[0]), int(addr[1]))
