"""
A reload is all or nothing, and never leaves an address without a listener
when it need not: new ports are bound while the old ones still serve, a spec
on the very address of one going away takes its socket over, and settings
are rehearsed on a scratch state before anything is changed. In process, on
the real reactor and real loopback sockets (port 0, or ports the test holds).
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.logger import capturedLogs

from socksvc.daemon.service import DaemonService
from socksvc.services.catalogue import loads
from socksvc.services.chat.state import ChatState
from tests.conftest import refused, until
from tests.support.reload import BASE, connection, reload, started
from tests.support.tls import self_signed


@contextlib.contextmanager
def held_port() -> Iterator[int]:
    """A port on 127.0.0.1 that the test itself is listening on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def live(text: str) -> DaemonService:
    from twisted.internet import reactor

    svc = DaemonService(loads(text, "<test>"), reactor, handle_signals=False)
    svc.privilegedStartService()
    svc.startService()
    return svc


def port_of(svc: DaemonService, name: str, index: int = 0) -> Any:
    return svc.instance(name).listeners()[index].port


async def echo(port: int, data: bytes = b"ping") -> bytes:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setblocking(False)
    got = bytearray()

    def more() -> bool:
        try:
            got.extend(sock.recv(65536))
        except BlockingIOError:
            pass
        return len(got) >= len(data)

    try:
        sock.sendall(data)
        await until(more, what="the echo")
    finally:
        sock.close()
    return bytes(got)


async def live_reload(svc: DaemonService, text: str) -> bool:
    ok: bool = await svc.reload(loads(text, "<test>"))
    return ok


@pytest_twisted.ensureDeferred
async def test_a_reload_whose_new_port_is_taken_leaves_the_old_listener_alone() -> None:
    """The refusal gap: the old listener used to close, the bind fail, and a rollback bind again."""
    svc = live('[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1"]\n')
    try:
        before = port_of(svc, "echo")
        number, fileno = before.getHost().port, before.fileno()
        with held_port() as busy:
            with capturedLogs() as events:
                ok = await live_reload(svc, f'[services.echo]\nlisten = ["tcp:{busy}:interface=127.0.0.1"]\n')
            assert not ok
            assert svc.last_reload_error == (
                f"service 'echo' cannot listen on 'tcp:{busy}:interface=127.0.0.1': Address already in use"
            )
        # The very same port object and socket, never closed, never bound again.
        assert port_of(svc, "echo") is before and before.connected and before.fileno() == fileno
        assert not [e for e in events if e.get("event") == "listen"]
        assert await echo(number) == b"ping"
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_a_reload_onto_the_same_address_takes_the_socket_over() -> None:
    """tcp:0 (bound to P) becoming tcp:P with another backlog: the address is never unbound."""
    svc = live('[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1"]\n')
    try:
        old = port_of(svc, "echo")
        number = old.getHost().port
        # A client the old socket has not accepted yet: the reactor has not run since it connected.
        waiting = socket.create_connection(("127.0.0.1", number), timeout=5)
        assert await live_reload(svc, f'[services.echo]\nlisten = ["tcp:{number}:interface=127.0.0.1:backlog=7"]\n')
        new = port_of(svc, "echo")
        assert new is not old and new.getHost().port == number
        assert svc.instance("echo").listeners()[0].spec.backlog == 7
        # The connection that waited in the accept queue through the reload is served.
        with waiting:
            waiting.sendall(b"queued")
            waiting.settimeout(0)
            got = bytearray()

            def more() -> bool:
                with contextlib.suppress(BlockingIOError):
                    got.extend(waiting.recv(100))
                return bytes(got) == b"queued"

            await until(more, what="the queued client's echo")
        await until(lambda: not old.connected, what="the old port object to close")
        assert await echo(number) == b"ping"
    finally:
        await svc.stopService()
    assert refused(number)


@pytest_twisted.ensureDeferred
async def test_a_failed_take_over_leaves_the_old_listener_serving() -> None:
    """Two changes in one reload: the take-over succeeds, a second new port is busy: both undone."""
    svc = live('[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1"]\n')
    try:
        old = port_of(svc, "echo")
        number = old.getHost().port
        with held_port() as busy:
            text = f'[services.echo]\nlisten = ["tcp:{number}:interface=127.0.0.1:backlog=7"]\n'
            text += f'[services.reverse]\nlisten = ["tcp:{busy}:interface=127.0.0.1"]\n'
            assert not await live_reload(svc, text)
        assert port_of(svc, "echo") is old and old.connected
        assert [i.name for i in svc.instances()] == ["echo"]
        assert await echo(number) == b"ping"
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_overlapping_addresses_close_first_then_bind() -> None:
    """127.0.0.1:P becoming *:P cannot be bound beside it: closed, then bound (and served)."""
    svc = live('[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1"]\n')
    try:
        number = port_of(svc, "echo").getHost().port
        assert await live_reload(svc, f'[services.echo]\nlisten = ["tcp:{number}"]\n')
        assert port_of(svc, "echo").getHost().host == "0.0.0.0"
        assert await echo(number) == b"ping"
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_a_unix_socket_rebound_with_another_mode(tmp_path: Path) -> None:
    path = tmp_path / "echo.sock"
    svc = live(f'[services.echo]\nlisten = ["unix:{path}"]\n')
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660  # the default: owner and group
        assert await live_reload(svc, f'[services.echo]\nlisten = ["unix:{path}:mode=600"]\n')
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(path))
            s.sendall(b"over unix")
            s.setblocking(False)
            got = bytearray()

            def more() -> bool:
                with contextlib.suppress(BlockingIOError):
                    got.extend(s.recv(100))
                return bytes(got) == b"over unix"

            await until(more, what="the echo over the re-bound socket")
    finally:
        await svc.stopService()


