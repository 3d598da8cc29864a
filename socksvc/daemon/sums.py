"""
The figures a worker reports for each of its services, and their sum.

Each worker answers the supervisor's L{socksvc.daemon.control.Status} with
L{service_figures} of every service it runs: plain, JSON-ready dicts. The
supervisor adds them up by service (L{sum_services}): that sum is what its
systemd STATUS= line shows and what
L{socksvc.daemon.supervisor.SupervisorService.summed_status} returns for
anything else that wants the daemon's figures (an admin or metrics page).

A service's figures: C{name}, C{type}, C{connections} (open now),
C{accepted}, C{refused} (by reason, the text a refused client reads),
C{bytes_in} and C{bytes_out} (every connection so far, open ones included),
C{members} (chat's registered users, or None) and C{counters} (the
service's own, such as UDP's datagrams and drops by reason). Summed:
numbers add up; C{workers} says how many workers reported the service.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

Figures = dict[str, Any]


def service_figures(instance: Any) -> Figures:
    """One running service instance's figures (a L{socksvc.daemon.instance.ServiceInstance})."""
    context = instance.context
    policy = context.policy
    status = context.state.status()
    bytes_in, bytes_out = policy.bytes_totals()
    return {
        "name": instance.name,
        "type": context.type,
        "connections": len(policy.connections),
        "accepted": policy.accepted,
        "refused": dict(policy.refused),
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "members": status.members,
        "counters": dict(status.counters),
    }


def _add_counts(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        have = out.get(key)
        if isinstance(have, int) and isinstance(value, int) and not isinstance(value, bool):
            out[key] = have + value
        elif key not in out:
            out[key] = value
    return out


def sum_services(per_worker: Iterable[Iterable[Figures]], order: Iterable[str] = ()) -> list[Figures]:
    """
    Every worker's service figures added up by service name: counts, bytes,
    refusals and counters; C{members} adds up too (None when no worker has
    a roster). In C{order} (the config's), then any other name as first seen.
    """
    merged: dict[str, Figures] = {name: {} for name in order}
    for services in per_worker:
        for svc in services:
            name = str(svc.get("name", "?"))
            have = merged.get(name)
            if not have:
                merged[name] = {**svc, "refused": dict(svc.get("refused") or {}), "workers": 1}
                continue
            have["workers"] += 1
            for key in ("connections", "accepted", "bytes_in", "bytes_out"):
                have[key] = int(have.get(key) or 0) + int(svc.get(key) or 0)
            if svc.get("members") is not None:
                have["members"] = int(have.get("members") or 0) + int(svc["members"])
            have["refused"] = _add_counts(have["refused"], svc.get("refused") or {})
            have["counters"] = _add_counts(have.get("counters") or {}, svc.get("counters") or {})
    return [figures for figures in merged.values() if figures]


def status_line(services: Iterable[Figures]) -> str:
    """The STATUS= text for summed figures: connections per service, chat users (as a single process says it)."""
    parts = []
    total = 0
    for svc in services:
        n = int(svc.get("connections") or 0)
        total += n
        members = svc.get("members")
        users = "" if members is None else f" ({members} user{'' if members == 1 else 's'})"
        parts.append(f"{svc.get('name')} {n}{users}")
    plural = "" if total == 1 else "s"
    return f"{total} connection{plural}: " + ", ".join(parts) if parts else "no services"
