"""
Every value --check accepts runs: for every setting of every settings class
(the [daemon] table, the policy keys, every service type's own keys), the
extremes its parser accepts are loaded, rehearsed as --check does, started
in process on port 0, and served (a real client gets a real answer), then
stopped. A number without a maximum, or one whose maximum the daemon cannot
run with (a 400-digit max_rate_burst once passed --check and then killed the
start), fails here.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.application.service import Application

from socksvc.config.listen import MAX_BACKLOG
from socksvc.config.schema import DaemonSettings, PolicySettings
from socksvc.config.settings import (
    ChoiceParser,
    FloatParser,
    IntParser,
    ListParser,
    StrParser,
    as_bool,
    as_port,
    setting_fields,
)
from socksvc.daemon.service import DaemonService
from socksvc.services.catalogue import loads, types
from socksvc.tap import rehearse_config
from socksvc.util.passwords import hash_password
from tests.conftest import until
from tests.support.tls import self_signed


@pytest.fixture(autouse=True)
def _state_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A mail service with no maildir files into $STATE_DIRECTORY/mail: here, not in a home directory."""
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))


# The service type each settings class is exercised on.
HOSTS: dict[str, str] = {"daemon": "echo", "policy": "echo"} | {name: name for name in types()}


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)


# Settings whose parser says nothing about its extremes: given here. A new
# setting of such a parser fails test_every_setting_has_extremes until added.
def _networks(n: int) -> list[str]:
    """n distinct CIDRs none of which is loopback (so the test client is still served)."""
    return [f"10.{i >> 8 & 255}.{i & 255}.0/24" for i in range(n)] + [f"2001:db8:{i:x}::/48" for i in range(n)]


@attrs.frozen
class With:
    """A value that only makes sense with other keys of its table set too (auth = "users" needs users)."""

    value: Any
    also: dict[str, Any]


def _value(v: Any) -> Any:
    return v.value if isinstance(v, With) else v