def test_a_reload_is_all_or_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A new greeting message plus chat settings the chat state refuses: once,
    greeting took its new message, then the reload crashed. Now the
    rehearsal refuses the lot, and nothing changed.
    """
    svc = started()
    chat_state = svc.instance("chat").context.state
    real = ChatState.reconfigure

    def refuse(self: ChatState, settings: Any) -> None:
        if settings.motd == "boom":
            raise OverflowError("int too large to convert to float")
        real(self, settings)

    monkeypatch.setattr(ChatState, "reconfigure", refuse)
    new = BASE.replace('message = "hello"', 'message = "changed"').replace(
        "[services.chat]\n", '[services.chat]\nmotd = "boom"\n'
    )
    with capturedLogs() as events:
        assert reload(svc, new) is False
    assert svc.last_reload_error == (
        "service 'chat' cannot run with these settings: OverflowError: int too large to convert to float"
    )
    assert svc.instance("greeting").context.settings.message == "hello"
    _, transport = connection(svc, "greeting")
    assert transport.value() == b"hello\r\n"
    assert svc.instance("chat").context.state is chat_state and chat_state.settings.motd == ""
    said = [e.get("log_format", "") for e in events]
    assert not [f for f in said if "options reloaded" in f or "reload crashed" in f]


def test_a_service_that_fails_in_the_commit_is_undone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rehearsed fine, raises on the live state all the same (a bug): what was applied is put back."""
    svc = started()
    chat = svc.instance("chat")
    real = ChatState.reconfigure

    def live_only(self: ChatState, settings: Any) -> None:
        if self is chat.context.state and settings.motd == "boom":
            raise RuntimeError("a bug")
        real(self, settings)

    monkeypatch.setattr(ChatState, "reconfigure", live_only)
    new = BASE.replace('message = "hello"', 'message = "changed"').replace(
        "[services.chat]\n", '[services.chat]\nmotd = "boom"\n'
    )
    assert reload(svc, new) is False
    assert "internal error while applying the new options: RuntimeError: a bug" in (svc.last_reload_error or "")
    assert svc.instance("greeting").context.settings.message == "hello"
    assert chat.context.settings.motd == "" and chat.config.settings.motd == ""
    # And the next good reload applies.
    monkeypatch.setattr(ChatState, "reconfigure", real)
    assert reload(svc, new)
    assert chat.context.settings.motd == "boom"


@pytest_twisted.ensureDeferred
async def test_a_renewed_certificate_is_served_after_a_reload_on_the_same_socket(tmp_path: Path) -> None:
    """The files are read at load, so the same ssl: spec with new files is a change: taken over, not re-bound."""
    import ssl

    key, cert = self_signed(tmp_path)
    svc = live(f'[services.echo]\nlisten = ["ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"]\n')
    try:
        number = port_of(svc, "echo").getHost().port
        text = f'[services.echo]\nlisten = ["ssl:{number}:interface=127.0.0.1:privateKey={key}:certKey={cert}"]\n'
        assert await live_reload(svc, text)  # tcp:0 bound to P, now ssl:P: the same address
        first = port_of(svc, "echo")

        async def served_certificate() -> bytes:
            raw = socket.create_connection(("127.0.0.1", number), timeout=5)
            raw.setblocking(False)
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            tls = context.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False)

            def handshake() -> bool:
                try:
                    tls.do_handshake()
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    return False
                return True

            try:
                await until(handshake, what="the TLS handshake")
                der = tls.getpeercert(binary_form=True)
                assert der is not None
                return der
            finally:
                tls.close()

        before = await served_certificate()
        self_signed(tmp_path)  # renewed: new key and certificate, same file names
        assert await live_reload(svc, text)
        after = await served_certificate()
        assert after != before
        assert after == ssl.PEM_cert_to_DER_cert(cert.read_text())
        assert port_of(svc, "echo") is not first and port_of(svc, "echo").getHost().port == number
    finally:
        await svc.stopService()
