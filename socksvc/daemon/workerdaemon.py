"""
A worker process's daemon: the services of one config, on sockets the supervisor bound.

L{WorkerDaemon} is the single-process L{DaemonService} with three
differences. Its listeners adopt the descriptors the supervisor handed over
(L{adopt_stream}, L{adopt_datagram}) instead of binding; its services'
policies count against the tables every worker shares
(L{socksvc.daemon.shared}), so caps and rates hold for the whole daemon; and
its stream ports share their accept queue evenly with the other workers
(L{socksvc.daemon.balance}). A service whose type keeps one state for every
client (C{one_process}: chat without a bus, smtp, pop3) is served by the
worker in slot 0 only. It
tells nobody but the supervisor anything (no systemd, no signals of its own:
SIGHUP reloads are the supervisor's).
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import tcp, unix
from twisted.internet.defer import Deferred
from twisted.protocols.tls import TLSMemoryBIOFactory

from socksvc.config.listen import ListenSpec
from socksvc.config.loader import Config, ServiceConfig
from socksvc.daemon import systemd
from socksvc.daemon.balance import balance
from socksvc.daemon.control import listener_name, table_name
from socksvc.daemon.instance import ServiceInstance
from socksvc.daemon.listener import MAX_DATAGRAM, Listener, is_udp
from socksvc.daemon.service import DaemonService
from socksvc.daemon.shared import Table, WorkerCounts
from socksvc.services.catalogue import types


class AdoptedUNIXPort(unix.Port):
    """
    A UNIX listening socket the supervisor owns: Twisted would chmod its
    path to 0666 when it starts listening and unlink it when it stops; the
    path and its mode are the supervisor's business.
    """

    def startListening(self) -> None:
        path = self._bindPath
        if isinstance(path, bytes) and path and not path.startswith(b"\0"):
            try:
                self.mode = stat.S_IMODE(os.stat(path).st_mode)  # so Twisted's chmod changes nothing
            except OSError:
                pass
        super().startListening()

    def connectionLost(self, reason: Any) -> None:
        if self.lockFile is not None:
            self.lockFile.unlock()
        tcp.Port.connectionLost(self, reason)


def adopt_stream(reactor: Any, fd: int, spec: ListenSpec, factory: Any) -> Any:
    """A listening port on C{fd} (TCP, TLS for an C{ssl:} spec, or UNIX); C{fd} is closed (the port has its own)."""
    try:
        info = systemd.describe_fd(fd)
        if info.type != socket.SOCK_STREAM or not info.listening:
            raise ValueError(f"descriptor {fd} is not a listening stream socket")
        os.set_blocking(fd, False)
        if info.family == socket.AF_UNIX:
            port: Any = AdoptedUNIXPort._fromListeningDescriptor(reactor, fd, factory)
            port.startListening()
            return port
        if spec.tls is not None:  # ssl: the certificate and key were read with the config
            tls = TLSMemoryBIOFactory(spec.tls.options(), False, factory)
            port = reactor.adoptStreamPort(fd, info.family, tls)
            port._type = "TLS"
            return port
        return reactor.adoptStreamPort(fd, info.family, factory)
    finally:
        os.close(fd)


def adopt_datagram(reactor: Any, fd: int, protocol: Any) -> Any:
    """A UDP port on C{fd}; C{fd} is closed (the port has its own)."""
    try:
        info = systemd.describe_fd(fd)
        if info.type != socket.SOCK_DGRAM:
            raise ValueError(f"descriptor {fd} is not a datagram socket")
        os.set_blocking(fd, False)
        return reactor.adoptDatagramPort(fd, info.family, protocol, maxPacketSize=MAX_DATAGRAM)
    finally:
        os.close(fd)


def one_process(instance: ServiceInstance) -> bool:
    """Is this instance served by worker 0 alone (its type's decision, on its settings)?"""
    return instance.stype.single_process(instance.config.settings)


class WorkerDaemon(DaemonService):
    """The services of one worker process (see the module doc)."""

    def __init__(self, config: Config, reactor: Any, slot: int, workers: int, held: dict[str, int], **kw: Any) -> None:
        self.slot = slot
        self.workers = workers
        self.held = held
        """Descriptors the supervisor handed over, by name, not yet used (the control channel fills it)."""
        self.counts: dict[str, WorkerCounts] = {}
        """Each service's view of its shared table, by service name."""
        super().__init__(config, reactor, notifier=systemd.Notifier(None), watchdog=None, handle_signals=False, **kw)
        if self.admin is not None:  # the admin listener is the supervisor's: it serves every worker's figures
            self.admin.disownServiceParent()
            self.admin = None

    # -- building --------------------------------------------------------------

    def make_instance(self, config: ServiceConfig) -> ServiceInstance:
        stype = types()[config.type]
        fd = self.held.pop(table_name(config.name), None)
        if fd is None:
            raise ValueError(f"no shared table was handed over for service {config.name!r}")
        counts = WorkerCounts(Table.attach(fd), self.slot)
        counts.serving = 1 if stype.single_process(config.settings) else self.workers
        self.counts[config.name] = counts
        instance = ServiceInstance(config, stype, self.reactor, self.udp_ports, self.notices, counts)
        instance.adopt = self._ports_for(instance)
        return instance

    def _ports_for(self, instance: ServiceInstance) -> Callable[[Listener], list[Any]]:
        def ports(listener: Listener) -> list[Any]:
            if self.slot != 0 and one_process(instance):
                return []  # served by worker 0 alone
            same = [x for x in instance.listeners() if x.spec == listener.spec]
            occurrence = same.index(listener) if listener in same else len(same)
            out: list[Any] = []
            k = 0
            try:
                while (
                    fd := self.held.pop(listener_name(str(instance.name), listener.spec.text, occurrence, k), None)
                ) is not None:
                    k += 1
                    if systemd.describe_fd(fd).type == socket.SOCK_DGRAM:
                        assert instance.stype.datagram is not None
                        out.append(adopt_datagram(self.reactor, fd, instance.stype.datagram(instance.context)))
                    else:
                        out.append(adopt_stream(self.reactor, fd, listener.spec, listener.factory()))  # its list's
            except BaseException:
                for port in out:
                    port.stopListening()
                raise
            if not out:
                raise ValueError("the supervisor handed over no socket for it")
            return out

        return ports

    # -- serving ---------------------------------------------------------------

    def serve(self) -> None:
        """Every listener adopted: share the accept queues, and say this worker serves its services."""
        for instance in self.instances():
            counts = self.counts.get(str(instance.name))
            if counts is None:
                continue
            serving = False
            for listener in instance.listeners():
                for port in listener.ports:
                    serving = True
                    if not one_process(instance) and not is_udp(port):
                        balance(port, counts, self.reactor)
            counts.set_live(serving)

    def startService(self) -> None:
        # DaemonService's, less the "services on" line and READY (the supervisor says those).
        self._check_fd_limit()
        self._bind_all()
        super(DaemonService, self).startService()
        self.serve()

    def stopService(self) -> Deferred[Any]:
        for counts in self.counts.values():
            counts.set_live(False)  # the others stop leaving connections to this worker
        self._stopping = True
        return super(DaemonService, self).stopService()  # type: ignore[no-any-return]

    # -- reload ----------------------------------------------------------------

    def set_workers(self, workers: int) -> None:
        """The number of workers changed: UDP's per-source rates are split anew."""
        if workers == self.workers:
            return
        self.workers = workers
        for instance in self.instances():
            counts = self.counts.get(str(instance.name))
            if counts is None or one_process(instance):
                continue
            counts.serving = workers
            instance.context.policy.reconfigure(instance.context.policy.settings)  # its share of the close lines
            instance.context.state.reconfigure(instance.context.settings)  # and of UDP's per-source rates

    async def commit(self, config: Config) -> str | None:
        """Apply a prepared reload; None when applied, else the line why not."""
        # [daemon] is the supervisor's business (it starts or stops workers): no warning here.
        self.config = attrs.evolve(self.config, daemon=config.daemon)
        applied = await self.reload(config)
        # Services the reload removed go with their tables.
        for name in [n for n in self.counts if n not in {svc.name for svc in config.services}]:
            del self.counts[name]
        self.serve()
        return None if applied else (self.last_reload_error or "reload failed")