def _custom(tmp_path: Path) -> dict[tuple[str, str], list[Any]]:
    quotes = tmp_path / "quotes.txt"
    line = "q" * 510 + "\n"  # 512 bytes with CRLF: the longest quote
    with open(quotes, "w") as f:
        f.write(line * ((16 << 20) // len(line)))  # just under the 16 MiB limit
    key, cert = (str(p) for p in self_signed(tmp_path))
    users = tmp_path / "users"
    users.write_text(f"alice:{hash_password('secret', ln=1)}\n")
    password = tmp_path / "bus-password"
    password.write_text("p" * 4095 + "\n")
    return {
        ("policy", "allow"): [[], ["127.0.0.0/8", "::1", *_networks(500)]],
        ("policy", "deny"): [[], _networks(500)],
        # The datagram guard's keys, in every type that has them.
        ("*", "rate_exempt"): [[], ["0.0.0.0/0", "::/0"], _networks(500)],
        ("*", "deny_source_ports"): [[], list(range(1024))],
        ("daemon", "log_mode"): ["0200", "0644", "0666"],
        # In process the daemon is one process whatever workers says (tests/test_workers*.py start supervisors).
        ("daemon", "workers"): [1, 256, "auto"],
        ("daemon", "http"): [[], ["tcp:0:interface=127.0.0.1"]],
        ("daemon", "http_auth"): ["", str(users)],
        ("greeting", "message"): ["", "m" * 510, "{hostname} {peer} {time} {service}"],
        ("greeting", "quotes"): ["", str(quotes)],
        ("chat", "rooms"): [["a"], ["r" * 32], [f"room{i}" for i in range(256)]],
        ("chat", "reserved_nicks"): [[], [f"nick{i}" for i in range(1000)]],
        ("chat", "web_origins"): [[], ["https://chat.example", *(f"http://h{i}.example:{i + 1}" for i in range(99))]],
        ("*", "maildir"): ["", str(tmp_path / "maildir")],
        ("smtp", "users"): ["", With(str(users), {"auth": "users"})],
        ("pop3", "users"): ["", str(users)],
        ("*", "tls_certificate"): ["", With(cert, {"tls_key": key})],
        ("*", "tls_key"): ["", With(key, {"tls_certificate": cert})],
        ("smtp", "auth"): ["off", "any", With("users", {"users": str(users)})],
        ("smtp", "require_tls"): [False, With(True, {"tls_certificate": cert, "tls_key": key})],
        ("smtp", "hostname"): ["", "mail." + "h" * 240 + ".test"],
        ("smtp", "domains"): [[], ["example.test", *(f"d{i}.example.test" for i in range(1000))]],
        # None of these buses exists: the chat starts, welcomes, and refuses nicknames (docs/chat-bus.md).
        # All at once, the last is rediss:// (bus_ca_file's last is a CA file).
        ("chat", "bus"): ["", "redis://127.0.0.1:1/0", "unix:///run/r.sock?db=15", "rediss://u@[::1]:65535/10000"],
        ("chat", "bus_password_file"): ["", str(password)],
        ("chat", "bus_ca_file"): ["", With(cert, {"bus": "rediss://localhost"})],
        ("chat", "cluster"): ["a", "c" * 64],
        ("chat", "bus_retention"): [100, 10_000_000, "10s", "30d"],
    }


REQUIRED = {"bus": "redis://127.0.0.1:1"}
"""A value for each key that other keys require (setting(requires=...)): given with them."""


# Keys every config for a host gets unless the key is the one under test.
def _base(tmp_path: Path, host: str) -> dict[str, Any]:
    if host in ("smtp", "pop3"):
        return {"maildir": str(tmp_path / "mail")}
    return {}


def _extremes(parse: Any) -> list[Any] | None:
    if isinstance(parse, IntParser | FloatParser):
        return [parse.minimum, parse.maximum]
    if parse is as_bool:
        return [False, True]
    if isinstance(parse, ChoiceParser):
        return list(parse.choices)
    if isinstance(parse, StrParser) and parse.max_len is not None:
        return ["x" if parse.nonempty else "", "y" * parse.max_len]
    if isinstance(parse, ListParser) and parse.item is as_port:
        return [[], [0, 65535]]
    return None


def _cases(tmp_path: Path) -> Iterator[tuple[str, str, Any]]:
    custom = _custom(tmp_path)
    classes: dict[str, type] = {"daemon": DaemonSettings, "policy": PolicySettings}
    classes |= {name: stype.settings for name, stype in types().items()}
    for table, cls in classes.items():
        for name, (_field, meta) in setting_fields(cls).items():
            values = custom.get((table, name)) or custom.get(("*", name))
            if values is None:
                values = _extremes(meta.parse)
            if values is None:
                raise AssertionError(f"{table}.{name}: give its extremes in _custom()")
            needs = {key: REQUIRED[key] for key in meta.requires}
            for value in values:
                if needs and not isinstance(value, With):
                    value = With(value, needs)
                elif needs:
                    value = With(value.value, needs | value.also)
                yield table, name, value


# Every (table, key) there is, for the parametrization (values come at run time: some need files).
KEYS = [
    (table, name)
    for table, cls in [("daemon", DaemonSettings), ("policy", PolicySettings)]
    + [(name, stype.settings) for name, stype in types().items()]
    for name in setting_fields(cls)
]


def test_every_number_has_both_bounds() -> None:
    """as_int and as_float take a maximum: every number a config can hold is bounded."""
    for table, name in KEYS:
        cls = {"daemon": DaemonSettings, "policy": PolicySettings} | {n: t.settings for n, t in types().items()}
        parse = setting_fields(cls[table])[name][1].parse
        item = parse.item if isinstance(parse, ListParser) else parse
        if isinstance(item, IntParser | FloatParser):
            # Exact as a float, so no arithmetic on it can overflow (a 400-digit integer did).
            assert item.maximum <= 2**53, f"{table}.{name}: maximum {item.maximum}"


def test_every_setting_has_extremes(tmp_path: Path) -> None:
    covered = {(table, name) for table, name, _value in _cases(tmp_path)}
    assert covered == set(KEYS)


def listens(host: str) -> list[str]:
    """A TCP listener, and a UDP one for the types that serve datagrams."""
    udp = ["udp:0:interface=127.0.0.1"] if types()[host].datagram is not None else []
    return ["tcp:0:interface=127.0.0.1", *udp]


def config_for(table: str, name: str, value: Any, tmp_path: Path) -> str:
    host = HOSTS[table]
    keys = {**_base(tmp_path, host), **(value.also if isinstance(value, With) else {}), name: _value(value)}
    lines = "".join(f"{k} = {_toml(v)}\n" for k, v in keys.items())
    head = f"[daemon]\n{lines}" if table == "daemon" else ""
    body = f"listen = {json.dumps(listens(host))}\n" + ("" if table == "daemon" else lines)
    return f"{head}[services.{host}]\n{body}"


async def _exchange(port: int, send: bytes, wanted: bytes) -> bytes:
    """Connect, send, read until C{wanted} is in what came back (or EOF)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setblocking(False)
    got = bytearray()
    done = False

    def more() -> bool:
        nonlocal done
        while True:
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                return wanted in got
            except ConnectionResetError:
                done = True
                return True
            if not chunk:
                done = True
                return True
            got.extend(chunk)
            if wanted in got:
                return True

    try:
        if send:
            sock.sendall(send)
        await until(more, 20, what=f"{wanted!r} from port {port} (have {bytes(got)[:80]!r})")
    finally:
        sock.close()
    return bytes(got)


async def _udp_exchange(port: int) -> bytes:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    got: list[bytes] = []

    def more() -> bool:
        try:
            got.append(sock.recv(65536))
        except BlockingIOError:
            return False
        return True

    try:
        sock.sendto(b"udp ping", ("127.0.0.1", port))
        await until(more, 20, what=f"a UDP reply from port {port}")
    finally:
        sock.close()
    return got[0]


async def _chat(port: int) -> None:
    """Two members: one says something (through flood control), the other hears it."""
    a = socket.create_connection(("127.0.0.1", port), timeout=5)
    b = socket.create_connection(("127.0.0.1", port), timeout=5)
    heard = {a: bytearray(), b: bytearray()}

    def hears(sock: socket.socket, text: bytes) -> Any:
        def check() -> bool:
            try:
                heard[sock].extend(sock.recv(65536))
            except BlockingIOError:
                pass
            return text in heard[sock]

        return check

    try:
        for sock in (a, b):
            sock.setblocking(False)
            sock.sendall(b"a\r\n" if sock is a else b"b\r\n")
            await until(hears(sock, b"-!- You are now in "), 20, what="chat's welcome")
        # Flood control may drop a line sent too soon after the nickname (flood_burst = 1):
        # say it again each second until it gets through, as a person would.
        sent = 0.0
        heard_it = hears(a, b"<b> hello")

        def said() -> bool:
            nonlocal sent
            if heard_it():
                return True
            if time.monotonic() - sent > 1.0:
                b.sendall(b"hello\r\n")
                sent = time.monotonic()
            return False

        await until(said, 20, what=f"b's line (a heard {bytes(heard[a])[-200:]!r})")
    finally:
        a.close()
        b.close()


async def _chat_bus_unreachable(port: int) -> None:
    """
    A chat whose bus is nowhere (every bus value here is unreachable): it
    welcomes, and says a nickname cannot be taken until the bus is back (docs/chat-bus.md).
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    heard = bytearray()

    def refused() -> bool:
        try:
            heard.extend(sock.recv(65536))
        except BlockingIOError:
            pass
        return b"nickname refused: the chat bus is unreachable" in heard

    try:
        sock.setblocking(False)
        sock.sendall(b"a\r\n")
        await until(refused, 20, what=f"the bus refusal (heard {bytes(heard)[-200:]!r})")
        assert b"-!- Welcome to socksvc chat\r\n" in heard
    finally:
        sock.close()


async def serve(svc: DaemonService, host: str) -> None:
    """A real client of C{host} gets a real answer."""
    instance = svc.instance(host)
    tcp = next(li.port for li in instance.listeners() if li.spec.scheme == "tcp").getHost().port
    if host == "echo":
        assert await _exchange(tcp, b"ping\n", b"ping\n") == b"ping\n"
        udp = next(li.port for li in instance.listeners() if li.spec.scheme == "udp").getHost().port
        assert await _udp_exchange(udp) == b"udp ping"
    elif host == "greeting":
        got = await _exchange(tcp, b"", b"\n")
        assert got.endswith(b"\r\n")
    elif host == "reverse":
        line = b"ab\n" if instance.context.settings.max_line >= 2 else b"a\n"
        assert await _exchange(tcp, line, line[::-1][1:] + b"\n") == line[-2::-1] + b"\n"
    elif host == "chat" and instance.context.settings.bus is not None:
        await _chat_bus_unreachable(tcp)
    elif host == "chat":
        await _chat(tcp)
    elif host == "daytime":
        got = await _exchange(tcp, b"", b"\r\n")
        assert got.endswith(b"Z\r\n"), got
    elif host == "time":
        assert len(await _exchange(tcp, b"", b"\xff" * 5)) == 4  # 4 bytes, then EOF
    elif host == "chargen":
        assert b"\r\n" in await _exchange(tcp, b"", b"\r\n")
    elif host == "smtp":
        got = await _exchange(tcp, b"QUIT\r\n", b"\r\n221")
        assert got.startswith(b"220 ") and b"\r\n221" in got, got
    elif host == "pop3":
        got = await _exchange(tcp, b"QUIT\r\n", b"\r\n+OK")
        assert got.startswith(b"+OK") and got.count(b"+OK") == 2, got
    elif host == "discard":
        sock = socket.create_connection(("127.0.0.1", tcp), timeout=5)
        try:
            sock.sendall(b"gone" * 1000)
            sock.shutdown(socket.SHUT_WR)  # discard closes at the peer's half-close
            sock.setblocking(False)
            got = bytearray()

            def closed() -> bool:
                try:
                    chunk = sock.recv(100)
                except BlockingIOError:
                    return False
                got.extend(chunk)
                return not chunk

            await until(closed, 20, what="discard to close")
            assert got == b""
        finally:
            sock.close()
    else:
        raise AssertionError(f"no serve check for {host}")


@pytest.mark.parametrize(("table", "name"), KEYS, ids=[f"{t}.{n}" for t, n in KEYS])
@pytest_twisted.ensureDeferred
async def test_the_extremes_of_every_setting_start_and_serve(table: str, name: str, tmp_path: Path) -> None:
    from twisted.internet import reactor

    values = [value for t, n, value in _cases(tmp_path) if (t, n) == (table, name)]
    assert values
    for value in values:
        config = loads(config_for(table, name, value, tmp_path), f"<{table}.{name} = {str(_value(value))[:40]}>")
        rehearse_config(config)  # what --check does after loading
        svc = DaemonService(config, reactor, handle_signals=False)
        svc.setServiceParent(Application("socksvc-test"))  # chooses the log observer, as under twistd
        svc.privilegedStartService()
        svc.startService()
        try:
            await serve(svc, HOSTS[table])
        finally:
            await svc.stopService()


@pytest.mark.parametrize("backlog", [1, MAX_BACKLOG])
@pytest_twisted.ensureDeferred
async def test_the_extremes_of_a_listen_backlog_start_and_serve(backlog: int) -> None:
    from twisted.internet import reactor

    config = loads(f'[services.echo]\nlisten = ["tcp:0:interface=127.0.0.1:backlog={backlog}"]\n', "<backlog>")
    svc = DaemonService(config, reactor, handle_signals=False)
    svc.privilegedStartService()
    svc.startService()
    try:
        port = svc.instance("echo").listeners()[0].port.getHost().port
        assert await _exchange(port, b"ping", b"ping") == b"ping"
    finally:
        await svc.stopService()


def _requires(table: str, name: str) -> tuple[str, ...]:
    """The keys a key needs set (setting(requires=...))."""
    cls = {"daemon": DaemonSettings, "policy": PolicySettings} | {n: t.settings for n, t in types().items()}
    return setting_fields(cls[table])[name][1].requires


def _combined(tmp_path: Path, host: str, end: int) -> str:
    """A config for C{host} with every key it takes at one end of its range (0: low, -1: high) at once."""
    own = {n for t, n in KEYS if t == host}
    daemon_lines: list[str] = []
    lines: list[str] = []
    seen: set[tuple[str, str]] = set()
    chosen: dict[tuple[str, str], Any] = {}
    for table, name, _ in _cases(tmp_path):
        if (table, name) in seen or table not in (host, "policy", "daemon"):
            continue
        if table == "daemon" and host != "echo":
            continue
        if (table, name) == ("greeting", "quotes"):
            continue  # quotes and message exclude each other; quotes has its own case above
        seen.add((table, name))
        values = [_value(v) for t, n, v in _cases(tmp_path) if (t, n) == (table, name)]
        chosen[table, name] = values[end]
    for (table, name), value in chosen.items():
        if any(chosen.get((table, key), "") == "" for key in _requires(table, name)):
            continue  # the bus_* keys with bus = "" (chat alone): not given
        line = f"{name} = {_toml(value)}"
        (daemon_lines if table == "daemon" else lines).append(line)
    assert own <= {n for _t, n in seen} | {"quotes"}
    listen = listens(host)
    head = "[daemon]\n" + "\n".join(daemon_lines) + "\n" if daemon_lines else ""
    return f"{head}[services.{host}]\nlisten = {json.dumps(listen)}\n" + "\n".join(lines) + "\n"


@pytest.mark.parametrize("end", [0, -1], ids=["all-lowest", "all-highest"])
@pytest.mark.parametrize("host", sorted(types()))
@pytest_twisted.ensureDeferred
async def test_every_setting_at_one_end_at_once_starts_and_serves(host: str, end: int, tmp_path: Path) -> None:
    """Settings meet (max_rate_burst matters only with max_rate set): all lowest, then all highest, together."""
    from twisted.internet import reactor

    config = loads(_combined(tmp_path, host, end), f"<{host} at {end}>")
    rehearse_config(config)
    svc = DaemonService(config, reactor, handle_signals=False)
    svc.privilegedStartService()
    svc.startService()
    try:
        await serve(svc, host)
    finally:
        await svc.stopService()
