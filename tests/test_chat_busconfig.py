"""
The chat bus's config keys (issue 14): bus, bus_password_file, bus_ca_file,
cluster, bus_retention, bus_queue, node_timeout.

Each key at both ends of its range and past them, through the real loader
(one error line each); the bus URL parser under hypothesis; and what a bus
changes in where the chat runs (every worker, a reload that adds one
replaces the service).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socksvc.config.loader import ConfigError
from socksvc.daemon.reload import plan_reload
from socksvc.services.catalogue import load, loads, types
from socksvc.services.chat.busconfig import (
    MAX_UNIX_PATH,
    BusAddress,
    BusPassword,
    Retention,
    parse_bus,
)
from socksvc.services.chat.service import ChatSettings
from tests.support.reload import BASE, reload, started
from tests.support.tls import self_signed

BUS = 'bus = "redis://localhost"\n'


def chat(lines: str = "") -> ChatSettings:
    """The settings of a chat table with C{lines}, through the loader."""
    settings: ChatSettings = loads(f'[services.chat]\nlisten = ["tcp:0"]\n{lines}', "f.toml").service("chat").settings
    return settings


def error(lines: str) -> str:
    """The one line a chat table with C{lines} gives."""
    with pytest.raises(ConfigError) as e:
        chat(lines)
    line = str(e.value)
    assert "\n" not in line and line.startswith("f.toml: services.chat.")
    return line


# -- bus ------------------------------------------------------------------------------------------------


def test_no_bus_is_the_default_and_so_is_the_empty_string() -> None:
    assert chat().bus is None
    assert chat('bus = ""').bus is None


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("redis://localhost", BusAddress(False, "localhost", 6379, "", 0)),
        ("redis://redis.example.org:1/0", BusAddress(False, "redis.example.org", 1, "", 0)),
        ("redis://10.0.0.1:65535/10000", BusAddress(False, "10.0.0.1", 65535, "", 10000)),
        ("redis://[::1]:6380/15", BusAddress(False, "::1", 6380, "", 15)),
        ("redis://[2001:DB8:0:0::1]", BusAddress(False, "2001:db8::1", 6379, "", 0)),
        ("redis://chat@localhost/", BusAddress(False, "localhost", 6379, "", 0, "chat")),
        ("REDIS://localhost?db=3", BusAddress(False, "localhost", 6379, "", 3)),
        ("rediss://redis.example.org:6380/2", BusAddress(True, "redis.example.org", 6380, "", 2)),
        ("rediss://bus-user@[fe80::1]", BusAddress(True, "fe80::1", 6379, "", 0, "bus-user")),
        ("unix:///run/redis/redis.sock", BusAddress(False, "", 0, "/run/redis/redis.sock", 0)),
        ("unix:///run/redis.sock?db=10000", BusAddress(False, "", 0, "/run/redis.sock", 10000)),
        ("unix://chat@/run/redis.sock?db=0", BusAddress(False, "", 0, "/run/redis.sock", 0, "chat")),
        ("unix:///" + "a" * (MAX_UNIX_PATH - 1), BusAddress(False, "", 0, "/" + "a" * (MAX_UNIX_PATH - 1), 0)),
        ("  redis://localhost  ", BusAddress(False, "localhost", 6379, "", 0)),
    ],
)
def test_bus_urls(url: str, address: BusAddress) -> None:
    assert chat(f"bus = {url!r}").bus == address
    assert parse_bus(address.describe()) == address


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('"http://localhost"', "unknown scheme 'http'; give redis://HOST[:PORT][/DB]"),
        ('"localhost:6379"', "not a bus URL; give redis://"),
        ("6379", "expected a bus URL string, got int"),
        ('"redis://"', "no host"),
        ('"redis://localhost:0"', "the port must be 1 to 65535"),
        ('"redis://localhost:65536"', "the port must be 1 to 65535"),
        ('"redis://localhost:"', "the port must be 1 to 65535"),
        ('"redis://localhost/10001"', "db must be 0 to 10000"),
        ('"redis://localhost/-1"', "db must be 0 to 10000"),
        ('"redis://localhost/1?db=1"', "give the db once"),
        ('"redis://localhost/1/2"', "not a bus URL"),
        ('"redis://localhost#x"', "no #fragment"),
        ('"redis://local_host"', "not a host name"),
        ('"redis://300.1.1.1"', "not an IPv4 address"),
        ('"redis://[::g]"', "not an IPv6 address"),
        ('"redis://[::1"', "not a bus URL"),
        ('"redis://local\\thost"', "control characters"),
        ('"redis://localhost?timeout=5"', "the only query parameter of a bus URL is db"),
        ('"unix:///run/redis.sock?db=1&x=2"', "the only query parameter of a bus URL is db"),
        ('"unix://run/redis.sock"', "absolute path"),
        ('"unix:///run/"', "not a socket path"),
        ('"unix:///' + "a" * MAX_UNIX_PATH + '"', f"over {MAX_UNIX_PATH} bytes"),
    ],
)
def test_bad_bus_urls_are_one_line(value: str, reason: str) -> None:
    line = error(f"bus = {value}")
    # A query may hold a password (?password=): its line names the key, not the value.
    assert line.startswith("f.toml: services.chat.bus: " if "query" in reason else "f.toml: services.chat.bus = ")
    assert reason in line


@pytest.mark.parametrize(
    "url",
    [
        "redis://:s3cr3t@localhost",
        "redis://chat:s3cr3t@localhost:6379/0",
        "rediss://chat:s3/cr@3t@localhost",
        "unix://chat:s3cr3t@/run/redis.sock",
        "redis://localhost?password=s3cr3t",
        "http://chat:s3cr3t@localhost",
    ],
)
def test_a_password_in_the_url_is_refused_and_never_shown(url: str) -> None:
    line = error(f"bus = {url!r}")
    assert "s3" not in line and "localhost" not in line
    assert line.startswith("f.toml: services.chat.bus: ")
    assert "bus_password_file" in line


def test_describe_has_no_secret_and_parses_back() -> None:
    settings = chat('bus = "rediss://chat@[::1]:6380/2"')
    assert settings.bus is not None
    assert settings.bus.describe() == "rediss://chat@[::1]:6380/2"
    assert chat('bus = "unix:///run/r.sock?db=0"').bus == parse_bus("unix:///run/r.sock")


# -- the other keys need a bus ---------------------------------------------------------------------------

OTHERS = [
    ("bus_password_file", '"pw"'),
    ("bus_ca_file", '"ca.pem"'),
    ("cluster", '"eu"'),
    ("bus_retention", "100"),
    ("bus_queue", "5"),
    ("node_timeout", "15"),  # even its default: given, it says a bus was meant
]


@pytest.mark.parametrize(("key", "value"), OTHERS)
@pytest.mark.parametrize("bus", ["", 'bus = ""\n'])
def test_bus_keys_without_a_bus_are_refused(key: str, value: str, bus: str) -> None:
    line = error(f"{bus}{key} = {value}")
    assert line == f"f.toml: services.chat.{key} = {value}: needs bus: set bus, or leave {key} out"


def test_the_defaults_with_a_bus() -> None:
    settings = chat(BUS)
    assert settings.bus_password_file is None and settings.bus_ca_file is None
    assert settings.cluster == "socksvc"
    assert settings.bus_retention == Retention(lines=10_000)
    assert settings.bus_queue == 1000
    assert settings.node_timeout == 15.0


# -- bus_password_file -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "password"),
    [(b"s3cr3t\n", "s3cr3t"), (b"s3cr3t", "s3cr3t"), (b"s3 cr3t\r\n", "s3 cr3t"), (b"x" * 4096, "x" * 4096)],
)
def test_password_file(tmp_path: Path, content: bytes, password: str) -> None:
    (tmp_path / "pw").write_bytes(content)
    settings = chat(f'{BUS}bus_password_file = "{tmp_path / "pw"}"')
    assert settings.bus_password_file == BusPassword(str(tmp_path / "pw"), password)
    shown = [repr(settings), str(settings), repr(settings.bus_password_file), str(settings.bus_password_file)]
    assert all(password not in text.replace(str(tmp_path), "") for text in shown)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "the password file is empty"),
        (b"\n", "the password file is empty"),
        (b"s3cr3t\nmore\n", "the password file has more than one line"),
        (b"x" * 4097, "password file is over 4096 bytes"),
        (b"\xff\xfe", "password file is not UTF-8 text"),
    ],
)
def test_bad_password_files(tmp_path: Path, content: bytes, reason: str) -> None:
    (tmp_path / "pw").write_bytes(content)
    line = error(f'{BUS}bus_password_file = "{tmp_path / "pw"}"')
    assert line == f'f.toml: services.chat.bus_password_file = "{tmp_path / "pw"}": {reason}'
    assert "s3" not in line.replace(str(tmp_path), "")


def test_password_file_is_a_regular_file(tmp_path: Path) -> None:
    assert "cannot read password file" in error(f'{BUS}bus_password_file = "{tmp_path}"')
    assert "cannot read password file" in error(f'{BUS}bus_password_file = "{tmp_path / "missing"}"')


def test_relative_paths_start_at_the_config_files_directory(tmp_path: Path, monkeypatch: Any) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "pw").write_text("s3cr3t\n")
    _key, cert = self_signed(tmp_path)
    config = tmp_path / "socksvc.toml"
    config.write_text(
        '[services.chat]\nlisten = ["tcp:0"]\nbus = "rediss://localhost"\n'
        'bus_password_file = "secrets/pw"\nbus_ca_file = "cert.pem"\n'
    )
    monkeypatch.chdir("/")
    settings: ChatSettings = load(str(config)).service("chat").settings
    assert settings.bus_password_file == BusPassword(str(tmp_path / "secrets" / "pw"), "s3cr3t")
    assert settings.bus_ca_file is not None and settings.bus_ca_file.path == str(cert)


# -- bus_ca_file -----------------------------------------------------------------------------------------


def test_ca_file(tmp_path: Path) -> None:
    _key, cert = self_signed(tmp_path)
    (tmp_path / "two.pem").write_bytes(cert.read_bytes() * 2)
    settings = chat(f'bus = "rediss://localhost"\nbus_ca_file = "{tmp_path / "two.pem"}"')
    assert settings.bus_ca_file is not None and settings.bus_ca_file.count == 2
    assert b"CERTIFICATE" not in repr(settings).encode()


def test_bad_ca_files(tmp_path: Path) -> None:
    key, cert = self_signed(tmp_path)
    assert error(f'bus = "rediss://localhost"\nbus_ca_file = "{key}"').endswith(": no PEM certificate in the CA file")
    broken = tmp_path / "broken.pem"
    broken.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    assert error(f'bus = "rediss://localhost"\nbus_ca_file = "{broken}"').endswith(
        ": not a valid PEM certificate in the CA file"
    )
    big = tmp_path / "big.pem"
    big.write_bytes(b"-----BEGIN CERTIFICATE-----" + b"x" * (1 << 20))
    assert error(f'bus = "rediss://localhost"\nbus_ca_file = "{big}"').endswith(": CA file is over 1 MiB")
    # A CA file is for TLS: a plain redis:// or unix:// bus has no use for one.
    for bus in ("redis://localhost", "unix:///run/redis.sock"):
        line = error(f'bus = "{bus}"\nbus_ca_file = "{cert}"')
        assert line.startswith("f.toml: services.chat.bus_ca_file = ") and line.endswith(": for a rediss:// bus only")


# -- cluster, bus_retention, bus_queue, node_timeout -----------------------------------------------------


@pytest.mark.parametrize("name", ["a", "A" * 64, "eu-west.1_b", "0"])
def test_cluster_names(name: str) -> None:
    assert chat(f'{BUS}cluster = "{name}"').cluster == name


@pytest.mark.parametrize("value", ['""', '"' + "a" * 65 + '"', '"eu west"', '"eu:west"', '"ée"', '"a*"', "1"])
def test_bad_cluster_names(value: str) -> None:
    line = error(f"{BUS}cluster = {value}")
    assert line.startswith("f.toml: services.chat.cluster = ")
    assert line.endswith(": 1 to 64 characters of A-Z a-z 0-9 _ . -") or line.endswith("expected a string, got int")


@pytest.mark.parametrize(
    ("value", "retention"),
    [
        ("100", Retention(lines=100)),
        ("10_000_000", Retention(lines=10_000_000)),
        ('"10s"', Retention(seconds=10)),
        ('"600s"', Retention(seconds=600)),
        ('"30m"', Retention(seconds=1800)),
        ('"24h"', Retention(seconds=86400)),
        ('"7d"', Retention(seconds=7 * 86400)),
        ('"720h"', Retention(seconds=30 * 86400)),
        ('"30d"', Retention(seconds=30 * 86400)),
    ],
)
def test_retention(value: str, retention: Retention) -> None:
    assert chat(f"{BUS}bus_retention = {value}").bus_retention == retention
    assert chat(f"{BUS}bus_retention = {retention}").bus_retention == retention  # as docs/config.md shows it


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("99", "lines must be 100 to 10000000"),
        ("10_000_001", "lines must be 100 to 10000000"),
        ("0", "lines must be 100 to 10000000"),
        ('"9s"', "a duration must be 10s to 30d"),
        ('"31d"', "a duration must be 10s to 30d"),
        ('"721h"', "a duration must be 10s to 30d"),
        ('"99999999999999999999d"', "a duration is a number and s, m, h or d"),
        ('"1w"', "a duration is a number and s, m, h or d"),
        ('"10"', "a duration is a number and s, m, h or d"),
        ('"-5m"', "a duration is a number and s, m, h or d"),
        ("1.5", "expected an integer (lines) or a duration"),
        ("true", "expected an integer (lines) or a duration"),
    ],
)
def test_bad_retention(value: str, reason: str) -> None:
    line = error(f"{BUS}bus_retention = {value}")
    assert line.startswith("f.toml: services.chat.bus_retention = ") and f": {reason}" in line


def test_retention_is_lines_or_seconds() -> None:
    for bad in ({}, {"lines": 100, "seconds": 10.0}):
        with pytest.raises(ValueError):
            Retention(**bad)
    assert str(Retention(lines=10_000)) == "10000"
    assert [str(Retention(seconds=s)) for s in (90, 3600, 86400 * 2, 61)] == ['"90s"', '"1h"', '"2d"', '"61s"']


@pytest.mark.parametrize(
    ("key", "low", "high", "below", "above"),
    [("bus_queue", 0, 100_000, -1, 100_001), ("node_timeout", 3, 3600, 2.9, 3601)],
)
def test_numbers_at_both_ends(key: str, low: float, high: float, below: float, above: float) -> None:
    assert getattr(chat(f"{BUS}{key} = {low}"), key) == low
    assert getattr(chat(f"{BUS}{key} = {high}"), key) == high
    assert error(f"{BUS}{key} = {below}").endswith(f": must be at least {low}")
    assert error(f"{BUS}{key} = {above}").endswith(f": must be at most {high}")


# -- the URL parser under hypothesis ----------------------------------------------------------------------


URLISH = r"(redis|rediss|unix|redis\+sentinel)://[@:/?=#,\[\]a-z0-9._~-]{0,40}"


@given(st.text(max_size=80) | st.from_regex(URLISH, fullmatch=True))
def test_parse_bus_only_ever_raises_value_error(text: str) -> None:
    try:
        address = parse_bus(text)
    except ValueError as e:
        assert str(e) and "\n" not in str(e)
    else:
        assert address is None or parse_bus(address.describe()) == address


labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
names = st.lists(labels, min_size=1, max_size=4).map(".".join).filter(lambda n: not n.replace(".", "").isdigit())
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(lambda a: a.compressed)
users = st.none() | st.from_regex(r"[A-Za-z0-9._~-]{1,20}", fullmatch=True)
dbs = st.integers(0, 10_000)


@st.composite
def tcp_buses(draw: st.DrawFn) -> tuple[str, BusAddress]:
    tls = draw(st.booleans())
    host = draw(names | ipv4 | ipv6)
    port = draw(st.none() | st.integers(1, 65535))
    db = draw(st.none() | dbs)
    user = draw(users)
    url = f"{'rediss' if tls else 'redis'}://{user + '@' if user else ''}{f'[{host}]' if ':' in host else host}"
    url += f":{port}" if port is not None else ""
    url += f"/{db}" if db is not None else ""
    return url, BusAddress(tls, host, 6379 if port is None else port, "", db or 0, user)


@st.composite
def unix_buses(draw: st.DrawFn) -> tuple[str, BusAddress]:
    parts = draw(st.lists(st.from_regex(r"[A-Za-z0-9._@:~ -]{1,12}", fullmatch=True), min_size=1, max_size=6))
    path = "/" + "/".join(parts)
    if len(path.encode()) > MAX_UNIX_PATH:
        path = path[:MAX_UNIX_PATH].rstrip("/")
    path = path.rstrip() or "/s"  # the value is stripped: a path ending in a space is not one a config can give
    if path.endswith("/"):
        path += "s"
    db = draw(st.none() | dbs)
    user = draw(users)
    url = f"unix://{user + '@' if user else ''}{path}" + (f"?db={db}" if db is not None else "")
    return url, BusAddress(False, "", 0, path, db or 0, user)


@given(tcp_buses() | unix_buses())
def test_valid_urls_round_trip(case: tuple[str, BusAddress]) -> None:
    url, address = case
    assert parse_bus(url) == address
    assert parse_bus(address.describe()) == address


# -- where the chat runs ---------------------------------------------------------------------------------


def test_chat_is_one_process_without_a_bus_and_every_workers_with_one() -> None:
    stype = types()["chat"]
    assert stype.single_process(chat())
    assert not stype.single_process(chat(BUS))
    assert types()["pop3"].single_process(None) and not types()["echo"].single_process(None)


def _config(bus: str) -> Any:
    return loads(BASE.replace("[services.chat]\n", f"[services.chat]\n{bus}"), "<test>")


def test_adding_or_removing_a_bus_replaces_the_chat_service() -> None:
    """Its sockets go to other workers, its state is of another kind: a new chat, not a reconfigured one."""
    old, new = _config(""), _config(BUS)
    for before, after in ((old, new), (new, old)):
        plan = plan_reload({svc.name: svc for svc in before.services}, after)
        assert plan.removed == ("chat",) and [svc.name for svc in plan.added] == ["chat"]
    # Another bus (or cluster, or credentials): the node leaves one cluster for another, a new chat.
    plan = plan_reload({svc.name: svc for svc in new.services}, _config('bus = "redis://other"\n'))
    assert plan.removed == ("chat",) and [svc.name for svc in plan.added] == ["chat"]
    plan = plan_reload({svc.name: svc for svc in new.services}, _config(BUS + 'cluster = "two"\n'))
    assert plan.removed == ("chat",)
    # Another bus setting of the same cluster: reconfigured in place.
    plan = plan_reload({svc.name: svc for svc in new.services}, _config(BUS + "bus_queue = 5\n"))
    assert plan.removed == () and plan.added == () and [k.options_changed for k in plan.kept] == [False, False, True]


def test_a_reload_adding_a_bus_keeps_the_chat_port_listening() -> None:
    svc = started()
    reactor = svc.reactor
    old = svc.instance("chat")
    assert reload(svc, BASE.replace("[services.chat]\n", f"[services.chat]\n{BUS}"))
    new = svc.instance("chat")
    assert new is not old and not old.running and new.running
    assert new.context.settings.bus == BusAddress(False, "localhost", 6379, "", 0)
    assert new.listeners()[0].ports and set(new.listeners()[0].ports) <= reactor.listening
    assert svc.last_reload_error is None
