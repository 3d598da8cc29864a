"""
Extra named listen lists (a service type's C{extra_streams}: chat's irc and
web): the loader checks them like listen and against every other spec, the
daemon binds each with its own factory on the one state, and a reload
compares them per (list, spec).
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import pytest
import pytest_twisted

from socksvc.config.loader import DEFAULT_CONFIG, ConfigError
from socksvc.daemon import systemd
from socksvc.daemon.reload import plan_reload
from socksvc.daemon.service import DaemonService
from socksvc.services.catalogue import loads
from socksvc.wire import CHAT_IRC_PORT, CHAT_WEB_PORT
from tests.conftest import until
from tests.support.systemd import PortsReactor

CHAT = """
[services.chat]
listen = ["tcp:7070:interface=127.0.0.1"]
irc = ["tcp:7667:interface=127.0.0.1"]
web = ["tcp:7080:interface=127.0.0.1"]
"""


def test_irc_and_web_are_listen_lists_of_the_chat() -> None:
    svc = loads(CHAT, "<t>").service("chat")
    assert [(key, i, spec.text) for key, i, spec in svc.listens()] == [
        ("listen", 0, "tcp:7070:interface=127.0.0.1"),
        ("irc", 0, "tcp:7667:interface=127.0.0.1"),
        ("web", 0, "tcp:7080:interface=127.0.0.1"),
    ]


def test_the_embedded_default_has_irc_and_web_on_loopback() -> None:
    svc = loads(DEFAULT_CONFIG, "<t>").service("chat")
    assert [key for key, _ in svc.extra] == ["irc", "web"]
    assert [spec.port for _, specs in svc.extra for spec in specs] == [CHAT_IRC_PORT, CHAT_WEB_PORT]
    assert all(spec.interface == "127.0.0.1" for _, specs in svc.extra for spec in specs)


def test_listen_may_be_empty_when_another_list_has_a_spec() -> None:
    svc = loads('[services.chat]\nirc = ["tcp:6667"]\n', "<t>").service("chat")
    assert svc.listen == () and svc.listens()[0][0] == "irc"
    svc = loads('[services.chat]\nlisten = []\nweb = ["tcp:8080"]\n', "<t>").service("chat")
    assert svc.listen == ()


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("irc = []", 'services.chat.listen: missing; give a list such as ["tcp:7007"]'),
        ("listen = []\nirc = []", "services.chat.listen = []: a service needs at least one listen spec"),
        ('irc = "tcp:6667"', 'services.chat.irc = "tcp:6667": expected a list of listen specs'),
        ('irc = ["udp:6667"]', 'services.chat.irc[0] = "udp:6667": irc is served over stream listen specs only'),
        ('irc = ["bogus:1"]', 'services.chat.irc[0] = "bogus:1": '),
        (
            'listen = ["tcp:7070"]\nweb = ["tcp:7070"]',
            'services.chat.web[0] = "tcp:7070": same address as services.chat.listen[0]',
        ),
        ('listen = ["tcp:7070"]\nirc = ["tcp:7667", "tcp6:7667"]', "services.chat.irc[1] = "),
        (
            'listen = ["tcp:7070"]\nirk = ["tcp:7667"]',
            'services.chat.irk = ["tcp:7667"]: unknown key; did you mean "irc"?',
        ),
    ],
)
def test_bad_lists(body: str, error: str) -> None:
    with pytest.raises(ConfigError) as e:
        loads(f"[services.chat]\n{body}\n", "t.toml")
    assert str(e.value).startswith("t.toml: " + error), str(e.value)


def test_other_services_take_no_irc_key() -> None:
    with pytest.raises(ConfigError, match=r"services\.echo\.irc"):
        loads('[services.echo]\nlisten = ["tcp:7"]\nirc = ["tcp:6667"]\n', "t.toml")


def test_a_clash_across_services_names_both_lists() -> None:
    text = CHAT + '[services.echo]\nlisten = ["tcp:7667:interface=127.0.0.1"]\n'
    with pytest.raises(ConfigError, match=r"services.echo.listen\[0\].*same address as services.chat.irc\[0\]"):
        loads(text, "t.toml")


def test_each_list_binds_with_its_own_factory_on_one_state() -> None:
    reactor = PortsReactor()
    svc = DaemonService(loads(CHAT, "<t>"), reactor, notifier=systemd.Notifier(None))
    svc.privilegedStartService()
    svc.startService()
    instance = svc.instance("chat")
    assert [(listener.key, listener.name) for listener in instance.listeners()] == [
        ("listen", "0:tcp:7070:interface=127.0.0.1"),
        ("irc", "irc[0]:tcp:7667:interface=127.0.0.1"),
        ("web", "web[0]:tcp:7080:interface=127.0.0.1"),
    ]
    factories = [factory for _port, factory, *_ in reactor.tcpServers]
    names = [type(f).__name__ for f in factories]
    assert names == ["ServiceFactory", "ServiceFactory", "WebFactory"]
    assert len({id(f.context.state) for f in factories}) == 1
    assert factories[1].make.__name__ == "IrcProtocol"


def plan(old: str, new: str) -> Any:
    running = {s.name: s for s in loads(old, "<t>").services}
    return plan_reload(running, loads(new, "<t>"))


def test_reload_compares_each_list_per_spec() -> None:
    moved = CHAT.replace('irc = ["tcp:7667', 'irc = ["tcp:6667')
    (kept,) = plan(CHAT, moved).kept
    assert [(key, spec.text) for key, spec in kept.close] == [("irc", "tcp:7667:interface=127.0.0.1")]
    assert [(key, i, spec.text) for key, i, spec in kept.open] == [("irc", 0, "tcp:6667:interface=127.0.0.1")]
    # The same spec moved from web to irc: closed in one list, opened in the other.
    swapped = '[services.chat]\nlisten = ["tcp:7070:interface=127.0.0.1"]\nirc = ["tcp:7080:interface=127.0.0.1"]\n'
    (kept,) = plan(CHAT, swapped).kept
    assert {key for key, _ in kept.close} == {"irc", "web"}
    assert [(key, spec.port) for key, _, spec in kept.open] == [("irc", 7080)]
    (kept,) = plan(CHAT, CHAT).kept
    assert kept.close == () and kept.open == ()


def test_reload_binds_and_releases_extra_lists() -> None:
    reactor = PortsReactor()
    svc = DaemonService(loads(CHAT, "<t>"), reactor, notifier=systemd.Notifier(None))
    svc.privilegedStartService()
    svc.startService()
    state = svc.instance("chat").context.state
    before = len(reactor.listening)
    results: list[bool] = []
    text = '[services.chat]\nirc = ["tcp:6667:interface=127.0.0.1"]\n'
    svc.reload(loads(text, "<t>")).addCallback(results.append)
    reactor.advance(0)
    assert results == [True]
    instance = svc.instance("chat")
    assert instance.context.state is state  # the members stay
    assert [(listener.key, listener.spec.port) for listener in instance.listeners()] == [("irc", 6667)]
    assert len(reactor.listening) == before - 2


@pytest_twisted.ensureDeferred
async def test_a_port_moved_from_web_to_irc_is_taken_over_and_speaks_irc() -> None:
    """A reload moving chat's web port (bound from port 0) to its irc list: the socket stays, the protocol changes."""
    from twisted.internet import reactor

    text = '[services.chat]\nlisten = ["tcp:0:interface=127.0.0.1"]\nweb = ["tcp:0:interface=127.0.0.1"]\n'
    svc = DaemonService(loads(text, "<test>"), reactor, handle_signals=False)
    svc.privilegedStartService()
    svc.startService()
    try:
        (web_listener,) = [x for x in svc.instance("chat").listeners() if x.key == "web"]
        number = web_listener.port.getHost().port
        moved = f'[services.chat]\nlisten = ["tcp:0:interface=127.0.0.1"]\nirc = ["tcp:{number}:interface=127.0.0.1"]\n'
        assert await svc.reload(loads(moved, "<test>"))
        (irc_listener,) = [x for x in svc.instance("chat").listeners() if x.key == "irc"]
        assert irc_listener.port.getHost().port == number
        sock = socket.create_connection(("127.0.0.1", number), timeout=5)
        sock.setblocking(False)
        got = bytearray()
        sock.sendall(b"PING :moved\r\n")

        def more() -> bool:
            with contextlib.suppress(BlockingIOError):
                got.extend(sock.recv(4096))
            return b"\r\n" in got

        try:
            await until(more, what="the IRC reply")
        finally:
            sock.close()
        assert bytes(got) == b":chat.socksvc PONG chat.socksvc :moved\r\n"
    finally:
        await svc.stopService()
