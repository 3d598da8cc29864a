"""
The daemon's service tree: config in, one L{DaemonService} out.

For every configured service there is one L{ServiceInstance} (a
MultiService holding its context and policy) with one L{Listener} child per
listen spec. Listeners bind in C{privilegedStartService} (so ports below 1024
work before twistd sheds privileges) and fail loudly: if any listener cannot
bind, start-up stops with one line naming the service and the address, and
nothing is left listening.

Under systemd (see L{socksvc.daemon.systemd}) the daemon says READY=1 once
every listener is bound, keeps a STATUS= line fresh, pings the watchdog,
adopts socket-activated descriptors (C{systemd:name=NAME}), re-reads its
config on SIGHUP (L{DaemonService.reload}, planned and applied by
L{socksvc.daemon.reload}) and says STOPPING=1 on the way out.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Sequence
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredLock, ensureDeferred
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized
from twisted.python.failure import Failure

from socksvc.config.loader import DEFAULT_SOURCE, Config, ConfigError, ServiceConfig
from socksvc.core.notices import NoticeBus
from socksvc.daemon import figures, hangup, systemd
from socksvc.daemon.admin import AdminService, restart_keys
from socksvc.daemon.errors import StartupError, StartupFailed
from socksvc.daemon.fdlimit import fd_warning, raise_fd_limit
from socksvc.daemon.instance import ServiceInstance
from socksvc.daemon.listener import is_udp
from socksvc.daemon.logs import LogFileError, observer_for
from socksvc.daemon.reload import apply_reload, plan_reload
from socksvc.services.catalogue import load, types

log = Logger(namespace="socksvc")


class DaemonService(MultiService):
    """The whole daemon."""

    def __init__(
        self,
        config: Config,
        reactor: Any,
        *,
        config_path: str | None = None,
        notifier: systemd.Notifier | None = None,
        watchdog: float | None = None,
        handle_signals: bool | None = None,
    ) -> None:
        super().__init__()
        self.setName("socksvc")
        self.config = config
        self.reactor = reactor
        if config_path is None and config.source != DEFAULT_SOURCE:
            config_path = config.source
        # Absolute now: the reload may happen after a chdir.
        self.config_path = os.path.abspath(config_path) if config_path else None
        # Read LISTEN_FDS once, now, before anything else can consume it.
        systemd.inherited()
        self.udp_ports: set[int] = {
            s.port for svc in config.services for s in svc.listen if s.kind == "datagram" and s.port
        }
        self.notices = NoticeBus()  # one per daemon: smtp's announce reaches chat's rooms through it
        for svc in config.services:
            self.make_instance(svc).setServiceParent(self)
        # The admin HTTP listener ([daemon] http): /metrics and the status page.
        self.admin = AdminService(self, config) if config.daemon.http else None
        if self.admin is not None:
            self.admin.setServiceParent(self)
        if notifier is None:
            # Under systemd: NOTIFY_SOCKET and WATCHDOG_USEC say what to do (nothing when unset).
            notifier = systemd.Notifier.from_environment()
            watchdog = systemd.watchdog_interval()
        self.systemd = systemd.Supervisor(reactor, notifier, self.status, watchdog)
        if handle_signals is None:
            main = threading.current_thread() is threading.main_thread()
            handle_signals = main and hasattr(reactor, "callFromThread")
        self.handle_signals = handle_signals
        self.last_reload_error: str | None = None
        self.reloads = 0
        self.started_at: float | None = None
        self.last_reload_time: float | None = None
        self.last_reload_success_time: float | None = None
        self._reload_lock = DeferredLock()
        self._reload_queued = False
        self._sighup_installed = False
        self._stopping = False
        self.twistd_options: Any = None
        """twistd's own options (the plugin options' C{parent}), for the log observer choice; None = read sys.argv."""

    def make_instance(self, config: ServiceConfig) -> ServiceInstance:
        """A new instance of a service (not yet a child: the caller adds it)."""
        return ServiceInstance(config, types()[config.type], self.reactor, self.udp_ports, self.notices)

    def order_services(self, names: Sequence[str]) -> None:
        """Keep the children in config order (STATUS= and logs follow it)."""
        order = {name: n for n, name in enumerate(names)}
        self.services.sort(key=lambda s: order.get(s.name or "", len(order)))

    def instances(self) -> list[ServiceInstance]:
        return [s for s in self if isinstance(s, ServiceInstance)]

    def instance(self, name: str) -> ServiceInstance:
        service = self.getServiceNamed(name)
        assert isinstance(service, ServiceInstance)
        return service

    # -- binding -------------------------------------------------------------

    def _listeners(self) -> list[Any]:
        owners: list[Any] = [*self.instances(), *([self.admin] if self.admin is not None else [])]
        return [listener for owner in owners for listener in owner.listeners()]

    def _bind_all(self) -> None:
        try:
            for listener in self._listeners():
                listener.bind()
        except StartupError as e:
            self._unbind_all()
            self.systemd.failed(e.line)
            raise
        self._refresh_udp_ports()

    def _unbind_all(self) -> None:
        for listener in self._listeners():
            listener.release()

    def _refresh_udp_ports(self) -> None:
        """
        The UDP ports bound now. The daemon owns this set (the one writer,
        after every bind); every service's datagram guard reads it.
        """
        ports = {s.port for svc in self.config.services for s in svc.listen if s.kind == "datagram" and s.port}
        for instance in self.instances():
            for listener in instance.listeners():
                for port in listener.ports:
                    if is_udp(port):
                        ports.add(port.getHost().port)
        self.udp_ports.clear()
        self.udp_ports.update(ports)

    # -- life cycle ----------------------------------------------------------

    def _check_fd_limit(self) -> None:
        """Raise the soft descriptor limit to the hard one; warn if the caps need more."""
        if getattr(self, "_fd_checked", False):
            return
        self._fd_checked = True
        soft, _hard = raise_fd_limit()
        warning = fd_warning([i.context.policy.settings for i in self.instances()], soft)
        if warning:
            log.warn("socksvc: {warning}", event="fd_limit", warning=warning)

    def bind_now(self) -> None:
        """
        Bind every listener now, before twistd daemonizes (C{makeService}
        calls this when twistd will fork): a listener that cannot bind then
        stops the launching process itself, with the one line on its stderr,
        exit status 1 and no pidfile, as in the foreground (the sockets are
        inherited across the fork, as nginx's are). Raises L{StartupError}.
        """
        self._check_fd_limit()
        self._bind_all()

    def _daemonized_failure(self, e: StartupError) -> Exception:
        """
        A L{StartupError} after twistd forked (its status pipe open): twistd
        reports only an C{Exception} to the launching process (a SystemExit
        would leave it waiting on the pipe for ever, and the pidfile behind),
        so the line goes to the log and up as a L{StartupFailed}.
        """
        log.critical("socksvc: {line}", event="startup_failed", line=e.line)
        return StartupFailed(str(e.code))

    def _status_pipe(self) -> Any:
        options = self.twistd_options
        return options.get("statusPipe") if isinstance(options, dict) else None

    def privilegedStartService(self) -> None:
        self._check_fd_limit()
        try:
            self._bind_all()
        except StartupError as e:
            if self._status_pipe() is None:
                raise
            raise self._daemonized_failure(e) from None
        super().privilegedStartService()

    def startService(self) -> None:
        self._check_fd_limit()
        try:
            self._bind_all()
        except StartupError as e:
            if self._status_pipe() is None:
                raise
            raise self._daemonized_failure(e) from None
        if self.handle_signals:
            # Now, before the "services on" line and READY=1: systemd (or
            # logrotate) may send SIGHUP the moment it sees either, and
            # SIGHUP's default disposition kills.
            self._install_signal_handlers()
            # A SIGTERM held since makeService (hangup.hold_stop): stop as
            # soon as the reactor runs (its own handlers are in by then).
            self.reactor.callWhenRunning(self._stop_if_told)
        self.started_at = self.reactor.seconds()
        super().startService()
        total = sum(len(i.listeners()) for i in self.instances())
        log.info(
            "socksvc: {count} services on {listeners} listeners, config {source}",
            event="ready",
            count=len(self.instances()),
            listeners=total,
            source=self.config.source,
        )
        self.systemd.started()

    def stopService(self) -> Deferred[Any]:
        log.info("socksvc: stopping", event="stopping")
        self._stopping = True
        self.systemd.stopping()
        # The SIGHUP handler stays until the process exits: connections may
        # take close_grace seconds to close, and a SIGHUP meanwhile must not
        # kill the daemon (request_reload ignores it once stopped).
        return super().stopService()  # type: ignore[no-any-return]

    def _stop_if_told(self) -> None:
        if hangup.take_stop():
            log.info("socksvc: SIGTERM during start-up: stopping", event="stopping")
            self.reactor.stop()

    def _install_signal_handlers(self) -> None:
        """
        SIGHUP reloads; the handler only schedules the work on the reactor
        (callFromThread is safe in a signal handler, and before the reactor
        runs: the call waits for it).
        """
        if self._sighup_installed:
            return

        def on_sighup(signum: int, frame: Any) -> None:
            if not self._stopping:  # once stopping, SIGHUP is ignored until the process exits
                self.reactor.callFromThread(self.request_reload)

        try:
            signal.signal(signal.SIGHUP, on_sighup)
        except ValueError:  # not the main thread after all
            return
        self._sighup_installed = True
        if hangup.take():
            # One came while makeService held it (hangup.hold): reload once
            # start-up is complete (the reactor runs this after startService).
            log.info("socksvc: SIGHUP during start-up: reloading now", event="reload")
            self.reactor.callLater(0, self.request_reload)

    # -- status --------------------------------------------------------------

    def service_figures(self) -> list[Any]:
        """Every service's figures (L{socksvc.daemon.figures.service_figures}): the admin listener shows them."""
        return [figures.service_figures(i) for i in self.instances()]

    def workers_serving(self) -> int:
        """Processes serving clients: this one (a supervisor counts its workers)."""
        return 1

    def status(self) -> str:
        """The one line for systemd's STATUS=: connections per service, chat users."""
        parts = []
        total = 0
        for instance in self.instances():
            n = len(instance.context.policy.connections)
            total += n
            members = instance.context.state.status().members
            users = "" if members is None else f" ({members} user{'' if members == 1 else 's'})"
            parts.append(f"{instance.name} {n}{users}")
        plural = "" if total == 1 else "s"
        text = f"{total} connection{plural}: " + ", ".join(parts) if parts else "no services"
        if self.last_reload_error is not None:
            text = f"reload failed, still serving the previous config ({self.last_reload_error}); {text}"
        return text

    # -- reload --------------------------------------------------------------

    def request_reload(self) -> Deferred[bool] | None:
        """
        Reload soon (SIGHUP calls this). Reloads never overlap; signals that
        come while one waits to run share it.
        """
        if self._reload_queued or not self.running:
            return None
        self._reload_queued = True

        def run() -> Deferred[bool]:
            self._reload_queued = False
            return ensureDeferred(self._reload())

        def crashed(failure: Failure) -> bool:
            log.failure("socksvc: reload crashed", failure)
            return False

        d: Deferred[bool] = self._reload_lock.run(run)
        d.addErrback(crashed)
        return d

    def reload(self, config: Config | None = None) -> Deferred[bool]:
        """Re-read the config file (or apply C{config}); fires with True if applied."""
        return self._reload_lock.run(lambda: ensureDeferred(self._reload(config)))

    async def _reload(self, config: Config | None = None) -> bool:
        self.systemd.reloading()
        try:
            return await self._apply(config)
        finally:
            self.reloads += 1
            self.last_reload_time = self.reactor.seconds()
            if self.last_reload_error is None:
                self.last_reload_success_time = self.last_reload_time
            self.systemd.reloaded()

    def _failed(self, line: str) -> bool:
        log.error("socksvc: reload failed, still serving the previous config: {error}", event="reload", error=line)
        self.last_reload_error = line
        return False

    async def _apply(self, new: Config | None) -> bool:
        if new is None:
            try:
                new = load(self.config_path)
            except ConfigError as e:
                return self._failed(str(e))
            except Exception as e:  # a bug in a parser: the old config keeps serving, and STATUS says so
                log.failure("socksvc: reading {path} failed unexpectedly", path=self.config_path)
                why = " ".join(f"{e.__class__.__name__}: {e}".split())  # one line, for STATUS= and the log
                return self._failed(f"{self.config_path}: internal error while loading: {why}")
        plan = plan_reload({i.config.name: i.config for i in self.instances()}, new)
        failure = await apply_reload(self, new, plan)
        if failure is not None:
            return self._failed(failure)
        if self.admin is not None:
            self.admin.reconfigure(new)
        if restart_keys(new.daemon) != restart_keys(self.config.daemon):
            log.warn("socksvc: [daemon] changes (the log_* keys) take effect at the next restart", event="reload")
        self.config = new
        self._refresh_udp_ports()
        self.last_reload_error = None
        return True

    def setServiceParent(self, parent: Any) -> None:
        """
        Under twistd the parent is the Application: choose its log observer
        here, because twistd starts logging after makeService returns.
        """
        if isinstance(parent, Componentized) and parent.getComponent(ILogObserver, None) is None:
            try:
                observer = observer_for(
                    self.config.daemon, self.twistd_options, self.reactor, signals=self.handle_signals
                )
            except LogFileError as e:
                raise StartupError(str(e)) from None
            if observer is not None:
                parent.setComponent(ILogObserver, observer)
        super().setServiceParent(parent)
