"""
A service instance: one [services.NAME] table, running.

It holds the service's context (settings, policy, the state its type made
once) and one L{Listener} child per listen spec (of C{listen} and of the
type's extra stream lists, such as chat's C{irc} and C{web}), applies a reload's new
settings in place, and on stop tells the state, then gives connections
C{close_grace} seconds before aborting them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.task import Clock, LoopingCall
from twisted.logger import Logger

from socksvc.config.loader import ServiceConfig
from socksvc.core.notices import NoticeBus
from socksvc.core.policy import Policy, SharedCounts
from socksvc.core.service import ServiceType
from socksvc.daemon.listener import Listener

log = Logger(namespace="socksvc")

CLOSE_GRACE = 2.0
"""Seconds a stopping service gives its connections to flush before aborting them."""


class ServiceInstance(MultiService):
    """One [services.NAME] table, running."""

    close_grace = CLOSE_GRACE

    def __init__(
        self,
        config: ServiceConfig,
        stype: ServiceType[Any, Any],
        reactor: Any,
        udp_ports: set[int],
        notices: NoticeBus | None = None,
        shared: SharedCounts | None = None,
        serving: bool = True,
    ) -> None:
        super().__init__()
        self.setName(config.name)
        self.config = config
        self.stype = stype
        policy = Policy(config.name, config.policy, reactor)
        if shared is not None:  # a worker process: caps and rates hold for every worker together
            policy.share(shared)
        self.context = stype.context(config.name, config.settings, policy, reactor, udp_ports, notices, serving)
        self.adopt: Callable[[Listener], list[Any]] | None = None
        """In a worker process: the listening ports for a listener, made from the sockets the supervisor bound."""
        self._factories: dict[str, Any] = {}
        for key, index, spec in config.listens():
            Listener(self, spec, index, key).setServiceParent(self)

    def factory(self, key: str = "listen") -> Any:
        """One stream factory per listen list (C{listen}, or an extra key such as irc), shared by its listeners."""
        factory = self._factories.get(key)
        if factory is None:
            factory = self._factories[key] = self.stype.stream_factory(key, self.context)
        return factory

    def listeners(self) -> list[Listener]:
        return [s for s in self if isinstance(s, Listener)]

    def reconfigure(self, config: ServiceConfig) -> bool:
        """
        Apply a reloaded table's options in place (same name and type):
        settings and policy; established connections stay. True if anything
        changed. All or nothing: if the service raises, what was changed is
        put back and the error goes to the caller (the reload rehearsed these
        settings first, so that is a bug).
        """
        old = self.config
        policy_changed = config.policy != old.policy
        if not policy_changed and config.settings == old.settings:
            self.config = config
            return False
        try:
            if policy_changed:
                self.context.policy.reconfigure(config.policy)
            # The state hears of either change (a datagram guard reads allow/deny too).
            self.context.reconfigure(config.settings)
        except BaseException:
            self.context.policy.reconfigure(old.policy)
            try:
                self.context.reconfigure(old.settings)
            except Exception:
                log.failure("{service}: putting the previous settings back failed", service=self.name)
            raise
        self.config = config
        return True

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
        said: Deferred[Any] = maybeDeferred(self.context.state.shutdown)
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


def rehearse(stype: ServiceType[Any, Any], config: ServiceConfig, previous: ServiceConfig | None = None) -> None:
    """
    Make C{config}'s service on a scratch state, on a clock that never runs
    (nothing is bound, no timer fires, nothing live is touched): its state,
    policy, idle sweeper and factories. With C{previous}, make that one and
    reconfigure it to C{config}, as a reload does. Raises what the service
    raises: --check, the start and every reload call this before they
    change anything, so settings the loader accepted but a service cannot
    take stop there, with one line.
    """
    clock = Clock()
    first = previous if previous is not None else config
    policy = Policy(config.name, first.policy, clock)
    context = stype.context(config.name, first.settings, policy, clock, set())
    try:
        if previous is not None:
            policy.reconfigure(config.policy)
            context.reconfigure(config.settings)
        policy.start()
        if stype.stream is not None:
            stype.stream(context)
        if stype.datagram is not None:
            stype.datagram(context)
        for key in stype.extra_streams:  # chat's irc and web
            stype.stream_factory(key, context)
    finally:
        policy.stop()
        context.state.shutdown()


def rehearsal_failure(name: str, error: Exception) -> str:
    """The one line for a service that cannot take its settings (the traceback is logged separately)."""
    why = " ".join(f"{error.__class__.__name__}: {error}".split())
    return f"service {name!r} cannot run with these settings: {why}"
