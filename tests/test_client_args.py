"""
Property tests for the client's argument and URL parsing: hosts, ports,
option values, lookup's classification of its argument, and URLs.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from socksvc.client.common import EXIT_NOT_FOUND, EXIT_USAGE, ClientError, parse_count, parse_nonnegative, parse_timeout
from socksvc.client.lookup import FALLBACK_PORTS, is_url, lookup, parse_url, split_address
from socksvc.client.main import build_parser
from socksvc.client.target import Target, parse_host, parse_port, target_from
from tests.support.resolver import local_names_only  # noqa: F401 (autouse: no DNS from these tests)

FEW = settings(max_examples=60)

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
label = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=12)
hostname = st.lists(label, min_size=1, max_size=4).map(".".join)


@FEW
@given(st.integers(1, 65535))
def test_port_numbers_round_trip(port: int) -> None:
    assert parse_port(str(port)) == port
    assert parse_port(f" {port} ") == port


@FEW
@given(st.one_of(st.integers(65536, 10**9), st.just(0)))
def test_ports_out_of_range_are_usage_errors(port: int) -> None:
    with pytest.raises(ClientError) as e:
        parse_port(str(port))
    assert e.value.code == EXIT_USAGE


@FEW
@given(st.text(max_size=20))
def test_any_port_text_gives_a_port_or_a_client_error(text: str) -> None:
    try:
        port = parse_port(text)
    except ClientError as e:
        assert e.code in (EXIT_USAGE, EXIT_NOT_FOUND)
        assert "\n" not in e.message
    else:
        assert 1 <= port <= 65535


def test_service_names_are_ports() -> None:
    try:
        expected = socket.getservbyname("echo", "tcp")
    except OSError:
        pytest.skip("no services database here")
    assert parse_port("echo") == expected == 7


@FEW
@given(st.one_of(ipv4, ipv6, hostname))
def test_hosts_round_trip(host: str) -> None:
    assert parse_host(host) == host


@FEW
@given(ipv6)
def test_bracketed_ipv6_loses_its_brackets(host: str) -> None:
    assert parse_host(f"[{host}]") == host


@FEW
@given(st.text(max_size=30))
def test_any_host_text_gives_a_host_or_a_usage_error(text: str) -> None:
    try:
        host = parse_host(text)
    except ClientError as e:
        assert e.code == EXIT_USAGE
        assert "\n" not in e.message
    else:
        assert host
        assert not any(c.isspace() for c in host)
        assert "[" not in host


@FEW
@given(hostname, st.integers(1, 65535))
def test_host_colon_port_is_refused_with_a_hint(host: str, port: int) -> None:
    with pytest.raises(ClientError, match="separate argument"):
        parse_host(f"{host}:{port}")


@FEW
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_timeouts(value: float) -> None:
    try:
        got = parse_timeout(repr(value))
    except argparse.ArgumentTypeError:
        assert not (0 < value <= 86400)
    else:
        assert got == value
        assert 0 < got <= 86400


@FEW
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_intervals(value: float) -> None:
    try:
        got = parse_nonnegative(repr(value))
    except argparse.ArgumentTypeError:
        assert not (0 <= value <= 86400)
    else:
        assert got == value


@FEW
@given(st.integers(-(10**6), 10**6))
def test_counts(value: int) -> None:
    try:
        got = parse_count(str(value))
    except argparse.ArgumentTypeError:
        assert value < 1
    else:
        assert got == value >= 1


@FEW
@given(st.one_of(ipv4, ipv6))
def test_addresses_are_recognised(address: str) -> None:
    assert split_address(address) == address
    assert not is_url(address)
    assert ipaddress.ip_address(split_address(address) or "") == ipaddress.ip_address(address)


@FEW
@given(hostname)
def test_names_are_not_addresses_or_urls(name: str) -> None:
    # All-digit dotted names such as "1.2.3.4" really are addresses.
    try:
        ipaddress.ip_address(name)
    except ValueError:
        assert split_address(name) is None
    assert not is_url(name)


schemes = st.sampled_from(sorted(FALLBACK_PORTS))
url_hosts = st.one_of(hostname, ipv4, ipv6.map(lambda a: f"[{a}]"))
paths = st.sampled_from(["", "/", "/a/b", "/x?y=1", "/#frag"])


@FEW
@given(schemes, url_hosts, st.integers(1, 65535), paths)
def test_an_explicit_url_port_wins(scheme: str, host: str, port: int, path: str) -> None:
    url = parse_url(f"{scheme}://{host}:{port}{path}")
    assert (url.scheme, url.port, url.explicit) == (scheme, port, True)
    assert url.host == host.strip("[]").lower()
    assert lookup(f"{scheme}://{host}:{port}{path}")[-1] == ("port", str(port))


@FEW
@given(schemes, url_hosts, paths, st.booleans())
def test_a_url_without_a_port_gets_its_schemes(scheme: str, host: str, path: str, upper: bool) -> None:
    written = scheme.upper() if upper else scheme
    url = parse_url(f"{written}://{host}{path}")
    assert url.scheme == scheme
    assert not url.explicit
    try:
        expected = socket.getservbyname(scheme, "tcp")
    except OSError:
        expected = FALLBACK_PORTS[scheme]
    assert url.port == expected


@settings(max_examples=300)
@given(st.one_of(st.text(max_size=40), st.text(max_size=30).map(lambda t: "smtp://" + t)))
def test_any_lookup_query_text_is_classified_without_a_traceback(text: str) -> None:
    # Only URLs and malformed text: names and addresses would ask the resolver.
    if is_url(text):
        try:
            url = parse_url(text)
        except ClientError as e:
            assert e.code in (EXIT_USAGE, EXIT_NOT_FOUND)
            assert "\n" not in e.message
            assert e.message.startswith(("bad URL ", "not a URL ", "unknown URL scheme ")), e.message
            assert e.message.count(": ") <= 2  # ours, not Python's text glued on
        else:
            assert 1 <= url.port <= 65535


@FEW
@given(st.from_regex(r"[a-z][a-z0-9+.\-]{0,10}", fullmatch=True), hostname)
def test_url_schemes_are_known_or_one_error(scheme: str, host: str) -> None:
    try:
        url = parse_url(f"{scheme}://{host}")
    except ClientError as e:
        assert e.code == EXIT_NOT_FOUND
        assert e.message.startswith(f"unknown URL scheme {scheme!r}")
    else:
        assert 1 <= url.port <= 65535


@FEW
@given(st.sampled_from(["echo", "greet", "reverse"]), st.one_of(ipv4, hostname))
def test_positionals_default_in_order(command: str, host: str) -> None:
    parser = build_parser()
    args: Any = parser.parse_args([command, host])
    default = {"echo": 7007, "greet": 7017, "reverse": 7071}[command]
    assert target_from(args) == Target(host, default)
    assert args.timeout == 5.0
    bare: Any = parser.parse_args([command])
    assert target_from(bare) == Target("localhost", default)
