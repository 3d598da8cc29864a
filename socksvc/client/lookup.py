"""
C{socksvc lookup [NAME | ADDRESS | URL]}: the system resolver, from the command line.

- no argument: this host's name and fully qualified name;
- a name: its official name, aliases and addresses (IPv4 and IPv6);
- an address: its reverse lookup (name and aliases);
- a URL: the port of its scheme, from the services database (an explicit
  port in the URL wins).

Only the system resolver is used (gethostname, getaddrinfo,
gethostbyname_ex, gethostbyaddr, getservbyname): nothing is sent to the
hosts named. Output is "key: value" lines, one value a line.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import socket
import urllib.parse
from typing import Any

import attrs

from socksvc.client.common import EXIT_NOT_FOUND, EXIT_OK, ClientError, say, usage_error
from socksvc.client.target import Target, describe, resolve_failed

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")

# Used only when the system's services database (/etc/services) lacks a scheme
# or is missing altogether (minimal containers): the IANA ports of common schemes.
FALLBACK_PORTS = {
    "ftp": 21,
    "ssh": 22,
    "sftp": 22,
    "telnet": 23,
    "smtp": 25,
    "gopher": 70,
    "http": 80,
    "ws": 80,
    "pop3": 110,
    "nntp": 119,
    "imap": 143,
    "ldap": 389,
    "https": 443,
    "wss": 443,
    "smtps": 465,
    "submission": 587,
    "ldaps": 636,
    "imaps": 993,
    "pop3s": 995,
}


@attrs.frozen
class URLPort:
    """What a URL says about its port."""

    scheme: str
    host: str
    port: int
    explicit: bool  # the URL gave the port itself


def is_url(text: str) -> bool:
    return _URL.match(text) is not None


def split_address(text: str) -> str | None:
    """C{text} as an IP address to look up (brackets removed), or None if it is not one."""
    value = text.strip()
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    bare, percent, zone = value.partition("%")
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        return None
    if percent and (ip.version != 6 or not zone):
        return None
    return value


def scheme_port(scheme: str) -> int:
    """The port of a URL scheme: getservbyname (tcp, then any protocol), then L{FALLBACK_PORTS}."""
    name = scheme.lower()
    for proto in ("tcp", None):
        try:
            return socket.getservbyname(name, proto) if proto else socket.getservbyname(name)
        except OSError:
            continue
    if name in FALLBACK_PORTS:
        return FALLBACK_PORTS[name]
    raise ClientError(f"unknown URL scheme {scheme!r}: no such service in the services database", EXIT_NOT_FOUND)


def parse_url(text: str) -> URLPort:
    """Split a URL and find its port (explicit, or its scheme's); a bad URL is one plain usage error."""
    if not is_url(text):
        raise usage_error(f"not a URL: {text!r}")
    if any(c.isspace() or ord(c) < 32 for c in text):
        raise usage_error(f"not a URL (it has spaces or control characters): {text!r}")
    where = re.split(r"[/?#]", text.split("://", 1)[1], maxsplit=1)[0].rpartition("@")[2]
    if where.startswith("["):
        inside, closed, after = where[1:].partition("]")
        if not closed:
            raise usage_error(f"bad URL {text!r}: a [ with no ]")
        if split_address(inside) is None or ":" not in inside:
            raise usage_error(f"bad URL {text!r}: not an IPv6 address in brackets")
        port_text = after[1:] if after.startswith(":") else ""
    elif where.count(":") > 1:
        raise usage_error(f"bad URL {text!r}: more than one ':' (an IPv6 address goes in [brackets])")
    else:
        port_text = where.rpartition(":")[2] if ":" in where else ""
    try:
        parts = urllib.parse.urlsplit(text)
        host = parts.hostname or ""
    except ValueError:  # urllib's own words are not for users
        raise usage_error(f"bad URL {text!r}") from None
    scheme = parts.scheme.lower()
    if port_text:
        if not (port_text.isascii() and port_text.isdigit()):
            raise usage_error(f"bad URL {text!r}: the port is not a number: {port_text!r}")
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise usage_error(f"bad URL {text!r}: port out of range 1-65535")
        return URLPort(scheme, host, port, True)
    return URLPort(scheme, host, scheme_port(scheme), False)


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def describe_self() -> list[tuple[str, str]]:
    """This host's name and fully qualified name."""
    name = socket.gethostname()
    return [("hostname", name), ("fqdn", socket.getfqdn(name))]


def describe_name(name: str) -> list[tuple[str, str]]:
    """A name's official name, aliases and addresses."""
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM, flags=socket.AI_CANONNAME)
    except socket.gaierror as e:
        raise resolve_failed(Target(name), e) from None
    except UnicodeError as e:
        raise resolve_failed(Target(name), e) from None
    official = next((canon for *_, canon, _addr in infos if canon), name)
    aliases: list[str] = []
    v4 = [str(addr[0]) for family, *_, addr in infos if family == socket.AF_INET]
    v6 = [str(addr[0]) for family, *_, addr in infos if family == socket.AF_INET6]
    try:
        official_ex, aliases, v4_ex = socket.gethostbyname_ex(name)
    except (OSError, UnicodeError):
        pass  # an IPv6-only name: getaddrinfo said all there is
    else:
        official = official_ex or official
        v4 += v4_ex
    rows = [("name", official)]
    rows += [("alias", a) for a in _unique([a for a in aliases if a != official])]
    rows += [("ipv4", a) for a in _unique(v4)]
    rows += [("ipv6", a) for a in _unique(v6)]
    return rows


def describe_address(address: str) -> list[tuple[str, str]]:
    """An address's reverse lookup."""
    try:
        name, aliases, _addresses = socket.gethostbyaddr(address)
    except (OSError, UnicodeError) as e:
        reason = describe(e) if isinstance(e, OSError) else "not valid"
        raise ClientError(f"no name for address {address}: {reason}", EXIT_NOT_FOUND) from None
    rows = [("address", address), ("name", name)]
    rows += [("alias", a) for a in _unique([a for a in aliases if a != name])]
    return rows


def describe_url(text: str) -> list[tuple[str, str]]:
    url = parse_url(text)
    rows = [("scheme", url.scheme)]
    if url.host:
        rows.append(("host", url.host))
    rows.append(("port", str(url.port)))
    return rows


def lookup(query: str | None) -> list[tuple[str, str]]:
    """The rows C{socksvc lookup QUERY} prints."""
    if query is None:
        return describe_self()
    if is_url(query):
        return describe_url(query)
    address = split_address(query)
    if address is not None:
        return describe_address(address)
    name = query.strip()
    if not name or any(c.isspace() or ord(c) < 32 for c in name) or "/" in name or ":" in name:
        raise usage_error(f"not a host name, address or URL: {query!r}")
    return describe_name(name)


def run_lookup(args: argparse.Namespace) -> int:
    for key, value in lookup(args.query):
        say(f"{key}: {value}")
    return EXIT_OK


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "lookup",
        help="resolve a name, an address or a URL's port with the system resolver",
        description=(
            "With no argument, print this host's name and fully qualified name. With a NAME, print "
            "its official name, aliases and IPv4/IPv6 addresses; with an ADDRESS, its reverse lookup; "
            "with a URL, the port of its scheme (an explicit port in the URL wins). Only the system "
            "resolver is asked; nothing is sent to the hosts named."
        ),
    )
    parser.add_argument("query", nargs="?", metavar="NAME | ADDRESS | URL", help="what to look up")
    parser.set_defaults(run=run_lookup)
