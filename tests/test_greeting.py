"""Greeting (RFC 865 style): templates, quotes files, the 512-byte limit, the send deadline."""

from __future__ import annotations

import os
import select
import socket
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from socksvc.config.loader import ConfigError
from socksvc.services.catalogue import loads, types
from socksvc.services.greeting import (
    HOSTNAME_TTL,
    MAX_MESSAGE,
    MAX_QUOTES_FILE,
    _cut,
    parse_message,
    parse_quotes,
    render,
)
from tests.conftest import Loopback, until
from tests.support import connect, context, peer, pumped, recv_all


def greet(body: str = "", *, clock: Clock | None = None, addr: Any = None, name: str | None = None) -> bytes:
    _proto, transport = connect(context("greeting", body, clock=clock, name=name), addr)
    return transport.value()  # type: ignore[no-any-return]


def test_default_message() -> None:
    assert greet() == b"Thank you for connecting\r\n"


def test_writes_then_closes() -> None:
    proto, transport = connect(context("greeting"))
    assert transport.disconnecting
    assert proto.bytes_out == len(b"Thank you for connecting\r\n")
    proto.dataReceived(b"ignored")
    assert proto.bytes_in == 7
    assert transport.value() == b"Thank you for connecting\r\n"


def test_template_fields() -> None:
    clock = Clock()
    clock.advance(1_700_000_000)
    got = greet(
        'message = "{service} on {hostname} greets {peer} at {time}"',
        clock=clock,
        addr=peer("192.0.2.1", 4242),
        name="motd",
    )
    assert got == f"motd on {socket.gethostname()} greets 192.0.2.1:4242 at 2023-11-14T22:13:20Z\r\n".encode()
    assert greet('message = "{peer}"', addr=peer("2001:db8::1", 7)) == b"[2001:db8::1]:7\r\n"
    assert greet('message = "{peer}"', addr=peer("unix")) == b"unix\r\n"


def test_literal_braces_and_format_specs() -> None:
    assert greet('message = "{{peer}} {service:>8}"') == b"{peer} greeting\r\n"


