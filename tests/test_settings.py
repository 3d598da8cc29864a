"""The typed setting parsers of socksvc.config.settings: good values, bad values, and fuzz."""

from __future__ import annotations

import ipaddress
import math
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from socksvc.config.settings import (
    ItemError,
    as_bool,
    as_choice,
    as_float,
    as_int,
    as_list,
    as_networks,
    as_port,
    as_str,
    build_settings,
    closest,
    parse_network,
    setting,
    setting_fields,
)

# Anything tomllib can produce (and a few things it cannot).
toml_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.datetimes()
    | st.dates()
    | st.times(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=8,
)

PARSERS = {
    "str": as_str(),
    "str_short": as_str(max_len=4, nonempty=True),
    "choice": as_choice("text", "json"),
    "bool": as_bool,
    "int": as_int(maximum=10**6),
    "int_range": as_int(minimum=1, maximum=10),
    "float": as_float(maximum=1e6),
    "float_range": as_float(minimum=0.5, maximum=2),
    "list": as_list(as_int(maximum=9), nonempty=True),
    "network": parse_network,
    "networks": as_networks,
    "port": as_port,
}


@pytest.mark.parametrize("name", sorted(PARSERS))
@settings(max_examples=40)
@given(value=toml_values)
def test_parsers_raise_only_value_error(name: str, value: Any) -> None:
    try:
        PARSERS[name](value)
    except ValueError as e:
        assert str(e)
        assert "\n" not in str(e)


def test_as_str() -> None:
    assert as_str()("x") == "x"
    assert as_str()("") == ""
    with pytest.raises(ValueError, match="expected a string, got an integer"):
        as_str()(1)
    with pytest.raises(ValueError, match="must not be empty"):
        as_str(nonempty=True)("")
    # The limit counts UTF-8 bytes, not characters.
    assert as_str(max_len=4)("\u00e9\u00e9") == "\u00e9\u00e9"
    with pytest.raises(ValueError, match="longer than 4 bytes"):
        as_str(max_len=4)("\u00e9\u00e9x")


def test_as_choice() -> None:
    parse = as_choice("text", "json")
    assert parse("json") == "json"
    with pytest.raises(ValueError, match='must be one of "text", "json"'):
        parse("xml")
    with pytest.raises(ValueError, match="expected a string, got a boolean"):
        parse(True)


def test_as_bool() -> None:
    assert as_bool(True) is True
    assert as_bool(False) is False
    for bad in (1, 0, "true", None):
        with pytest.raises(ValueError, match="expected true or false"):
            as_bool(bad)


def test_as_int() -> None:
    assert as_int(maximum=10)(0) == 0
    assert as_int(minimum=-9, maximum=10)(-5) == -5
    with pytest.raises(ValueError, match="must be at least 0"):
        as_int(maximum=10)(-1)
    with pytest.raises(ValueError, match="must be at most 10"):
        as_int(maximum=10)(11)
    with pytest.raises(ValueError, match="must be at most 10"):
        as_int(maximum=10)(10**400)
    # bool is an int in Python, not in TOML.
    with pytest.raises(ValueError, match="expected an integer, got a boolean"):
        as_int(maximum=10)(True)
    with pytest.raises(ValueError, match="expected an integer, got a number"):
        as_int(maximum=10)(1.5)
    # Every integer setting states its range.
    with pytest.raises(TypeError):
        as_int()  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="minimum 5 is above maximum 4"):
        as_int(minimum=5, maximum=4)


def test_as_float() -> None:
    parse = as_float(maximum=100)
    assert parse(3) == 3.0
    assert isinstance(parse(3), float)
    assert parse(0.25) == 0.25
    with pytest.raises(ValueError, match="must be a finite number"):
        parse(math.inf)
    with pytest.raises(ValueError, match="must be a finite number"):
        parse(math.nan)
    with pytest.raises(ValueError, match="must be at least 0"):
        parse(-0.5)
    with pytest.raises(ValueError, match="must be at most 2"):
        as_float(maximum=2)(2.5)
    with pytest.raises(ValueError, match="expected a number, got a boolean"):
        parse(False)
    with pytest.raises(ValueError, match="expected a number, got a string"):
        parse("1")
    # A 400-digit integer is out of range, not an OverflowError from float().
    with pytest.raises(ValueError, match="must be at most 100"):
        parse(10**400)
    with pytest.raises(ValueError, match="must be at least 0"):
        parse(-(10**400))
    with pytest.raises(TypeError):
        as_float()  # type: ignore[call-arg]


def test_as_list_names_the_bad_item() -> None:
    parse = as_list(as_int(maximum=9))
    assert parse([1, 2]) == (1, 2)
    assert parse([]) == ()
    with pytest.raises(ItemError) as e:
        parse([1, "x", 3])
    assert e.value.index == 1
    assert e.value.value == "x"
    assert e.value.reason == "expected an integer, got a string"
    with pytest.raises(ValueError, match="expected a list, got a string"):
        parse("1,2")
    with pytest.raises(ValueError, match="must not be empty"):
        as_list(as_int(maximum=9), nonempty=True)([])


def test_parse_network() -> None:
    assert parse_network("10.0.0.0/8") == ipaddress.ip_network("10.0.0.0/8")
    # A bare address is one host; host bits are forgiven.
    assert parse_network("192.0.2.7") == ipaddress.ip_network("192.0.2.7/32")
    assert parse_network("192.0.2.7/24") == ipaddress.ip_network("192.0.2.0/24")
    assert parse_network(" ::1 ") == ipaddress.ip_network("::1/128")
    with pytest.raises(ValueError, match="not an IPv4 or IPv6 address or CIDR"):
        parse_network("10.0.0.0/33")
    with pytest.raises(ValueError, match="expected a CIDR string"):
        parse_network(10)


def test_as_port() -> None:
    assert as_port(0) == 0
    assert as_port(65535) == 65535
    with pytest.raises(ValueError, match="a port is 0 to 65535"):
        as_port(65536)
    with pytest.raises(ValueError, match="a port is 0 to 65535"):
        as_port(-1)
    with pytest.raises(ValueError, match="expected a port number"):
        as_port("7")


@given(st.integers(min_value=-(2**70), max_value=2**70))
def test_as_port_range_property(n: int) -> None:
    if 0 <= n <= 65535:
        assert as_port(n) == n
    else:
        with pytest.raises(ValueError):
            as_port(n)


def test_closest() -> None:
    assert closest("max_conections", ["max_connections", "max_per_source"]) == "max_connections"
    assert closest("zzzz", ["max_connections"]) is None
    assert closest("x", []) is None


@attrs.frozen
class _Example:
    count: int = setting(3, as_int(maximum=9), "how many")
    name: str = setting("n", as_str(), "what")
    plain: int = 0  # not a setting: the loader must not see it


def test_setting_fields_and_build() -> None:
    fields = setting_fields(_Example)
    assert sorted(fields) == ["count", "name"]
    field, meta = fields["count"]
    assert field.default == 3
    assert meta.doc == "how many"
    assert meta.parse(4) == 4
    built = build_settings(_Example, {"name": "x"})
    assert built == _Example(count=3, name="x")
