"""
The keys every config shares: [daemon], and the policy keys valid in
[defaults] and in every [services.NAME] table. A service's own keys are
declared in its module (see L{socksvc.config.settings}).
"""

from __future__ import annotations

import attrs

from socksvc.config.settings import IPNetwork, as_choice, as_float, as_int, as_networks, setting


@attrs.frozen
class DaemonSettings:
    """Keys of the [daemon] table."""

    log_format: str = setting("text", as_choice("text", "json"), 'log lines as "text" or "json" (one object a line)')


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
