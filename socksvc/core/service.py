"""
The service contract: what a C{[services.NAME]} table can be, and what a
running service instance is given.

A service module defines one L{ServiceType}: its name, its settings class
(see L{socksvc.config.settings}), how to make its state once per service
instance (C{make_state}), and how to build a stream factory and/or a
datagram protocol from a L{ServiceContext}. The daemon drives the rest of the
life cycle through the state (L{ServiceState}):

 - C{reconfigure(settings)}: a reload pushes new settings (the daemon has
   already put them in C{context.settings}); the state re-derives whatever it
   caches from them. Nothing checks settings identity per event.
 - C{shutdown()}: the service is stopping (chat tells its members).
 - C{status()}: the live figures (L{ServiceStatus}) that systemd's STATUS=
   line, and metrics, read.

A type may also declare extra named stream listen lists
(C{extra_streams}): chat's C{irc} and C{web} keys are listen lists of the
chat service itself, each bound with its own factory, all sharing the one
state.

The catalogue (L{socksvc.services.catalogue}) lists every type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

import attrs
from twisted.internet.protocol import DatagramProtocol, ServerFactory
from twisted.logger import Logger

from socksvc.core.notices import NoticeBus
from socksvc.core.policy import Policy

S = TypeVar("S")
"""A service's settings class."""
T = TypeVar("T", bound="ServiceState")
"""A service's state class."""


@attrs.frozen
class RoomStatus:
    """One room of a service with rooms (chat), for the status page: attacker text, shown escaped."""

    name: str
    members: int
    topic: str = ""


@attrs.frozen
class ServiceStatus:
    """
    A service's live figures beyond what the policy layer counts.

    C{counters} keys the metrics know (docs/observability.md): the datagram
    guard's C{udp_received}, C{udp_replied}, C{udp_bytes_in},
    C{udp_bytes_out}, C{udp_dropped_REASON}; chat's C{rooms} (a gauge),
    C{chat_lines}, C{chat_lines_dropped_REASON}. Others are shown on the
    status page only.
    """

    members: int | None = None
    """Registered users, for services with a roster (chat); None for others."""
    counters: Mapping[str, int] = attrs.field(factory=dict)
    """Named counters (datagrams, drops by reason...), for status lines and metrics."""
    rooms: tuple[RoomStatus, ...] = ()
    """The largest rooms (at most L{SHOWN}), for the status page; never a metric label."""
    names: tuple[str, ...] = ()
    """Some members' names (at most L{SHOWN}), for the status page; never a metric label."""


SHOWN = 100
"""Rooms and names a status carries at most: the status page stays small with 10,000 members."""


class ServiceState(Protocol):
    """What C{make_state} returns: plain state, kept for the service instance's lifetime (reloads included)."""

    def reconfigure(self, settings: Any) -> None:
        """New settings from a reload (already in C{context.settings})."""

    def shutdown(self) -> None:
        """The service is stopping: say goodbye, release what is held."""

    def status(self) -> ServiceStatus:
        """The live figures."""


class NoState:
    """The state of a service that keeps none beyond its settings (reverse)."""

    def reconfigure(self, settings: Any) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def status(self) -> ServiceStatus:
        return ServiceStatus()


@attrs.define
class ServiceContext(Generic[S, T]):
    """
    What one running service instance is given: its name, its settings (a
    reload replaces them, then calls C{state.reconfigure}), its policy, the
    reactor (a clock in tests), the daemon's UDP ports (read-only here: the
    daemon owns the set), the daemon's notice bus (L{NoticeBus}: the one way
    a service reaches another's rooms) and the state its type made.

    Protocols read C{context.settings} when they need a value, so a reload
    applies to new connections, and to old ones where that makes sense.
    """

    name: str
    type: str
    settings: S
    policy: Policy
    reactor: Any
    log: Logger = attrs.field(factory=lambda: Logger(namespace="socksvc"))
    udp_ports: set[int] = attrs.field(factory=set)
    """UDP ports the whole daemon listens on (datagram services never reply to them); owned by the daemon."""
    notices: NoticeBus = attrs.field(factory=NoticeBus)
    """Server notices between services (chat subscribes its rooms; smtp's announce posts); one per daemon."""
    serving: bool = True
    """
    False in a supervisor of workers: it binds the listeners, the workers
    serve. A state that would reach outside the process for its clients
    (chat's bus) does not, there.
    """
    state: T = attrs.field(default=None)

    def reconfigure(self, settings: S) -> None:
        """A reload: the new settings, pushed to the state."""
        self.settings = settings
        self.state.reconfigure(settings)


