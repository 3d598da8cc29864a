"""
Loading a config, as --check does (read, check, rehearse every service),
gives a Config or one config error line, never another exception: mutated
TOML from hypothesis, and the cases a 300-config fuzz run once found.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from socksvc.config.loader import DEFAULT_CONFIG, Config, ConfigError
from socksvc.daemon.errors import StartupError
from socksvc.services.catalogue import loads
from socksvc.tap import rehearse_config

ROOT = Path(__file__).resolve().parent.parent

SEEDS = [
    DEFAULT_CONFIG,
    (ROOT / "etc" / "socksvc.toml").read_text(),
    """
[defaults]
max_connections = 10
max_per_source = 2
idle_timeout = 5.5
max_rate = 3.0
max_rate_burst = 4
allow = ["127.0.0.0/8", "::1"]
deny = ["10.0.0.0/8"]

[services.echo]
listen = ["tcp:0:interface=127.0.0.1:backlog=9", "udp:0", "tcp6:0:interface=\\\\:\\\\:1"]
rate_per_source = 5.0
burst = 3
max_sources = 10
deny_source_ports = [1, 2, 3]
rate_exempt = ["127.0.0.0/8"]

[services.greeting]
listen = ["tcp:0"]
message = "hi {peer} on {hostname} at {time} ({service})"
send_timeout = 1.5

[services.reverse]
listen = ["tcp:0"]
max_line = 100

[services.chat]
listen = ["tcp:0"]
motd = "m"
nick_max = 10
rooms = ["a", "b"]
max_rooms = 5
history = 3
announce_max = 4
flood_burst = 2
flood_rate = 1.5
flood_kick = 9
max_line = 64
send_queue_max = 2048
stall_timeout = 2
reserved_nicks = ["x"]
timestamps = true
allow_create = false
""",
]

NUMBERS = re.compile(r"(?<![\w.])-?\d+(\.\d+)?(?![\w.])")
STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')

odd_numbers = (
    st.sampled_from(
        [
            "0",
            "-1",
            "1e400",
            "-0.0",
            "nan",
            "inf",
            "9" * 400,
            "9" * 4300,
            "9" * 5000,
            "1.7976931348623157e308",
            "65536",
            "4294967296",
            "true",
            '"7"',
            "[]",
            "{}",
            "1979-05-27T07:32:00Z",
        ]
    )
    | st.integers().map(str)
    | st.floats(allow_nan=False, allow_infinity=False).map(repr)
)

odd_strings = st.sampled_from(
    [
        '""',
        '"/dev/zero"',
        '"/"',
        '"/proc/self/mem"',
        '"tcp:0:backlog=99999999999999999999999"',
        '"unix:/nonexistent/dir/x.sock"',
        '"ssl:0:privateKey=/dev/zero"',
        '"ssl:0:privateKey=/dev/stdin"',
        '"{peer:>999999999}"',
        '"\\u0000"',
        '"x"',
    ]
) | st.text(max_size=40).map(lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"')


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["number", "string", "delete", "insert", "nest", "line", "table"]))
        if kind == "number" and (numbers := list(NUMBERS.finditer(text))):
            m = draw(st.sampled_from(numbers))
            text = text[: m.start()] + draw(odd_numbers) + text[m.end() :]
        elif kind == "string" and (strings := list(STRINGS.finditer(text))):
            m = draw(st.sampled_from(strings))
            text = text[: m.start()] + draw(odd_strings) + text[m.end() :]
        elif kind == "delete" and text:
            start = draw(st.integers(0, len(text) - 1))
            text = text[:start] + text[start + draw(st.integers(1, 20)) :]
        elif kind == "insert":
            at = draw(st.integers(0, len(text)))
            text = text[:at] + draw(st.text(max_size=10)) + text[at:]
        elif kind == "nest":
            depth = draw(st.sampled_from([50, 1000, 20000]))
            text += "\n[" + ".".join(["a"] * depth) + "]\n"
        elif kind == "line":
            lines = text.splitlines()
            if lines:
                text += "\n" + draw(st.sampled_from(lines)) + "\n"
        else:
            name = draw(st.sampled_from(["echo", "greeting", "reverse", "chat", "x", "services", "daemon"]))
            text += f'\n[services.{name}]\nlisten = ["tcp:0"]\n'
    return text


def check(text: str) -> Config | None:
    """What --check does after reading the file: load, then rehearse every service."""
    try:
        config = loads(text, "fuzz.toml")
    except ConfigError as e:
        assert "\n" not in str(e) and str(e).startswith("fuzz.toml: ")
        return None
    try:
        rehearse_config(config)
    except StartupError as e:
        assert "\n" not in e.line
        return None
    return config


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated())
def test_mutated_configs_load_or_give_one_line(text: str) -> None:
    check(text)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("x = " + "9" * 5000 + "\n", "fuzz.toml: not valid TOML: an integer too long to read"),
        (
            "[" + ".".join(["a"] * 20000) + "]\n",
            "fuzz.toml: a = {...}: unknown key (known: daemon, defaults, services)",
        ),
        (
            '[services.echo]\nlisten = ["tcp:0"]\nmax_rate_burst = ' + "9" * 400 + "\n",
            "must be at most 1000000",
        ),
        ('[services.chat]\nlisten = ["tcp:0"]\nflood_burst = ' + "9" * 400 + "\n", "must be at most 10000"),
        ('[services.chat]\nlisten = ["tcp:0"]\nflood_rate = -' + "9" * 400 + "\n", "must be at least 0"),
        ('[services.echo]\nlisten = ["tcp:0:backlog=' + "9" * 400 + '"]\n', "is not a number from 1 to 65535"),
        ('[services.echo]\nlisten = ["ssl:0:privateKey=/dev/zero"]\n', "cannot read key file /dev/zero"),
        ('[services.greeting]\nlisten = ["tcp:0"]\nquotes = "/dev/zero"\n', "not a regular file"),
        ("a = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ],
)
def test_what_fuzzing_found_is_one_line(text: str, reason: str) -> None:
    with pytest.raises(ConfigError) as e:
        loads(text, "fuzz.toml")
    assert reason in str(e.value)
    assert "\n" not in str(e.value)
