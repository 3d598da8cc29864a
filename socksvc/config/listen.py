"""
Listen specs: the strings in a service's C{listen} list.

Stream specs are written as Twisted endpoint strings (C{tcp}, C{tcp6},
C{unix}, C{ssl}, C{systemd}), and parsed completely here: every option is
checked (a service name in the port position resolves through getservbyname,
C{tcp:echo} is port 7), relative paths are taken from the config file's
directory, the files an C{ssl:} spec names are read through the guarded
reader (L{socksvc.config.tls}), and the daemon builds its endpoints from the
parsed L{ListenSpec}, so Twisted never reads a file or a number we did not
check. Datagram specs are C{udp:PORT[:interface=ADDR]}, which Twisted has no
endpoint for.

Defaults that differ from Twisted's: the listen backlog is the kernel's
C{net.core.somaxconn} (L{default_backlog}; Twisted's is 50), and a UNIX
socket is created with mode 0660 (Twisted's is 0666).
"""

from __future__ import annotations

import contextvars
import functools
import ipaddress
import os
import socket
from typing import Any, Literal

import attrs

from socksvc.config.settings import closest
from socksvc.config.tls import TLSFiles, load_tls

STREAM_SCHEMES = ("tcp", "tcp6", "unix", "ssl", "systemd")
DATAGRAM_SCHEMES = ("udp",)
SCHEMES = STREAM_SCHEMES + DATAGRAM_SCHEMES

SOMAXCONN_PATH = "/proc/sys/net/core/somaxconn"
FALLBACK_BACKLOG = 4096
"""The backlog when somaxconn cannot be read (Linux's default somaxconn since 5.4)."""
MAX_BACKLOG = 65535
"""The largest backlog a spec may ask for (the kernel caps any listen() at somaxconn anyway)."""
DEFAULT_UNIX_MODE = 0o660
"""A UNIX socket's permissions: owner and group may connect (Twisted's default is 0666, anyone)."""
UNIX_PATH_MAX = 107
"""Bytes in a UNIX socket path (sun_path is 108 bytes with its NUL)."""


CONFIG_DIR: contextvars.ContextVar[str | None] = contextvars.ContextVar("socksvc_config_dir", default=None)
"""Where relative paths start while the loader checks a config (its file's directory); None: the working directory."""


@functools.cache
def default_backlog() -> int:
    """
    The listen backlog when a spec gives none: the kernel's limit,
    net.core.somaxconn, read once (as Go's net package does), so a burst of
    connections waits in the queue instead of being dropped; 4096 if it
    cannot be read. Twisted's default is 50; nginx uses 511.
    """
    try:
        with open(SOMAXCONN_PATH, "rb") as f:
            value = int(f.read(32).strip())
    except (OSError, ValueError):
        return FALLBACK_BACKLOG
    return min(value, MAX_BACKLOG) if value > 0 else FALLBACK_BACKLOG


@attrs.frozen
class ListenSpec:
    """One parsed listen spec."""

    text: str
    """The spec as written in the config."""
    scheme: str
    """tcp, tcp6, unix, ssl, systemd or udp."""
    endpoint: str
    """The spec with its kind in lower case and a port name resolved (for display)."""
    port: int | None = None
    """The port number (tcp, tcp6, ssl, udp), or None."""
    interface: str = ""
    """The address bound (tcp, tcp6, ssl, udp); empty means all."""
    path: str = ""
    """The socket path (unix), absolute."""
    backlog: int = 0
    """The listen backlog (stream specs that bind; 0 for udp and systemd)."""
    mode: int = DEFAULT_UNIX_MODE
    """The socket file's permissions (unix)."""
    lockfile: bool = True
    """Take PATH.lock while listening (unix; Twisted's lockfile=, so two daemons cannot share a path)."""
    tls: TLSFiles | None = None
    """The key and certificates (ssl), read when the config was loaded."""

    @property
    def kind(self) -> Literal["stream", "datagram", "inherited"]:
        """C{inherited} for C{systemd:} specs: the socket itself says stream or datagram."""
        if self.scheme == "systemd":
            return "inherited"
        return "datagram" if self.scheme in DATAGRAM_SCHEMES else "stream"

    def describe(self) -> str:
        """A short human form: C{tcp 127.0.0.1:7007}, C{unix /run/x.sock}."""
        if self.scheme == "unix":
            return f"unix {self.path}"
        if self.port is None:
            return self.endpoint
        host = self.interface or ("::" if self.scheme == "tcp6" else "*")
        if ":" in host:
            host = f"[{host}]"
        return f"{self.scheme} {host}:{self.port}"


