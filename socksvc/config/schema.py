"""
The keys every config shares: [daemon], and the policy keys valid in
[defaults] and in every [services.NAME] table. A service's own keys are
declared in its module (see L{socksvc.config.settings}).
"""

from __future__ import annotations

from typing import Any

import attrs

from socksvc.config.listen import ListenSpec, parse_listen
from socksvc.config.settings import (
    IPNetwork,
    _type_name,
    as_bool,
    as_choice,
    as_float,
    as_int,
    as_list,
    as_networks,
    setting,
)
from socksvc.util.files import read_regular_file
from socksvc.util.passwords import parse_password_file

MAX_LOG_BUFFER = 16 << 20
"""The largest [daemon] log_buffer (16 MiB): a bigger one only loses more lines in a crash."""

MAX_LOG_CLOSE_RATE = 1_000_000
"""The largest log_close_rate / log_close_burst (a ceiling that high is no ceiling: use 0)."""


def as_octal_mode(value: Any) -> str:
    """
    File permissions: a string of octal digits (C{"0640"}, C{"640"},
    C{"0o640"}) or a TOML integer (C{0o640}), owner-writable, with no
    execute, setuid, setgid or sticky bit (a log file); gives four octal
    digits, C{"0640"}.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f'expected an octal string such as "0640", got {_type_name(value)}')
    if isinstance(value, str):
        digits = value.removeprefix("0o")
        if not digits or len(digits) > 4 or any(c not in "01234567" for c in digits):
            raise ValueError('expected octal digits such as "0640"')
        value = int(digits, 8)
    if value & ~0o666 or not value & 0o200:
        raise ValueError('must be owner-writable with no execute or special bits, such as "0640" or "0644"')
    return f"{value:04o}"


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

    log_format: str = setting(
        "text", as_choice("text", "json"), 'log lines as "text" or "json" (one object a line, see docs/logging.md)'
    )
    log_mode: str = setting(
        "0644",
        as_octal_mode,
        "permissions of a log file the daemon creates (twistd --logfile, twist --log-file, and at the reopen "
        'after SIGUSR1), whatever the umask: octal ("0640"), owner-writable, no execute bits; an existing '
        "file keeps its own",
    )
    log_buffer: int = setting(
        0,
        as_int(maximum=MAX_LOG_BUFFER),
        "bytes of log lines held and written in one go (like nginx's access_log buffer=); "
        "0 = every line written at once",
    )
    log_flush: float = setting(
        1.0,
        as_float(minimum=0.01, maximum=60.0),
        "seconds a buffered line waits at most before it is written (with log_buffer; "
        "warnings, errors and stopping flush at once)",
    )
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
    log_connections: bool = setting(
        True, as_bool, "a log line per connection when it closes (xinetd's log_on_success); refusals are always logged"
    )
    log_close_rate: float = setting(
        100.0,
        as_float(maximum=MAX_LOG_CLOSE_RATE),
        "close lines a second for this service; beyond it one summary line per 10 s gives the count "
        "and bytes; 0 = no ceiling",
    )
    log_close_burst: int = setting(
        0,
        as_int(maximum=MAX_LOG_CLOSE_RATE),
        "close lines allowed at once above log_close_rate; 0 = one second's worth",
    )
