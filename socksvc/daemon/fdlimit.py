"""
File descriptor limits: raise the soft limit at start-up, warn when the
services' caps need more than the limit allows.
"""

from __future__ import annotations

import resource
from collections.abc import Iterable

from socksvc.config.schema import PolicySettings


def raise_fd_limit(cap: int = 1 << 20) -> tuple[int, int]:
    """
    Raise the soft RLIMIT_NOFILE to the hard limit (at most C{cap}), as a
    server should: the usual soft limit, 1024, is below the default
    max_connections of a single service. Never lowers it.

    @return: the (soft, hard) limits now in force.
    """

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    return soft, hard


def fd_warning(policies: Iterable[PolicySettings], soft_limit: int, reserve: int = 64) -> str | None:
    """
    A warning when the services' connection caps add up to more than the
    descriptor limit allows (C{reserve} is kept for listeners, logs and
    the like), or None.
    """
    caps = [p.max_connections for p in policies]
    if not caps:
        return None
    if 0 in caps:
        total = "no limit"
    elif sum(caps) + reserve > soft_limit:
        total = str(sum(caps))
    else:
        return None
    return (
        f"the file descriptor limit is {soft_limit} but max_connections adds up to {total}: "
        "at the limit new connections are closed unanswered (raise LimitNOFILE= or lower max_connections)"
    )
