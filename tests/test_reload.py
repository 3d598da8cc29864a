"""
Reload (SIGHUP) and stop (SIGTERM).

In process, on a memory reactor: what a reload adds, removes, re-binds and
reconfigures in place, that a bad config or a failed bind changes nothing,
and RELOADING=1 / READY=1 around it. As a subprocess: the real daemon,
reloaded while chat and echo clients stay connected.
"""

from __future__ import annotations

import select
import signal
import socket
import time
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.logger import globalLogPublisher

from socksvc.daemon import systemd
from socksvc.daemon.listener import Listener
from socksvc.services.catalogue import types
from tests.support import Daemon, daemon
from tests.support.reload import BASE, FailingReactor, connection, reload, specs, started
from tests.support.systemd import PortsReactor, fields, notify_socket


def test_reload_adds_removes_and_rebinds() -> None:
    svc = started()
    reactor: PortsReactor = svc.reactor
    echo_ports = {p for listener in svc.instance("echo").listeners() for p in listener.ports}
    greeting_port = svc.instance("greeting").listeners()[0].port
    new = BASE.replace("tcp:17:interface", "tcp:1717:interface") + (
        '[services.reverse]\nlisten = ["tcp:7071:interface=127.0.0.1"]\n'
    )
    new = new.replace('[services.chat]\nlisten = ["tcp:7070:interface=127.0.0.1"]\n', "")
    assert reload(svc, new)
    assert [i.name for i in svc.instances()] == ["echo", "greeting", "reverse"]
    # echo untouched: the very same ports still listen.
    assert echo_ports <= reactor.listening
    # greeting re-bound: old port closed, new one listening.
    assert greeting_port not in reactor.listening
    assert specs(svc, "greeting") == ["tcp:1717:interface=127.0.0.1"]
    assert svc.instance("greeting").listeners()[0].port in reactor.listening
    assert svc.instance("reverse").running
    assert len(reactor.listening) == 4  # echo tcp+udp, greeting, reverse; chat gone
    assert svc.last_reload_error is None


def test_reload_applies_options_in_place_keeping_connections() -> None:
    svc = started()
    greeting = svc.instance("greeting")
    context, policy = greeting.context, greeting.context.policy
    echo_proto, echo_transport = connection(svc, "echo")
    assert len(svc.instance("echo").context.policy.connections) == 1
    new = BASE.replace('message = "hello"', 'message = "changed"\nmax_connections = 3')
    new = new.replace("[services.echo]\n", "[services.echo]\nmax_per_source = 2\n")
    assert reload(svc, new)
    assert svc.instance("greeting") is greeting and greeting.context is context and context.policy is policy
    assert context.settings.message == "changed"
    assert policy.settings.max_connections == 3
    _, transport = connection(svc, "greeting")
    assert transport.value() == b"changed\r\n"
    # The echo client was never touched, and the new limit is in force.
    assert not echo_transport.disconnecting
    assert echo_proto in svc.instance("echo").context.policy.connections
    assert svc.instance("echo").context.policy.settings.max_per_source == 2
    echo_proto.dataReceived(b"still here")
    assert echo_transport.value() == b"still here"


def test_chat_state_survives_a_reload_and_takes_new_settings() -> None:
    if "chat" not in types():
        pytest.skip("no chat service type yet")
    svc = started()
    chat = svc.instance("chat")
    proto, transport = connection(svc, "chat")
    proto.dataReceived(b"alice\r\n")
    proto.dataReceived(b"remember me\r\n")
    state = chat.context.state
    assert state is not None and len(state.nicks) == 1
    assert svc.status() == "1 connection: echo 0, greeting 0, chat 1 (1 user)"
    assert reload(svc, BASE.replace("[services.chat]\n", '[services.chat]\nmotd = "new motd"\nhistory = 5\n'))
    assert chat.context.state is state
    assert state.settings.motd == "new motd"
    assert not transport.disconnecting
    other, other_transport = connection(svc, "chat")
    other.dataReceived(b"bob\r\n")
    assert b"new motd" in other_transport.value()
    assert b"remember me" in other_transport.value()  # history kept


