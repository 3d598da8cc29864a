"""
The daemon's live figures, read at request time: one plain, JSON-ready dict.

L{daemon_figures} walks the running services once and reads what they
already count (the policy's connections, accepted and refused; bytes and
durations kept at close; the datagram guard's counters; chat's status): the
metrics collector (L{socksvc.daemon.metrics}), C{/status.json} and the status
page all read the same dict, so serving clients pays nothing per event for
any of them. The dict is plain data on purpose: with workers, each worker
sends its own and the supervisor serves L{merge_services} of them.
"""

from __future__ import annotations

import operator
import os
import resource
import sys
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from typing import Any

from socksvc.core import policy as policy_module
from socksvc.core.policy import Policy
from socksvc.daemon.listener import port_description
from socksvc.util.histogram import Histogram

Figures = dict[str, Any]

REFUSAL_CODES: Mapping[str, str] = {
    policy_module.DENIED: "denied",
    policy_module.TOO_MANY: "max_connections",
    policy_module.TOO_MANY_FROM_YOU: "max_per_source",
    policy_module.TOO_MANY_FROM_SUBNET: "max_per_subnet",
    policy_module.RATE_EXCEEDED: "max_rate",
}
"""A refusal's metric label: the config key (or allow/deny) that refused it."""

UDP_PREFIX = "udp_dropped_"
CHAT_PREFIX = "chat_lines_dropped_"
BUS_PREFIX = "chat_bus_"
"""A chat with a bus (issue 14): its figures, under the chat's C{bus} (docs/observability.md)."""


def version() -> str:
    try:
        return metadata.version("socksvc")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


def listeners_of(listeners: Iterable[Any]) -> list[str]:
    """Where each listener is bound (C{tcp 127.0.0.1:7007}), or its spec while unbound."""
    out = []
    for listener in listeners:
        if listener.ports:
            out += [port_description(p) for p in listener.ports]
        else:
            out.append(f"{listener.spec.text} (not bound)")
    return out


def connection_figures(policy: Policy) -> Figures:
    """What the policy layer counts for one service (or the admin listener)."""
    refused = dict.fromkeys(REFUSAL_CODES.values(), 0)
    for reason, n in policy.refused.items():
        code = REFUSAL_CODES.get(reason, "other")
        refused[code] = refused.get(code, 0) + n
    bytes_in, bytes_out = policy.bytes_totals()
    d = policy.durations
    return {
        "connections": len(policy.connections),
        "limit": policy.settings.max_connections,
        "peak": policy.peak,
        "accepted": policy.accepted,
        "refused": refused,
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "duration": {"bounds": list(d.bounds), "counts": list(d.counts), "sum": d.sum},
    }


def service_figures(instance: Any) -> Figures:
    """One running service instance's figures."""
    context = instance.context
    out: Figures = {"name": instance.name, "type": context.type, "listeners": listeners_of(instance.listeners())}
    out.update(connection_figures(context.policy))
    status = context.state.status()
    counters = dict(status.counters)
    if "udp_received" in counters:
        out["udp"] = {
            "received": counters.pop("udp_received"),
            "replied": counters.pop("udp_replied", 0),
            "bytes_in": counters.pop("udp_bytes_in", 0),
            "bytes_out": counters.pop("udp_bytes_out", 0),
            "dropped": {k[len(UDP_PREFIX) :]: counters.pop(k) for k in list(counters) if k.startswith(UDP_PREFIX)},
        }
    if status.members is not None or "chat_lines" in counters:
        out["chat"] = {
            "members": status.members or 0,
            "rooms": counters.pop("rooms", len(status.rooms)),
            "lines": counters.pop("chat_lines", 0),
            "dropped": {k[len(CHAT_PREFIX) :]: counters.pop(k) for k in list(counters) if k.startswith(CHAT_PREFIX)},
            "room_list": [{"name": r.name, "members": r.members, "topic": r.topic} for r in status.rooms],
            "names": list(status.names),
        }
        bus = {k[len(BUS_PREFIX) :]: counters.pop(k) for k in list(counters) if k.startswith(BUS_PREFIX)}
        if bus:
            bus["linked"] = bus.get("up", 0)  # workers whose link is up: summed over workers, up is the least
            out["chat"]["bus"] = bus
    out["counters"] = counters
    return out


def process_figures() -> Figures:
    """RSS, CPU seconds and descriptors of this process (Linux /proc; None where unknown)."""
    rss = None
    try:
        with open("/proc/self/statm", "rb") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        open_fds: int | None = len(os.listdir("/proc/self/fd"))
    except OSError:
        open_fds = None
    times = os.times()
    return {
        "rss_bytes": rss,
        "cpu_seconds": times.user + times.system,
        "open_fds": open_fds,
        "max_fds": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }


