"""
The config file: TOML in, typed and checked settings out.

Every error stops here with one line naming the file, the key and the value
(L{ConfigError}), with "did you mean" when a known key is close. Nothing
after L{load} sees raw TOML.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Mapping
from typing import Any, Protocol

import attrs

from socksvc.config.listen import CONFIG_DIR, ListenSpec, parse_listen, parse_systemd_spec
from socksvc.config.schema import DaemonSettings, PolicySettings
from socksvc.config.settings import ItemError, SecretError, closest, setting_fields
from socksvc.util.files import read_regular_file
from socksvc.wire import (
    ADMIN_PORT,
    CHARGEN_PORT,
    CHAT_IRC_PORT,
    CHAT_PORT,
    CHAT_WEB_PORT,
    DAYTIME_PORT,
    DEFAULT_INTERFACE,
    DISCARD_PORT,
    ECHO_PORT,
    GREETING_PORT,
    POP3_PORT,
    REVERSE_PORT,
    SMTP_PORT,
    TIME_PORT,
)

DEFAULT_SOURCE = "<embedded default>"

MAX_CONFIG_FILE = 1 << 20
"""A config file is read whole; anything bigger is a mistake (a log file, a disk image)."""

MAX_SERVICE_NAME = 64
"""Longest [services.NAME]: it goes in log lines, STATUS= and a greeting's {service} (checked at 64)."""

SERVICE_NAME = re.compile(r"[A-Za-z0-9_.-]+")

_LO = DEFAULT_INTERFACE
DEFAULT_CONFIG = f"""\
# The embedded default: every service on {_LO} (see docs/architecture.md).
[daemon]
log_format = "text"
http = ["tcp:{ADMIN_PORT}:interface={_LO}"]

[services.echo]
listen = ["tcp:{ECHO_PORT}:interface={_LO}", "udp:{ECHO_PORT}:interface={_LO}"]

[services.greeting]
listen = ["tcp:{GREETING_PORT}:interface={_LO}", "udp:{GREETING_PORT}:interface={_LO}"]

[services.reverse]
listen = ["tcp:{REVERSE_PORT}:interface={_LO}"]

[services.chat]
listen = ["tcp:{CHAT_PORT}:interface={_LO}"]
irc = ["tcp:{CHAT_IRC_PORT}:interface={_LO}"]
web = ["tcp:{CHAT_WEB_PORT}:interface={_LO}"]

[services.discard]
listen = ["tcp:{DISCARD_PORT}:interface={_LO}", "udp:{DISCARD_PORT}:interface={_LO}"]

[services.daytime]
listen = ["tcp:{DAYTIME_PORT}:interface={_LO}", "udp:{DAYTIME_PORT}:interface={_LO}"]

[services.chargen]
listen = ["tcp:{CHARGEN_PORT}:interface={_LO}"]

[services.time]
listen = ["tcp:{TIME_PORT}:interface={_LO}", "udp:{TIME_PORT}:interface={_LO}"]

# Mail is filed in $XDG_DATA_HOME/socksvc/mail (~/.local/share/socksvc/mail),
# or $STATE_DIRECTORY/mail under systemd; see docs/mail.md.
[services.smtp]
listen = ["tcp:{SMTP_PORT}:interface={_LO}"]
announce = "lobby"

[services.pop3]
listen = ["tcp:{POP3_PORT}:interface={_LO}"]
"""


class ServiceSchema(Protocol):
    """What the loader needs of a service type (L{socksvc.core.service.ServiceType} is one)."""

    @property
    def name(self) -> str: ...

    @property
    def settings(self) -> type: ...

    @property
    def doc(self) -> str: ...

    @property
    def extra_streams(self) -> Mapping[str, Any]:
        """Extra stream listen keys (chat: irc, web), each with a C{doc}."""

    @property
    def policy_defaults(self) -> Mapping[str, Any]: ...

    def serves(self, kind: str) -> bool: ...

    def transports(self) -> str: ...


