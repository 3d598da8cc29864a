"""
The chat bus's config keys: their parsers and the values they give.

A chat with C{bus} set is one node of a cluster whose rooms travel through
one Redis stream (docs/chat.md, issue 14). Nothing here connects to
anything: the parsers only check what a config says, at load time, so
C{--check} reports a wrong address, an unreadable password or CA file.

 - L{parse_bus}: C{redis://[USER@]HOST[:PORT][/DB]} (TCP),
   C{rediss://...} (TLS), C{unix://[USER@]/PATH.sock[?db=N]},
   C{redis+sentinel://[USER@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB]}
   (the primary Sentinel names) into a L{BusAddress}; "" is no bus. A password in the URL is refused (it would
   be shown wherever the URL is): it goes in C{bus_password_file}.
 - L{parse_password_file}: the password, read now (L{BusPassword}: never in
   a repr, a log line or an error).
 - L{parse_ca_file}: a PEM CA bundle for C{rediss://} (L{CaFile}).
 - L{parse_cluster}, L{parse_retention} (L{Retention}: lines or seconds).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import attrs
from cryptography import x509

from socksvc.config.settings import SecretError
from socksvc.util.files import read_setting_file, read_setting_text

DEFAULT_PORT = 6379
MAX_DB = 10_000
"""Redis has 16 databases (0 to 15) unless its C{databases} setting says more."""
MAX_UNIX_PATH = 107
"""Bytes of a UNIX socket path (sun_path is 108, with its NUL)."""
MAX_USERNAME = 128
MAX_PASSWORD_FILE = 4096
MAX_CA_FILE = 1 << 20
MAX_CLUSTER = 64

MIN_RETENTION_LINES = 100
MAX_RETENTION_LINES = 10_000_000
MIN_RETENTION_SECONDS = 10
MAX_RETENTION_SECONDS = 30 * 86400

SHAPES = (
    "give redis://HOST[:PORT][/DB], rediss://HOST[:PORT][/DB], unix:///PATH.sock[?db=N] "
    "or redis+sentinel://HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB]"
)
SENTINEL_PORT = 26379
MAX_SENTINELS = 16
_SERVICE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
NO_PASSWORD = "no password in the bus URL (it would show wherever the URL does): put it in bus_password_file"

_USER = r"[A-Za-z0-9._~-]+"
_TCP = re.compile(rf"(?:(?P<user>{_USER})@)?(?P<host>\[[^\]/]*\]|[^:/\[\]@]*)(?::(?P<port>[0-9]*))?(?:/(?P<db>[^/]*))?")
_UNIX = re.compile(rf"(?:(?P<user>{_USER})@)?(?P<path>/.*)")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_NUMBER = re.compile(r"[0-9]{1,9}")
_CLUSTER = re.compile(rf"[A-Za-z0-9_.-]{{1,{MAX_CLUSTER}}}")
_DURATION = re.compile(r"([0-9]{1,12})([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@attrs.frozen
class BusAddress:
    """Where the bus's Redis is: TCP (C{host}, C{port}), over TLS or not, or a UNIX socket (C{path})."""

    tls: bool
    host: str
    """A name, an IPv4 address or an IPv6 address (without brackets); "" for a UNIX socket."""
    port: int
    """0 for a UNIX socket."""
    path: str
    """The UNIX socket's absolute path; "" for TCP."""
    db: int = 0
    username: str | None = None
    """The Redis ACL user (AUTH username password), not secret; None: AUTH with the password alone."""
    sentinels: tuple[tuple[str, int], ...] = ()
    """Sentinels to ask where the primary of C{service} is (then C{host} and C{port} are unused)."""
    service: str = ""
    """The Sentinel service (master) name."""

    @property
    def unix(self) -> bool:
        return bool(self.path)

    def describe(self) -> str:
        """The address as a URL for log lines: it has no secret (L{parse_bus} gives this address back)."""
        user = f"{self.username}@" if self.username else ""
        if self.sentinels:
            hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.sentinels)
            return f"redis+sentinel://{user}{hosts}/{self.service}" + (f"/{self.db}" if self.db else "")
        if self.unix:
            return f"unix://{user}{self.path}" + (f"?db={self.db}" if self.db else "")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'rediss' if self.tls else 'redis'}://{user}{host}:{self.port}" + (f"/{self.db}" if self.db else "")

    def __str__(self) -> str:
        return self.describe()


def _number(text: str, what: str, minimum: int, maximum: int) -> int:
    if not _NUMBER.fullmatch(text) or not minimum <= int(text) <= maximum:
        raise ValueError(f"{what} must be {minimum} to {maximum}")
    return int(text)


