"""
Where the client connects: C{HOST} and C{PORT} from the command line, the
target they make, and connecting to it (every address of a name in turn,
within one deadline) with failures as one L{ClientError} line.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import socket
import time

import attrs

from socksvc.client.common import EXIT_CONNECT, EXIT_NOT_FOUND, EXIT_TIMEOUT, ClientError, parse_timeout, usage_error

DEFAULT_HOST = "localhost"
DEFAULT_TIMEOUT = 5.0


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


def port_argument(text: str) -> int:
    """argparse type for a PORT checked while parsing: L{parse_port}, as an argparse error."""
    try:
        return parse_port(text)
    except ClientError as e:
        raise argparse.ArgumentTypeError(e.message) from None


@attrs.frozen
class Target:
    """Where a probe connects: a host (as given, brackets removed) and a port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host} port {self.port}"


def add_target_arguments(
    parser: argparse.ArgumentParser,
    default_port: int,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    port_help: str = "number or service name",
    timeout_help: str = "seconds to wait for a connection or a reply",
) -> None:
    """The [HOST] [PORT] positionals and --timeout, shared by every probe (TCP and UDP)."""
    parser.add_argument(
        "host", nargs="?", default=DEFAULT_HOST, metavar="HOST", help=f"name or address (default {DEFAULT_HOST})"
    )
    parser.add_argument(
        "port",
        nargs="?",
        default=str(default_port),
        metavar="PORT",
        help=f"{port_help} (default {default_port})",
    )
    parser.add_argument(
        "--timeout",
        "-t",
        type=parse_timeout,
        default=timeout,
        metavar="S",
        help=f"{timeout_help} (default {timeout:g})",
    )


def target_from(args: argparse.Namespace, proto: str = "tcp") -> Target:
    return Target(parse_host(args.host), parse_port(args.port, proto))


# -- connecting --------------------------------------------------------------

_ERRNO_TEXT = {
    errno.ECONNREFUSED: "connection refused",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "no route to host",
    errno.ECONNRESET: "connection reset",
    errno.EADDRNOTAVAIL: "address not available",
    errno.ETIMEDOUT: "timed out",
    errno.EACCES: "permission denied",
    errno.EPERM: "not permitted",
}


def describe(error: OSError) -> str:
    """A short lower-case reason for a socket error."""
    if isinstance(error, TimeoutError) and error.errno is None:
        return "timed out"
    if isinstance(error, (socket.gaierror, socket.herror)):
        pass  # resolver codes, not errno values: use their own text
    elif error.errno in _ERRNO_TEXT:
        return _ERRNO_TEXT[error.errno]
    text = error.strerror or str(error) or type(error).__name__
    return text[:1].lower() + text[1:]


def resolve(target: Target, kind: socket.SocketKind = socket.SOCK_STREAM) -> list[tuple[int, tuple[object, ...]]]:
    """The (family, sockaddr) pairs for a target, in getaddrinfo order."""
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=kind)
    except socket.gaierror as e:
        reason = describe(e)
        raise ClientError(f"cannot resolve {target.host}: {reason}", EXIT_NOT_FOUND) from None
    except UnicodeError:
        raise ClientError(f"cannot resolve {target.host}: not a valid host name", EXIT_NOT_FOUND) from None
    if not infos:
        raise ClientError(f"cannot resolve {target.host}: no addresses", EXIT_NOT_FOUND)
    return [(family, sockaddr) for family, _type, _proto, _canon, sockaddr in infos]


def connect(target: Target, timeout: float) -> socket.socket:
    """
    A connected TCP socket (blocking, with C{timeout} set), trying each
    address of the target in turn within one overall deadline. Failure is
    one L{ClientError}: refused / unreachable (L{EXIT_CONNECT}) or timed out
    (L{EXIT_TIMEOUT}); when addresses fail differently, the last error that
    is not "refused" is the one reported.
    """
    deadline = time.monotonic() + timeout
    worst: OSError | None = None
    for family, sockaddr in resolve(target):
        left = deadline - time.monotonic()
        if left <= 0:
            worst = TimeoutError()
            break
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(left)
        try:
            sock.connect(sockaddr)
        except OSError as e:
            sock.close()
            if worst is None or e.errno != errno.ECONNREFUSED:
                worst = e
            continue
        sock.settimeout(timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        return sock
    assert worst is not None
    if isinstance(worst, TimeoutError) or worst.errno == errno.ETIMEDOUT:
        raise ClientError(f"cannot connect to {target}: timed out after {timeout:g} s", EXIT_TIMEOUT)
    raise ClientError(f"cannot connect to {target}: {describe(worst)}", EXIT_CONNECT)


def peer_text(sock: socket.socket) -> str:
    """The address actually connected to, for messages."""
    try:
        addr = sock.getpeername()
    except OSError:
        return "?"
    return str(addr[0])
