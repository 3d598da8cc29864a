"""
Service types: what a C{[services.NAME]} table can be.

Each service module defines one L{ServiceType}: its name, its settings class
(see L{socksvc.config.settings}), and how to build a stream factory and/or a
datagram protocol from a L{ServiceContext}. L{types} lists them all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.protocol import DatagramProtocol, ServerFactory
from twisted.logger import Logger

from socksvc.core.policy import Policy


@attrs.define
class ServiceContext:
    """
    What one running service instance is given: its name, its settings (which
    a reload may replace), its policy, and the reactor (a clock in tests).
    Protocols read C{context.settings} when they need a value, so a reload
    applies to new connections, and to old ones where that makes sense.
    """

    name: str
    type: str
    settings: Any
    policy: Policy
    reactor: Any
    log: Logger = attrs.field(factory=lambda: Logger(namespace="socksvc"))
    udp_ports: set[int] = attrs.field(factory=set)
    """UDP ports the whole daemon listens on (the UDP service never replies to them)."""
    state: Any = None
    """Service-owned state that must outlive a reload (chat rooms, say)."""


@attrs.frozen
class ServiceType:
    """One kind of service."""

    name: str
    settings: type
    doc: str
    stream: Callable[[ServiceContext], ServerFactory] | None = None
    datagram: Callable[[ServiceContext], DatagramProtocol] | None = None
    stop: Callable[[ServiceContext], Any] | None = None
    """Called when the service stops (chat tells members the server is going down)."""
    reconfigure: Callable[[ServiceContext, Any], None] | None = None
    """Called with the new settings on a reload, after context.settings is replaced."""

    def transports(self) -> str:
        kinds = [k for k, v in (("stream", self.stream), ("datagram", self.datagram)) if v is not None]
        return " and ".join(kinds)


def types() -> dict[str, ServiceType]:
    """Every service type, by name."""
    from socksvc.services import echo, greeting, reverse

    found = [echo.SERVICE_TYPE, greeting.SERVICE_TYPE, reverse.SERVICE_TYPE]
    from socksvc.services.chat import service as chat_service

    found.append(chat_service.SERVICE_TYPE)
    return {t.name: t for t in found}