def test_removed_service_is_stopped_and_its_clients_closed() -> None:
    svc = started()
    reactor: PortsReactor = svc.reactor
    old = svc.instance("echo")
    old_ports = {p for listener in old.listeners() for p in listener.ports}
    _, echo_transport = connection(svc, "echo")
    _, chat_transport = connection(svc, "chat")
    assert reload(svc, BASE.replace("[services.echo]", "[services.renamed]\ntype = 'echo'"))
    assert [i.name for i in svc.instances()] == ["renamed", "greeting", "chat"]
    assert not old.running and old_ports.isdisjoint(reactor.listening)
    assert echo_transport.disconnecting  # told to close...
    echo_transport.disconnecting = False  # (a peer that never finishes closing)
    reactor.advance(3.0)
    assert echo_transport.disconnected  # ...and aborted after the grace period
    assert not chat_transport.disconnecting  # other services' clients are untouched


def test_type_change_replaces_the_instance() -> None:
    svc = started()
    old = svc.instance("greeting")
    assert reload(
        svc,
        BASE.replace('message = "hello"\n', "").replace("[services.greeting]", '[services.greeting]\ntype = "reverse"'),
    )
    new = svc.instance("greeting")
    assert new is not old and new.stype.name == "reverse" and not old.running


def test_invalid_config_changes_nothing() -> None:
    with notify_socket() as ns:
        svc = started(notifier=systemd.Notifier(ns.env))
        before = [(i, [x.port for x in i.listeners()]) for i in svc.instances()]
        settings = svc.instance("greeting").context.settings
        ns.receive("READY=1")
        svc.config_path = "/nonexistent/socksvc.toml"
        done: list[bool] = []
        svc.request_reload().addCallback(done.append)  # type: ignore[union-attr]
        assert done == [False]
        assert [(i, [x.port for x in i.listeners()]) for i in svc.instances()] == before
        assert svc.instance("greeting").context.settings is settings
        assert svc.last_reload_error is not None and "cannot read config file" in svc.last_reload_error
        got = ns.pending()[1:]  # local datagrams are queued by the time send returns
        assert fields(got[0])["RELOADING"] == "1"
        status = fields(got[-1])["STATUS"]
        assert status.startswith("reload failed, still serving the previous config (/nonexistent/socksvc.toml:")
        # A good reload clears it.
        assert reload(svc, BASE)
        assert "reload failed" not in svc.status()


def test_unexpected_error_while_loading_is_a_failed_reload(monkeypatch: pytest.MonkeyPatch) -> None:
    import socksvc.daemon.service

    def broken(path: str | None) -> Any:
        raise RuntimeError("parser bug")

    with notify_socket() as ns:
        svc = started(notifier=systemd.Notifier(ns.env))
        settings = svc.instance("greeting").context.settings
        ns.receive("READY=1")
        svc.config_path = "/etc/socksvc.toml"
        monkeypatch.setattr(socksvc.daemon.service, "load", broken)
        done: list[bool] = []
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        try:
            svc.request_reload().addCallback(done.append)  # type: ignore[union-attr]
        finally:
            globalLogPublisher.removeObserver(events.append)
        assert done == [False]
        assert svc.instance("greeting").context.settings is settings
        assert svc.last_reload_error is not None and "RuntimeError: parser bug" in svc.last_reload_error
        # Logged once with its traceback, then the one "reload failed" line; never "reload crashed".
        failures = [e for e in events if "log_failure" in e]
        assert len(failures) == 1 and failures[0]["log_failure"].check(RuntimeError)
        assert not any("reload crashed" in (e.get("log_format") or "") for e in events)
        got = ns.pending()[1:]
        assert fields(got[0])["RELOADING"] == "1"
        last = fields(got[-1])
        assert last["READY"] == "1"
        assert last["STATUS"].startswith("reload failed, still serving the previous config (/etc/socksvc.toml:")


