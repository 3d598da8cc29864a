"""
The keys every config shares: [daemon], and the policy keys valid in
[defaults] and in every [services.NAME] table. A service's own keys are
declared in its module (see L{socksvc.config.settings}).
"""

from __future__ import annotations

from typing import Any

import attrs

from socksvc.config.listen import ListenSpec, parse_listen
from socksvc.config.settings import IPNetwork, as_choice, as_float, as_int, as_list, as_networks, setting
from socksvc.util.files import read_regular_file
from socksvc.util.passwords import parse_password_file

MAX_PASSWORD_FILE = 1 << 20
"""A password file is read whole, at load and on every reload."""


def parse_admin_listen(value: Any) -> ListenSpec:
    """A stream listen spec for the admin HTTP listener (no udp:)."""
    spec = parse_listen(value)
    if spec.kind == "datagram":
        raise ValueError("the admin listener serves HTTP: a stream listen spec (tcp, tcp6, unix, ssl, systemd)")
    return spec


@attrs.frozen
class PasswordFile:
    """A password file for the admin listener's basic auth, read when the config is loaded."""

    path: str
    users: tuple[tuple[str, str], ...]
    """(name, $scrypt$ hash) pairs, in file order."""


def parse_password_file_key(value: Any) -> PasswordFile | None:
    """Read and check a password file (see L{socksvc.util.passwords}); "" = no auth."""
    if not isinstance(value, str):
        raise ValueError("expected a file path string")
    if not value:
        return None
    try:
        data = read_regular_file(value, MAX_PASSWORD_FILE)
    except (OSError, ValueError) as e:  # ValueError: not a regular file, or a NUL in the path
        raise ValueError(f"cannot read password file: {getattr(e, 'strerror', None) or e}") from None
    if len(data) > MAX_PASSWORD_FILE:
        raise ValueError(f"password file is over {MAX_PASSWORD_FILE >> 20} MiB")
    try:
        users = parse_password_file(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("password file is not UTF-8 text") from None
    except ValueError as e:
        raise ValueError(f"password file: {e}") from None
    return PasswordFile(value, tuple(users.items()))


@attrs.frozen
class DaemonSettings:
    """Keys of the [daemon] table."""

    log_format: str = setting("text", as_choice("text", "json"), 'log lines as "text" or "json" (one object a line)')
    http: tuple[ListenSpec, ...] = setting(
        (),
        as_list(parse_admin_listen),
        "admin HTTP listeners (stream listen specs): /metrics, the status page /, /status.json; read-only",
    )
    http_auth: PasswordFile | None = setting(
        None,
        parse_password_file_key,
        "file of NAME:HASH lines (`socksvc passwd NAME`): the admin listener asks for HTTP basic auth",
    )


@attrs.frozen
class PolicySettings:
    """Keys valid in [defaults] and in every [services.NAME] table."""

    max_connections: int = setting(1024, as_int(), "connections open at once for this service; 0 = no limit")
    max_per_source: int = setting(
        64, as_int(), "connections open at once from one IPv4 address or IPv6 /64; 0 = no limit"
    )
    idle_timeout: float = setting(300.0, as_float(), "seconds without input before a connection is aborted; 0 = never")
    allow: tuple[IPNetwork, ...] = setting((), as_networks, "CIDRs allowed to connect; empty = everyone")
    deny: tuple[IPNetwork, ...] = setting((), as_networks, "CIDRs refused (checked before allow)")
    max_rate: float = setting(0.0, as_float(), "new connections per second for this service; 0 = no limit")
    max_rate_burst: int = setting(0, as_int(), "connections allowed at once above max_rate; 0 = one second's worth")