def daemon_figures(daemon: Any) -> Figures:
    """Everything the status page, /status.json and /metrics show, read now."""
    now = daemon.reactor.seconds()
    started = daemon.started_at if daemon.started_at is not None else now
    last_ok = daemon.last_reload_success_time
    admin = getattr(daemon, "admin", None)
    return {
        "version": version(),
        "python": sys.version.split()[0],
        "pid": os.getpid(),
        "now": now,
        "started": started,
        "uptime": max(0.0, now - started),
        "config": daemon.config.source,
        "reload": {
            "count": daemon.reloads,
            "last_time": daemon.last_reload_time,
            "last_ok": daemon.last_reload_error is None,
            "last_error": daemon.last_reload_error,
            "last_success_time": last_ok if last_ok is not None else started,
        },
        "workers": daemon.workers_serving(),
        "process": process_figures(),
        "services": daemon.service_figures(),
        "admin": admin.figures() if admin is not None else None,
    }


# -- with workers: the supervisor serves the sum --------------------------------

_SUMMED = ("connections", "peak", "accepted", "bytes_in", "bytes_out")
"""Added up over workers (C{limit} is not: the caps hold for the daemon as a whole)."""


def _add(a: Any, b: Any) -> Any:
    """Numbers added, dicts of numbers added key by key; anything else: the first."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for k, v in b.items():
            out[k] = _add(out[k], v) if k in out else v
        return out
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return a + b
    return a


def merge_services(per_worker: Iterable[list[Figures]]) -> list[Figures]:
    """
    Every worker's service figures summed by service name: counts, bytes,
    refusals, drops and durations add up (C{peak} is then the sum of the
    workers' peaks: an upper bound); names, types and room lists come from
    the first worker that has the service, listeners are the union. A chat
    with a bus is the exception: its members and rooms are the cluster's
    as each worker sees them (the largest is kept), and its bus figures merge as
    L{_BUS_MERGE} says.
    """
    merged: dict[str, Figures] = {}
    for services in per_worker:
        for svc in services:
            have = merged.get(svc["name"])
            if have is None:
                merged[svc["name"]] = {**svc, "listeners": list(svc["listeners"])}
                continue
            for key in _SUMMED:
                have[key] += svc[key]
            have["refused"] = _add(have["refused"], svc["refused"])
            have["duration"] = _merge_duration(have["duration"], svc["duration"])
            have["listeners"] += [x for x in svc["listeners"] if x not in have["listeners"]]
            for part in ("udp", "counters"):
                if part in svc:
                    have[part] = _add(have.get(part, {}), svc[part])
            if "chat" in svc:
                have["chat"] = _merge_chat(have.get("chat", {}), svc["chat"])
    return list(merged.values())


_CLUSTER_WIDE = ("members", "rooms")
"""
With a bus every worker is a node that sees the whole cluster's roster:
these are the largest worker's, not a sum. Lines count on the node where
they were said, so they add up like the rest.
"""
_BUS_MERGE: Mapping[str, Callable[[int, int], int]] = {
    "up": min,  # 1 only while every worker's link is up (linked: how many are)
    "nodes": max,  # every worker sees the same cluster
    "lines_lost": max,  # every worker reads the same stream: a gap is seen by each
    "entries_dropped": max,  # likewise a malformed entry
}
"""How a bus figure merges over workers; the others (linked, queued, lines_held, collisions) add up."""


def _merge_chat(a: Figures, b: Figures) -> Figures:
    out: Figures = _add({k: v for k, v in a.items() if k != "bus"}, {k: v for k, v in b.items() if k != "bus"})
    if "bus" not in a and "bus" not in b:
        return out
    for key in _CLUSTER_WIDE:
        out[key] = max(a.get(key, 0), b.get(key, 0))
    bus = dict(a.get("bus", {}))
    for k, v in b.get("bus", {}).items():
        bus[k] = _BUS_MERGE.get(k, operator.add)(bus[k], v) if k in bus else v
    out["bus"] = bus
    return out


def _merge_duration(a: Figures, b: Figures) -> Figures:
    ha, hb = Histogram(a["bounds"]), Histogram(b["bounds"])
    ha.counts, ha.sum = list(a["counts"]), a["sum"]
    hb.counts, hb.sum = list(b["counts"]), b["sum"]
    h = ha.merged(hb)
    return {"bounds": list(h.bounds), "counts": h.counts, "sum": h.sum}
