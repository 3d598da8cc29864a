"""
Reload: a pure plan, then a small transactional apply.

L{plan_reload} compares what runs (each service's checked table) with a new
config and says what to do: services to remove, to add, and for each kept
one the listen specs to close and to open (compared per listen list: a spec
moved from C{listen} to chat's C{irc} is closed and opened again) and
whether its options changed.
It touches nothing, so it is tested without a reactor.

L{apply_reload} carries a plan out on the daemon: ports first (any failure
puts everything back as it was), then the commit, in which nothing can fail
on the network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import attrs
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from socksvc.config.listen import ListenSpec
from socksvc.config.loader import Config, ServiceConfig
from socksvc.daemon.errors import StartupError
from socksvc.daemon.instance import ServiceInstance
from socksvc.daemon.listener import Listener

log = Logger(namespace="socksvc")


class Reloadable(Protocol):
    """What L{apply_reload} needs of the daemon (L{socksvc.daemon.service.DaemonService} is one)."""

    def instances(self) -> list[ServiceInstance]: ...

    def make_instance(self, config: ServiceConfig) -> ServiceInstance: ...

    def order_services(self, names: Sequence[str]) -> None: ...


@attrs.frozen
class KeptService:
    """A service in both configs (same name and type)."""

    name: str
    config: ServiceConfig
    close: tuple[tuple[str, ListenSpec], ...]
    """Listen specs that go away, with the key of their list (C{listen}, or an extra one such as C{irc})."""
    open: tuple[tuple[str, int, ListenSpec], ...]
    """New listen specs: their list's key, their index in it, the spec."""
    options_changed: bool


@attrs.frozen
class ReloadPlan:
    """What a reload will do, in config order."""

    removed: tuple[str, ...]
    added: tuple[ServiceConfig, ...]
    kept: tuple[KeptService, ...]

    @property
    def rebinds(self) -> int:
        return sum(1 for k in self.kept if k.close or k.open)


def plan_reload(running: Mapping[str, ServiceConfig], new: Config) -> ReloadPlan:
    """
    The plan from the running services' tables (by name, in running order)
    to C{new}. A service whose type changed is removed and added again.
    """
    new_names = {svc.name for svc in new.services}
    removed = [name for name in running if name not in new_names]
    added: list[ServiceConfig] = []
    kept: list[KeptService] = []
    for svc in new.services:
        old = running.get(svc.name)
        if old is not None and old.type != svc.type:
            removed.append(svc.name)
            old = None
        if old is None:
            added.append(svc)
            continue
        old_specs = {(key, spec) for key, _, spec in old.listens()}
        new_specs = {(key, spec) for key, _, spec in svc.listens()}
        close = tuple((key, spec) for key, _, spec in old.listens() if (key, spec) not in new_specs)
        open_ = tuple((key, i, spec) for key, i, spec in svc.listens() if (key, spec) not in old_specs)
        changed = old.policy != svc.policy or old.settings != svc.settings
        kept.append(KeptService(svc.name, svc, close, open_, changed))
    return ReloadPlan(tuple(removed), tuple(added), tuple(kept))


async def apply_reload(daemon: Reloadable, new: Config, plan: ReloadPlan) -> str | None:
    """
    Carry C{plan} out on C{daemon}. Returns None when applied, or the one
    line saying why nothing was changed.
    """
    by_name = {i.name: i for i in daemon.instances()}
    removed = [by_name[name] for name in plan.removed]
    added = [daemon.make_instance(svc) for svc in plan.added]
    closing: list[Listener] = []
    opening: list[tuple[ServiceInstance, Listener]] = []
    for k in plan.kept:
        instance = by_name[k.name]
        closing += [listener for listener in instance.listeners() if (listener.key, listener.spec) in k.close]
        opening += [(instance, Listener(instance, spec, i, key)) for key, i, spec in k.open]

    # 1. Ports: release what goes away (wait until closed, so the same
    # address can be bound again), bind what is new; on any failure put
    # everything back as it was.
    releasing = [listener for i in removed for listener in i.listeners()] + closing
    was_bound = [listener for listener in releasing if listener.ports]
    await DeferredList([listener.release() for listener in releasing], consumeErrors=True)
    to_bind = [listener for i in added for listener in i.listeners()] + [listener for _, listener in opening]
    bound: list[Listener] = []
    try:
        for listener in to_bind:
            listener.bind()
            bound.append(listener)
    except StartupError as e:
        await DeferredList([listener.release() for listener in bound], consumeErrors=True)
        for instance in added:  # made but never started: its state lets go (chat leaves the notice bus)
            instance.context.state.shutdown()
        for listener in was_bound:
            try:
                listener.bind()
            except StartupError as again:
                log.critical("socksvc: could not restore a listener: {error}", error=again.line)
        return e.line

    # 2. Commit: nothing below can fail on the network.
    for instance in removed:
        log.info("{service}: removed by reload, stopping", event="reload", service=instance.name)
        d = instance.disownServiceParent()
        if isinstance(d, Deferred):
            d.addErrback(lambda f: log.failure("socksvc: stopping a removed service failed", f))
    for listener in closing:
        listener.disownServiceParent()
    for instance, listener in opening:
        listener.setServiceParent(instance)
    reconfigured = 0
    for k in plan.kept:
        if by_name[k.name].reconfigure(k.config):
            reconfigured += 1
            log.info("{service}: options reloaded", event="reload", service=k.name)
    for instance in added:
        log.info("{service}: added by reload", event="reload", service=instance.name)
        instance.setServiceParent(daemon)  # type: ignore[arg-type]
    daemon.order_services([svc.name for svc in new.services])
    log.info(
        "socksvc: reloaded {source}: {added} added, {removed} removed, {rebound} re-bound, {reconfigured} reconfigured",
        event="reloaded",
        source=new.source,
        added=len(added),
        removed=len(removed),
        rebound=plan.rebinds,
        reconfigured=reconfigured,
    )
    return None
