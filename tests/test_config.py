"""
The config loader: the TOML shape, every key of every settings class, every
error message, and hypothesis fuzzing of the whole parser.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import math
import os
import tomllib
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from socksvc.config.loader import DEFAULT_SOURCE, MAX_CONFIG_FILE, Config, ConfigError
from socksvc.config.schema import DaemonSettings, PolicySettings, parse_admin_listen
from socksvc.config.settings import setting_fields
from socksvc.core.datagram import DEFAULT_DENY_SOURCE_PORTS, GuardSettings
from socksvc.services.catalogue import load, loads, types
from socksvc.services.chargen import ChargenSettings
from socksvc.services.chat.busconfig import BusAddress, Retention
from socksvc.services.chat.service import ChatSettings
from socksvc.services.daytime import DaytimeSettings
from socksvc.services.discard import DiscardSettings
from socksvc.services.echo import EchoSettings
from socksvc.services.greeting import GreetingSettings
from socksvc.services.reverse import ReverseSettings
from socksvc.services.time import TimeSettings

ECHO = '[services.echo]\nlisten = ["tcp:0"]\n'


def error(text: str, source: str = "f.toml") -> str:
    """The one line a bad config gives."""
    with pytest.raises(ConfigError) as e:
        loads(text, source)
    line = str(e.value)
    assert "\n" not in line
    assert line.startswith(f"{source}: ")
    return line


# -- the shape ---------------------------------------------------------------


def test_embedded_default_serves_every_service_on_loopback() -> None:
    config = load(None)
    assert config.source == DEFAULT_SOURCE
    # The one [daemon] key the embedded default sets: the admin listener, on loopback.
    assert [s.text for s in config.daemon.http] == ["tcp:9107:interface=127.0.0.1"]
    assert config.daemon == attrs.evolve(DaemonSettings(), http=config.daemon.http)
    by_name = {s.name: s for s in config.services}
    expected = {
        "echo": ["tcp:7007:interface=127.0.0.1", "udp:7007:interface=127.0.0.1"],
        "greeting": ["tcp:7017:interface=127.0.0.1", "udp:7017:interface=127.0.0.1"],
        "reverse": ["tcp:7071:interface=127.0.0.1"],
    }
    for name, specs in expected.items():
        assert [s.text for s in by_name[name].listen] == specs
        assert by_name[name].type == name
    for svc in config.services:
        for spec in svc.listen:
            assert spec.interface == "127.0.0.1" or spec.scheme == "unix", spec
    # Every service keeps its defaults.
    assert by_name["greeting"].settings == GreetingSettings()
    assert by_name["reverse"].settings == ReverseSettings()
    assert by_name["echo"].policy == PolicySettings()


def test_type_defaults_to_the_table_name() -> None:
    config = loads(ECHO + '[services.reverse]\nlisten = ["tcp:0"]\n')
    assert [(s.name, s.type) for s in config.services] == [("echo", "echo"), ("reverse", "reverse")]
    assert isinstance(config.service("echo").settings, EchoSettings)
    assert isinstance(config.service("reverse").settings, ReverseSettings)


def test_several_instances_of_one_type() -> None:
    config = loads(
        """
[services.lab-echo]
type = "echo"
listen = ["tcp:7100:interface=127.0.0.1"]
max_connections = 5

[services.lan-echo]
type = "echo"
listen = ["tcp:7100:interface=127.0.0.2"]
"""
    )
    lab, lan = config.services
    assert (lab.name, lab.type, lan.name, lan.type) == ("lab-echo", "echo", "lan-echo", "echo")
    assert lab.policy.max_connections == 5
    assert lan.policy.max_connections == 1024
    assert config.service("lan-echo") is lan
    with pytest.raises(KeyError):
        config.service("echo")


def test_listen_specs_are_parsed() -> None:
    config = loads('[services.echo]\nlisten = ["tcp:echo:interface=127.0.0.1", "udp:0", "unix:/tmp/socksvc-x.sock"]\n')
    tcp, udp, unix = config.service("echo").listen
    assert (tcp.scheme, tcp.port, tcp.interface, tcp.endpoint) == ("tcp", 7, "127.0.0.1", "tcp:7:interface=127.0.0.1")
    assert (udp.kind, udp.port) == ("datagram", 0)
    assert (unix.kind, unix.path) == ("stream", "/tmp/socksvc-x.sock")


def test_defaults_are_inherited_and_overridden() -> None:
    config = loads(
        """