def _host(text: str) -> str:
    """A host name, an IPv4 address, or an [IPv6] address (given without its brackets)."""
    if text.startswith("["):
        try:
            return ipaddress.IPv6Address(text[1:-1]).compressed
        except ValueError:
            raise ValueError("not an IPv6 address between the brackets") from None
    if not text:
        raise ValueError(f"no host; {SHAPES}")
    labels = text.removesuffix(".").split(".")
    if len(text) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError("not a host name, an IPv4 address or an [IPv6] address")
    if all(label.isdigit() for label in labels):
        try:
            return str(ipaddress.IPv4Address(text))
        except ValueError:
            raise ValueError("not an IPv4 address") from None
    return text


def _query(query: str | None) -> int | None:
    """
    The db of a C{?db=N} query (None without a query). Any other parameter
    is refused without showing the value (it may be C{password=}).
    """
    if query is None:
        return None
    name, equals, value = query.partition("=")
    if name != "db" or not equals or "&" in value:
        raise SecretError("the only query parameter of a bus URL is db (?db=N); a password goes in bus_password_file")
    return _number(value, "db", 0, MAX_DB)


def _refuse_password(scheme: str, rest: str) -> None:
    """
    A C{user:password@} or C{:password@} part: refused without echoing it
    (a password may hold @ and /; a UNIX socket's path may hold @ and :).
    """
    if scheme == "unix":
        if rest.startswith("/"):
            return  # no user part: the path may hold anything
        userinfo, at, _ = rest.partition("@/")
    else:
        userinfo, at, _ = rest.rpartition("@")
    if at and ":" in userinfo:
        raise SecretError(NO_PASSWORD)


def _sentinel(rest: str) -> BusAddress:
    """C{[USER@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB]} after C{redis+sentinel://}."""
    if "?" in rest or "#" in rest:  # it may hold ?password=: the line names the key, not the value
        raise SecretError("a redis+sentinel:// bus has no ?query or #fragment; give the db as /SERVICE/DB")
    user, at, rest = rest.rpartition("@") if "@" in rest else ("", "", rest)
    if at and not re.fullmatch(_USER, user):
        raise ValueError("not a user name before @")
    hosts, slash, tail = rest.partition("/")
    service, _, db_text = tail.partition("/")
    if not slash or not _SERVICE.fullmatch(service):
        raise ValueError("give the Sentinel service's name: redis+sentinel://HOST[:PORT][,...]/SERVICE[/DB]")
    sentinels: list[tuple[str, int]] = []
    for part in hosts.split(","):
        match = _TCP.fullmatch(part)
        if match is None or match["user"] is not None or match["db"] is not None:
            raise ValueError(f"not a Sentinel address: give HOST[:PORT]; {SHAPES}")
        port = SENTINEL_PORT if match["port"] is None else _number(match["port"], "the port", 1, 65535)
        sentinels.append((_host(match["host"]), port))
    if len(sentinels) > MAX_SENTINELS:
        raise ValueError(f"{len(sentinels)} Sentinels; at most {MAX_SENTINELS}")
    db = _number(db_text, "db", 0, MAX_DB) if db_text else 0
    if user and len(user) > MAX_USERNAME:
        raise ValueError(f"the user name is over {MAX_USERNAME} characters")
    return BusAddress(False, "", 0, "", db, user or None, tuple(sentinels), service)


def parse_bus(value: Any) -> BusAddress | None:
    """The C{bus} key: "" (no bus) or a Redis URL (see the module doc); ValueError says what is wrong in one line."""
    if not isinstance(value, str):
        raise ValueError(f"expected a bus URL string, got {type(value).__name__}")
    text = value.strip()
    if not text:
        return None
    if not text.isprintable():
        raise ValueError("control characters in the bus URL")
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ValueError(f"not a bus URL; {SHAPES}")
    _refuse_password(scheme, rest)
    if scheme == "redis+sentinel":
        return _sentinel(rest)
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"unknown scheme {scheme[:16]!r}; {SHAPES}")
    if "#" in rest:
        raise ValueError("a bus URL has no #fragment")
    rest, question, query = rest.partition("?")
    db_query = _query(query if question else None)
    if scheme == "unix":
        match = _UNIX.fullmatch(rest)
        if match is None:
            raise ValueError("give the socket's absolute path: unix:///PATH.sock (or unix://USER@/PATH.sock)")
        path = match["path"]
        if len(path.encode("utf-8", "surrogatepass")) > MAX_UNIX_PATH:
            raise ValueError(f"the socket path is over {MAX_UNIX_PATH} bytes (a UNIX socket's limit)")
        if path.endswith("/") or "//" in path:
            raise ValueError("not a socket path: unix:///PATH.sock")
        return BusAddress(False, "", 0, path, db_query or 0, match["user"])
    match = _TCP.fullmatch(rest)
    if match is None:
        raise ValueError(f"not a bus URL; {SHAPES}")
    host = _host(match["host"])
    port = DEFAULT_PORT if match["port"] is None else _number(match["port"], "the port", 1, 65535)
    db = 0
    if match["db"]:
        if db_query is not None:
            raise ValueError("give the db once: /DB or ?db=N")
        db = _number(match["db"], "db", 0, MAX_DB)
    elif db_query is not None:
        db = db_query
    if match["user"] is not None and len(match["user"]) > MAX_USERNAME:
        raise ValueError(f"the user name is over {MAX_USERNAME} characters")
    return BusAddress(scheme == "rediss", host, port, "", db, match["user"])