def test_a_failed_bind_never_touches_the_old_listener() -> None:
    reactor = FailingReactor()
    svc = started(reactor=reactor)
    greeting_before = svc.instance("greeting").listeners()[0].port
    reactor.busy.add(1717)
    new = BASE.replace("tcp:17:", "tcp:1717:") + '[services.reverse]\nlisten = ["tcp:7071:interface=127.0.0.1"]\n'
    assert reload(svc, new) is False
    assert "service 'greeting' cannot listen on 'tcp:1717:interface=127.0.0.1': Address already in use" in (
        svc.last_reload_error or ""
    )
    assert [i.name for i in svc.instances()] == ["echo", "greeting", "chat"]
    assert specs(svc, "greeting") == ["tcp:17:interface=127.0.0.1"]
    # The new port was tried before the old one closed: the old one never stopped listening.
    kept = svc.instance("greeting").listeners()[0].port
    assert kept is greeting_before and kept in reactor.listening
    assert len(reactor.listening) == 4  # nothing of reverse left behind


def test_a_chat_added_by_a_failed_reload_leaves_the_notice_bus() -> None:
    reactor = FailingReactor()
    svc = started(reactor=reactor)
    reactor.busy.add(7072)
    posted = svc.notices.post("lobby", "before")
    assert posted == 1  # the running chat
    assert reload(svc, BASE + '[services.chat2]\ntype = "chat"\nlisten = ["tcp:7072:interface=127.0.0.1"]\n') is False
    assert svc.notices.post("lobby", "after") == 1  # not the chat that never started


class SlowReactor(FailingReactor):
    """Ports that take until the test says so to close."""

    def __init__(self) -> None:
        super().__init__()
        self.closing: list[Deferred[None]] = []

    def _port(self, kind: str, interface: str) -> Any:
        port = super()._port(kind, interface)
        stop = port.stopListening

        def slow_stop() -> Deferred[None]:
            stop()
            d: Deferred[None] = Deferred()
            self.closing.append(d)
            return d

        port.stopListening = slow_stop
        return port


def test_reloads_do_not_overlap(tmp_path: Any) -> None:
    reactor = SlowReactor()
    svc = started(reactor=reactor)
    path = tmp_path / "socksvc.toml"
    # 127.0.0.1:17 becoming *:17: the old port must close before the new one can bind.
    path.write_text(BASE.replace('"tcp:17:interface=127.0.0.1"', '"tcp:17"'))
    svc.config_path = str(path)
    first = svc.request_reload()
    assert first is not None and reactor.closing  # waiting for greeting's old port to close
    second = svc.request_reload()  # queued behind the first
    third = svc.request_reload()  # shares the queued one
    assert second is not None and third is None
    assert svc.reloads == 0
    reactor.closing.pop().callback(None)
    assert svc.reloads == 2  # the first, then the queued one (nothing left to change)
    assert specs(svc, "greeting") == ["tcp:17"]


def test_sigterm_path_says_goodbye_and_closes() -> None:
    svc = started()
    chat_proto, chat_transport = connection(svc, "chat")
    chat_proto.dataReceived(b"carol\r\n")
    _, echo_transport = connection(svc, "echo")
    reactor: PortsReactor = svc.reactor
    done: list[Any] = []
    svc.stopService().addCallback(done.append)
    assert reactor.listening == set()  # stopped accepting
    assert b"shutting down" in chat_transport.value()
    assert echo_transport.disconnecting
    # Peers that never finish closing are aborted after the grace period.
    reactor.advance(3.0)
    assert done


def test_listener_port_property_keeps_the_old_name() -> None:
    svc = started()
    listener = svc.instance("greeting").listeners()[0]
    assert isinstance(listener, Listener)
    assert listener.port is listener.ports[0]
    listener.port = None
    assert listener.ports == []


# -- the real daemon --------------------------------------------------------------

