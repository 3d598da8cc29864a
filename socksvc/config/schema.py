"""
The keys every config shares: [daemon], and the policy keys valid in
[defaults] and in every [services.NAME] table. A service's own keys are
declared in its module (see L{socksvc.config.settings}).
"""

from __future__ import annotations

import attrs

from socksvc.config.settings import (
    MAX_COUNT,
    MAX_RATE,
    MAX_TIMEOUT,
    IPNetwork,
    as_choice,
    as_float,
    as_int,
    as_networks,
    setting,
)


@attrs.frozen
class DaemonSettings:
    """Keys of the [daemon] table."""

    log_format: str = setting("text", as_choice("text", "json"), 'log lines as "text" or "json" (one object a line)')


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
