"""
The daemon's service tree: config in, one L{DaemonService} out.

For every configured service there is one L{ServiceInstance} (a
MultiService holding its context and policy) with one L{Listener} child per
listen spec. Listeners bind in C{privilegedStartService} (so ports below 1024
work before twistd sheds privileges) and fail loudly: if any listener cannot
bind, start-up stops with one line naming the service and the address, and
nothing is left listening.

Under systemd (see L{socksvc.daemon.systemd}) the daemon says READY=1 once every
listener is bound, keeps a STATUS= line fresh, pings the watchdog, adopts
socket-activated descriptors (C{systemd:name=NAME}), re-reads its config on
SIGHUP (L{DaemonService.reload}) and says STOPPING=1 on the way out.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, DeferredLock, ensureDeferred, maybeDeferred, succeed
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from socksvc.config.listen import ListenSpec, listen_stream, port_description
from socksvc.config.loader import DEFAULT_SOURCE, Config, ConfigError, ServiceConfig, load
from socksvc.core.datagram import MAX_DATAGRAM, listen_udp, tune_buffers
from socksvc.core.policy import Policy, fd_warning, guard_port, raise_fd_limit
from socksvc.core.service import ServiceContext, ServiceType, types
from socksvc.daemon import systemd
from socksvc.daemon.quickport import quicken

log = Logger(namespace="socksvc")

CLOSE_GRACE = 2.0
"""Seconds a stopping service gives its connections to flush before aborting them."""


class StartupError(SystemExit):
    """
    Start-up cannot go on. A SystemExit carrying the one line to print: when
    nothing catches it, Python prints the line to stderr and exits with 1
    (under twistd, twist, and in the tests alike, no traceback).
    """

    def __init__(self, line: str) -> None:
        super().__init__(f"socksvc: {line}")
        self.line = line


def _bind_reason(failure: Failure) -> str:
    err = failure.value
    # CannotListenError's text repeats the address; keep the OS's reason.
    sock_err = getattr(err, "socketError", None)
    if sock_err is not None and getattr(sock_err, "strerror", None):
        return str(sock_err.strerror)
    return str(sock_err or err) or err.__class__.__name__


def _is_udp(port: Any) -> bool:
    try:
        return str(getattr(port.getHost(), "type", "")).upper() == "UDP"
    except Exception:
        return False


class Listener(Service):
    """
    One listen spec of one service: binds it, and unbinds on stop. A
    C{systemd:name=NAME} spec may stand for several inherited sockets (a
    socket unit with both ListenStream= and ListenDatagram=), hence
    C{ports}; C{port} is the first.
    """

    def __init__(self, instance: ServiceInstance, spec: ListenSpec, index: int = 0) -> None:
        self.instance = instance
        self.spec = spec
        self.ports: list[Any] = []
        # Two identical specs (two "udp:0", say) are legal: names must still differ.
        self.setName(f"{index}:{spec.text}")

    @property
    def port(self) -> Any:
        return self.ports[0] if self.ports else None

    @port.setter
    def port(self, value: Any) -> None:
        self.ports = [] if value is None else [value]

    def bind(self) -> None:
        if self.ports:
            return
        context = self.instance.context
        stype = self.instance.stype
        where = f"service {context.name!r} cannot listen on {self.spec.text!r}"
        result: list[Any] = []
        if self.spec.scheme == "systemd":
            self._adopt(where)
        elif self.spec.kind == "datagram":
            assert stype.datagram is not None
            try:
                self.port = listen_udp(context.reactor, self.spec, stype.datagram(context))
            except Exception as e:
                raise StartupError(f"{where}: {_bind_reason(Failure(e))}") from None
        else:
            assert stype.stream is not None
            factory = self.instance.factory()
            d: Deferred[IListeningPort] = listen_stream(context.reactor, self.spec, factory)
            d.addBoth(result.append)
            if not result:
                # An endpoint that binds later (rare): report a failure when it comes.
                d.addCallbacks(self._bound, self._late_failure)
                return
            if isinstance(result[0], Failure):
                raise StartupError(f"{where}: {_bind_reason(result[0])}")
            self.port = result[0]
        for port in self.ports:
            self._announce(port)

    def _announce(self, port: Any) -> None:
        """A port is bound: guard its accept errors and say where it listens."""
        context = self.instance.context
        where = port_description(port)
        guard_port(port, context.reactor, f"{context.name}: {where}")
        quicken(port)
        log.info(
            "{service}: listening on {where}",
            event="listen",
            service=context.name,
            where=where,
            spec=self.spec.text,
        )

    def _adopt(self, where: str) -> None:
        """Take over the socket-activated descriptors this spec names."""
        context = self.instance.context
        stype = self.instance.stype
        try:
            fds = systemd.sockets_for(self.spec.text)
        except (LookupError, ValueError) as e:
            raise StartupError(f"{where}: {e}") from None
        ports: list[Any] = []
        try:
            for fd in fds:
                ports.append(
                    systemd.adopt(
                        context.reactor,
                        fd,
                        self.instance.factory if stype.stream is not None else None,
                        (lambda: stype.datagram(context)) if stype.datagram is not None else None,  # type: ignore[misc]
                        MAX_DATAGRAM,
                    )
                )
        except Exception as e:
            for port in ports:
                port.stopListening()
            raise StartupError(f"{where}: {e}") from None
        for port in ports:
            if _is_udp(port):
                tune_buffers(port)  # an adopted UDP socket gets the buffers listen_udp gives its own
        self.ports = ports

    def _bound(self, port: IListeningPort) -> None:
        self.port = port
        self._announce(port)

    def _late_failure(self, failure: Failure) -> None:
        context = self.instance.context
        log.critical(
            "{service}: cannot listen on {spec}: {reason}; stopping",
            service=context.name,
            spec=self.spec.text,
            reason=_bind_reason(failure),
        )
        context.reactor.stop()

    def release(self) -> Deferred[Any]:
        """Stop listening (established connections stay); fires once the sockets are closed."""
        ports, self.ports = self.ports, []
        return DeferredList([maybeDeferred(p.stopListening) for p in ports], consumeErrors=True)

    def privilegedStartService(self) -> None:
        self.bind()
        super().privilegedStartService()

    def startService(self) -> None:
        self.bind()  # twist (unlike twistd) only calls startService
        super().startService()

    def stopService(self) -> Deferred[Any] | None:
        super().stopService()
        if not self.ports:
            return None
        return self.release()


class ServiceInstance(MultiService):
    """One [services.NAME] table, running."""

    close_grace = CLOSE_GRACE

    def __init__(self, config: ServiceConfig, stype: ServiceType, reactor: Any, udp_ports: set[int]) -> None:
        super().__init__()
        self.setName(config.name)
        self.config = config
        self.stype = stype
        self.context = ServiceContext(
            name=config.name,
            type=config.type,
            settings=config.settings,
            policy=Policy(config.name, config.policy, reactor),
            reactor=reactor,
            udp_ports=udp_ports,
        )
        self._factory: Any = None
        for index, spec in enumerate(config.listen):
            Listener(self, spec, index).setServiceParent(self)

    def factory(self) -> Any:
        """One stream factory shared by all of this service's stream listeners."""
        if self._factory is None:
            assert self.stype.stream is not None
            self._factory = self.stype.stream(self.context)
        return self._factory

    def listeners(self) -> list[Listener]:
        return [s for s in self if isinstance(s, Listener)]

    def reconfigure(self, config: ServiceConfig) -> bool:
        """
        Apply a reloaded table's options in place (same name and type):
        settings and policy; established connections stay. True if anything
        changed.
        """
        changed = False
        if config.policy != self.config.policy:
            self.context.policy.reconfigure(config.policy)
            changed = True
        if config.settings != self.config.settings:
            self.context.settings = config.settings
            if self.stype.reconfigure is not None:
                try:
                    self.stype.reconfigure(self.context, config.settings)
                except Exception:  # the service's own bug must not stop the reload of the others
                    log.failure("{service}: applying the reloaded settings failed", service=self.name)
            changed = True
        self.config = config
        return changed

    def startService(self) -> None:
        super().startService()
        self.context.policy.start()

    def stopService(self) -> Deferred[Any]:
        """
        Stop accepting, tell the service (chat says goodbye), then close
        every connection: they get C{close_grace} seconds to flush, then are
        aborted.
        """
        unbound = super().stopService()
        self.context.policy.stop()
        said: Deferred[Any] = succeed(None)
        if self.stype.stop is not None:
            said = maybeDeferred(self.stype.stop, self.context)
        said.addErrback(lambda f: log.failure("{service}: stopping failed", f, service=self.name))
        closed = self._close_connections()
        return DeferredList([unbound, said, closed], consumeErrors=True)

    def _close_connections(self) -> Deferred[None]:
        policy = self.context.policy
        reactor = self.context.reactor
        for conn in list(policy.connections):
            if conn.transport is not None:
                conn.transport.loseConnection()
        done: Deferred[None] = Deferred()
        if not policy.connections:
            done.callback(None)
            return done
        deadline = reactor.seconds() + self.close_grace

        def check() -> None:
            if policy.connections and reactor.seconds() < deadline:
                return
            for conn in list(policy.connections):
                transport: Any = conn.transport
                if transport is not None:
                    transport.abortConnection()
            if loop.running:
                loop.stop()

        loop = LoopingCall(check)
        loop.clock = reactor
        loop.start(0.05, now=False).addBoth(lambda _: done.callback(None))
        return done


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
        known = types()
        for svc in config.services:
            ServiceInstance(svc, known[svc.type], reactor, self.udp_ports).setServiceParent(self)
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
        self._reload_lock = DeferredLock()
        self._reload_queued = False
        self._sighup_installed = False
        self._stopping = False
        self.twistd_options: Any = None
        """twistd's own options (the plugin options' C{parent}), for the log observer choice; None = read sys.argv."""

    def instances(self) -> list[ServiceInstance]:
        return [s for s in self if isinstance(s, ServiceInstance)]

    def instance(self, name: str) -> ServiceInstance:
        service = self.getServiceNamed(name)
        assert isinstance(service, ServiceInstance)
        return service

    # -- binding -------------------------------------------------------------

    def _bind_all(self) -> None:
        try:
            for instance in self.instances():
                for listener in instance.listeners():
                    listener.bind()
        except StartupError as e:
            self._unbind_all()
            self.systemd.failed(e.line)
            raise
        self._refresh_udp_ports()

    def _unbind_all(self) -> None:
        for instance in self.instances():
            for listener in instance.listeners():
                listener.release()

    def _refresh_udp_ports(self) -> None:
        """The UDP ports bound now (a shared set: every context sees the change)."""
        ports = {s.port for svc in self.config.services for s in svc.listen if s.kind == "datagram" and s.port}
        for instance in self.instances():
            for listener in instance.listeners():
                for port in listener.ports:
                    if _is_udp(port):
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

    def privilegedStartService(self) -> None:
        self._check_fd_limit()
        self._bind_all()
        super().privilegedStartService()

    def startService(self) -> None:
        self._check_fd_limit()
        self._bind_all()
        if self.handle_signals:
            # Now, before the "services on" line and READY=1: systemd (or
            # logrotate) may send SIGHUP the moment it sees either, and
            # SIGHUP's default disposition kills.
            self._install_signal_handlers()
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

    # -- status --------------------------------------------------------------

    def status(self) -> str:
        """The one line for systemd's STATUS=: connections per service, chat users."""
        parts = []
        total = 0
        for instance in self.instances():
            n = len(instance.context.policy.connections)
            total += n
            parts.append(f"{instance.name} {n}{_users(instance.context.state)}")
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
        known = types()
        old_by_name = {i.name: i for i in self.instances()}
        new_names = {svc.name for svc in new.services}
        removed = [i for name, i in old_by_name.items() if name not in new_names]
        added: list[ServiceInstance] = []
        kept: list[tuple[ServiceInstance, ServiceConfig, list[Listener], list[Listener]]] = []
        for svc in new.services:
            old = old_by_name.get(svc.name)
            if old is not None and old.config.type != svc.type:
                removed.append(old)  # same name, another type: replace it
                old = None
            if old is None:
                added.append(ServiceInstance(svc, known[svc.type], self.reactor, self.udp_ports))
                continue
            old_specs = {listener.spec: listener for listener in old.listeners()}
            close = [listener for spec, listener in old_specs.items() if spec not in svc.listen]
            open_ = [Listener(old, spec, i) for i, spec in enumerate(svc.listen) if spec not in old_specs]
            kept.append((old, svc, close, open_))

        # 1. Ports: release what goes away (wait until closed, so the same
        # address can be bound again), bind what is new; on any failure put
        # everything back as it was.
        releasing = [listener for i in removed for listener in i.listeners()]
        releasing += [listener for _, _, close, _ in kept for listener in close]
        was_bound = [listener for listener in releasing if listener.ports]
        await DeferredList([listener.release() for listener in releasing], consumeErrors=True)
        opening = [listener for i in added for listener in i.listeners()]
        opening += [listener for _, _, _, open_ in kept for listener in open_]
        bound: list[Listener] = []
        try:
            for listener in opening:
                listener.bind()
                bound.append(listener)
        except StartupError as e:
            await DeferredList([listener.release() for listener in bound], consumeErrors=True)
            for listener in was_bound:
                try:
                    listener.bind()
                except StartupError as again:
                    log.critical("socksvc: could not restore a listener: {error}", error=again.line)
            return self._failed(e.line)

        # 2. Commit: nothing below can fail on the network.
        for instance in removed:
            log.info("{service}: removed by reload, stopping", event="reload", service=instance.name)
            d = instance.disownServiceParent()
            if isinstance(d, Deferred):
                d.addErrback(lambda f: log.failure("socksvc: stopping a removed service failed", f))
        rebound = reconfigured = 0
        for instance, svc, close, open_ in kept:
            for listener in close:
                listener.disownServiceParent()
            for listener in open_:
                listener.setServiceParent(instance)
            if close or open_:
                rebound += 1
            if instance.reconfigure(svc):
                reconfigured += 1
                log.info("{service}: options reloaded", event="reload", service=instance.name)
        for instance in added:
            log.info("{service}: added by reload", event="reload", service=instance.name)
            instance.setServiceParent(self)
        # Keep the children in config order (STATUS= and logs follow it).
        order = {svc.name: n for n, svc in enumerate(new.services)}
        self.services.sort(key=lambda s: order.get(s.name or "", len(order)))
        if new.daemon != self.config.daemon:
            log.warn("socksvc: [daemon] changes (log_format) take effect at the next restart", event="reload")
        self.config = new
        self._refresh_udp_ports()
        self.last_reload_error = None
        log.info(
            "socksvc: reloaded {source}: {added} added, {removed} removed, {rebound} re-bound, "
            "{reconfigured} reconfigured",
            event="reloaded",
            source=new.source,
            added=len(added),
            removed=len(removed),
            rebound=rebound,
            reconfigured=reconfigured,
        )
        return True

    def setServiceParent(self, parent: Any) -> None:
        """
        Under twistd the parent is the Application: choose its log observer
        here, because twistd starts logging after makeService returns.
        """
        from twisted.logger import ILogObserver
        from twisted.python.components import Componentized

        if isinstance(parent, Componentized) and parent.getComponent(ILogObserver, None) is None:
            if self.config.daemon.log_format == "json":
                # JSON where twistd would write its own log: stdout, or its
                # --logfile opened as twistd opens it; --syslog and --logger
                # stay twistd's (see socksvc.daemon.logs).
                from socksvc.daemon.logs import LogFileError, choose_json_observer, log_destination

                try:
                    json_observer = choose_json_observer(
                        sys.stdout, self.twistd_options, sys.argv, self.reactor if self.handle_signals else None
                    )
                except LogFileError as e:
                    raise StartupError(str(e)) from None
                if json_observer is not None:
                    parent.setComponent(ILogObserver, json_observer)
                else:
                    option = log_destination(self.twistd_options, sys.argv).option
                    if option:
                        log.warn(
                            'socksvc: log_format = "json" ignored: twistd was told to log with {option}',
                            event="log_format",
                            option=option,
                        )
            else:
                # Text: the same lines as twistd's own observer, faster, but
                # only where twistd itself would write them to stdout (see
                # socksvc.daemon.logs): --logfile, --syslog and --logger stay twistd's.
                from socksvc.daemon.logs import choose_text_observer

                observer = choose_text_observer(sys.stdout, self.twistd_options, sys.argv)
                if observer is not None:
                    parent.setComponent(ILogObserver, observer)
        super().setServiceParent(parent)


def _users(state: Any) -> str:
    """' (N users)' for a service whose state has a roster (chat), else ''."""
    if state is None:
        return ""
    n: int | None = None
    count: Callable[[], Any] | None = getattr(state, "user_count", None)
    if callable(count):
        n = int(count())
    else:
        for attr in ("users", "nicks", "members"):
            roster = getattr(state, attr, None)
            if roster is not None and hasattr(roster, "__len__"):
                n = len(roster)
                break
    if n is None:
        return ""
    return f" ({n} user{'' if n == 1 else 's'})"