[defaults]
max_connections = 10
idle_timeout = 5
allow = ["10.0.0.0/8"]

[services.echo]
listen = ["tcp:0"]

[services.reverse]
listen = ["tcp:0"]
max_connections = 20
allow = []
"""
    )
    echo, reverse = config.service("echo").policy, config.service("reverse").policy
    assert (echo.max_connections, echo.idle_timeout, echo.allow) == (10, 5.0, (ipaddress.ip_network("10.0.0.0/8"),))
    assert (reverse.max_connections, reverse.idle_timeout, reverse.allow) == (20, 5.0, ())
    # Keys not in [defaults] keep the built-in default.
    assert echo.max_per_source == 64


def test_defaults_take_only_policy_keys() -> None:
    assert error("[defaults]\nmax_line = 10\n" + ECHO).startswith("f.toml: defaults.max_line = 10: unknown key")


def test_load_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "socksvc.toml"
    path.write_text(ECHO + '[daemon]\nlog_format = "json"\n', encoding="utf-8")
    config = load(str(path))
    assert isinstance(config, Config)
    assert config.source == str(path)
    assert config.daemon.log_format == "json"


# -- every key: default, a good value, a bad value ---------------------------

# (settings class, where the key goes, key, default, good TOML, parsed, bad TOML, reason)
KEYS: list[tuple[type, str, str, Any, str, Any, str, str]] = [
    (DaemonSettings, "daemon", "log_format", "text", '"json"', "json", '"xml"', 'must be one of "text", "json"'),
    (DaemonSettings, "daemon", "log_mode", "0644", '"0640"', "0640", '"0755"', "no execute"),
    (DaemonSettings, "daemon", "log_buffer", 0, "65536", 65536, "16777217", "must be at most 16777216"),
    (DaemonSettings, "daemon", "log_flush", 1.0, "0.5", 0.5, "0", "must be at least 0.01"),
    (DaemonSettings, "daemon", "workers", 1, "2", 2, "257", 'must be 1 to 256, or "auto"'),
    (DaemonSettings, "daemon", "http", (), '["tcp:0"]', (parse_admin_listen("tcp:0"),), '["udp:9"]', "stream listen"),
    (DaemonSettings, "daemon", "http_auth", None, '""', None, '"/nonexistent/pw"', "cannot read password file"),
    (PolicySettings, "echo", "max_connections", 1024, "0", 0, "-1", "must be at least 0"),
    (PolicySettings, "echo", "max_per_source", 64, "3", 3, "1.5", "expected an integer, got a number"),
    (PolicySettings, "echo", "idle_timeout", 300.0, "0.5", 0.5, '"5m"', "expected a number, got a string"),
    (
        PolicySettings,
        "echo",
        "allow",
        (),
        '["10.0.0.0/8", "::1"]',
        (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")),
        '"10.0.0.0/8"',
        "expected a list, got a string",
    ),
    (
        PolicySettings,
        "echo",
        "deny",
        (),
        '["192.0.2.0/24"]',
        (ipaddress.ip_network("192.0.2.0/24"),),
        '["300.0.0.1"]',
        "not an IPv4 or IPv6 address or CIDR",
    ),
    (PolicySettings, "echo", "max_rate", 0.0, "2.5", 2.5, "-1", "must be at least 0"),
    (PolicySettings, "echo", "max_rate_burst", 0, "10", 10, "true", "expected an integer, got a boolean"),
    (PolicySettings, "echo", "log_connections", True, "false", False, '"no"', "expected true or false"),
    (PolicySettings, "echo", "log_close_rate", 100.0, "0", 0.0, "1e7", "must be at most 1e+06"),
    (PolicySettings, "echo", "log_close_burst", 0, "500", 500, "-1", "must be at least 0"),
    (PolicySettings, "echo", "max_per_subnet", 256, "0", 0, f"{(1 << 24) + 1}", "must be at most 16777216"),
    (PolicySettings, "echo", "subnet_v4", 24, "16", 16, "33", "must be at most 32"),
    (PolicySettings, "echo", "subnet_v6", 48, "64", 64, "129", "must be at most 128"),
    (PolicySettings, "reverse", "line_timeout", 60.0, "0", 0.0, "86401", "must be at most 86400"),
    (PolicySettings, "reverse", "input_line_rate", 50.0, "0", 0.0, "-1", "must be at least 0"),
    (PolicySettings, "reverse", "input_byte_rate", 16384.0, "1e6", 1e6, "2e9", "must be at most"),
    (PolicySettings, "reverse", "input_burst", 4.0, "1", 1.0, "0", "must be at least 0.1"),
    (PolicySettings, "reverse", "throttle_kick", 60.0, "0", 0.0, "inf", "must be a finite number"),
    (EchoSettings, "echo", "deny_source_ports", DEFAULT_DENY_SOURCE_PORTS, "[7, 9]", (7, 9), "[70000]", "a port"),
    (EchoSettings, "echo", "rate_per_source", 100.0, "0", 0.0, "nan", "must be a finite number"),
    (EchoSettings, "echo", "burst", 200, "1", 1, '"many"', "expected an integer, got a string"),
    (EchoSettings, "echo", "max_sources", 65536, "10", 10, "0", "must be at least 1"),
    (EchoSettings, "echo", "loop_budget", 64, "10", 10, "0", "must be at least 1"),
    (EchoSettings, "echo", "loop_budget_ephemeral", 65536, "100", 100, "1.5", "expected an integer, got a number"),
    (
        EchoSettings,
        "echo",
        "rate_exempt",
        (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")),
        "[]",
        (),
        '["localhost"]',
        "not an IPv4 or IPv6 address or CIDR",
    ),
    (GreetingSettings, "greeting", "message", "Thank you for connecting", '"hi {peer}"', "hi {peer}", "5", "string"),
    (GreetingSettings, "greeting", "quotes", None, '""', None, '"/nonexistent/quotes"', "cannot read quotes file"),
    (GreetingSettings, "greeting", "send_timeout", 10.0, "1", 1.0, "0", "must be at least 0.1"),
    (ReverseSettings, "reverse", "max_line", 4096, "10", 10, "0", "must be at least 1"),
    (DiscardSettings, "discard", "max_bytes", 0, "1048576", 1048576, "-1", "must be at least 0"),
    (DiscardSettings, "discard", "max_duration", 600.0, "0", 0.0, '"1h"', "expected a number, got a string"),
    (ChargenSettings, "chargen", "max_bytes", 0, "74", 74, "1.5", "expected an integer, got a number"),
    (ChargenSettings, "chargen", "max_duration", 600.0, "2.5", 2.5, "-1", "must be at least 0"),
    (ChargenSettings, "chargen", "udp", False, "true", True, '"yes"', "expected true or false, got a string"),
    (DaytimeSettings, "daytime", "send_timeout", 10.0, "1", 1.0, "0", "must be at least 0.1"),
    (TimeSettings, "time", "send_timeout", 10.0, "1", 1.0, "0", "must be at least 0.1"),
    (
        ChatSettings,
        "chat",
        "bus",
        None,
        '"redis://localhost"',
        BusAddress(tls=False, host="localhost", port=6379, path="", db=0),
        '"http://localhost"',
        "unknown scheme",
    ),
    (ChatSettings, "chat", "bus_password_file", None, '""', None, '"/nonexistent/pw"', "cannot read password file"),
    (ChatSettings, "chat", "bus_ca_file", None, '""', None, '"/nonexistent/ca.pem"', "cannot read CA file"),
    (ChatSettings, "chat", "cluster", "socksvc", '"eu-1"', "eu-1", '"eu 1"', "1 to 64 characters"),
    (ChatSettings, "chat", "bus_retention", Retention(lines=10_000), '"24h"', Retention(seconds=86400), "99", "100 to"),
    (ChatSettings, "chat", "bus_queue", 1000, "0", 0, "100001", "must be at most 100000"),
    (ChatSettings, "chat", "node_timeout", 15.0, "3", 3.0, "2.5", "must be at least 3"),
]

REQUIRED = {"bus": '"redis://localhost"'}
"""A value for each key another key requires (setting(requires=...)): its rows are loaded with it."""


def _table(where: str) -> str:
    return "[daemon]" if where == "daemon" else f"[services.{where}]"


def _text(where: str, line: str) -> str:
    out = f"{_table(where)}\n{line}\n"
    if where == "daemon":
        out += ECHO
    else:
        out += 'listen = ["tcp:0"]\n'
    return out


def _get(config: Config, where: str, cls: type, key: str) -> Any:
    if where == "daemon":
        return getattr(config.daemon, key)
    svc = config.service(where)
    return getattr(svc.policy if cls is PolicySettings else svc.settings, key)


@pytest.mark.parametrize(("cls", "where", "key", "default", "good", "parsed", "bad", "reason"), KEYS)
def test_every_key(
    cls: type, where: str, key: str, default: Any, good: str, parsed: Any, bad: str, reason: str
) -> None:
    field, meta = setting_fields(cls)[key]
    need = "".join(f"{other} = {REQUIRED[other]}\n" for other in meta.requires)
    assert field.default == default
    assert _get(loads(_text(where, need)), where, cls, key) == default
    assert _get(loads(_text(where, f"{need}{key} = {good}")), where, cls, key) == parsed
    line = error(_text(where, f"{need}{key} = {bad}"))
    table = "daemon" if where == "daemon" else f"services.{where}"
    assert line.startswith(f"f.toml: {table}.{key}")
    assert reason in line


def test_every_declared_key_is_covered() -> None:
    """A key added to a settings class needs a row in KEYS (new keys from other issues excepted)."""
    covered = {(cls, key) for cls, _w, key, *_ in KEYS}
    guard_keys = set(setting_fields(GuardSettings))  # tested once, on echo
    classes = [DaemonSettings, PolicySettings, EchoSettings, GreetingSettings, ReverseSettings]
    classes += [DiscardSettings, ChargenSettings, DaytimeSettings, TimeSettings]
    for cls in classes:
        for key in setting_fields(cls):
            if issubclass(cls, GuardSettings) and key in guard_keys:
                continue
            assert (cls, key) in covered, f"{cls.__name__}.{key} has no row in KEYS"


WHERE = {DaemonSettings: "daemon", PolicySettings: "echo", EchoSettings: "echo"}
for _name, _stype in types().items():
    WHERE.setdefault(_stype.settings, _name)


@pytest.mark.parametrize(
    ("where", "key"),
    [(where, key) for cls, where in WHERE.items() for key in setting_fields(cls)],
)
def test_every_key_rejects_a_table(where: str, key: str) -> None:
    """No key takes a TOML table: whatever its parser, the error names the key and stays one line."""
    line = error(_text(where, f"{key} = {{ x = 1 }}"))
    table = "daemon" if where == "daemon" else f"services.{where}"
    assert line.startswith(f'f.toml: {table}.{key} = {{"x": 1}}: ')


def test_every_key_has_a_doc_and_a_default_its_parser_accepts() -> None:
    for cls in WHERE:
        instance = cls()
        for key, (field, meta) in setting_fields(cls).items():
            assert meta.doc, key
            assert getattr(instance, key) == field.default


# -- every error message -----------------------------------------------------


def test_unknown_key_did_you_mean() -> None:
    assert (
        error(ECHO + "max_conections = 5")
        == 'f.toml: services.echo.max_conections = 5: unknown key; did you mean "max_connections"?'
    )
    assert error('[daemon]\nlog_fromat = "json"\n' + ECHO) == (
        'f.toml: daemon.log_fromat = "json": unknown key; did you mean "log_format"?'
    )
    assert error('[service.echo]\nlisten = ["tcp:0"]') == (
        'f.toml: service = {"echo": {"listen": ["tcp:0"]}}: unknown key; did you mean "services"?'
    )


def test_unknown_key_far_from_any_lists_the_known_ones() -> None:
    line = error(ECHO.replace("echo", "reverse") + "zzzqqq = 1")
    assert line.startswith("f.toml: services.reverse.zzzqqq = 1: unknown key (known: ")
    for key in ("listen", "type", "max_line", "max_connections"):
        assert key in line


def test_wrong_type() -> None:
    assert (
        error(ECHO + 'max_connections = "5"')
        == 'f.toml: services.echo.max_connections = "5": expected an integer, got a string'
    )
    assert error(ECHO + 'allow = ["10.0.0.0/8", 5]') == (
        "f.toml: services.echo.allow[1] = 5: expected a CIDR string, got an integer"
    )
    assert error("services = 5") == "f.toml: services = 5: expected a table"
    assert error("[services]\necho = 5") == "f.toml: services.echo = 5: expected a table"
    assert error('[services.echo]\ntype = 5\nlisten = ["tcp:0"]') == (
        "f.toml: services.echo.type = 5: expected a string"
    )


def test_unknown_service_type() -> None:
    assert error('[services.lab]\ntype = "ecko"\nlisten = ["tcp:0"]') == (
        'f.toml: services.lab.type = "ecko": unknown service type; did you mean "echo"?'
    )
    line = error('[services.lab]\nlisten = ["tcp:0"]')
    assert line.startswith('f.toml: services.lab.type = "lab": unknown service type (known: ')
    assert line.endswith("set type = \"...\" for a service named 'lab'")


def test_bad_listen_spec() -> None:
    assert error('[services.echo]\nlisten = ["tcpp:7007"]') == (
        "f.toml: services.echo.listen[0] = \"tcpp:7007\": unknown listen kind 'tcpp' "
        '(known: tcp, tcp6, unix, ssl, systemd, udp); did you mean "tcp"?'
    )
    assert error('[services.echo]\nlisten = ["tcp:0", "tcp:99999"]') == (
        'f.toml: services.echo.listen[1] = "tcp:99999": port 99999 is out of range (0 to 65535)'
    )
    assert error('[services.reverse]\nlisten = ["udp:0"]') == (
        'f.toml: services.reverse.listen[0] = "udp:0": reverse is served over stream only'
    )
    assert error('[services.echo]\nlisten = "tcp:0"').endswith('expected a list of listen specs, such as ["tcp:7007"]')
    assert error("[services.echo]\nlisten = []") == (
        "f.toml: services.echo.listen = []: a service needs at least one listen spec"
    )
    assert "escape the colons" in error('[services.echo]\nlisten = ["tcp6:0:interface=::1"]')


def test_missing_listen() -> None:
    assert error("[services.echo]\n") == 'f.toml: services.echo.listen: missing; give a list such as ["tcp:7007"]'


def test_no_services() -> None:
    assert error('[daemon]\nlog_format = "text"') == (
        "f.toml: services: no services configured; add a [services.NAME] table"
    )


def test_duplicate_addresses() -> None:
    two = '[services.echo]\nlisten = ["{a}"]\n[services.again]\ntype = "echo"\nlisten = ["{b}"]\n'
    assert error(two.format(a="tcp:7100:interface=127.0.0.1", b="tcp:port=7100:interface=127.0.0.1")) == (
        'f.toml: services.again.listen[0] = "tcp:port=7100:interface=127.0.0.1": '
        "same address as services.echo.listen[0]"
    )
    # All interfaces clash with any one interface on the same port.
    assert "same address" in error(two.format(a="tcp:7100", b="tcp:7100:interface=127.0.0.1"))
    assert "same address" in error(two.format(a="unix:/tmp/x.sock", b="unix:address=/tmp/x.sock"))
    assert "same address" in error(two.format(a="udp:7100", b="udp:7100"))
    assert "same address" in error('[services.echo]\nlisten = ["tcp:echo", "tcp:7"]')
    # Not clashes: other interface, other family, port 0 (the kernel chooses).
    loads(two.format(a="tcp:7100:interface=127.0.0.1", b="tcp:7100:interface=127.0.0.2"))
    loads(two.format(a="tcp:7100", b="udp:7100"))
    loads(two.format(a="tcp:0", b="tcp:0"))


V6 = "\\\\:\\\\:"  # "::" as a listen spec in a TOML basic string


@pytest.mark.parametrize(
    ("a", "b", "clash"),
    [
        # No interface on tcp:/udp:/ssl: is 0.0.0.0 (IPv4 only): it leaves IPv6 addresses free.
        ("tcp:7100", f"tcp6:7100:interface={V6}1", False),
        ("udp:7100", f"udp:7100:interface={V6}1", False),
        ("tcp:7100", "tcp6:7100", True),  # tcp6 without interface is "::", dual stack
        ("tcp:7100", "tcp:7100:interface=127.0.0.1", True),
        ("tcp:7100:interface=0.0.0.0", "tcp:7100", True),
        ("tcp6:7100", f"tcp6:7100:interface={V6}1", True),
        ("tcp6:7100", "tcp:7100:interface=127.0.0.1", True),
        (f"udp:7100:interface={V6}", "udp:7100:interface=127.0.0.1", True),
        (f"tcp6:7100:interface={V6}1", f"tcp6:7100:interface=0{V6}1", True),  # the same address written two ways
        (f"tcp6:7100:interface={V6}1", f"tcp6:7100:interface={V6}2", False),
        ("tcp:7100:interface=127.0.0.1", f"tcp6:7100:interface={V6}1", False),
    ],
)
def test_wildcard_clashes_follow_the_address_families(a: str, b: str, clash: bool) -> None:
    text = f'[services.echo]\nlisten = ["{a}"]\n[services.again]\ntype = "echo"\nlisten = ["{b}"]\n'
    if clash:
        assert error(text).endswith("same address as services.echo.listen[0]")
    else:
        assert loads(text, "f.toml").service("again").listen[0].port == 7100


def test_two_services_cannot_take_the_same_systemd_socket() -> None:
    two = '[services.echo]\nlisten = ["{a}"]\n[services.greeting]\nlisten = ["{b}"]\n'
    assert error(two.format(a="systemd:name=x", b="systemd:name=x")) == (
        'f.toml: services.greeting.listen[0] = "systemd:name=x": same address as services.echo.listen[0]'
    )
    assert "same address" in error(two.format(a="systemd:domain=INET:index=0", b="systemd:index=0"))
    loads(two.format(a="systemd:name=x", b="systemd:name=y"))
    loads(two.format(a="systemd:name=x", b="tcp:7100"))


@pytest.mark.parametrize("name", ["e" * 64, "lab-echo", "a.b_c-9", "ECHO"])
def test_service_names_up_to_64_safe_characters(name: str) -> None:
    text = f'[services."{name}"]\ntype = "echo"\nlisten = ["tcp:0"]\n'
    assert loads(text).service(name).name == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("e" * 65, "service name is 65 characters; at most 64"),
        ("g" * 600, "service name is 600 characters; at most 64"),
        ('"two words"', "a service name takes only ASCII letters, digits, _ - and ."),
        ('"caf\u00e9"', "a service name takes only ASCII letters, digits, _ - and ."),
        ('"a/b"', "a service name takes only ASCII letters, digits, _ - and ."),
    ],
)
def test_service_names_too_long_or_odd_are_refused(name: str, reason: str) -> None:
    line = error(f'[services.{name}]\ntype = "echo"\nlisten = ["tcp:0"]\n')
    assert line.startswith("f.toml: services.") and line.endswith(reason)
    assert len(line) < 160


def test_a_fifo_or_device_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer
    with pytest.raises(ConfigError) as e:
        load(str(fifo))
    assert str(e.value) == f"{fifo}: cannot read config file: not a regular file"
    with pytest.raises(ConfigError) as e:
        load("/dev/null")
    assert str(e.value) == "/dev/null: cannot read config file: not a regular file"


def test_a_huge_config_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.toml"
    with open(path, "wb") as f:
        f.truncate(MAX_CONFIG_FILE + 1)
    with pytest.raises(ConfigError) as e:
        load(str(path))
    assert str(e.value) == f"{path}: config file is over 1 MiB"


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as e:
        load(str(missing))
    assert str(e.value) == f"{missing}: cannot read config file: No such file or directory"
    with pytest.raises(ConfigError) as e:
        load(str(tmp_path))
    assert str(e.value) == f"{tmp_path}: cannot read config file: Is a directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_file_without_permission(tmp_path: Path) -> None:
    path = tmp_path / "secret.toml"
    path.write_text(ECHO)
    path.chmod(0)
    with pytest.raises(ConfigError) as e:
        load(str(path))
    assert str(e.value) == f"{path}: cannot read config file: Permission denied"


def test_not_toml(tmp_path: Path) -> None:
    assert error("[services.echo\nlisten = [") == (
        "f.toml: not valid TOML: Expected ']' at the end of a table declaration (at line 1, column 15)"
    )
    path = tmp_path / "x.toml"
    path.write_text("listen = = 1")
    with pytest.raises(ConfigError, match=rf"^{path}: not valid TOML: "):
        load(str(path))


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(ECHO.encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError) as e:
        load(str(path))
    assert str(e.value) == f"{path}: not UTF-8 text (byte {len(ECHO) + 5})"


def test_long_values_are_cut_short() -> None:
    line = error(ECHO + f'max_connections = "{"x" * 500}"')
    assert len(line) < 200
    assert '"xxxx' in line and '..."' not in line and "...:" in line


def test_control_characters_never_split_the_line() -> None:
    line = error('[services."a\\nb"]\nlisten = ["tcp:0"]')
    assert line.startswith("f.toml: services.a\\nb: a service name takes only")
    line = error(ECHO + '"bad\\u001bkey" = 1')
    assert "\x1b" not in line and "\\x1b" in line


def test_toml_dates_are_shown_as_written() -> None:
    assert error(ECHO + "max_connections = 1979-05-27") == (
        'f.toml: services.echo.max_connections = "1979-05-27": expected an integer, got date'
    )


def test_error_fields() -> None:
    with pytest.raises(ConfigError) as e:
        loads(ECHO + "max_connections = -3", "f.toml")
    assert (e.value.source, e.value.key, e.value.value) == ("f.toml", "services.echo.max_connections", -3)
    assert e.value.reason == "must be at least 0"


# -- fuzzing -----------------------------------------------------------------


def toml_value(value: Any) -> str:
    """A Python value as an inline TOML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_key_or_string(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key_or_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def toml_key_or_string(text: str) -> str:
    # JSON's escapes are TOML's, except that TOML wants DEL escaped too.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007F")


ALL_KEYS = sorted({key for cls in WHERE for key in setting_fields(cls)} | {"type", "listen"})

scalars = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["echo", "reverse", "text", "json", "10.0.0.0/8", "::1", "{peer}", "{x}", "tcp:0", "/"])
    | st.datetimes()
    | st.dates()
    | st.times()
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=2),
    max_leaves=6,
)
listen_items = st.sampled_from(
    ["tcp:0", "udp:0", "tcp:7", "tcp:echo", "tcp6:0", "unix:/tmp/socksvc-fuzz.sock"]
) | st.text(max_size=20)
keys = st.sampled_from(ALL_KEYS) | st.text(max_size=8)
# The good and bad values of KEYS, for configs that get past the first check.
PLAUSIBLE = [tomllib.loads(f"v = {text}")["v"] for row in KEYS for text in (row[4], row[6])]
plausible = st.sampled_from(PLAUSIBLE) | values