def split_spec(text: str) -> list[tuple[str, str]]:
    """
    Split an endpoint string on unescaped colons, the way Twisted does.

    @return: (raw, value) for every part: C{raw} keeps its backslash escapes
        (so the string can be put back together), C{value} has them removed.
    """
    parts: list[tuple[str, str]] = []
    raw: list[str] = []
    value: list[str] = []
    chars = iter(text)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "")
            raw.append(ch + nxt)
            value.append(nxt)
        elif ch == ":":
            parts.append(("".join(raw), "".join(value)))
            raw, value = [], []
        else:
            raw.append(ch)
            value.append(ch)
    parts.append(("".join(raw), "".join(value)))
    return parts


def resolve_port(value: str, proto: str) -> int:
    """A port number, or a service name looked up in /etc/services."""
    value = value.strip()
    if not value:
        raise ValueError("missing port")
    if value.isascii() and value.isdigit():
        port = int(value)
        if port > 65535:
            raise ValueError(f"port {port} is out of range (0 to 65535)")
        return port
    try:
        return socket.getservbyname(value, proto)
    except OSError:
        raise ValueError(f"unknown {proto} service name {value!r} (not a port number either)") from None


def _check_interface(value: str, scheme: str) -> str:
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"interface {value!r} is not an IP address") from None
    if scheme == "tcp6" and addr.version != 6:
        raise ValueError(f"tcp6 needs an IPv6 interface, not {value!r}")
    return str(addr)


def parse_listen(text: Any, base_dir: str | None = None) -> ListenSpec:
    """
    Parse and check one listen spec; raise L{ValueError} with the reason.
    C{base_dir} is where relative paths start (None: L{CONFIG_DIR}, which
    the loader sets to the config file's directory, else the working
    directory).
    """
    if not isinstance(text, str):
        raise ValueError('expected a listen spec string such as "tcp:7007"')
    if not text.strip():
        raise ValueError("empty listen spec")
    if "\0" in text:
        raise ValueError("a listen spec cannot hold a NUL character")
    parts = split_spec(text)
    scheme = parts[0][1].strip().lower()
    if scheme not in SCHEMES:
        hint = closest(scheme, SCHEMES)
        known = ", ".join(SCHEMES)
        extra = f'; did you mean "{hint}"?' if hint else ""
        raise ValueError(f"unknown listen kind {scheme!r} (known: {known}){extra}")
    # Twisted's endpoint parser knows only lower-case kinds: "TCP:7" means "tcp:7".
    parts[0] = (scheme, scheme)
    text_for_endpoint = ":".join(raw for raw, _value in parts)
    _check_unescaped_ipv6(parts)
    if scheme == "udp":
        return _parse_udp(text, parts[1:])
    if scheme in ("tcp", "tcp6", "ssl"):
        return _parse_inet_stream(text, scheme, parts, base_dir)
    if scheme == "unix":
        return _parse_unix(text, parts, base_dir)
    # systemd: checked here; the descriptors are looked up when the daemon starts.
    parse_systemd_spec(text)
    return ListenSpec(text=text, scheme=scheme, endpoint=text_for_endpoint)


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _check_unescaped_ipv6(parts: list[tuple[str, str]]) -> None:
    """
    C{interface=::1} splits on its colons; say how to write it
    (C{interface=\\:\\:1}) rather than pass Twisted's puzzling complaint on.
    """
    for i, (_raw, value) in enumerate(parts):
        key, eq, kwvalue = value.partition("=")
        if not (eq and key == "interface") or i + 1 == len(parts) or _is_ip(kwvalue):
            continue
        candidate = kwvalue
        for _raw2, following in parts[i + 1 :]:
            if "=" in following:
                break
            candidate += ":" + following
            try:
                ipaddress.IPv6Address(candidate)
            except ValueError:
                continue
            escaped = candidate.replace(":", "\\:")
            raise ValueError(f"escape the colons of an IPv6 address: interface={escaped}")


