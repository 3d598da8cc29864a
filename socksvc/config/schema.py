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
    MAX_COUNT,
    MAX_RATE,
    MAX_TIMEOUT,
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
from socksvc.util.files import read_setting_text
from socksvc.util.passwords import parse_password_file

MAX_LOG_BUFFER = 16 << 20
"""The largest [daemon] log_buffer (16 MiB): a bigger one only loses more lines in a crash."""

MAX_LOG_CLOSE_RATE = 1_000_000
"""The largest log_close_rate / log_close_burst (a ceiling that high is no ceiling: use 0)."""

MAX_WORKERS = 256
"""The most worker processes [daemon] workers may ask for."""

AUTO_WORKERS = 0
"""[daemon] workers = "auto", as stored: one worker per CPU this process may run on, counted at start."""


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


def as_workers(value: Any) -> int:
    """
    [daemon] workers: an integer from 1 to L{MAX_WORKERS}, or C{"auto"}
    (stored as L{AUTO_WORKERS}; see L{worker_count}).
    """
    if value == "auto":
        return AUTO_WORKERS
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f'expected a number of worker processes or "auto", got {_type_name(value)}')
    if not 1 <= value <= MAX_WORKERS:
        raise ValueError(f'must be 1 to {MAX_WORKERS}, or "auto"')
    return value


def worker_count(workers: int, cpus: int) -> int:
    """How many worker processes C{workers} means on a host whose process may run on C{cpus} CPUs."""
    if workers == AUTO_WORKERS:
        return max(1, min(cpus, MAX_WORKERS))
    return workers


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
    text = read_setting_text(value, MAX_PASSWORD_FILE, "password file")
    try:
        users = parse_password_file(text)
    except ValueError as e:
        raise ValueError(f"password file: {e}") from None
    return PasswordFile(value, tuple(users.items()))


@attrs.frozen
class DaemonSettings:
    """Keys of the [daemon] table."""

    workers: int = setting(
        1,
        as_workers,
        'processes serving clients: 1 (this one, as ever), 2 to 256 worker processes behind a supervisor, or "auto" '
        "(one per CPU the daemon may run on); see docs/workers.md",
    )
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
        path=True,
    )


@attrs.frozen
class PolicySettings:
    """Keys valid in [defaults] and in every [services.NAME] table."""

    max_connections: int = setting(
        1024, as_int(maximum=MAX_COUNT), "connections open at once for this service; 0 = no limit"
    )
    max_per_source: int = setting(
        64, as_int(maximum=MAX_COUNT), "connections open at once from one IPv4 address or IPv6 /64; 0 = no limit"
    )
    idle_timeout: float = setting(
        300.0, as_float(maximum=MAX_TIMEOUT), "seconds without input before a connection is aborted; 0 = never"
    )
    allow: tuple[IPNetwork, ...] = setting((), as_networks, "CIDRs allowed to connect; empty = everyone")
    deny: tuple[IPNetwork, ...] = setting((), as_networks, "CIDRs refused (checked before allow)")
    max_rate: float = setting(
        0.0, as_float(maximum=MAX_RATE), "new connections per second for this service; 0 = no limit"
    )
    max_rate_burst: int = setting(
        0, as_int(maximum=MAX_COUNT), "connections allowed at once above max_rate; 0 = one second's worth"
    )
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
    max_per_subnet: int = setting(
        256,
        as_int(maximum=1 << 24),
        "connections open at once from one subnet (subnet_v4 / subnet_v6 bits of the address); 0 = no limit",
    )
    subnet_v4: int = setting(24, as_int(minimum=0, maximum=32), "prefix length grouping IPv4 peers for max_per_subnet")
    subnet_v6: int = setting(48, as_int(minimum=0, maximum=128), "prefix length grouping IPv6 peers for max_per_subnet")
    line_timeout: float = setting(
        60.0,
        as_float(maximum=86400.0),
        "line services: seconds a started line may take to be finished before the connection is closed; 0 = no limit",
    )
    input_line_rate: float = setting(
        50.0,
        as_float(maximum=1e6),
        "line services: lines a second one connection may send on average (blank ones too); 0 = no limit",
    )
    input_byte_rate: float = setting(
        16384.0,
        as_float(maximum=float(1 << 30)),
        "line services: bytes a second one connection may send on average (telnet commands too); 0 = no limit",
    )
    input_burst: float = setting(
        4.0,
        as_float(minimum=0.1, maximum=3600.0),
        "line services: seconds' worth of input_line_rate and input_byte_rate one connection may send at once",
    )
    throttle_kick: float = setting(
        60.0,
        as_float(maximum=86400.0),
        "line services: seconds a connection may keep sending over its input rates before a disconnect; 0 = never",
    )