def _no_state(context: ServiceContext[Any, Any]) -> ServiceState:
    return NoState()


@attrs.frozen
class ExtraStream:
    """
    An extra named stream listen list of a service type: the key in the
    service's table (a list of stream listen specs, checked like
    C{listen}), the factory its listeners serve, and one line for the
    config reference.
    """

    factory: Callable[[ServiceContext[Any, Any]], ServerFactory]
    doc: str


@attrs.frozen
class ServiceType(Generic[S, T]):
    """One kind of service."""

    name: str
    settings: type[S]
    doc: str
    make_state: Callable[[ServiceContext[S, T]], T] = _no_state  # type: ignore[assignment]
    """Called once per service instance, before any listener binds; the result is C{context.state}."""
    stream: Callable[[ServiceContext[S, T]], ServerFactory] | None = None
    datagram: Callable[[ServiceContext[S, T]], DatagramProtocol] | None = None
    one_process: bool = False
    """
    Its state is shared by every client (chat's rooms): when the daemon runs
    worker processes, only worker 0 serves it (docs/workers.md). Read it
    through L{single_process}, which C{one_process_for} may decide.
    """
    one_process_for: Callable[[S], bool] | None = None
    """
    When given, decides C{one_process} per service instance from its
    settings (chat: one process unless C{bus} is set; with a bus every
    worker is a node of the cluster).
    """
    replaced_for: Callable[[S, S], bool] | None = None
    """
    When given, says whether a reload from the first settings to the second
    must replace the service (a new state) rather than reconfigure it (chat:
    another bus, cluster or bus credentials: the node leaves one cluster and
    joins another).
    """
    policy_defaults: Mapping[str, Any] = attrs.field(factory=dict)
    """
    Policy keys whose default differs for this type (chat: max_connections), as typed
    values; [defaults] and the service's own table still override them.
    """
    extra_streams: Mapping[str, ExtraStream] = attrs.field(factory=dict)
    """Extra stream listen lists by key (chat: irc, web); each binds with its own factory, on the same state."""

    def stream_factory(self, key: str, context: ServiceContext[S, T]) -> ServerFactory:
        """The stream factory for listen list C{key} ("listen" or an extra key)."""
        if key == "listen":
            assert self.stream is not None
            return self.stream(context)
        return self.extra_streams[key].factory(context)

    def single_process(self, settings: S) -> bool:
        """Is an instance with these settings served by worker 0 alone? (C{one_process}, or C{one_process_for})"""
        if self.one_process_for is not None:
            return self.one_process_for(settings)
        return self.one_process

    def replaced(self, old: S, new: S) -> bool:
        """Does a reload from C{old} to C{new} settings replace the service? (placement, or C{replaced_for})"""
        if self.single_process(old) != self.single_process(new):
            return True
        return self.replaced_for is not None and self.replaced_for(old, new)

    def serves(self, kind: str) -> bool:
        """Can this type take a listen spec of C{kind} ("stream", "datagram"; "inherited" may be either)?"""
        if kind == "stream":
            return self.stream is not None
        if kind == "datagram":
            return self.datagram is not None
        return True

    def transports(self) -> str:
        kinds = [k for k in ("stream", "datagram") if self.serves(k)]
        return " and ".join(kinds)

    def context(
        self,
        name: str,
        settings: S,
        policy: Policy,
        reactor: Any,
        udp_ports: set[int],
        notices: NoticeBus | None = None,
        serving: bool = True,
    ) -> ServiceContext[S, T]:
        """A new running instance's context, with its state made."""
        context: ServiceContext[S, T] = ServiceContext(
            name=name,
            type=self.name,
            settings=settings,
            policy=policy,
            reactor=reactor,
            udp_ports=udp_ports,
            notices=notices if notices is not None else NoticeBus(),
            serving=serving,
        )
        context.state = self.make_state(context)
        return context


def catalogue_of(types: list[ServiceType[Any, Any]]) -> dict[str, ServiceType[Any, Any]]:
    """Types by name (a name used twice is a programming error)."""
    out: dict[str, ServiceType[Any, Any]] = {}
    for stype in types:
        if stype.name in out:
            raise ValueError(f"service type {stype.name!r} defined twice")
        out[stype.name] = stype
    return out