Catalogue = Mapping[str, ServiceSchema]
"""Service types by name: the loader is given it (config never imports the services)."""


@attrs.frozen
class ServiceConfig:
    """One [services.NAME] table, checked."""

    name: str
    type: str
    listen: tuple[ListenSpec, ...]
    policy: PolicySettings
    settings: Any
    extra: tuple[tuple[str, tuple[ListenSpec, ...]], ...] = ()
    """The type's extra stream listen lists that the table gives (key, specs), in the type's order."""

    def listens(self) -> list[tuple[str, int, ListenSpec]]:
        """Every listen spec as (key, index in its list, spec): C{listen} first, then the extra lists."""
        out = [("listen", i, spec) for i, spec in enumerate(self.listen)]
        for key, specs in self.extra:
            out += [(key, i, spec) for i, spec in enumerate(specs)]
        return out


@attrs.frozen
class Config:
    """A whole config file, checked."""

    source: str
    daemon: DaemonSettings
    services: tuple[ServiceConfig, ...]
    admin_policy: PolicySettings = attrs.field(factory=PolicySettings)
    """The admin listener's policy: [defaults], then [daemon]'s http_KEY overrides (see L{ADMIN_POLICY_PREFIX})."""

    def service(self, name: str) -> ServiceConfig:
        for svc in self.services:
            if svc.name == name:
                return svc
        raise KeyError(name)


def _show(value: Any) -> str:
    """A value as TOML would write it (near enough), for error lines."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=_show_other)
    except (TypeError, ValueError, RecursionError):
        # Nested too deeply for json (a 20,000-deep table), or not JSON at
        # all: repr would recurse just the same, so only say what it is.
        text = "{...}" if isinstance(value, dict) else "[...]" if isinstance(value, list) else type(value).__name__
    if len(text) > 80:
        text = text[:77] + "..."
    return text


def _show_other(value: Any) -> str:
    """TOML dates and times as TOML writes them; a file read at load time (it has a path) as its path."""
    isoformat = getattr(value, "isoformat", None)
    if callable(isoformat):
        return str(isoformat())
    path = getattr(value, "path", None)
    if isinstance(path, str):
        return path
    raise TypeError(type(value).__name__)


def _one_line(text: str) -> str:
    """Control characters (a newline in a quoted key, say) escaped: the error stays one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class ConfigError(Exception):
    """A config problem: C{str()} is the one line to show the user."""

    def __init__(self, source: str, key: str | None, value: Any, reason: str) -> None:
        self.source = source
        self.key = key
        self.value = value
        self.reason = reason
        if key is None:
            line = f"{source}: {reason}"
        elif value is _MISSING:
            line = f"{source}: {key}: {reason}"
        else:
            line = f"{source}: {key} = {_show(value)}: {reason}"
        super().__init__(_one_line(line))


_MISSING: Any = object()

ADMIN_POLICY_PREFIX = "http_"
"""[daemon] http_KEY sets policy key KEY (allow, deny, max_connections...) for the admin listener only."""


def load(path: str | None, types: Catalogue) -> Config:
    """Read and check a config file; C{None} means the embedded default."""
    if path is None:
        return loads(DEFAULT_CONFIG, DEFAULT_SOURCE, types)
    return loads(read_text(path), path, types, config_dir(path))