def test_a_message_with_its_own_line_end_gets_no_crlf() -> None:
    assert greet('message = "one\\ntwo\\n"') == b"one\ntwo\n"
    assert greet('message = "crlf\\r\\n"') == b"crlf\r\n"


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("{user}", "unknown field {user} (known: {hostname}, {peer}, {time}, {service})"),
        ("{0}", "unknown field {0}"),
        ("{peer.host}", "unknown field {peer.host}"),
        ("{peer!r}", "field {peer} takes no conversion or nested format"),
        ("{time:{service}}", "field {time} takes no conversion or nested format"),
        ("unbalanced {", "bad template: "),
        ("{time:d}", "bad template: "),
    ],
)
def test_bad_templates(message: str, reason: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_message(message)
    assert str(e.value).startswith(reason)


@pytest.mark.parametrize(
    "message",
    [
        "{peer:>99999999999}",
        "{peer:>900000000}",
        "{peer:x<513}",
        "{service:.1000}",
        "{time:0513}",
        "{peer:>" + "9" * 5000 + "}",  # more digits than int() takes
    ],
)
def test_huge_format_widths_are_refused_before_rendering(message: str) -> None:
    with pytest.raises(ValueError, match=r"in its format is over 512 \(RFC 865\)$"):
        parse_message(message)
    with pytest.raises(ConfigError) as e:
        loads(f'[services.greeting]\nlisten = ["tcp:0"]\nmessage = "{message}"', "g.toml")
    assert "in its format is over 512" in str(e.value)


def test_format_widths_up_to_the_limit_still_work() -> None:
    assert parse_message("{peer:>400}") == "{peer:>400}"
    assert parse_message("{peer:0>9}") == "{peer:0>9}"  # a digit as the fill character
    assert greet('message = "{service:*^12}"') == b"**greeting**\r\n"


def test_the_512_byte_limit() -> None:
    # 510 bytes and the CRLF make 512: fine. One more is a config error.
    assert parse_message("x" * 510) == "x" * 510
    with pytest.raises(ConfigError) as e:
        loads(f'[services.greeting]\nlisten = ["tcp:0"]\nmessage = "{"x" * 511}"', "g.toml")
    assert str(e.value) == (
        f'g.toml: services.greeting.message = "{"x" * 76}...: '
        "message is 513 bytes when filled in; the limit is 512 (RFC 865)"
    )
    # Bytes, not characters: 256 two-byte characters are over.
    with pytest.raises(ValueError, match="514 bytes"):
        parse_message("\u00e9" * 256)
    # Fields count at their longest: {peer} may be a 53-byte IPv6 peer.
    with pytest.raises(ValueError, match="when filled in"):
        parse_message("x" * 470 + "{peer}")


@given(st.text(max_size=600))
def test_any_message_is_accepted_within_the_limit_or_refused(message: str) -> None:
    try:
        parse_message(message)
    except ValueError as e:
        assert str(e)
    else:
        got = greet(f"message = {_toml_string(message)}")
        assert len(got) <= MAX_MESSAGE
        assert got.endswith(b"\n")


def _toml_string(text: str) -> str:
    import json

    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007F")


# -- quotes ------------------------------------------------------------------


def quotes_file(tmp_path: Path, text: str | bytes) -> str:
    path = tmp_path / "quotes.txt"
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return str(path)


def test_quotes_serves_a_random_line(tmp_path: Path) -> None:
    path = quotes_file(tmp_path, "# a comment\n\nfirst quote\n  second quote  \n# another\nthird \u00e9\n")
    quotes = parse_quotes(path)
    assert quotes is not None
    assert quotes.lines == ("first quote", "second quote", "third \u00e9")
    seen = {greet(f'quotes = "{path}"') for _ in range(100)}
    assert seen == {b"first quote\r\n", b"second quote\r\n", "third \u00e9\r\n".encode()}


def test_quotes_and_message_together_are_a_config_error(tmp_path: Path) -> None:
    path = quotes_file(tmp_path, "only one\n")
    with pytest.raises(ConfigError, match="set message or quotes, not both"):
        greet(f'quotes = "{path}"\nmessage = "not this"')
    assert greet(f'quotes = "{path}"') == b"only one\r\n"


def test_empty_quotes_path_means_none() -> None:
    assert parse_quotes("") is None


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("# only comments\n\n", "quotes file has no quotes"),
        (b"caf\xe9\n", "quotes file is not UTF-8 text"),
        ("x" * 511 + "\n", "line 1 of the quotes file is over 512 bytes"),
        ("ok\n" + "y" * 600 + "\n", "line 2 of the quotes file is over 512 bytes"),
    ],
)
def test_bad_quotes_files(tmp_path: Path, content: str | bytes, reason: str) -> None:
    path = quotes_file(tmp_path, content)
    with pytest.raises(ValueError) as e:
        parse_quotes(path)
    assert str(e.value) == reason
    with pytest.raises(ConfigError) as ce:
        loads(f'[services.greeting]\nlisten = ["tcp:0"]\nquotes = "{path}"', "g.toml")
    assert str(ce.value) == f'g.toml: services.greeting.quotes = "{path}": {reason}'


def test_unreadable_quotes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^cannot read quotes file: No such file or directory$"):
        parse_quotes(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match=r"^cannot read quotes file: Is a directory$"):
        parse_quotes(str(tmp_path))
    with pytest.raises(ValueError, match=r"^cannot read quotes file: "):
        parse_quotes("nul\x00byte")
    with pytest.raises(ValueError, match="expected a file path string"):
        parse_quotes(5)


