"""
The daemon's service tree: config in, one L{DaemonService} out.

For every configured service there is one L{ServiceInstance} (a
MultiService holding its context and policy) with one L{Listener} child per
listen spec. Listeners bind in C{privilegedStartService} (so ports below 1024
work before twistd sheds privileges) and fail loudly: if any listener cannot
bind, start-up stops with one line naming the service and the address, and
nothing is left listening.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

from socksvc.config import Config, ServiceConfig
from socksvc.listen import ListenSpec, listen_stream, port_description
from socksvc.policy import Policy
from socksvc.registry import ServiceContext, ServiceType, types

log = Logger(namespace="socksvc")


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
    text = str(getattr(err, "socketError", None) or err)
    # CannotListenError's text repeats the address; keep the OS's reason.
    sock_err = getattr(err, "socketError", None)
    if sock_err is not None and getattr(sock_err, "strerror", None):
        text = sock_err.strerror
    return text or err.__class__.__name__


class Listener(Service):
    """One listen spec of one service: binds it, and unbinds on stop."""

    port: Any = None

    def __init__(self, instance: ServiceInstance, spec: ListenSpec) -> None:
        self.instance = instance
        self.spec = spec
        self.setName(spec.text)

    def bind(self) -> None:
        if self.port is not None:
            return
        context = self.instance.context
        stype = self.instance.stype
        where = f"service {context.name!r} cannot listen on {self.spec.text!r}"
        result: list[Any] = []
        if self.spec.kind == "datagram":
            assert stype.datagram is not None
            from socksvc.udp import listen_udp

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
        log.info(
            "{service}: listening on {where}",
            event="listen",
            service=context.name,
            where=port_description(self.port),
            spec=self.spec.text,
        )

    def _bound(self, port: IListeningPort) -> None:
        self.port = port

    def _late_failure(self, failure: Failure) -> None:
        context = self.instance.context
        log.critical(
            "{service}: cannot listen on {spec}: {reason}; stopping",
            service=context.name,
            spec=self.spec.text,
            reason=_bind_reason(failure),
        )
        context.reactor.stop()

    def privilegedStartService(self) -> None:
        self.bind()
        super().privilegedStartService()

    def startService(self) -> None:
        self.bind()  # twist (unlike twistd) only calls startService
        super().startService()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return None
        return port.stopListening()  # type: ignore[no-any-return]


class ServiceInstance(MultiService):
    """One [services.NAME] table, running."""

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
        for spec in config.listen:
            Listener(self, spec).setServiceParent(self)

    def factory(self) -> Any:
        """One stream factory shared by all of this service's stream listeners."""
        if self._factory is None:
            assert self.stype.stream is not None
            self._factory = self.stype.stream(self.context)
        return self._factory

    def listeners(self) -> list[Listener]:
        return [s for s in self if isinstance(s, Listener)]

    def startService(self) -> None:
        super().startService()
        self.context.policy.start()

    def stopService(self) -> Deferred[None] | None:
        self.context.policy.stop()
        if self.stype.stop is not None:
            self.stype.stop(self.context)
        return super().stopService()  # type: ignore[no-any-return]


class DaemonService(MultiService):
    """The whole daemon."""

    def __init__(self, config: Config, reactor: Any) -> None:
        super().__init__()
        self.setName("socksvc")
        self.config = config
        self.reactor = reactor
        self.udp_ports: set[int] = {
            s.port for svc in config.services for s in svc.listen if s.kind == "datagram" and s.port
        }
        known = types()
        for svc in config.services:
            ServiceInstance(svc, known[svc.type], reactor, self.udp_ports).setServiceParent(self)

    def instances(self) -> list[ServiceInstance]:
        return [s for s in self if isinstance(s, ServiceInstance)]

    def _bind_all(self) -> None:
        try:
            for instance in self.instances():
                for listener in instance.listeners():
                    listener.bind()
        except StartupError:
            self._unbind_all()
            raise
        for instance in self.instances():
            for listener in instance.listeners():
                if listener.port is not None and listener.spec.kind == "datagram":
                    self.udp_ports.add(listener.port.getHost().port)

    def _unbind_all(self) -> None:
        for instance in self.instances():
            for listener in instance.listeners():
                port, listener.port = listener.port, None
                if port is not None:
                    port.stopListening()

    def privilegedStartService(self) -> None:
        self._bind_all()
        super().privilegedStartService()

    def startService(self) -> None:
        self._bind_all()
        super().startService()
        total = sum(len(i.listeners()) for i in self.instances())
        log.info(
            "socksvc: {count} services on {listeners} listeners, config {source}",
            event="ready",
            count=len(self.instances()),
            listeners=total,
            source=self.config.source,
        )

    def setServiceParent(self, parent: Any) -> None:
        """
        Under twistd the parent is the Application: choose its log observer
        here, because twistd starts logging after makeService returns.
        """
        from twisted.python.components import Componentized

        if self.config.daemon.log_format == "json" and isinstance(parent, Componentized):
            from twisted.logger import ILogObserver, jsonFileLogObserver

            parent.setComponent(ILogObserver, jsonFileLogObserver(sys.stdout))
        super().setServiceParent(parent)