_ARGUMENTS = {
    # Twisted's parsers' positional order (twisted.internet.endpoints._parseTCP and friends).
    "tcp": ("port", "interface", "backlog"),
    "tcp6": ("port", "backlog", "interface"),
    "unix": ("address", "mode", "backlog", "lockfile"),
    "ssl": ("port", "privateKey", "certKey", "sslmethod", "interface", "backlog", "extraCertChain", "dhParameters"),
}


def _arguments(scheme: str, parts: list[tuple[str, str]]) -> tuple[dict[str, str], dict[str, int]]:
    """
    A spec's values by Twisted's argument names (positional ones mapped in
    Twisted's order), and the index of each in C{parts[1:]}; unknown names,
    a name given twice or too many values are errors.
    """
    names = _ARGUMENTS[scheme]
    values: dict[str, str] = {}
    where: dict[str, int] = {}
    positional = 0
    for i, (_raw, value) in enumerate(parts[1:]):
        key, eq, kwvalue = value.partition("=")
        if eq:
            if key not in names:
                hint = closest(key, names)
                extra = f'; did you mean "{hint}"?' if hint else " (known: " + ", ".join(names) + ")"
                raise ValueError(f"unknown {scheme} option {key!r}{extra}")
            name = key
        else:
            if positional >= len(names):
                raise ValueError(f"unexpected {value!r}: a {scheme} spec takes at most {len(names)} values")
            name, kwvalue = names[positional], value
            positional += 1
        if name in values:
            raise ValueError(f"{name} given twice")
        values[name] = kwvalue
        where[name] = i
    return values, where


def _backlog(value: str | None) -> int:
    if value is None:
        return default_backlog()
    if not (value.isascii() and value.isdigit()) or len(value) > 6 or not 1 <= int(value) <= MAX_BACKLOG:
        raise ValueError(f"backlog {value!r} is not a number from 1 to {MAX_BACKLOG}")
    return int(value)


def _resolve(path: str, base_dir: str | None) -> str:
    if base_dir is None:
        base_dir = CONFIG_DIR.get()
    return os.path.normpath(os.path.join(base_dir if base_dir is not None else os.getcwd(), path))


def _parse_inet_stream(text: str, scheme: str, parts: list[tuple[str, str]], base_dir: str | None) -> ListenSpec:
    values, where = _arguments(scheme, parts)
    if "port" not in values:
        raise ValueError(f'{scheme} listen spec needs a port, as in "{scheme}:7007"')
    port = resolve_port(values["port"], "tcp")
    interface = _check_interface(values["interface"], scheme) if values.get("interface") else ""
    backlog = _backlog(values.get("backlog"))
    tls = None
    if scheme == "ssl":
        if not values.get("privateKey"):
            raise ValueError("ssl listen spec needs privateKey=FILE (and certKey=FILE, unless the key file holds both)")
        paths = {
            name: _resolve(values[name], base_dir) if values.get(name) else None
            for name in ("privateKey", "certKey", "extraCertChain", "dhParameters")
        }
        tls = load_tls(
            paths["privateKey"] or "",
            paths["certKey"],
            values.get("sslmethod"),
            paths["extraCertChain"],
            paths["dhParameters"],
        )
    rebuilt = [parts[0][0]]
    for i, (raw, value) in enumerate(parts[1:]):
        if i == where["port"]:
            rebuilt.append(f"port={port}" if value.startswith("port=") else str(port))
        else:
            rebuilt.append(raw)
    return ListenSpec(
        text=text,
        scheme=scheme,
        endpoint=":".join(rebuilt),
        port=port,
        interface=interface,
        backlog=backlog,
        tls=tls,
    )


