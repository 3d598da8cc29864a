"""
`socksvc lookup`: the system resolver only. The tests ask it only what
/etc/hosts and the services database answer (localhost, 127.0.0.1, URL
schemes); anything that could go to DNS (an unknown name, ::1, IPv6
addresses of a name, this host's fully qualified name) goes to a faked
resolver: a test run sends no query off the machine.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import Any

import pytest

from socksvc.client import main as client_main
from socksvc.client.common import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, ClientError
from socksvc.client.lookup import FALLBACK_PORTS, lookup, parse_url, scheme_port
from tests.support.resolver import local_names_only  # noqa: F401 (autouse: no DNS from these tests)

SCRIPT = os.path.join(os.path.dirname(sys.executable), "socksvc")


def run(argv: list[str], capsys: Any) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        client_main.main(argv)
    out, err = capsys.readouterr()
    assert isinstance(exc.value.code, int)
    return exc.value.code, out, err


def rows(out: str) -> list[tuple[str, str]]:
    result = []
    for line in out.splitlines():
        key, sep, value = line.partition(": ")
        assert sep, line
        result.append((key, value))
    return result


def test_no_argument_prints_this_hosts_names(capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def getfqdn(name: str = "") -> str:  # the real one may ask DNS about this host's name
        asked.append(name)
        return "vm.example.lan"

    monkeypatch.setattr(socket, "getfqdn", getfqdn)
    code, out, err = run(["lookup"], capsys)
    assert (code, err) == (EXIT_OK, "")
    assert rows(out) == [("hostname", socket.gethostname()), ("fqdn", "vm.example.lan")]
    assert asked == [socket.gethostname()]


def test_a_name(capsys: Any) -> None:
    code, out, _ = run(["lookup", "localhost"], capsys)
    assert code == EXIT_OK
    got = rows(out)
    assert got[0][0] == "name"
    assert ("ipv4", "127.0.0.1") in got
    v4 = [v for k, v in got if k == "ipv4"]
    assert len(v4) == len(set(v4))  # each address once


def test_a_name_from_etc_hosts_with_aliases() -> None:
    # Whatever /etc/hosts says about the first name on the 127.0.0.1 line, lookup agrees with the libc call.
    name, aliases, addresses = socket.gethostbyname_ex("localhost")
    got = lookup("localhost")
    assert got[0] == ("name", name)
    assert [v for k, v in got if k == "alias"] == [a for a in dict.fromkeys(aliases) if a != name]
    assert {v for k, v in got if k == "ipv4"} >= set(addresses)


def test_ipv6_addresses_are_listed_when_the_name_has_them(monkeypatch: pytest.MonkeyPatch) -> None:
    # A faked resolver: asking the system's about a name's IPv6 addresses may go to DNS
    # (when /etc/hosts has none), and tests send no query off the machine.
    stream = socket.SOCK_STREAM
    answer = [
        (socket.AF_INET6, stream, 6, "dual.example", ("2001:db8::7", 0, 0, 0)),
        (socket.AF_INET, stream, 6, "", ("192.0.2.7", 0)),
        (socket.AF_INET6, stream, 6, "", ("2001:db8::7", 0, 0, 0)),
    ]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **kw: answer)
    monkeypatch.setattr(socket, "gethostbyname_ex", lambda name: ("dual.example", ["dual"], ["192.0.2.7"]))
    assert lookup("dual") == [
        ("name", "dual.example"),
        ("alias", "dual"),
        ("ipv4", "192.0.2.7"),
        ("ipv6", "2001:db8::7"),
    ]


def test_an_ipv6_only_name(monkeypatch: pytest.MonkeyPatch) -> None:
    answer = [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2001:db8::8", 0, 0, 0))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **kw: answer)

    def no_ipv4(name: str) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "gethostbyname_ex", no_ipv4)
    assert lookup("six") == [("name", "six"), ("ipv6", "2001:db8::8")]


def test_an_ipv4_address(capsys: Any) -> None:
    code, out, _ = run(["lookup", "127.0.0.1"], capsys)
    assert code == EXIT_OK
    got = rows(out)
    assert got[0] == ("address", "127.0.0.1")
    assert got[1] == ("name", socket.gethostbyaddr("127.0.0.1")[0])


@pytest.mark.parametrize("query", ["::1", "[::1]"])
@pytest.mark.parametrize("known", [True, False])
def test_an_ipv6_address(capsys: Any, monkeypatch: pytest.MonkeyPatch, query: str, known: bool) -> None:
    # Faked: the system's reverse lookup of ::1 asks DNS when /etc/hosts has no ::1 line.
    asked: list[str] = []

    def gethostbyaddr(address: str) -> tuple[str, list[str], list[str]]:
        asked.append(address)
        if not known:
            raise socket.herror(1, "Unknown host")
        return "ip6-localhost", ["ip6-loopback"], ["::1"]

    monkeypatch.setattr(socket, "gethostbyaddr", gethostbyaddr)
    code, out, err = run(["lookup", query], capsys)
    assert asked == ["::1"]
    if known:
        assert (code, err) == (EXIT_OK, "")
        assert rows(out) == [("address", "::1"), ("name", "ip6-localhost"), ("alias", "ip6-loopback")]
    else:
        assert (code, out, err) == (EXIT_NOT_FOUND, "", "socksvc: no name for address ::1: unknown host\n")


def test_an_unknown_name_is_one_line(capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def getaddrinfo(*args: Any, **kw: Any) -> Any:  # never the system's resolver for a name not in /etc/hosts
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    code, out, err = run(["lookup", "no-such-host.invalid"], capsys)
    assert (code, out) == (EXIT_NOT_FOUND, "")
    assert err == "socksvc: cannot resolve host 'no-such-host.invalid': name or service not known\n"


@pytest.mark.parametrize(
    ("url", "port"),
    [
        ("smtp://mail.example.com", 25),
        ("SMTP://mail.example.com/", 25),
        ("http://www.example.com/index.html", 80),
        ("https://www.example.com:8443/x?y#z", 8443),
        ("ssh://user@[2001:db8::1]", 22),
        ("ftp://[2001:db8::1]:2121/", 2121),
        ("echo://localhost", 7),
        ("frob://host:9", 9),  # an explicit port wins, even for an unknown scheme
    ],
)
def test_a_url(capsys: Any, url: str, port: int) -> None:
    code, out, err = run(["lookup", url], capsys)
    assert (code, err) == (EXIT_OK, "")
    got = dict(rows(out))
    assert got["port"] == str(port)
    assert got["scheme"] == url.split(":", 1)[0].lower()


def test_url_host_is_shown() -> None:
    assert lookup("smtp://mail.example.com") == [("scheme", "smtp"), ("host", "mail.example.com"), ("port", "25")]


def test_unknown_scheme_is_one_line(capsys: Any) -> None:
    code, out, err = run(["lookup", "frobnicate://example.com"], capsys)
    assert (code, out) == (EXIT_NOT_FOUND, "")
    assert err == "socksvc: unknown URL scheme 'frobnicate': no such service in the services database\n"


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("http://host:99999/", "port out of range"),
        ("http://host:0/", "port out of range"),
        ("http://host:abc/", "bad URL 'http://host:abc/': the port is not a number: 'abc'"),
        ("smtp://[::1]:x", "bad URL 'smtp://[::1]:x': the port is not a number: 'x'"),
        ("smtp://[::1]:99999", "bad URL 'smtp://[::1]:99999': port out of range 1-65535"),
        ("http://[::1/", "bad URL 'http://[::1/': a [ with no ]"),
        ("http://[nope]/", "bad URL 'http://[nope]/': not an IPv6 address in brackets"),
        ("http://host:-1/", "bad URL 'http://host:-1/': the port is not a number: '-1'"),
        ("http://a b/", "spaces or control characters"),
        ("two words", "not a host name, address or URL"),
        ("a/b", "not a host name, address or URL"),
        ("host:80", "not a host name, address or URL"),
    ],
)
def test_bad_queries_are_usage_errors(capsys: Any, query: str, fragment: str) -> None:
    code, out, err = run(["lookup", query], capsys)
    assert (code, out) == (EXIT_USAGE, "")
    assert len(err.splitlines()) == 1
    assert fragment in err
    assert "could not be cast" not in err and "Invalid" not in err  # no Python message leaks through


def test_fallback_table_when_the_services_database_lacks_a_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(*_args: Any) -> int:
        raise OSError("service/proto not found")

    monkeypatch.setattr(socket, "getservbyname", missing)
    assert scheme_port("https") == 443 == FALLBACK_PORTS["https"]
    with pytest.raises(ClientError) as e:
        scheme_port("frob")
    assert e.value.code == EXIT_NOT_FOUND


def test_fallback_table_agrees_with_this_hosts_services_database() -> None:
    checked = 0
    for scheme, port in FALLBACK_PORTS.items():
        try:
            system = socket.getservbyname(scheme, "tcp")
        except OSError:
            continue
        checked += 1
        assert system == port, scheme
    if not checked:
        pytest.skip("no services database here")


def test_parse_url_explicit_flag() -> None:
    assert parse_url("smtp://m").explicit is False
    assert parse_url("smtp://m:2525").explicit is True


def test_lookup_through_the_console_script() -> None:
    p = subprocess.run([SCRIPT, "lookup", "smtp://mail.example.com"], capture_output=True, timeout=30, check=False)
    assert (p.returncode, p.stdout, p.stderr) == (0, b"scheme: smtp\nhost: mail.example.com\nport: 25\n", b"")
    p = subprocess.run([SCRIPT, "lookup", "bogus://x"], capture_output=True, timeout=30, check=False)
    assert p.returncode == EXIT_NOT_FOUND
    assert p.stderr.count(b"\n") == 1
    assert b"Traceback" not in p.stderr


def test_the_resolver_guard_refuses_what_could_go_to_dns() -> None:
    # tests.resolver_guard (autouse here): the names a test may not ask the system about.
    for ask in (
        lambda: socket.getaddrinfo("example.invalid", 80),
        lambda: socket.getaddrinfo("localhost", 80, socket.AF_INET6),
        lambda: socket.gethostbyaddr("::1"),
        lambda: socket.getfqdn(),
    ):
        with pytest.raises(AssertionError, match="fake it"):
            ask()
    assert socket.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)[0][4] == ("127.0.0.1", 80)
    assert ("127.0.0.1", 80) in [info[4] for info in socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)]
