"""
Listen specs: the strings in a service's C{listen} list.

Stream specs are Twisted endpoint strings (C{tcp}, C{tcp6}, C{unix}, C{ssl},
C{systemd}); we only resolve a service name in the port position
(C{tcp:echo} is port 7, via getservbyname) and check addresses, then hand the
string to L{twisted.internet.endpoints.serverFromString}. Datagram specs are
C{udp:PORT[:interface=ADDR]}, which Twisted has no endpoint for; they are
parsed completely here.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any, Literal

import attrs

from socksvc.config.settings import closest

STREAM_SCHEMES = ("tcp", "tcp6", "unix", "ssl", "systemd")
DATAGRAM_SCHEMES = ("udp",)
SCHEMES = STREAM_SCHEMES + DATAGRAM_SCHEMES

_NO_REACTOR: Any = object()


@attrs.frozen
class ListenSpec:
    """One parsed listen spec."""

    text: str
    """The spec as written in the config."""
    scheme: str
    """tcp, tcp6, unix, ssl, systemd or udp."""
    endpoint: str
    """For stream specs, the Twisted endpoint string with the port resolved."""
    port: int | None = None
    """The port number (tcp, tcp6, ssl, udp), or None."""
    interface: str = ""
    """The address bound (tcp, tcp6, ssl, udp); empty means all."""
    path: str = ""
    """The socket path (unix)."""

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


def parse_listen(text: Any) -> ListenSpec:
    """
    Parse and check one listen spec; raise L{ValueError} with the reason.
    """
    if not isinstance(text, str):
        raise ValueError('expected a listen spec string such as "tcp:7007"')
    if not text.strip():
        raise ValueError("empty listen spec")
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
        return _parse_inet_stream(text, scheme, parts)
    if scheme == "unix":
        return _parse_unix(text, parts)
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


def _parse_inet_stream(text: str, scheme: str, parts: list[tuple[str, str]]) -> ListenSpec:
    rest = parts[1:]
    port_index = None
    port_value = None
    interface = ""
    positional = 0
    for i, (_raw, value) in enumerate(rest):
        key, eq, kwvalue = value.partition("=")
        if eq:
            if key == "port":
                port_index, port_value = i, kwvalue
            elif key == "interface":
                interface = _check_interface(kwvalue, scheme) if kwvalue else ""
            continue
        positional += 1
        if positional == 1:
            port_index, port_value = i, value
        elif positional == 2 and scheme == "tcp" and value:
            # tcp:PORT:INTERFACE, Twisted's positional form.
            interface = _check_interface(value, scheme)
    if port_index is None or port_value is None:
        raise ValueError(f'{scheme} listen spec needs a port, as in "{scheme}:7007"')
    port = resolve_port(port_value, "tcp")
    rebuilt = [parts[0][0]]
    for i, (raw, value) in enumerate(rest):
        if i == port_index:
            rebuilt.append(f"port={port}" if value.startswith("port=") else str(port))
        else:
            rebuilt.append(raw)
    endpoint = ":".join(rebuilt)
    _check_with_twisted(endpoint)
    return ListenSpec(text=text, scheme=scheme, endpoint=endpoint, port=port, interface=interface)


def _parse_unix(text: str, parts: list[tuple[str, str]]) -> ListenSpec:
    path = ""
    for _raw, value in parts[1:]:
        key, eq, kwvalue = value.partition("=")
        if eq and key == "address":
            path = kwvalue
        elif not eq and not path:
            path = value
    if not path:
        raise ValueError('unix listen spec needs a path, as in "unix:/run/socksvc/echo.sock"')
    endpoint = ":".join(raw for raw, _value in parts)
    _check_with_twisted(endpoint)
    return ListenSpec(text=text, scheme="unix", endpoint=endpoint, path=path)


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


def _check_with_twisted(endpoint: str) -> None:
    """Let Twisted's own parser have its say (it checks ssl keys, backlog, mode...)."""
    from twisted.internet import endpoints

    try:
        # No reactor: parsing only builds an endpoint object, and loading a
        # config must never install one (the daemon may choose another).
        endpoints.serverFromString(_NO_REACTOR, endpoint)
    except Exception as e:  # Twisted raises ValueError, KeyError, TypeError, OpenSSL errors...
        reason = str(e) or e.__class__.__name__
        raise ValueError(f"not a valid endpoint: {reason}") from None


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
