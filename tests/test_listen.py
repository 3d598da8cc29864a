"""Listen specs: parsing, service names, IPv6 escapes, describing ports, and fuzz."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

from socksvc.config import listen
from socksvc.config.listen import ListenSpec, default_backlog, parse_listen, resolve_port, split_spec
from socksvc.daemon.listener import port_description


def test_tcp() -> None:
    spec = parse_listen("tcp:7007:interface=127.0.0.1")
    assert spec == ListenSpec(
        text="tcp:7007:interface=127.0.0.1",
        scheme="tcp",
        endpoint="tcp:7007:interface=127.0.0.1",
        port=7007,
        interface="127.0.0.1",
        backlog=default_backlog(),
    )
    assert spec.kind == "stream"
    assert spec.describe() == "tcp 127.0.0.1:7007"
    assert parse_listen("tcp:7007").describe() == "tcp *:7007"
    assert parse_listen("tcp:port=7007:interface=127.0.0.1").port == 7007
    # Twisted's positional form, tcp:PORT:INTERFACE.
    assert parse_listen("tcp:7007:127.0.0.1").interface == "127.0.0.1"
    # Twisted's options are checked and kept.
    assert parse_listen("tcp:7007:backlog=5").endpoint == "tcp:7007:backlog=5"
    assert parse_listen("tcp:7007:backlog=5").backlog == 5
    assert parse_listen("tcp:7007:127.0.0.1:9").backlog == 9  # Twisted's positional order: port, interface, backlog
    assert parse_listen("tcp6:7007:9").backlog == 9  # tcp6's: port, backlog, interface


def test_service_names_resolve_through_getservbyname() -> None:
    try:
        echo = socket.getservbyname("echo", "tcp")
    except OSError:
        pytest.skip("no echo in /etc/services")
    assert echo == 7
    spec = parse_listen("tcp:echo")
    assert (spec.port, spec.endpoint) == (7, "tcp:7")
    spec = parse_listen("tcp:port=echo:interface=127.0.0.1")
    assert (spec.port, spec.endpoint) == (7, "tcp:port=7:interface=127.0.0.1")
    assert parse_listen("udp:echo").port == 7
    assert resolve_port("qotd", "tcp") == socket.getservbyname("qotd", "tcp")
    with pytest.raises(ValueError, match=r"^unknown tcp service name 'no-such-service' \(not a port number either\)$"):
        resolve_port("no-such-service", "tcp")


def test_tcp6_needs_escaped_colons() -> None:
    spec = parse_listen(r"tcp6:0:interface=\:\:1")
    assert (spec.scheme, spec.port, spec.interface) == ("tcp6", 0, "::1")
    assert spec.endpoint == r"tcp6:0:interface=\:\:1"
    assert spec.describe() == "tcp6 [::1]:0"
    # Addresses are normalised for the clash check.
    assert parse_listen(r"tcp6:7:interface=0\:0\:\:1").interface == "::1"
    assert parse_listen("tcp6:7007").describe() == "tcp6 [::]:7007"
    with pytest.raises(ValueError, match=r"^escape the colons of an IPv6 address: interface=\\:\\:1$"):
        parse_listen("tcp6:0:interface=::1")
    with pytest.raises(ValueError, match=r"interface=fe80\\:\\:1"):
        parse_listen("udp:7:interface=fe80::1")
    with pytest.raises(ValueError, match=r"^tcp6 needs an IPv6 interface, not '127.0.0.1'$"):
        parse_listen("tcp6:0:interface=127.0.0.1")
    # An escaped address followed by tcp6's positional backlog is fine.
    assert parse_listen(r"tcp6:7:interface=\:\:1:50").interface == "::1"


def test_unix(tmp_path: Path) -> None:
    path = str(tmp_path / "echo.sock")
    spec = parse_listen(f"unix:{path}")
    assert (spec.kind, spec.scheme, spec.path, spec.port) == ("stream", "unix", path, None)
    assert spec.describe() == f"unix {path}"
    # Owner and group may connect, not everyone (Twisted's default would be 0666).
    assert (spec.mode, spec.lockfile, spec.backlog) == (0o660, True, default_backlog())
    spec = parse_listen(f"unix:address={tmp_path}/x.sock:mode=600:lockfile=0:backlog=7")
    assert (spec.path, spec.mode, spec.lockfile, spec.backlog) == (f"{tmp_path}/x.sock", 0o600, False, 7)
    assert parse_listen(f"unix:{tmp_path}/x.sock:0644").mode == 0o644  # Twisted's positional order: path, mode
    with pytest.raises(ValueError, match="unix listen spec needs a path"):
        parse_listen("unix:")
    with pytest.raises(ValueError, match=r"^mode '99' is not octal permissions such as 660$"):
        parse_listen(f"unix:{path}:mode=99")
    with pytest.raises(ValueError, match=r"^lockfile '2' is not 0 or 1$"):
        parse_listen(f"unix:{path}:lockfile=2")
    with pytest.raises(ValueError, match=r"is over 107 bytes \(the UNIX socket limit\)$"):
        parse_listen("unix:/tmp/" + "x" * 120)


def test_a_unix_socket_in_a_missing_directory_says_what_to_do(tmp_path: Path) -> None:
    missing = tmp_path / "run" / "socksvc"
    with pytest.raises(ValueError) as e:
        parse_listen(f"unix:{missing}/echo.sock")
    assert str(e.value) == (
        f"the socket's directory {missing} does not exist: create it "
        "(under systemd, RuntimeDirectory= makes one in /run, see docs/systemd.md)"
    )
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"the socket's directory .*/file is not a directory: create it"):
        parse_listen(f"unix:{tmp_path}/file/echo.sock")


def test_relative_unix_paths_start_at_the_base_directory(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    spec = parse_listen("unix:run/echo.sock", str(tmp_path))
    assert spec.path == f"{tmp_path}/run/echo.sock"
    assert spec.text == "unix:run/echo.sock"


def test_the_default_backlog_is_somaxconn(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            expected = min(int(f.read()), 65535)
    except OSError:
        expected = 4096
    assert default_backlog() == expected
    assert parse_listen("tcp:7").backlog == expected
    assert parse_listen("udp:7").backlog == 0  # not a listen() socket
    fake = tmp_path / "somaxconn"
    for text, want in (("200\n", 200), ("junk", 4096), ("0", 4096), ("1000000", 65535)):
        fake.write_text(text)
        monkeypatch.setattr(listen, "SOMAXCONN_PATH", str(fake))
        default_backlog.cache_clear()
        assert default_backlog() == want
    monkeypatch.setattr(listen, "SOMAXCONN_PATH", str(tmp_path / "missing"))
    default_backlog.cache_clear()
    assert default_backlog() == 4096
    monkeypatch.undo()
    default_backlog.cache_clear()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("tcp:7:backlog=0", "backlog '0' is not a number from 1 to 65535"),
        ("tcp:7:backlog=65536", "backlog '65536' is not a number from 1 to 65535"),
        ("tcp:7:backlog=" + "9" * 400, "backlog '" + "9" * 400 + "' is not a number from 1 to 65535"),
        ("tcp:7:backlog=-1", "backlog '-1' is not a number from 1 to 65535"),
        ("tcp:7:colour=red", "unknown tcp option 'colour' (known: port, interface, backlog)"),
        ("tcp:7:backlogg=5", "unknown tcp option 'backlogg'; did you mean \"backlog\"?"),
        ("tcp:7:127.0.0.1:5:6", "unexpected '6': a tcp spec takes at most 3 values"),
        ("tcp:7:port=8", "port given twice"),
        ("tcp:7\x00", "a listen spec cannot hold a NUL character"),
    ],
)
def test_option_errors(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_listen(text)
    assert str(e.value) == reason


def test_udp() -> None:
    spec = parse_listen("udp:7007:interface=127.0.0.1")
    assert (spec.kind, spec.port, spec.interface) == ("datagram", 7007, "127.0.0.1")
    assert spec.describe() == "udp 127.0.0.1:7007"
    assert parse_listen(r"udp:7007:interface=\:\:1").interface == "::1"
    assert parse_listen("udp:port=7007").port == 7007
    with pytest.raises(ValueError, match=r"^unknown udp option 'backlog' \(udp:PORT\[:interface=ADDR\]\)$"):
        parse_listen("udp:7007:backlog=5")
    with pytest.raises(ValueError, match=r"^unexpected '8' "):
        parse_listen("udp:7007:8")
    with pytest.raises(ValueError, match=r"^udp listen spec needs a port"):
        parse_listen("udp")
    with pytest.raises(ValueError, match=r"^missing port$"):
        parse_listen("udp:")


def test_systemd_passes_through() -> None:
    spec = parse_listen("systemd:domain=INET:index=0")
    assert (spec.scheme, spec.endpoint, spec.port) == ("systemd", "systemd:domain=INET:index=0", None)
    with pytest.raises(ValueError, match="systemd listen specs need"):
        parse_listen("systemd")


def test_kinds_are_case_insensitive() -> None:
    assert parse_listen("TCP:7").endpoint == "tcp:7"
    assert parse_listen("Unix:/tmp/x").endpoint == "unix:/tmp/x"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (7007, 'expected a listen spec string such as "tcp:7007"'),
        ("", "empty listen spec"),
        ("  ", "empty listen spec"),
        ("tcp", 'tcp listen spec needs a port, as in "tcp:7007"'),
        ("tcp:", "missing port"),
        ("tcp:65536", "port 65536 is out of range (0 to 65535)"),
        ("tcp:-1", "unknown tcp service name '-1' (not a port number either)"),
        ("tcp:\u00b2", "unknown tcp service name '\u00b2' (not a port number either)"),
        ("tcp:7:interface=localhost", "interface 'localhost' is not an IP address"),
        ("tcpp:7", "unknown listen kind 'tcpp' (known: tcp, tcp6, unix, ssl, systemd, udp); did you mean \"tcp\"?"),
        ("http:80", "unknown listen kind 'http' (known: tcp, tcp6, unix, ssl, systemd, udp)"),
    ],
)
def test_errors(text: object, reason: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_listen(text)
    assert str(e.value) == reason


def test_every_option_is_checked_here() -> None:
    with pytest.raises(ValueError, match=r"^backlog 'lots' is not a number from 1 to 65535$"):
        parse_listen("tcp:7:backlog=lots")
    with pytest.raises(ValueError, match=r"^unknown tcp option 'colour'"):
        parse_listen("tcp:7:colour=red")


def test_split_spec_keeps_escapes_in_raw() -> None:
    assert split_spec(r"tcp6:7:interface=\:\:1") == [
        ("tcp6", "tcp6"),
        ("7", "7"),
        (r"interface=\:\:1", "interface=::1"),
    ]
    assert split_spec("a") == [("a", "a")]
    assert split_spec("a:") == [("a", "a"), ("", "")]


def test_port_description() -> None:
    class Port:
        def __init__(self, host: object) -> None:
            self.host = host

        def getHost(self) -> object:
            return self.host

    assert port_description(Port(IPv4Address("TCP", "127.0.0.1", 7007))) == "tcp 127.0.0.1:7007"  # type: ignore[arg-type]
    assert port_description(Port(IPv6Address("UDP", "::1", 7))) == "udp [::1]:7"  # type: ignore[arg-type]
    assert port_description(Port(UNIXAddress(b"/tmp/x.sock"))) == "unix /tmp/x.sock"  # type: ignore[arg-type]


# -- properties --------------------------------------------------------------

ports = st.integers(min_value=0, max_value=65535)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)


def escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(":", "\\:")


@given(ports, ipv4, st.booleans())
def test_tcp_round_trip(port: int, interface: str, keyword: bool) -> None:
    text = f"tcp:port={port}:interface={interface}" if keyword else f"tcp:{port}:interface={interface}"
    spec = parse_listen(text)
    assert (spec.scheme, spec.port, spec.interface, spec.endpoint) == ("tcp", port, interface, text)
    assert spec.describe() == f"tcp {interface}:{port}"
    assert parse_listen(spec.endpoint) == spec


@given(ports, ipv6)
def test_tcp6_round_trip(port: int, interface: str) -> None:
    text = f"tcp6:{port}:interface={escape(interface)}"
    spec = parse_listen(text)
    assert (spec.scheme, spec.port, spec.endpoint) == ("tcp6", port, text)
    assert ipaddress.ip_address(spec.interface) == ipaddress.ip_address(interface)
    assert spec.describe() == f"tcp6 [{spec.interface}]:{port}"


@given(ports, ipv4 | ipv6)
def test_udp_round_trip(port: int, interface: str) -> None:
    spec = parse_listen(f"udp:{port}:interface={escape(interface)}")
    assert (spec.kind, spec.port) == ("datagram", port)
    assert ipaddress.ip_address(spec.interface) == ipaddress.ip_address(interface)


@given(ports)
def test_unescaped_ipv6_gets_a_hint(port: int) -> None:
    with pytest.raises(ValueError, match="escape the colons"):
        parse_listen(f"tcp6:{port}:interface=::1")


@given(st.integers(min_value=65536, max_value=10**30))
def test_out_of_range_ports(port: int) -> None:
    for scheme in ("tcp", "udp"):
        with pytest.raises(ValueError, match="out of range"):
            parse_listen(f"{scheme}:{port}")


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=30))
def test_random_strings_raise_only_value_error(text: str) -> None:
    try:
        spec = parse_listen(text)
    except ValueError as e:
        assert str(e)
    else:
        assert spec.kind in ("stream", "datagram", "inherited")
        assert spec.port is None or 0 <= spec.port <= 65535


spec_parts = st.sampled_from(["tcp", "tcp6", "udp", "unix", "ssl", "systemd", "TCP"]) | st.text(max_size=5)
part = st.sampled_from(
    ["7007", "echo", "port=7", "interface=127.0.0.1", r"interface=\:\:1", "::1", "", "backlog=5"]
) | st.text(max_size=8)


@given(spec_parts, st.lists(part, max_size=4))
def test_spec_shaped_strings_raise_only_value_error(scheme: str, parts: list[str]) -> None:
    text = ":".join([scheme, *parts])
    assume(text)
    try:
        spec = parse_listen(text)
    except ValueError as e:
        assert str(e)
    else:
        # Whatever we accept, Twisted (or our UDP parser) accepts too: parsing our endpoint again agrees.
        if spec.kind == "stream":
            assert parse_listen(spec.endpoint).endpoint == spec.endpoint
