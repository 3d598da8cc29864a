"""
Reload: a pure plan, then a small transactional apply.

L{plan_reload} compares what runs (each service's checked table) with a new
config and says what to do: services to remove, to add, and for each kept
one the listen specs to close and to open (compared per listen list: a spec
moved from C{listen} to chat's C{irc} is closed and opened again) and
whether its options changed.
It touches nothing, so it is tested without a reactor.

L{apply_reload} carries a plan out on the daemon, all or nothing: the new
settings rehearsed on scratch states, new ports bound while the old ones
still serve (any failure closes only what the reload opened), then the
commit, in which nothing can fail on the network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import attrs
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from socksvc.config.listen import ListenSpec
from socksvc.config.loader import Config, ServiceConfig, bind_key, keys_collide
from socksvc.daemon.errors import StartupError
from socksvc.daemon.instance import ServiceInstance, rehearsal_failure, rehearse
from socksvc.daemon.listener import Listener
from socksvc.services.catalogue import types

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
    to C{new}. A service whose type changed is removed and added again; so
    is one whose placement changes (L{moves}: chat given or losing a bus).
    """
    new_names = {svc.name for svc in new.services}
    removed = [name for name in running if name not in new_names]
    added: list[ServiceConfig] = []
    kept: list[KeptService] = []
    for svc in new.services:
        old = running.get(svc.name)
        if old is not None and (old.type != svc.type or moves(old, svc)):
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


def moves(old: ServiceConfig, new: ServiceConfig) -> bool:
    """
    Does a service of the same type go from worker 0 alone to every worker,
    or back (L{socksvc.core.service.ServiceType.single_process}: chat's
    bus), or must it start afresh (L{socksvc.core.service.ServiceType.replaced}:
    chat's bus changed)? Then it is replaced, not reconfigured (docs/workers.md).
    """
    stype = types()[new.type]
    return stype.replaced(old.settings, new.settings)


def rehearse_plan(running: Mapping[str, ServiceInstance], plan: ReloadPlan) -> str | None:
    """
    Every added service, and every kept one whose options change, made on a
    scratch state first (L{rehearse}); None, or the one line saying why the
    reload cannot be applied. Nothing live is touched.
    """
    for svc in plan.added:
        stype = types()[svc.type]
        try:
            rehearse(stype, svc)
        except Exception as e:
            log.failure("{service}: the reloaded settings cannot be used", service=svc.name)
            return rehearsal_failure(svc.name, e)
    for k in plan.kept:
        if not k.options_changed:
            continue
        instance = running[k.name]
        try:
            rehearse(instance.stype, k.config, instance.config)
        except Exception as e:
            log.failure("{service}: the reloaded settings cannot be used", service=k.name)
            return rehearsal_failure(k.name, e)
    return None


async def _undo(bound: list[Listener], released: list[Listener], added: list[ServiceInstance]) -> None:
    """
    Put everything back as it was: close what was bound, bind again what was
    released; the services made for the reload let go of their states (never
    started: chat leaves the notice bus).
    """
    await DeferredList([listener.release() for listener in reversed(bound)], consumeErrors=True)
    for instance in added:
        try:
            instance.context.state.shutdown()
        except Exception:
            log.failure("{service}: letting go of an unused new service failed", service=instance.name)
    for listener in released:
        try:
            listener.bind()
        except StartupError as again:
            log.critical("socksvc: could not restore a listener: {error}", error=again.line)


