"""
A reload across workers: all or nothing.

On SIGHUP the supervisor has read and checked the whole config
(L{socksvc.daemon.supervisor.SupervisorService._apply}); then
L{reload_workers}:

 1. waits for workers still starting (they run the old config);
 2. Prepare: every serving worker is handed the new config text (and the
    shared tables of services the reload adds) and checks and plans it,
    changing nothing. One refusal (or no answer) and every worker is told
    to Abort: nothing changed anywhere;
 3. the supervisor applies the plan to its own ports (binding what is new,
    closing what went away, with rollback: L{apply_reload}); a bind that
    fails aborts every worker the same way;
 4. Commit: every worker is handed the new listening sockets (chat's only
    to worker 0) and applies the plan: new listeners start, removed ones
    close, kept services take their new options in place, established
    connections stay. A worker that cannot is killed and replaced (its
    replacement starts on the new config);
 5. a changed C{workers} starts or stops workers; the others' connections
    are not touched.
"""

from __future__ import annotations

import os
from typing import Any

import attrs
from twisted.internet.defer import DeferredList, ensureDeferred
from twisted.logger import Logger

from socksvc.config.loader import Config
from socksvc.config.schema import worker_count
from socksvc.daemon.control import CONFIG, Abort, Adopt, Commit, Prepare, table_name
from socksvc.daemon.handout import config_memfd, cpus, handout, timeout
from socksvc.daemon.reload import apply_reload, plan_reload
from socksvc.daemon.shared import Table
from socksvc.daemon.workerproc import WorkerProcess

log = Logger(namespace="socksvc")

PREPARE_TIMEOUT = 30.0
"""Seconds every worker has to check a new config."""


async def reload_workers(sup: Any, new: Config, text: str) -> bool:
    """Reload the supervisor C{sup} and its workers to C{new} (whose text is C{text}); True if applied."""
    starting = [p.starting for p in sup.procs.values() if p.starting is not None and not p.starting.called]
    if starting:
        await DeferredList(starting)
    target = worker_count(new.daemon.workers, cpus())
    plan = plan_reload({i.config.name: i.config for i in sup.instances()}, new)
    columns = max([target, *(t.columns for t in sup.tables.values())])
    added = {svc.name: Table.create(svc.name) for svc in plan.added}
    for table in added.values():
        table.columns = columns
    live: list[WorkerProcess] = [p for p in sup.procs.values() if p.ready]
    config_fd = config_memfd(text)
    applied = False
    try:
        failure = await _prepare(live, config_fd, added, new.source, target, sup.base_dir(), sup.reactor)
        if failure is None:
            before = {id(x) for i in sup.instances() for x in i.listeners()}
            failure = await apply_reload(sup, new, plan)
        if failure is not None:
            for proc in live:
                proc.call(Abort).addErrback(lambda f: None)
            return bool(sup._failed(failure))
        applied = True
    finally:
        if not applied:
            for table in added.values():
                table.close()
            os.close(config_fd)
    sup._pause()
    fresh = [x for i in sup.instances() for x in i.listeners() if id(x) not in before]
    gone = [sup.tables.pop(name) for name in plan.removed if name in sup.tables]
    sup.tables.update(added)
    results = await DeferredList([ensureDeferred(_commit(p, sup, fresh)) for p in live], consumeErrors=True)
    outcome: Any
    applied_by = 0
    for proc, (ok, outcome) in zip(live, results, strict=True):
        if ok and outcome is None:
            proc.generation = sup.generation + 1
            applied_by += 1
            continue
        why = str(outcome) if ok else str(outcome.value)
        log.error(
            "socksvc: worker {worker} (pid {pid}) could not apply the reload ({why}); replacing it",
            event="reload",
            worker=proc.slot,
            pid=proc.pid,
            why=why,
        )
        proc.signal("KILL")
    for table in gone:
        table.close()
    old_daemon = sup.config.daemon
    if attrs.evolve(new.daemon, workers=old_daemon.workers) != old_daemon:
        log.warn("socksvc: [daemon] changes (the log_* keys) take effect at the next restart", event="reload")
    old_fd, sup._config_fd = sup._config_fd, config_fd
    if old_fd is not None:
        os.close(old_fd)
    sup.config = new
    sup.config_text = text
    sup.generation += 1
    sup._refresh_udp_ports()
    sup.last_reload_error = None
    log.info(
        "socksvc: the reload applied in {applied} of {workers} workers",
        event="workers_reloaded",
        applied=applied_by,
        workers=len(live),
    )
    sup.resize(target)
    return True


async def _prepare(
    live: list[WorkerProcess],
    config_fd: int,
    added: dict[str, Table],
    source: str,
    workers: int,
    base_dir: str,
    clock: Any,
) -> str | None:
    """Every worker checks the new config; the first refusal's line, or None when all agreed."""

    async def one(proc: WorkerProcess) -> None:
        calls = [proc.call(Adopt, name=CONFIG, fd=config_fd)]
        calls += [proc.call(Adopt, name=table_name(name), fd=t.fd) for name, t in added.items()]
        await DeferredList(calls, fireOnOneErrback=True, consumeErrors=True)
        prepare = proc.call(Prepare, source=source, workers=workers, base_dir=base_dir)
        await timeout(prepare, PREPARE_TIMEOUT, clock)

    results = await DeferredList([ensureDeferred(one(p)) for p in live], consumeErrors=True)
    value: Any
    for proc, (ok, value) in zip(live, results, strict=True):
        if not ok:
            error = value.value
            inner = getattr(error, "subFailure", None)
            why = str(inner.value if inner is not None else error) or error.__class__.__name__
            return f"worker {proc.slot}: {why}"
    return None


async def _commit(proc: WorkerProcess, sup: Any, fresh: list[Any]) -> str | None:
    """Hand a worker the reload's new sockets, then have it apply the reload; its error line, or None."""
    calls = [proc.call(Adopt, name=name, fd=fd) for name, fd in handout(sup.instances(), proc.slot, fresh)]
    await DeferredList(calls, fireOnOneErrback=True, consumeErrors=True)
    answer = await proc.call(Commit)
    error = answer.get("error")
    return str(error) if error else None
