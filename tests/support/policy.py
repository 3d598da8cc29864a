"""Policy test helpers: contexts with policy keys set, log events by kind, networks."""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.task import Clock
from twisted.logger import LogEvent

from socksvc.config.settings import parse_network
from tests.support import context


def of(events: list[LogEvent], kind: str) -> list[LogEvent]:
    return [e for e in events if e.get("event") == kind]


def nets(*cidrs: str) -> tuple[Any, ...]:
    return tuple(parse_network(c) for c in cidrs)


def ctx_with(type_name: str = "echo", clock: Clock | None = None, **policy: Any) -> Any:
    ctx = context(type_name, clock=clock)
    ctx.policy.reconfigure(attrs.evolve(ctx.policy.settings, **policy))
    return ctx