def read_text(path: str) -> str:
    """
    A config file's text, read once (the daemon's workers are given these
    very characters); L{ConfigError} when it cannot be read, is too big or
    is not UTF-8.
    """
    try:
        data = read_regular_file(path, MAX_CONFIG_FILE)
    except (OSError, ValueError) as e:  # ValueError: not a regular file, or a NUL in the path
        reason = getattr(e, "strerror", None) or e
        raise ConfigError(path, None, _MISSING, f"cannot read config file: {reason}") from None
    if len(data) > MAX_CONFIG_FILE:
        raise ConfigError(path, None, _MISSING, f"config file is over {MAX_CONFIG_FILE >> 20} MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(path, None, _MISSING, f"not UTF-8 text (byte {e.start})") from None
    return text


def config_dir(path: str) -> str:
    """Where a config file's relative paths start: its directory."""
    return os.path.dirname(os.path.abspath(path))


def loads(text: str, source: str, types: Catalogue, base_dir: str | None = None) -> Config:
    """
    Check config text; C{source} names it in error lines. Relative paths in
    it (listen specs, files) are taken from C{base_dir}: the config file's
    directory; None is the working directory now.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(source, None, _MISSING, f"not valid TOML: {e}") from None
    except RecursionError:
        raise ConfigError(source, None, _MISSING, "not valid TOML: arrays or tables nested too deeply") from None
    except ValueError as e:
        # int() inside tomllib: "Exceeds the limit (4300 digits) for integer string conversion..."
        reason = "an integer too long to read" if "digits" in str(e) else str(e).split(";")[0]
        raise ConfigError(source, None, _MISSING, f"not valid TOML: {reason}") from None
    checker = _Checker(source, types, base_dir)
    # Listen specs parsed by a setting's own parser ([daemon] http) find the directory here.
    token = CONFIG_DIR.set(checker.base_dir)
    try:
        return checker.config(raw)
    except RecursionError:
        raise ConfigError(source, None, _MISSING, "tables nested too deeply") from None
    finally:
        CONFIG_DIR.reset(token)


class _Checker:
    def __init__(self, source: str, types: Catalogue, base_dir: str | None) -> None:
        self.source = source
        self.types = types
        self.base_dir = base_dir if base_dir is not None else os.getcwd()

    def fail(self, key: str | None, value: Any, reason: str) -> ConfigError:
        return ConfigError(self.source, key, value, reason)

    def unknown(self, table: str, key: str, value: Any, known: list[str]) -> ConfigError:
        hint = closest(key, known)
        where = f"{table}.{key}" if table else key
        reason = "unknown key"
        if hint:
            reason += f'; did you mean "{hint}"?'
        elif known:
            reason += " (known: " + ", ".join(sorted(known)) + ")"
        return self.fail(where, value, reason)

    def table(self, key: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, value, "expected a table")
        return value

    def config(self, raw: dict[str, Any]) -> Config:
        for key, value in raw.items():
            if key not in ("daemon", "defaults", "services"):
                raise self.unknown("", key, value, ["daemon", "defaults", "services"])
        policy_keys = setting_fields(PolicySettings)
        daemon_raw = dict(self.table("daemon", raw.get("daemon", {})))
        admin_keys = {ADMIN_POLICY_PREFIX + k: v for k, v in policy_keys.items()}
        admin_raw = {key: daemon_raw.pop(key) for key in list(daemon_raw) if key in admin_keys}
        daemon = self.settings("daemon", DaemonSettings, daemon_raw, list(admin_keys))
        defaults_raw = self.table("defaults", raw.get("defaults", {}))
        for key, value in defaults_raw.items():
            if key not in policy_keys:
                raise self.unknown("defaults", key, value, list(policy_keys))
        defaults = self.values("defaults", policy_keys, defaults_raw)
        admin_values = dict(defaults)
        for key, value in self.values("daemon", admin_keys, admin_raw).items():
            admin_values[key.removeprefix(ADMIN_POLICY_PREFIX)] = value
        services_raw = self.table("services", raw.get("services", {}))
        if not services_raw:
            raise self.fail("services", _MISSING, "no services configured; add a [services.NAME] table")
        services = tuple(
            self.service(name, self.table(f"services.{name}", body), defaults) for name, body in services_raw.items()
        )
        self.check_clashes(services, daemon.http)
        return Config(source=self.source, daemon=daemon, services=services, admin_policy=PolicySettings(**admin_values))

    def values(self, table: str, fields: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in fields:
                continue
            _field, meta = fields[key]
            if meta.path and isinstance(value, str):
                value = self.resolve(value)
            try:
                out[key] = meta.parse(value)
            except ItemError as e:
                raise self.fail(f"{table}.{key}[{e.index}]", e.value, e.reason) from None
            except SecretError as e:
                raise self.fail(f"{table}.{key}", _MISSING, str(e)) from None  # the value holds a secret
            except ValueError as e:
                raise self.fail(f"{table}.{key}", value, str(e)) from None
        return out

    def resolve(self, path: str) -> str:
        """A path the config names, made absolute against the config file's directory."""
        if not path or "\0" in path:
            return path  # empty means unset; a NUL is refused by whoever opens it
        return os.path.normpath(os.path.join(self.base_dir, path))

    def settings(self, table: str, cls: type, raw: dict[str, Any], also: list[str] | None = None) -> Any:
        fields = setting_fields(cls)
        for key, value in raw.items():
            if key not in fields:
                raise self.unknown(table, key, value, [*fields, *(also or [])])
        for key in raw:
            for other in fields[key][1].conflicts:
                if other in raw:
                    raise self.fail(f"{table}.{key}", raw[key], f"set {other} or {key}, not both")
            for other in fields[key][1].requires:
                if raw.get(other, "") == "":
                    raise self.fail(f"{table}.{key}", raw[key], f"needs {other}: set {other}, or leave {key} out")
        values = self.values(table, fields, raw)
        try:
            return cls(**values)
        except ValueError as e:
            # Cross-field checks in a settings class's __attrs_post_init__.
            bad: str | None = getattr(e, "key", None)
            shown = values.get(bad, _MISSING) if bad else _MISSING
            raise self.fail(f"{table}.{bad}" if bad else table, shown, str(e)) from None

    def service(self, name: str, body: dict[str, Any], defaults: dict[str, Any]) -> ServiceConfig:
        table = f"services.{name}"
        if len(name) > MAX_SERVICE_NAME:
            raise self.fail(
                f"services.{name[:24]}...",
                _MISSING,
                f"service name is {len(name)} characters; at most {MAX_SERVICE_NAME}",
            )
        if not SERVICE_NAME.fullmatch(name):
            raise self.fail(table, _MISSING, "a service name takes only ASCII letters, digits, _ - and .")
        type_name = body.get("type", name)
        if not isinstance(type_name, str):
            raise self.fail(f"{table}.type", type_name, "expected a string")
        stype = self.types.get(type_name)
        if stype is None:
            hint = closest(type_name, list(self.types))
            reason = "unknown service type"
            reason += f'; did you mean "{hint}"?' if hint else " (known: " + ", ".join(sorted(self.types)) + ")"
            if "type" not in body:
                reason += f'; set type = "..." for a service named {name!r}'
            raise self.fail(f"{table}.type", type_name, reason)
        policy_fields = setting_fields(PolicySettings)
        own_fields = setting_fields(stype.settings)
        extra_keys = list(stype.extra_streams)
        known = ["type", "listen", *extra_keys, *policy_fields, *own_fields]
        for key, value in body.items():
            if key not in known:
                raise self.unknown(table, key, value, known)
        extra = tuple((k, self.listen(table, stype, body[k], k)) for k in extra_keys if k in body)
        # `listen` may be left out (or empty) when an extra list has a spec: a chat reachable only over IRC.
        others = any(specs for _, specs in extra)
        if "listen" not in body and not others:
            raise self.fail(f"{table}.listen", _MISSING, 'missing; give a list such as ["tcp:7007"]')
        listen = self.listen(table, stype, body.get("listen", []), "listen", others)
        policy_values = dict(stype.policy_defaults)  # the type's own defaults, under [defaults] and the table
        policy_values.update(defaults)
        policy_values.update(self.values(table, policy_fields, body))
        policy = PolicySettings(**policy_values)
        own_raw = {k: v for k, v in body.items() if k in own_fields}
        settings = self.settings(table, stype.settings, own_raw)
        return ServiceConfig(name=name, type=type_name, listen=listen, policy=policy, settings=settings, extra=extra)

    def listen(
        self, table: str, stype: ServiceSchema, value: Any, name: str = "listen", may_be_empty: bool = True
    ) -> tuple[ListenSpec, ...]:
        """A listen list: C{listen} (stream and datagram specs, as the type serves) or an extra one (stream only)."""
        key = f"{table}.{name}"
        if not isinstance(value, list):
            raise self.fail(key, value, 'expected a list of listen specs, such as ["tcp:7007"]')
        if not value and not may_be_empty:
            raise self.fail(key, value, "a service needs at least one listen spec")
        specs = []
        for i, item in enumerate(value):
            try:
                spec = parse_listen(item, self.base_dir)
            except ValueError as e:
                raise self.fail(f"{key}[{i}]", item, str(e)) from None
            if name != "listen":
                if spec.kind == "datagram":
                    raise self.fail(f"{key}[{i}]", item, f"{name} is served over stream listen specs only")
            elif not stype.serves(spec.kind):
                raise self.fail(f"{key}[{i}]", item, f"{stype.name} is served over {stype.transports()} only")
            specs.append(spec)
        return tuple(specs)

    def check_clashes(self, services: tuple[ServiceConfig, ...], admin: tuple[ListenSpec, ...] = ()) -> None:
        """Two listen specs that can never both bind (or adopt the same socket) stop the load."""
        seen: list[tuple[tuple[str, Any], str, str]] = []
        every = [(f"daemon.http[{i}]", spec) for i, spec in enumerate(admin)]
        every += [(f"services.{svc.name}.{key}[{i}]", spec) for svc in services for key, i, spec in svc.listens()]
        for where, spec in every:
            key = bind_key(spec)
            if key is None:
                continue
            space, address = key
            for other_space, other_address, other_where in seen:
                if space == other_space and same_address(space[0], address, other_address):
                    raise self.fail(where, spec.text, f"same address as {other_where}")
            seen.append((space, address, where))


def bind_key(spec: ListenSpec) -> BindKey | None:
    """
    ((namespace, port), address) of what a spec binds, or None when it binds
    nothing we can know about (port 0: the kernel picks one). The namespace
    is tcp, udp, unix (address: the path) or systemd (address: name=X or
    index=N of the inherited socket).
    """
    if spec.scheme == "systemd":
        try:
            name, index = parse_systemd_spec(spec.text)
        except ValueError:
            return None
        return ("systemd", None), (f"name={name}" if name is not None else f"index={index}")
    if spec.scheme == "unix":
        return ("unix", None), spec.path
    if not spec.port:
        return None
    space = "udp" if spec.scheme == "udp" else "tcp"
    interface = spec.interface or ("::" if spec.scheme == "tcp6" else "0.0.0.0")
    try:
        interface = ipaddress.ip_address(interface).compressed
    except ValueError:
        pass  # a name: compared as written
    return (space, spec.port), interface


def same_address(space: str, a: str, b: str) -> bool:
    """
    Do two binds in one namespace and port collide? The same address does;
    "::" is dual stack (Twisted leaves IPV6_V6ONLY off), so it takes every
    address; "0.0.0.0" takes every IPv4 address but no IPv6 one.
    """
    if a == b:
        return True
    if space not in ("tcp", "udp"):
        return False
    if "::" in (a, b):
        return True
    if "0.0.0.0" in (a, b):
        other = b if a == "0.0.0.0" else a
        return ":" not in other
    return False


BindKey = tuple[tuple[str, Any], str]


def keys_collide(a: BindKey | None, b: BindKey | None) -> bool:
    """Can two binds (L{bind_key}s) never be held at once: the same address, or one that takes the other's?"""
    if a is None or b is None:
        return False
    (space, address), (other_space, other_address) = a, b
    return space == other_space and same_address(space[0], address, other_address)