@attrs.frozen
class BusPassword:
    """The bus's Redis password, read from C{bus_password_file} at load: never shown."""

    path: str
    password: str = attrs.field(repr=False)

    def __str__(self) -> str:
        return self.path


def parse_password_file(value: Any) -> BusPassword | None:
    """
    C{bus_password_file}: "" for none, else read now (bounded, UTF-8): one
    line, its trailing newline dropped, not empty.
    """
    if not isinstance(value, str):
        raise ValueError("expected a file path string")
    if not value:
        return None
    text = read_setting_text(value, MAX_PASSWORD_FILE, "password file")
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise ValueError("the password file is empty")
    if "\n" in text or "\r" in text:
        raise ValueError("the password file has more than one line")
    return BusPassword(value, text)


@attrs.frozen
class CaFile:
    """The certificates C{rediss://} trusts instead of the system's, read at load."""

    path: str
    data: bytes = attrs.field(repr=False)
    count: int = 1

    def __str__(self) -> str:
        return self.path


def parse_ca_file(value: Any) -> CaFile | None:
    """C{bus_ca_file}: "" (the system's trust store) or a PEM bundle of CA certificates, read and checked now."""
    if not isinstance(value, str):
        raise ValueError("expected a file path string")
    if not value:
        return None
    data = read_setting_file(value, MAX_CA_FILE, "CA file")
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise ValueError("no PEM certificate in the CA file")
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ValueError("not a valid PEM certificate in the CA file") from None
    return CaFile(value, data, len(certificates))


def parse_cluster(value: Any) -> str:
    """C{cluster}: 1 to 64 of A-Z a-z 0-9 _ . - (it prefixes every key the cluster keeps in Redis)."""
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    if not _CLUSTER.fullmatch(value):
        raise ValueError(f"1 to {MAX_CLUSTER} characters of A-Z a-z 0-9 _ . -")
    return value


@attrs.frozen
class Retention:
    """How much of the bus's stream Redis keeps: C{lines}, or C{seconds} (exactly one is not zero)."""

    lines: int = 0
    seconds: float = 0.0

    def __attrs_post_init__(self) -> None:
        if (self.lines == 0) == (self.seconds == 0):
            raise ValueError("a retention is lines or seconds, one of them")

    def __str__(self) -> str:
        """As the config says it (docs/config.md shows the default so)."""
        if self.lines:
            return str(self.lines)
        seconds = int(self.seconds)
        for unit in "dhm":
            if seconds % _UNITS[unit] == 0:
                return f'"{seconds // _UNITS[unit]}{unit}"'
        return f'"{seconds}s"'


def parse_retention(value: Any) -> Retention:
    """C{bus_retention}: an integer (lines kept) or a duration string "600s", "30m", "24h", "7d" (seconds kept)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError('expected an integer (lines) or a duration such as "24h"')
    if isinstance(value, int):
        if not MIN_RETENTION_LINES <= value <= MAX_RETENTION_LINES:
            raise ValueError(f"lines must be {MIN_RETENTION_LINES} to {MAX_RETENTION_LINES}")
        return Retention(lines=value)
    match = _DURATION.fullmatch(value.strip())
    if match is None:
        raise ValueError('a duration is a number and s, m, h or d: "600s", "30m", "24h", "7d"')
    seconds = int(match[1]) * _UNITS[match[2]]
    if not MIN_RETENTION_SECONDS <= seconds <= MAX_RETENTION_SECONDS:
        raise ValueError(f"a duration must be {MIN_RETENTION_SECONDS}s to {MAX_RETENTION_SECONDS // 86400}d")
    return Retention(seconds=float(seconds))