def _parse_unix(text: str, parts: list[tuple[str, str]], base_dir: str | None) -> ListenSpec:
    values, _where = _arguments("unix", parts)
    if not values.get("address"):
        raise ValueError('unix listen spec needs a path, as in "unix:/run/socksvc/echo.sock"')
    path = _resolve(values["address"], base_dir)
    mode = values.get("mode")
    if mode is not None and not (mode and len(mode) <= 4 and all(c in "01234567" for c in mode)):
        raise ValueError(f"mode {mode!r} is not octal permissions such as 660")
    lockfile = values.get("lockfile", "1")
    if lockfile not in ("0", "1"):
        raise ValueError(f"lockfile {lockfile!r} is not 0 or 1")
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        raise ValueError(f"the socket path {path} is over {UNIX_PATH_MAX} bytes (the UNIX socket limit)")
    check_socket_directory(path)
    return ListenSpec(
        text=text,
        scheme="unix",
        endpoint=":".join(raw for raw, _value in parts),
        path=path,
        backlog=_backlog(values.get("backlog")),
        mode=DEFAULT_UNIX_MODE if mode is None else int(mode, 8) & 0o777,
        lockfile=lockfile == "1",
    )


def check_socket_directory(path: str) -> None:
    """The directory a UNIX socket goes in must exist: say which, and what to do, when it does not."""
    directory = os.path.dirname(path) or "."
    if os.path.isdir(directory):
        return
    what = "is not a directory" if os.path.exists(directory) else "does not exist"
    raise ValueError(
        f"the socket's directory {directory} {what}: create it "
        "(under systemd, RuntimeDirectory= makes one in /run, see docs/systemd.md)"
    )


def _parse_udp(text: str, rest: list[tuple[str, str]]) -> ListenSpec:
    port: int | None = None
    interface = ""
    for _raw, value in rest:
        key, eq, kwvalue = value.partition("=")
        if eq:
            if key == "port" and port is None:
                port = resolve_port(kwvalue, "udp")
            elif key == "interface":
                interface = _check_interface(kwvalue, "udp") if kwvalue else ""
            else:
                raise ValueError(f"unknown udp option {key!r} (udp:PORT[:interface=ADDR])")
        elif port is None:
            port = resolve_port(value, "udp")
        else:
            raise ValueError(f"unexpected {value!r} (udp:PORT[:interface=ADDR])")
    if port is None:
        raise ValueError('udp listen spec needs a port, as in "udp:7007"')
    return ListenSpec(text=text, scheme="udp", endpoint=text, port=port, interface=interface)


def parse_systemd_spec(text: str) -> tuple[str | None, int | None]:
    """
    Check a C{systemd:} listen spec: C{systemd:name=NAME}, or Twisted's
    C{systemd:domain=INET:index=N} (C{domain} is optional and ignored: the
    socket itself says what it is). Gives (name, index), exactly one set;
    raises L{ValueError} with the reason.
    """
    parts = text.split(":")
    if parts[0].strip().lower() != "systemd":
        raise ValueError("not a systemd listen spec")
    name: str | None = None
    index: int | None = None
    for part in parts[1:]:
        key, eq, value = part.partition("=")
        if not eq:
            raise ValueError(f"expected key=value, got {part!r} (systemd:name=NAME)")
        if key == "name":
            if not value or len(value) > 255 or not value.isprintable() or not value.isascii():
                raise ValueError(f"{value!r} is not a FileDescriptorName (1 to 255 printable ASCII characters)")
            name = value
        elif key == "index":
            if not value.isdigit() or len(value) > 6:
                raise ValueError(f"index {value!r} is not a small number")
            index = int(value)
        elif key == "domain":
            if value.upper() not in ("INET", "INET6", "UNIX"):
                raise ValueError(f"domain {value!r} is not INET, INET6 or UNIX")
        else:
            raise ValueError(f"unknown systemd option {key!r} (systemd:name=NAME)")
    if (name is None) == (index is None):
        raise ValueError("systemd listen specs need name=NAME (the socket unit's FileDescriptorName)")
    return name, index
