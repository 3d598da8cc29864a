"""
Typed, self-describing settings.

Every settings class in socksvc is an attrs class whose fields are made with
L{setting}: the field carries a parser that turns a TOML value into the typed
value (raising L{ValueError} with a short reason) and a one-line doc. The
config loader (L{socksvc.config.loader}) walks these fields generically, so a service
module declares its keys once, next to the code that uses them, and the
loader, the error messages and the docs all follow.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import attrs

T = TypeVar("T")
Parser = Callable[[Any], Any]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_META = "socksvc"


@attrs.frozen
class SettingMeta:
    """What the loader needs to know about one key."""

    parse: Parser
    doc: str


def setting(default: T, parse: Parser, doc: str) -> T:
    """
    Declare one config key on an attrs settings class.

    @param default: the typed default value (already parsed).
    @param parse: turns a raw TOML value into the typed value, raising
        L{ValueError} with a short reason when it cannot.
    @param doc: one line for the docs.
    """
    result: T = attrs.field(default=default, metadata={_META: SettingMeta(parse, doc)})
    return result


def setting_fields(cls: type) -> dict[str, tuple[attrs.Attribute[Any], SettingMeta]]:
    """The keys a settings class accepts, by name."""
    out: dict[str, tuple[attrs.Attribute[Any], SettingMeta]] = {}
    for field in attrs.fields(cls):
        meta = field.metadata.get(_META)
        if isinstance(meta, SettingMeta):
            out[field.name] = (field, meta)
    return out


def build_settings(cls: type[T], raw: dict[str, Any]) -> T:
    """
    Build C{cls} from already-parsed values (keys not given take their
    defaults).
    """
    return cls(**raw)


# -- parsers -----------------------------------------------------------------


def _type_name(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def as_str(*, max_len: int | None = None, nonempty: bool = False) -> Parser:
    def parse(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {_type_name(value)}")
        if nonempty and not value:
            raise ValueError("must not be empty")
        if max_len is not None and len(value.encode("utf-8")) > max_len:
            raise ValueError(f"longer than {max_len} bytes")
        return value

    return parse


def as_choice(*choices: str) -> Parser:
    def parse(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {_type_name(value)}")
        if value not in choices:
            raise ValueError("must be one of " + ", ".join(f'"{c}"' for c in choices))
        return value

    return parse


def as_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_type_name(value)}")
    return value


def as_int(*, minimum: int | None = 0, maximum: int | None = None) -> Parser:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {_type_name(value)}")
        if minimum is not None and value < minimum:
            raise ValueError(f"must be at least {minimum}")
        if maximum is not None and value > maximum:
            raise ValueError(f"must be at most {maximum}")
        return value

    return parse


def as_float(*, minimum: float | None = 0.0, maximum: float | None = None) -> Parser:
    def parse(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {_type_name(value)}")
        result = float(value)
        if not math.isfinite(result):
            raise ValueError("must be a finite number")
        if minimum is not None and result < minimum:
            raise ValueError(f"must be at least {minimum:g}")
        if maximum is not None and result > maximum:
            raise ValueError(f"must be at most {maximum:g}")
        return result

    return parse


def as_list(item: Parser, *, nonempty: bool = False) -> Parser:
    """A TOML array whose items each go through C{item}; gives a tuple."""

    def parse(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {_type_name(value)}")
        if nonempty and not value:
            raise ValueError("must not be empty")
        out = []
        for index, element in enumerate(value):
            try:
                out.append(item(element))
            except ValueError as e:
                raise ItemError(index, element, str(e)) from None
        return tuple(out)

    return parse


class ItemError(ValueError):
    """A list item was bad: the loader names it as C{key[index]}."""

    def __init__(self, index: int, value: object, reason: str) -> None:
        super().__init__(reason)
        self.index = index
        self.value = value
        self.reason = reason


def parse_network(value: Any) -> IPNetwork:
    """A CIDR (or a bare address, meaning one host), IPv4 or IPv6."""
    if not isinstance(value, str):
        raise ValueError(f"expected a CIDR string, got {_type_name(value)}")
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ValueError("not an IPv4 or IPv6 address or CIDR") from None


as_networks = as_list(parse_network)


def as_port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a port number, got {_type_name(value)}")
    if not 0 <= value <= 65535:
        raise ValueError("a port is 0 to 65535")
    return value


def closest(word: str, candidates: Sequence[str]) -> str | None:
    """The candidate a typo most likely meant, if any is close."""
    import difflib

    found = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return found[0] if found else None