def test_a_huge_quotes_file_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.txt"
    with open(path, "wb") as f:
        f.truncate(MAX_QUOTES_FILE + 1)  # sparse: costs no disk
    with pytest.raises(ValueError, match=r"^quotes file is over 16 MiB$"):
        parse_quotes(str(path))


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_a_device_is_not_a_quotes_file(device: str) -> None:
    with pytest.raises(ValueError, match=r"^cannot read quotes file: not a regular file$"):
        parse_quotes(device)


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "quotes.fifo"
    os.mkfifo(fifo)  # a blocking open would wait here for a writer, forever
    with pytest.raises(ConfigError) as e:
        loads(f'[services.greeting]\nlisten = ["tcp:0"]\nquotes = "{fifo}"', "g.toml")
    assert str(e.value) == f'g.toml: services.greeting.quotes = "{fifo}": cannot read quotes file: not a regular file'


# -- the send deadline -------------------------------------------------------


def test_a_peer_that_never_reads_is_aborted_after_send_timeout() -> None:
    clock = Clock()
    proto, transport = connect(context("greeting", "send_timeout = 2.5", clock=clock))
    assert transport.disconnecting and not transport.disconnected
    clock.advance(2.4)
    assert not transport.disconnected
    clock.advance(0.1)
    assert transport.disconnected  # aborted
    proto.connectionLost(Failure(ConnectionDone()))
    assert clock.getDelayedCalls() == []


def test_a_prompt_close_cancels_the_deadline() -> None:
    clock = Clock()
    proto, _transport = connect(context("greeting", clock=clock))
    assert len(clock.getDelayedCalls()) == 1
    proto.connectionLost(Failure(ConnectionDone()))
    assert clock.getDelayedCalls() == []


def test_iosim_greeting() -> None:
    clock = Clock()
    ctx = context("greeting", 'message = "hello {peer}"', clock=clock)
    _server, client, pump = pumped(ctx, peer("127.0.0.1", 40002))
    pump.flush()
    assert client.received == b"hello 127.0.0.1:40002\r\n"
    assert client.lost
    assert ctx.policy.connections == set()
    assert clock.getDelayedCalls() == []


# -- the limit at render time ------------------------------------------------


def test_the_longest_service_name_still_fits() -> None:
    got = greet('message = "{service}"', name="s" * 64)
    assert got == b"s" * 64 + b"\r\n"
    message = "x" * (510 - 64) + "{service}"
    assert parse_message(message) == message
    assert len(greet(f'message = "{message}"', name="s" * 64)) == MAX_MESSAGE
    with pytest.raises(ValueError, match="513 bytes"):
        parse_message("x" + message)


@given(st.text(min_size=1, max_size=400), st.integers(min_value=4, max_value=MAX_MESSAGE))
def test_a_cut_ends_on_a_character_and_with_crlf(text: str, limit: int) -> None:
    data = (text * 3).encode("utf-8") + b"\r\n"
    got = _cut(data, limit)
    assert len(got) <= limit and got.endswith(b"\r\n")
    body = got[:-2].decode("utf-8")  # never a split character
    assert (text * 3).startswith(body)
    if len(data) <= limit:
        assert got == data


