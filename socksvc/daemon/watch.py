"""
Watching the workers: heartbeats, and the figures they report.

Plain functions over the supervisor's worker processes
(L{socksvc.daemon.workerproc.WorkerProcess}), so the supervisor's decisions
are tested on a fake clock with fake workers (tests/test_workers.py):

- L{heartbeat}: ping every serving worker; kill one that left L{MISSES}
  pings in a row unanswered (its end starts the next one);
- L{healthy}: every worker is up and answered its last ping (the
  condition for feeding systemd's watchdog);
- L{ask_figures} and L{sum_figures}: every worker's figures per service
  (L{socksvc.daemon.control.Status}), summed by
  L{socksvc.daemon.figures.merge_services};
- L{status_line}: the STATUS= text for summed figures.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from twisted.internet.defer import DeferredList, ensureDeferred
from twisted.logger import Logger

from socksvc.daemon.control import Heartbeat, Status
from socksvc.daemon.figures import Figures, listeners_of, merge_services, service_figures
from socksvc.daemon.handout import timeout

log = Logger(namespace="socksvc")

HEARTBEAT = 2.0
"""Seconds between heartbeats."""
MISSES = 5
"""Heartbeats a worker may leave unanswered in a row; then it is killed and replaced."""


def heartbeat(procs: Iterable[Any], clock: Any) -> None:
    """One round of pings (see the module doc)."""
    now = clock.seconds()
    for proc in list(procs):
        if not proc.ready:
            continue
        if proc.heartbeat_pending >= MISSES:
            log.error(
                "socksvc: worker {worker} (pid {pid}) has not answered for {seconds:.0f}s; killing it",
                event="worker_hung",
                worker=proc.slot,
                pid=proc.pid,
                seconds=now - proc.last_answer,
            )
            proc.ready = False  # killed once; its end starts the next one
            proc.signal("KILL")
            continue
        proc.heartbeat_pending += 1

        def answered(_: Any, proc: Any = proc) -> None:
            proc.heartbeat_pending = 0
            proc.last_answer = clock.seconds()

        proc.call(Heartbeat).addCallbacks(answered, lambda f: None)


def healthy(procs: Mapping[int, Any], target: int) -> bool:
    """Every one of C{target} workers is up and answered its last heartbeat."""
    if len(procs) < target:
        return False
    return all(p.ready and p.heartbeat_pending <= 1 for p in procs.values())


async def ask_figures(procs: Iterable[Any], clock: Any) -> dict[int, list[Figures]]:
    """Each serving worker's figures per service, by slot (asked now; a worker that does not answer is left out)."""

    async def ask(proc: Any) -> list[Figures]:
        out: list[Figures] = []
        start = 0
        while start >= 0:
            answer = await timeout(proc.call(Status, start=start), HEARTBEAT * 2, clock)
            out += json.loads(answer["figures"])
            start = int(answer["next"])
        return out

    serving = [p for p in procs if p.ready]
    results = await DeferredList([ensureDeferred(ask(p)) for p in serving], consumeErrors=True)
    return {p.slot: r for p, (ok, r) in zip(serving, results, strict=True) if ok}


def sum_figures(per_worker: Mapping[int, list[Figures]], instances: Iterable[Any]) -> list[Figures]:
    """
    The daemon's figures per service in config order: the workers' summed
    (worker 0 first, so chat's room lists are its), the listeners where the
    supervisor bound them, C{workers} how many workers reported the service;
    a service no worker reported shows the supervisor's own zeros.
    """
    merged = {svc["name"]: svc for svc in merge_services(per_worker[s] for s in sorted(per_worker))}
    out = []
    for instance in instances:
        name = instance.name or ""
        reported = sum(1 for services in per_worker.values() if any(x["name"] == name for x in services))
        svc = merged.get(name) or service_figures(instance)
        svc["listeners"] = listeners_of(instance.listeners())
        svc["workers"] = reported
        out.append(svc)
    return out


def status_line(figures: Iterable[Figures], up: int, target: int) -> str:
    """STATUS=: how many workers are up, then connections per service and chat users, as one process says them."""
    parts = []
    total = 0
    for svc in figures:
        n = int(svc.get("connections") or 0)
        total += n
        chat = svc.get("chat")
        members = chat.get("members") if isinstance(chat, dict) else None
        users = "" if members is None else f" ({members} user{'' if members == 1 else 's'})"
        parts.append(f"{svc['name']} {n}{users}")
    text = f"{up} of {target} workers up; "
    if not parts:
        return text + "no figures yet"
    return text + f"{total} connection{'' if total == 1 else 's'}: " + ", ".join(parts)
