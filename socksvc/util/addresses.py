"""
Peer addresses: parse once, group by source, print.

IPv4-mapped IPv6 addresses (C{::ffff:a.b.c.d}) are unwrapped everywhere, so
a dual-stack socket's IPv4 peers are matched and counted as IPv4. Peers are
grouped for per-source limits by IPv4 address and IPv6 /64 (one host's
share of a typical IPv6 subnet).
"""

from __future__ import annotations

import ipaddress
from typing import Any

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def peer_ip(addr: Any) -> IP | None:
    """The peer's IP address (IPv4-mapped IPv6 unwrapped), or None (UNIX)."""
    host = getattr(addr, "host", None)
    if not isinstance(host, str):
        return None
    return host_ip(host)


def host_ip(host: str) -> IP | None:
    """L{peer_ip} for a host string (a datagram's source): None if it is not an IP address."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def source_key(ip: IP | None) -> str:
    """How peers are grouped for per-source limits: IPv4 address, IPv6 /64."""
    if ip is None:
        return "local"
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


_FACTS: dict[str, tuple[IP | None, str]] = {}
_FACTS_MAX = 4096


def peer_facts(addr: Any) -> tuple[IP | None, str]:
    """
    L{peer_ip} and its L{source_key} at once, remembered per host string (a
    bounded table, emptied when full): parsing an address costs more than
    the rest of admitting a connection.
    """
    host = getattr(addr, "host", None)
    if not isinstance(host, str):
        return None, "local"
    facts = _FACTS.get(host)
    if facts is None:
        ip = peer_ip(addr)
        facts = (ip, source_key(ip))
        if len(_FACTS) >= _FACTS_MAX:
            _FACTS.clear()
        _FACTS[host] = facts
    return facts


def format_peer(addr: Any) -> str:
    """C{127.0.0.1:5000}, C{[::1]:5000}, or C{unix}."""
    host = getattr(addr, "host", None)
    port = getattr(addr, "port", None)
    if isinstance(host, str):
        if ":" in host:
            return f"[{host}]:{port}"
        return f"{host}:{port}"
    return "unix"


def in_any(ip: IP, networks: tuple[IPNetwork, ...]) -> bool:
    """
    Is C{ip} in one of C{networks}? An IPv4 address also matches a network
    written in IPv4-mapped form (C{::ffff:10.0.0.0/104}); C{::/0} and other
    IPv6 networks wider than the mapped range do not match IPv4 peers.
    """
    for net in networks:
        if net.version == ip.version:
            if ip in net:
                return True
        elif (
            isinstance(net, ipaddress.IPv6Network)
            and net.subnet_of(_MAPPED)
            and ipaddress.IPv6Address(int(_MAPPED.network_address) | int(ip)) in net
        ):
            return True
    return False