def test_render_cuts_what_grew_after_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check assumes a hostname; one that grew since (or a 4-byte character at the edge) is cut cleanly."""
    import socksvc.services.greeting

    ctx = context("greeting", 'message = "{hostname}"')
    monkeypatch.setattr(socksvc.services.greeting, "_hostname", lambda: "h" + "\U0001f600" * 200)
    got = render(ctx, "127.0.0.1:1", 0.0)
    assert len(got) <= MAX_MESSAGE and got.endswith(b"\r\n")
    assert got[:-2].decode("utf-8") == "h" + "\U0001f600" * 127


def test_a_peer_half_close_does_not_cut_the_message_short() -> None:
    from twisted.internet.interfaces import IHalfCloseableProtocol

    proto, transport = connect(context("greeting"))
    assert IHalfCloseableProtocol.providedBy(proto)
    assert transport.producer is None  # one bounded message: nothing to pause
    proto.readConnectionLost()  # e.g. `nc -N`: the request side ends at once
    assert transport.value() == b"Thank you for connecting\r\n"
    assert transport.disconnecting and not transport.disconnected


# -- rendering once ----------------------------------------------------------


def test_a_message_without_per_connection_fields_is_rendered_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import socksvc.services.greeting

    looked_up: list[int] = []
    monkeypatch.setattr(socksvc.services.greeting, "_hostname", lambda: looked_up.append(1) or "box")
    clock = Clock()
    ctx = context("greeting", 'message = "{service} on {hostname}"', clock=clock, name="motd")
    looked_up.clear()  # the config check renders it once
    first = render(ctx, "127.0.0.1:1", clock.seconds())
    assert first == b"motd on box\r\n"
    assert render(ctx, "127.0.0.1:2", clock.seconds() + 1) is first  # the same bytes object: nothing redone
    assert looked_up == [1]
    # The hostname is looked up again after a while, and after a reload.
    monkeypatch.setattr(socksvc.services.greeting, "_hostname", lambda: "renamed")
    assert render(ctx, "127.0.0.1:3", clock.seconds() + HOSTNAME_TTL) == b"motd on renamed\r\n"
    ctx.reconfigure(attrs.evolve(ctx.settings, message="{hostname}!"))
    assert render(ctx, "127.0.0.1:3", clock.seconds() + HOSTNAME_TTL) == b"renamed!\r\n"


def test_time_is_formatted_only_when_used_and_follows_the_clock() -> None:
    ctx = context("greeting", 'message = "{time} {peer}"')
    assert render(ctx, "p", 1_700_000_000.2) == b"2023-11-14T22:13:20Z p\r\n"
    assert render(ctx, "q", 1_700_000_000.9) == b"2023-11-14T22:13:20Z q\r\n"
    assert render(ctx, "q", 1_700_000_001.0) == b"2023-11-14T22:13:21Z q\r\n"
    assert render(ctx, "q", 1_699_999_999.0) == b"2023-11-14T22:13:19Z q\r\n"
    r = context("greeting", 'message = "{peer}"').state
    r(peer="x", now=5.0)
    assert r._second is None  # no {time}: never formatted


@pytest_twisted.ensureDeferred
async def test_a_client_that_sends_first_still_gets_the_whole_greeting() -> None:
    # echo hi | nc HOST PORT: input the server never reads must not turn
    # the close into a reset that overtakes the greeting.
    from twisted.internet import reactor

    ctx = context("greeting", 'message = "hello there"', clock=reactor)  # type: ignore[arg-type]
    factory = types()["greeting"].stream(ctx)  # type: ignore[misc]
    loop = Loopback(factory)
    try:
        sock = socket.create_connection(loop.address, timeout=5)
        loop.sockets.append(sock)
        sock.sendall(b"hi\n" * 100)
        await until(lambda: bool(loop.protocols) and not ctx.policy.connections, what="the greeting to close")
        sock.settimeout(5)
        assert recv_all(sock) == b"hello there\r\n"
    finally:
        await loop.close()


@pytest_twisted.ensureDeferred
async def test_a_plain_connection_is_greeted_on_the_next_reactor_turn() -> None:
    clock = Clock()
    ctx = context("greeting", 'message = "later"', clock=clock)
    loop = Loopback(types()["greeting"].stream(ctx))  # type: ignore[misc]
    try:
        server, sock = await loop.connect()
        assert server.deadline is not None and len(clock.getDelayedCalls()) == 1  # the send, not yet done
        assert not select.select([sock], [], [], 0)[0]
        clock.advance(0)
        assert clock.getDelayedCalls() == []  # sent and closed: no deadline left
        assert ctx.policy.connections == set()
        assert await loop.recv_to_eof(sock) == b"later\r\n"
    finally:
        await loop.close()


@pytest_twisted.ensureDeferred
async def test_a_peer_gone_before_its_turn_cancels_the_send() -> None:
    clock = Clock()
    ctx = context("greeting", clock=clock)
    loop = Loopback(types()["greeting"].stream(ctx))  # type: ignore[misc]
    try:
        server, _sock = await loop.connect()
        server.transport.abortConnection()
        await until(lambda: not ctx.policy.connections, what="the close")
        assert clock.getDelayedCalls() == []
    finally:
        await loop.close()