LIVE = """
[services.echo]
listen = ["tcp:0:interface=127.0.0.1"]
[services.greeting]
listen = ["tcp:0:interface=127.0.0.1"]
message = "before"
[services.chat]
listen = ["tcp:0:interface=127.0.0.1"]
"""


def reload_daemon(d: Daemon, text: str, timeout: float = 15.0) -> str:
    """Rewrite the config, SIGHUP, wait for the daemon's verdict line; gives the new output."""
    assert d.config_path is not None
    with open(d.config_path, "w") as f:
        f.write(text)
    start = len(d.output)
    d.signal(signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while "socksvc: reloaded" not in d.output[start:] and "reload failed" not in d.output[start:]:
        assert time.monotonic() < deadline, d.output
        d.read(timeout=0.2)
    return d.output[start:]


def last_port(d: Daemon, service: str) -> int:
    return int(d.listening[service][-1][2])


def recv_until(s: socket.socket, marker: bytes, timeout: float = 10.0) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout
    while marker not in got:
        left = deadline - time.monotonic()
        assert left > 0, got
        if select.select([s], [], [], left)[0]:
            chunk = s.recv(4096)
            assert chunk, got
            got += chunk
    return got


def greeting(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        return s.recv(600)


def test_live_reloads_keep_clients_connected() -> None:
    with daemon(LIVE) as d:
        echo = socket.create_connection(("127.0.0.1", d.port("echo")), timeout=5)
        alice = socket.create_connection(("127.0.0.1", d.port("chat")), timeout=5)
        bob = socket.create_connection(("127.0.0.1", d.port("chat")), timeout=5)
        with echo, alice, bob:
            alice.sendall(b"alice\r\n")
            recv_until(alice, b"alice")
            bob.sendall(b"bob\r\n")
            recv_until(alice, b"bob")
            assert greeting(d.port("greeting")) == b"before\r\n"

            # 1. change the greeting, add reverse
            out = reload_daemon(d, LIVE.replace('"before"', '"after"') + '[services.reverse]\nlisten = ["tcp:0"]\n')
            assert "socksvc: reloaded" in out and "reverse: listening on tcp" in out
            assert greeting(d.port("greeting")) == b"after\r\n"
            with socket.create_connection(("127.0.0.1", d.port("reverse")), timeout=5) as s:
                s.sendall(b"abc\n")
                assert s.recv(100) == b"cba\n"

            # 2. remove greeting
            greeting_port = d.port("greeting")
            no_greeting = LIVE.replace(
                '[services.greeting]\nlisten = ["tcp:0:interface=127.0.0.1"]\nmessage = "before"\n', ""
            )
            assert "greeting" not in no_greeting
            out = reload_daemon(d, no_greeting)
            assert "greeting: removed by reload" in out
            with pytest.raises(ConnectionRefusedError):
                greeting(greeting_port)

            # 3. break the config: nothing changes
            out = reload_daemon(d, "[services.echo\nlisten = 7\n")
            assert "reload failed, still serving the previous config" in out
            assert "not valid TOML" in out

            # 4. re-bind echo on another listen spec while its client stays connected
            out = reload_daemon(
                d, no_greeting.replace("[services.echo]\nlisten = [", '[services.echo]\nlisten = ["tcp:0", ')
            )
            assert "1 re-bound" in out

            # Everyone who was connected still is, and is served.
            echo.sendall(b"still echoing")
            assert recv_until(echo, b"still echoing") == b"still echoing"
            alice.sendall(b"hello after four reloads\r\n")
            assert b"hello after four reloads" in recv_until(bob, b"hello after four reloads")
            assert d.proc.poll() is None
            assert "Traceback" not in d.output

            # SIGTERM: chat members hear it, the daemon exits promptly.
            d.signal(signal.SIGTERM)
            assert b"shutting down" in recv_until(bob, b"shutting down")
            assert d.proc.wait(10) in (0, -signal.SIGTERM)