def typed_body(type_name: str) -> st.SearchStrategy[dict[str, Any]]:
    """A [services.NAME] table of type_name, its keys all known (values good or not)."""
    own = [*setting_fields(PolicySettings), *setting_fields(types()[type_name].settings)]
    return st.fixed_dictionaries(
        {"listen": st.lists(listen_items, max_size=3), "type": st.just(type_name)},
        optional={key: plausible for key in own},
    )


body = st.sampled_from(sorted(types())).flatmap(typed_body) | st.dictionaries(keys, values, max_size=4)
configs = st.fixed_dictionaries(
    {},
    optional={
        "daemon": st.dictionaries(st.sampled_from(["log_format"]) | keys, plausible, max_size=2),
        "defaults": st.dictionaries(
            st.sampled_from(sorted(setting_fields(PolicySettings))) | keys, plausible, max_size=3
        ),
        "services": st.dictionaries(
            st.sampled_from(["echo", "greeting", "reverse", "lab"]) | st.text(max_size=6), body, max_size=3
        ),
    },
)


@given(configs)
def test_any_config_gives_a_config_or_one_config_error(raw: dict[str, Any]) -> None:
    text = "\n".join(f"{toml_key_or_string(k)} = {toml_value(v)}" for k, v in raw.items())
    try:
        config = loads(text, "fuzz.toml")
    except ConfigError as e:
        line = str(e)
        assert line.startswith("fuzz.toml: ")
        assert line.isprintable()
    else:
        assert config.services


@given(st.text(max_size=200))
def test_any_text_gives_a_config_or_one_config_error(text: str) -> None:
    try:
        loads(text, "fuzz.toml")
    except ConfigError as e:
        assert str(e).isprintable()


@given(st.binary(max_size=100))
def test_any_file_gives_a_config_or_one_config_error(data: bytes) -> None:
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".toml") as f:
        f.write(data)
        f.flush()
        try:
            load(f.name)
        except ConfigError as e:
            assert str(e).startswith(f"{f.name}: ")
            assert str(e).isprintable()


def test_deep_nesting_is_a_config_error() -> None:
    assert error("x = " + "[" * 5000 + "]" * 5000) == "f.toml: not valid TOML: arrays or tables nested too deeply"
