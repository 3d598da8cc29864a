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

# Shared upper bounds (see L{as_int}): generous, and each one tested to run.
MAX_COUNT = 1_000_000
"""Connections, sources, bursts: far above what one process can hold open (its descriptors)."""
MAX_RATE = 1_000_000.0
"""Events a second."""
MAX_TIMEOUT = 7 * 86400.0
"""Seconds: a week (where 0 means never, no longer timeout is needed)."""


@attrs.frozen
class SettingMeta:
    """What the loader needs to know about one key."""

    parse: Parser
    doc: str
    path: bool = False
    """The value is a file path: the loader resolves a relative one against the config file's directory."""
    conflicts: tuple[str, ...] = ()
    """Keys of the same table that may not be set together with this one."""
    requires: tuple[str, ...] = ()
    """Keys of the same table that must be set (given, and not the empty string) for this one to be given."""


def setting(
    default: T,
    parse: Parser,
    doc: str,
    *,
    path: bool = False,
    conflicts: tuple[str, ...] = (),
    requires: tuple[str, ...] = (),
) -> T:
    """
    Declare one config key on an attrs settings class.

    @param default: the typed default value (already parsed).
    @param parse: turns a raw TOML value into the typed value, raising
        L{ValueError} with a short reason when it cannot. Numbers go through
        L{as_int} or L{as_float}, which take both bounds: every number a
        config can hold has a range the daemon is known to run with.
    @param doc: one line for the docs.
    @param path: the value is a file path (a string); the loader makes a
        relative one absolute, against the directory of the config file,
        before C{parse} sees it.
    @param conflicts: keys of the same table that cannot be set with this one
        (both given is a config error).
    @param requires: keys of the same table this one needs: giving this
        one while one of them is missing (or "") is a config error.
    """
    meta = SettingMeta(parse, doc, path, conflicts, requires)
    result: T = attrs.field(default=default, metadata={_META: meta})
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


@attrs.frozen
class StrParser:
    """A string, at most C{max_len} UTF-8 bytes (None: only the config file's size bounds it)."""

    max_len: int | None = None
    nonempty: bool = False

    def __call__(self, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {_type_name(value)}")
        if self.nonempty and not value:
            raise ValueError("must not be empty")
        if self.max_len is not None and len(value.encode("utf-8", "surrogatepass")) > self.max_len:
            raise ValueError(f"longer than {self.max_len} bytes")
        return value


def as_str(*, max_len: int | None = None, nonempty: bool = False) -> StrParser:
    return StrParser(max_len, nonempty)


@attrs.frozen
class ChoiceParser:
    """One of a few strings."""

    choices: tuple[str, ...]

    def __call__(self, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {_type_name(value)}")
        if value not in self.choices:
            raise ValueError("must be one of " + ", ".join(f'"{c}"' for c in self.choices))
        return value


def as_choice(*choices: str) -> ChoiceParser:
    return ChoiceParser(tuple(choices))


def as_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_type_name(value)}")
    return value


@attrs.frozen
class IntParser:
    """An integer from C{minimum} to C{maximum}, both included."""

    minimum: int
    maximum: int

    def __call__(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {_type_name(value)}")
        if value < self.minimum:
            raise ValueError(f"must be at least {self.minimum}")
        if value > self.maximum:
            raise ValueError(f"must be at most {self.maximum}")
        return value


def as_int(*, minimum: int = 0, maximum: int) -> IntParser:
    """
    An integer in [C{minimum}, C{maximum}]. The maximum is required: it is
    the largest value the daemon is known (and tested) to run with, so that
    a value --check accepts can never make the start, or a connection, fail.
    """
    if minimum > maximum:
        raise ValueError(f"as_int: minimum {minimum} is above maximum {maximum}")
    return IntParser(minimum, maximum)


@attrs.frozen
class FloatParser:
    """A finite number from C{minimum} to C{maximum}, both included (TOML integers too)."""

    minimum: float
    maximum: float

    def __call__(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {_type_name(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite number")
        # Compared before float(): float() of a 400-digit integer raises
        # OverflowError (Python compares an int with a float exactly).
        if value < self.minimum:
            raise ValueError(f"must be at least {self.minimum:g}")
        if value > self.maximum:
            raise ValueError(f"must be at most {self.maximum:g}")
        return float(value)


def as_float(*, minimum: float = 0.0, maximum: float) -> FloatParser:
    """A finite number in [C{minimum}, C{maximum}]; the maximum is required (see L{as_int})."""
    if minimum > maximum:
        raise ValueError(f"as_float: minimum {minimum} is above maximum {maximum}")
    return FloatParser(float(minimum), float(maximum))


@attrs.frozen
class ListParser:
    """A TOML array whose items each go through C{item}; gives a tuple."""

    item: Parser
    nonempty: bool = False

    def __call__(self, value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {_type_name(value)}")
        if self.nonempty and not value:
            raise ValueError("must not be empty")
        out = []
        for index, element in enumerate(value):
            try:
                out.append(self.item(element))
            except ValueError as e:
                raise ItemError(index, element, str(e)) from None
        return tuple(out)


def as_list(item: Parser, *, nonempty: bool = False) -> ListParser:
    """A TOML array whose items each go through C{item}; gives a tuple."""
    return ListParser(item, nonempty)


class SecretError(ValueError):
    """
    A parser's refusal of a value that holds a secret (a password in a
    URL): the loader's error line names the key and the reason, never the
    value.
    """


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
