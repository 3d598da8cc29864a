"""
The supervisor: the process twistd starts when C{[daemon] workers} is more than 1.

It reads and checks the config, binds every listener (or takes them from
systemd) exactly as the single-process daemon does (it is a
L{DaemonService}), but never serves a client: its ports do not read. It
starts the worker processes (L{socksvc.daemon.workerproc}), hands each the
config text, the shared tables (L{socksvc.daemon.shared}) and the listening
sockets (L{socksvc.daemon.handout}) over the control channel
(L{socksvc.daemon.control}), and then:

- says READY=1 once every worker is serving, and the "services on" line;
- replaces a worker that dies, after a backoff (L{workerproc.Backoff}), its
  slot's counts cleared first; the others keep serving on the same sockets;
- pings every worker every L{HEARTBEAT} seconds and kills one that has not
  answered L{MISSES} pings in a row; feeds systemd's watchdog only while
  every worker answers;
- reloads all or nothing across workers (L{SupervisorService._apply});
- writes every worker's log events into its own log, with the worker's slot
  (L{socksvc.daemon.logrelay});
- sums the workers' figures for STATUS= and for L{SupervisorService.summed_status};
- on stop, stops every worker (chat says goodbye, connections get their
  grace), waits for them, and exits 0.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import ILogObserver, Logger, globalLogPublisher
from twisted.python.components import Componentized
from twisted.python.failure import Failure

from socksvc.config.loader import (
    DEFAULT_CONFIG,
    DEFAULT_SOURCE,
    Config,
    ConfigError,
    ServiceConfig,
    config_dir,
    read_text,
)
from socksvc.config.schema import worker_count
from socksvc.daemon import systemd
from socksvc.daemon.control import CONFIG, Adopt, Start, Stop, table_name
from socksvc.daemon.errors import StartupError
from socksvc.daemon.figures import Figures, service_figures
from socksvc.daemon.handout import config_memfd, cpus, handout, resize, timeout
from socksvc.daemon.instance import ServiceInstance
from socksvc.daemon.logformat import FastTextObserver, JsonObserver
from socksvc.daemon.logrelay import rebuild
from socksvc.daemon.logsink import Sink
from socksvc.daemon.reloadworkers import reload_workers
from socksvc.daemon.service import DaemonService
from socksvc.daemon.shared import Table
from socksvc.daemon.watch import HEARTBEAT, ask_figures, healthy, heartbeat, status_line, sum_figures
from socksvc.daemon.workerproc import Backoff, WorkerProcess, describe_exit, worker_env
from socksvc.services.catalogue import loads, types

log = Logger(namespace="socksvc")

START_TIMEOUT = 30.0
"""Seconds a worker has to say it serves (systemd's default start timeout is 90)."""
FIGURES_INTERVAL = 2.0
"""Seconds between two askings of the workers' figures (STATUS=, the admin listener)."""
STOP_TIMEOUT = 15.0
"""Seconds stopping workers have (their connections' grace included) before they are killed."""


class _Systemd(systemd.Supervisor):
    """systemd's view of the supervisor: the watchdog is fed only while every worker answers."""

    healthy: Callable[[], bool] = staticmethod(lambda: True)

    def ping(self) -> None:
        if self.healthy():
            super().ping()


class SupervisorService(DaemonService):
    """The supervisor of C{workers} worker processes (see the module doc)."""

    def __init__(self, config: Config, reactor: Any, *, text: str, workers: int | None = None, **kw: Any) -> None:
        super().__init__(config, reactor, **kw)
        self.config_text = text
        self.target = workers if workers is not None else worker_count(config.daemon.workers, cpus())
        self.seed = str(secrets.randbelow(2**32 - 1) + 1)
        """Every worker's PYTHONHASHSEED: the shared per-source buckets agree, and nobody outside knows them."""
        old = self.systemd
        self.systemd = _Systemd(reactor, old.notifier, self.status, old.watchdog)
        self.systemd.healthy = self.healthy
        self.tables: dict[str, Table] = {i.name or "": Table.create(i.name or "") for i in self.instances()}
        self.procs: dict[int, WorkerProcess] = {}
        self.backoffs: dict[int, Backoff] = {}
        self._restarts: dict[int, Any] = {}
        self._config_fd: int | None = None
        self.generation = 0
        self.serving = False
        self.figures: list[Figures] = []
        """The last summed figures (refreshed every few seconds)."""
        self._loops: list[LoopingCall] = []
        self._reloading = False
        self._failed_start: str | None = None
        self._initial: dict[int, bool] = {}
        self._line_sink: Sink | None = None
        self._line_format = ""
        """What the workers send: finished lines in this format, or (empty) log events."""

    def make_instance(self, config: ServiceConfig) -> ServiceInstance:
        """Its instances bind; the workers serve: no state of theirs reaches outside this process (chat's bus)."""
        return ServiceInstance(config, types()[config.type], self.reactor, self.udp_ports, self.notices, serving=False)

    # -- ports: bound here, served by the workers ----------------------------------

    def _pause(self) -> None:
        for instance in self.instances():
            for listener in instance.listeners():
                for port in listener.ports:
                    port.stopReading()

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._pause()

    def startService(self) -> None:
        # DaemonService's, but the "services on" line and READY=1 wait for the workers.
        self._check_fd_limit()
        try:
            self._bind_all()
        except StartupError as e:
            if self._status_pipe() is None:
                raise
            raise self._daemonized_failure(e) from None
        self._pause()
        if self.handle_signals:
            self._install_signal_handlers()
            self.reactor.callWhenRunning(self._stop_if_told)
        self.started_at = self.reactor.seconds()
        MultiService.startService(self)
        for table in self.tables.values():
            table.columns = self.target
        self._initial = dict.fromkeys(range(self.target), False)
        for slot in range(self.target):
            self._start_worker(slot)

    # -- workers -------------------------------------------------------------------

    def _config_fd_now(self) -> int:
        if self._config_fd is None:
            self._config_fd = config_memfd(self.config_text)
        return self._config_fd

    def _start_worker(self, slot: int) -> None:
        self._restarts.pop(slot, None)
        proc = WorkerProcess(slot, self.reactor, self._worker_log, self._worker_ended, self._worker_line)
        self.procs[slot] = proc
        for table in self.tables.values():
            table.clear(slot)
            table.columns = max(table.columns, slot + 1)
        proc.spawn(worker_env(os.environ, self.seed, os.getpid()))
        d = ensureDeferred(self._hand_over(proc))
        d.addErrback(self._start_failed, proc)
        proc.starting = d

    async def _hand_over(self, proc: WorkerProcess) -> None:
        proc.generation = self.generation
        calls = [proc.call(Adopt, name=CONFIG, fd=self._config_fd_now())]
        for instance in self.instances():
            calls.append(proc.call(Adopt, name=table_name(instance.name or ""), fd=self.tables[instance.name or ""].fd))
        for name, fd in handout(self.instances(), proc.slot):
            calls.append(proc.call(Adopt, name=name, fd=fd))
        start = proc.call(
            Start,
            slot=proc.slot,
            workers=self.target,
            source=self.config.source,
            seed=self.seed,
            log_format=self._line_format,
            base_dir=self.base_dir(),
        )
        await DeferredList(calls, fireOnOneErrback=True, consumeErrors=True)
        await timeout(start, START_TIMEOUT, self.reactor)
        if proc.ended:
            return
        proc.ready = True
        proc.last_answer = self.reactor.seconds()
        log.info("socksvc: worker {worker} (pid {pid}) serving", event="worker_ready", worker=proc.slot, pid=proc.pid)
        if not self.serving:
            self._initial[proc.slot] = True
            if all(self._initial.values()):
                self._serving()

    def _start_failed(self, failure: Failure, proc: WorkerProcess) -> None:
        value = failure.value
        why = str(value) if value.__class__.__name__ in ("Refused", "RemoteAmpError") else describe_exit(failure)
        if proc.ended or why == "":
            why = why or "it exited"
        log.error(
            "socksvc: worker {worker} (pid {pid}) could not start: {why}",
            event="worker_failed",
            worker=proc.slot,
            pid=proc.pid,
            why=why,
        )
        if not self.serving and not self._stopping:
            self._fail_start(f"worker {proc.slot} could not start: {why}")
        else:
            proc.signal("KILL")  # its end starts the next one, after the backoff

    def _fail_start(self, line: str) -> None:
        """Start-up cannot go on: say why, stop everything, exit 1."""
        if self._failed_start is not None:
            return
        self._failed_start = line
        self.systemd.failed(line)

        def exit_1() -> None:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            os._exit(1)

        self.reactor.addSystemEventTrigger("after", "shutdown", exit_1)
        if self.reactor.running:
            self.reactor.stop()

    def base_dir(self) -> str:
        """Where the config's relative paths start, for the workers ("": the working directory)."""
        return config_dir(self.config_path) if self.config_path else ""

    def _worker_line(self, line: str, urgent: bool) -> None:
        sink = self._line_sink
        if sink is not None:
            sink.emit(line, urgent)

    def setServiceParent(self, parent: Any) -> None:
        """
        The observer chosen, note where socksvc's own lines go: workers then
        send finished lines to write as they are (L{socksvc.daemon.logrelay}).
        """
        super().setServiceParent(parent)
        if isinstance(parent, Componentized):
            observer = parent.getComponent(ILogObserver, None)
            if isinstance(observer, FastTextObserver | JsonObserver):
                self._line_sink = observer.sink
                self._line_format = "json" if isinstance(observer, JsonObserver) else "text"

    def _worker_log(self, slot: int, text: str) -> None:
        event = rebuild(text, slot, self.config.daemon.log_format == "text")
        if event is not None:
            globalLogPublisher(event)

    def _worker_ended(self, proc: WorkerProcess, reason: Failure) -> None:
        slot = proc.slot
        if self.procs.get(slot) is proc:
            del self.procs[slot]
            for table in self.tables.values():
                table.clear(slot)
        what = describe_exit(reason)
        fields = {"worker": slot, "pid": proc.pid, "status": what}
        if self._stopping or proc.stopping:
            log.info("socksvc: worker {worker} (pid {pid}) {status}", event="worker_exit", **fields)
            return
        if not self.serving:
            self._fail_start(f"worker {slot} {what} while starting")
            return
        delay = self.backoffs.setdefault(slot, Backoff()).after(self.reactor.seconds() - proc.started_at)
        log.warn(
            "socksvc: worker {worker} (pid {pid}) {status}; starting another in {delay:.0f}s",
            event="worker_exit",
            delay=delay,
            **fields,
        )
        if slot < self.target:
            self._restarts[slot] = self.reactor.callLater(delay, self._restart, slot)

    def _restart(self, slot: int) -> None:
        self._restarts.pop(slot, None)
        if self._stopping or slot in self.procs or slot >= self.target:
            return
        if self._reloading:
            self._restarts[slot] = self.reactor.callLater(0.1, self._restart, slot)
            return
        self._start_worker(slot)

    def workers_up(self) -> int:
        return sum(1 for p in self.procs.values() if p.ready)

    # -- serving, heartbeat, status ------------------------------------------------

    def _serving(self) -> None:
        self.serving = True
        total = sum(len(i.listeners()) for i in self.instances())
        log.info(
            "socksvc: {count} services on {listeners} listeners, {workers} workers, config {source}",
            event="ready",
            count=len(self.instances()),
            listeners=total,
            workers=self.target,
            source=self.config.source,
        )
        self._loop(self._heartbeat, HEARTBEAT)
        # The figures STATUS= and the admin listener show: the workers are asked every few seconds
        # (when someone looks: systemd or the admin listener).
        if self.systemd.notifier.enabled or self.admin is not None:
            d = ensureDeferred(self._refresh())
            d.addBoth(lambda _: self.systemd.started())
            self._loop(lambda: ensureDeferred(self._refresh()), FIGURES_INTERVAL)
        else:
            self.systemd.started()

    def _loop(self, fn: Callable[[], Any], interval: float) -> None:
        loop = LoopingCall(fn)
        loop.clock = self.reactor
        loop.start(interval, now=False).addErrback(lambda f: log.failure("socksvc: a supervisor timer failed", f))
        self._loops.append(loop)

    def _heartbeat(self) -> None:
        heartbeat(self.procs.values(), self.reactor)

    def healthy(self) -> bool:
        """Every worker is up and answered its last heartbeat (the watchdog's condition)."""
        return healthy(self.procs, self.target)

    async def summed_status(self) -> list[Figures]:
        """
        The daemon's figures per service, asked of every worker now and added
        up (L{socksvc.daemon.figures.merge_services}: connections, accepted,
        refused by reason, bytes, durations, UDP and chat figures, counters;
        C{limit} is the daemon-wide cap). Listeners are where the supervisor
        bound them; C{workers} says how many workers reported the service.
        A service no worker reported shows zeros.
        """
        return sum_figures(await ask_figures(self.procs.values(), self.reactor), self.instances())

    async def _refresh(self) -> None:
        self.figures = await self.summed_status()

    def service_figures(self) -> list[Figures]:
        """The last summed figures (asked of the workers every few seconds): what the admin listener shows."""
        return self.figures or [service_figures(i) for i in self.instances()]

    def workers_serving(self) -> int:
        return self.workers_up()

    def status(self) -> str:
        text = status_line(self.figures, self.workers_up(), self.target)
        if self.last_reload_error is not None:
            text = f"reload failed, still serving the previous config ({self.last_reload_error}); {text}"
        return text

    # -- stop ------------------------------------------------------------------------

    def stopService(self) -> Deferred[Any]:
        log.info("socksvc: stopping", event="stopping")
        self._stopping = True
        self.systemd.stopping()
        for loop in self._loops:
            if loop.running:
                loop.stop()
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        d = ensureDeferred(self._stop_workers(list(self.procs.values())))
        d.addBoth(lambda _: MultiService.stopService(self))
        return d

    async def _stop_workers(self, procs: list[WorkerProcess]) -> None:
        for proc in procs:
            proc.stopping = True
            if proc.ready:
                # No answer is no news: a worker that stops at once may exit before its answer leaves.
                proc.call(Stop).addErrback(lambda f: None)
            else:
                proc.signal("TERM")
        gone = DeferredList([p.gone() for p in procs])
        try:
            await timeout(gone, STOP_TIMEOUT, self.reactor)
        except Exception:
            for proc in procs:
                if not proc.ended:
                    log.warn("socksvc: {worker} did not stop in time; killing it", worker=proc.describe())
                    proc.signal("KILL")
            await DeferredList([p.gone() for p in procs])

    # -- reload ------------------------------------------------------------------------

    async def _apply(self, new: Config | None) -> bool:
        if new is not None:
            return self._failed("a supervisor reloads its config file, not a config object")
        try:
            text = read_text(self.config_path) if self.config_path else DEFAULT_CONFIG
            new = loads(text, self.config_path or DEFAULT_SOURCE, self.base_dir() or None)
        except ConfigError as e:
            return self._failed(str(e))
        self._reloading = True
        try:
            return await self._reload_workers(new, text)
        finally:
            self._reloading = False

    async def _reload_workers(self, new: Config, text: str) -> bool:
        return await reload_workers(self, new, text)

    def resize(self, target: int) -> None:
        """Start or stop workers to have C{target} (a reload changed [daemon] workers)."""
        if target == self.target:
            return
        start, stop = resize(set(self.procs) | set(self._restarts), target)
        log.info(
            "socksvc: {old} workers become {new}",
            event="workers",
            old=self.target,
            new=target,
        )
        self.target = target
        for slot in stop:
            call = self._restarts.pop(slot, None)
            if call is not None and call.active():
                call.cancel()
        ensureDeferred(self._stop_workers([self.procs[s] for s in stop if s in self.procs]))
        for slot in start:
            self._start_worker(slot)
