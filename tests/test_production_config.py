"""
etc/socksvc.toml: its socket-activated listen lines and the commented plain
ones (for socksvc.service alone) serve the same ports, kinds and address
families; the socket units are dual stack, and so are the plain lines.
"""

from __future__ import annotations

import configparser
import re
import socket
from pathlib import Path

import pytest
import pytest_twisted

from socksvc.daemon.service import DaemonService
from socksvc.services.catalogue import loads
from tests.conftest import until
from tests.support import has_ipv6_loopback

ROOT = Path(__file__).resolve().parent.parent
ETC = (ROOT / "etc" / "socksvc.toml").read_text()


def plain_variant() -> str:
    """The config with each systemd: listen line swapped for the commented plain line below it."""
    return re.sub(r'listen = \["systemd:name=\w+"\]\n# (listen = .*)\n', r"\1\n", ETC)


def socket_unit(name: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((ROOT / "systemd" / f"socksvc-{name}.socket").read_text())
    return unit


def test_both_variants_serve_the_same_ports_and_families() -> None:
    activated = loads(ETC, "etc/socksvc.toml")
    plain = loads(plain_variant(), "etc/socksvc.toml (plain)")
    assert [s.name for s in plain.services] == [s.name for s in activated.services]
    for svc in activated.services:
        [spec] = svc.listen
        assert spec.text == f"systemd:name={svc.name}"
        unit = socket_unit(svc.name)["Socket"]
        assert unit["FileDescriptorName"] == svc.name
        assert unit["BindIPv6Only"] == "both"  # one socket, IPv4 and IPv6
        wanted = {("stream", int(unit["ListenStream"]))}
        if "ListenDatagram" in unit:
            wanted.add(("datagram", int(unit["ListenDatagram"])))
        binds = {(s.kind, s.port) for s in plain.service(svc.name).listen}
        assert binds == wanted, svc.name
        for s in plain.service(svc.name).listen:
            # [::] without IPV6_V6ONLY: both families, as BindIPv6Only=both.
            assert s.scheme in ("tcp6", "udp") and s.interface in ("", "::"), s.text
            assert s.scheme == "tcp6" or s.interface == "::", s.text


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback here")
@pytest_twisted.ensureDeferred
async def test_the_plain_lines_kind_of_listener_takes_ipv4_and_ipv6() -> None:
    """tcp6:PORT and udp:PORT:interface=\\:\\: (on port 0 here) answer 127.0.0.1 and ::1 alike."""
    from twisted.internet import reactor

    text = '[services.echo]\nlisten = ["tcp6:0", "udp:0:interface=\\\\:\\\\:"]\n'
    svc = DaemonService(loads(text, "<plain>"), reactor, handle_signals=False)
    svc.privilegedStartService()
    svc.startService()
    try:
        tcp, udp = (listener.port.getHost().port for listener in svc.instance("echo").listeners())
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            for kind, port in ((socket.SOCK_STREAM, tcp), (socket.SOCK_DGRAM, udp)):
                s = socket.socket(family, kind)
                s.connect((host, port))
                s.setblocking(False)
                s.send(b"both")
                got: list[bytes] = []

                def answered(s: socket.socket = s, got: list[bytes] = got) -> bool:
                    try:
                        got.append(s.recv(100))
                    except BlockingIOError:
                        return False
                    return True

                try:
                    await until(answered, what=f"an echo from {host} over {kind!r}")
                finally:
                    s.close()
                assert got == [b"both"]
    finally:
        await svc.stopService()
