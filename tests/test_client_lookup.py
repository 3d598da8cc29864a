"""
`socksvc lookup`: the system resolver only (names from /etc/hosts, loopback
addresses, the services database; never DNS: CI has none).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from typing import Any

import pytest

from socksvc.client import main as client_main
from socksvc.client.common import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, ClientError
from socksvc.client.lookup import FALLBACK_PORTS, lookup, parse_url, scheme_port

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


def test_no_argument_prints_this_hosts_names(capsys: Any) -> None:
    code, out, err = run(["lookup"], capsys)
    assert (code, err) == (EXIT_OK, "")
    got = rows(out)
    assert got[0] == ("hostname", socket.gethostname())
    assert got[1][0] == "fqdn"
    assert got[1][1]


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


def test_ipv6_addresses_are_listed_when_the_name_has_them() -> None:
    try:
        infos = socket.getaddrinfo("localhost", None, socket.AF_INET6)
    except socket.gaierror:
        pytest.skip("localhost has no IPv6 address here")
    expected = {str(i[4][0]) for i in infos}
    assert {v for k, v in lookup("localhost") if k == "ipv6"} == expected


def test_an_ipv4_address(capsys: Any) -> None:
    code, out, _ = run(["lookup", "127.0.0.1"], capsys)
    assert code == EXIT_OK
    got = rows(out)
    assert got[0] == ("address", "127.0.0.1")
    assert got[1] == ("name", socket.gethostbyaddr("127.0.0.1")[0])


@pytest.mark.parametrize("query", ["::1", "[::1]"])
def test_an_ipv6_address(capsys: Any, query: str) -> None:
    code, out, err = run(["lookup", query], capsys)
    try:
        name = socket.gethostbyaddr("::1")[0]
    except OSError:
        # No name for ::1 in this host's /etc/hosts: one line, "not found".
        assert (code, out) == (EXIT_NOT_FOUND, "")
        assert re.fullmatch(r"socksvc: no name for address ::1: .+\n", err)
    else:
        assert code == EXIT_OK
        assert rows(out)[:2] == [("address", "::1"), ("name", name)]


def test_an_unknown_name_is_one_line_and_quick(capsys: Any) -> None:
    code, out, err = run(["lookup", "no-such-host.invalid"], capsys)
    assert (code, out) == (EXIT_NOT_FOUND, "")
    assert re.fullmatch(r"socksvc: cannot resolve no-such-host\.invalid: .+\n", err)


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