async def apply_reload(daemon: Reloadable, new: Config, plan: ReloadPlan) -> str | None:
    """
    Carry C{plan} out on C{daemon}, all or nothing. Returns None when
    applied, or the one line saying why nothing was changed.

    1. Rehearse: every new or changed service's settings on a scratch state.
    2. Bind what is new while the old listeners still serve: a new address
       is bound beside them; a spec on exactly the address of one going away
       takes that listener's socket over (L{Listener.take_over}: the address
       is never unbound). A failure here closes only what this reload
       opened: no working listener was touched.
    3. A new spec that overlaps one going away without being the same
       address (C{tcp:7007:interface=127.0.0.1} becoming C{tcp:7007}, or a
       UNIX path re-bound with another mode) cannot be bound beside it: the
       old listener closes first, then the new one binds (a refusal gap of
       about a reactor turn); if that fails, the old one is bound again.
    4. Commit: options in place (if a service still raises, those already
       changed are put back and the ports undone), then services removed,
       listeners closed, listeners and services added.
    """
    by_name = {i.config.name: i for i in daemon.instances()}
    failure = rehearse_plan(by_name, plan)
    if failure is not None:
        return failure
    removed = [by_name[name] for name in plan.removed]
    added = [daemon.make_instance(svc) for svc in plan.added]
    closing: list[Listener] = []
    opening: list[tuple[ServiceInstance, Listener]] = []
    for k in plan.kept:
        instance = by_name[k.name]
        closing += [listener for listener in instance.listeners() if (listener.key, listener.spec) in k.close]
        opening += [(instance, Listener(instance, spec, i, key)) for key, i, spec in k.open]

    going = [listener for listener in [*(x for i in removed for x in i.listeners()), *closing] if listener.ports]
    to_bind = [listener for i in added for listener in i.listeners()] + [listener for _, listener in opening]
    fresh: list[Listener] = []
    takeovers: list[tuple[Listener, Listener]] = []
    late: list[Listener] = []
    in_the_way: list[Listener] = []
    for listener in to_bind:
        if listener.spec.scheme == "systemd":
            fresh.append(listener)  # adopts its own duplicate of the inherited socket, beside any old one
            continue
        same = [old for old in going if listener.can_take_over(old) and old not in (o for _, o in takeovers)]
        overlapping = [old for old in going if keys_collide(old.held_key(), bind_key(listener.spec))]
        if same:
            takeovers.append((listener, same[0]))
        elif overlapping:
            late.append(listener)
            in_the_way += [old for old in overlapping if old not in in_the_way]
        else:
            fresh.append(listener)

    bound: list[Listener] = []
    try:
        for listener in fresh:
            listener.bind()
            bound.append(listener)
        for listener, old in takeovers:
            listener.take_over(old)
            bound.append(listener)
    except StartupError as e:
        await _undo(bound, [], added)
        return e.line
    released: list[Listener] = []
    if late:
        released = in_the_way
        await DeferredList([old.release() for old in released], consumeErrors=True)
        try:
            for listener in late:
                listener.bind()
                bound.append(listener)
        except StartupError as e:
            await _undo(bound, released, added)
            return e.line

    # Commit. Options first: rehearsed, so they apply; if a service raises all the same, undo.
    changed: list[tuple[ServiceInstance, ServiceConfig]] = []
    try:
        for k in plan.kept:
            instance = by_name[k.name]
            previous = instance.config
            if instance.reconfigure(k.config):
                changed.append((instance, previous))
    except Exception as e:
        log.failure("socksvc: applying the reloaded options failed; putting everything back")
        for instance, previous in reversed(changed):
            try:
                instance.reconfigure(previous)
            except Exception:
                log.failure("{service}: putting the previous options back failed", service=instance.name)
        await _undo(bound, released, added)
        return f"internal error while applying the new options: {' '.join(f'{e.__class__.__name__}: {e}'.split())}"

    # Nothing below can fail on the network.
    for instance in removed:
        log.info("{service}: removed by reload, stopping", event="reload", service=instance.name)
        d = instance.disownServiceParent()
        if isinstance(d, Deferred):
            d.addErrback(lambda f: log.failure("socksvc: stopping a removed service failed", f))
    for listener in closing:
        listener.disownServiceParent()
    for instance, listener in opening:
        listener.setServiceParent(instance)
    for listener in bound:
        listener.taken_from = None
    for instance, _previous in changed:
        log.info("{service}: options reloaded", event="reload", service=instance.name)
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
        reconfigured=len(changed),
    )
    return None
