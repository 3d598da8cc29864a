"""
Keep the client tests off the network's resolver.

A test may ask the system's resolver only what /etc/hosts answers without
DNS: an address literal, or ``localhost`` for IPv4 or any family (a lookup
of ``localhost`` for IPv6 alone, or a reverse lookup of anything but
127.0.0.1, may go to DNS where /etc/hosts lacks the line). Anything else
must be faked (patch ``socket.getaddrinfo`` and friends); an unfaked ask
fails the test, naming the name. Import L{local_names_only} into a test
module (it is autouse) to guard every test in it run in-process; clients
run as subprocesses are kept to literal addresses and ``localhost`` by hand.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest

LOCAL_NAMES = ("localhost",)
LOCAL_ADDRESSES = ("127.0.0.1",)


def _literal(host: object) -> bool:
    if not isinstance(host, str):
        return host is None  # getaddrinfo(None, port): the wildcard, no lookup
    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    return True


def _refuse(what: str) -> AssertionError:
    return AssertionError(f"a test asked the system's resolver {what}: fake it (patch socket.getaddrinfo)")


@pytest.fixture(autouse=True)
def local_names_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    real_getaddrinfo = socket.getaddrinfo
    real_gethostbyname_ex = socket.gethostbyname_ex
    real_gethostbyaddr = socket.gethostbyaddr

    def getaddrinfo(host: Any, port: Any, family: int = 0, *args: Any, **kw: Any) -> Any:
        family = kw.pop("family", family)
        local = host in LOCAL_NAMES and family in (0, socket.AF_UNSPEC, socket.AF_INET)
        if not (_literal(host) or local):
            raise _refuse(f"about {host!r} (family {family})")
        return real_getaddrinfo(host, port, family, *args, **kw)

    def gethostbyname_ex(host: str) -> Any:
        if not (_literal(host) or host in LOCAL_NAMES):
            raise _refuse(f"about {host!r}")
        return real_gethostbyname_ex(host)

    def gethostbyaddr(address: str) -> Any:
        if address not in LOCAL_ADDRESSES and address not in LOCAL_NAMES:
            raise _refuse(f"for the name of {address!r}")
        return real_gethostbyaddr(address)

    def getfqdn(name: str = "") -> str:
        raise _refuse(f"for the full name of {name or 'this host'!r}")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "gethostbyname_ex", gethostbyname_ex)
    monkeypatch.setattr(socket, "gethostbyaddr", gethostbyaddr)
    monkeypatch.setattr(socket, "getfqdn", getfqdn)
    yield
