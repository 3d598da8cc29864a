"""
The supervisor's decisions about its workers, as plain functions.

- L{handout}: which listening sockets a worker is given (every worker gets
  every listener's sockets, except a C{one_process} service's: only the
  worker in slot 0 serves chat without a bus), under the names the worker looks them up
  by (L{socksvc.daemon.control.listener_name});
- L{resize}: which slots to start and which to stop when the number of
  workers changes;
- L{config_memfd}: the config text in a memfd, for handing over.

Tested without processes or a reactor (tests/test_supervisor.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

from twisted.internet.defer import Deferred

from socksvc.daemon.control import listener_name


def cpus() -> int:
    """The CPUs this process may run on (what C{workers = "auto"} counts)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def timeout(d: Deferred[Any], seconds: float, clock: Any) -> Deferred[Any]:
    """C{d}, failing with a TimeoutError (and cancelled) after C{seconds} on C{clock}."""
    d.addTimeout(seconds, clock)
    return d


def served_by(instance: Any, slot: int) -> bool:
    """Does the worker in C{slot} serve this service instance? (chat without a bus: worker 0 only)."""
    return slot == 0 or not instance.stype.single_process(instance.config.settings)


def listener_sockets(instance: Any, listeners: Iterable[Any] | None = None) -> Iterator[tuple[str, int]]:
    """
    (name, descriptor) of every socket of an instance's listeners (of
    C{listeners} only, when given), named as a worker looks them up: by
    service, spec, the listener's place among the instance's listeners with
    the same spec, and the socket's place in the listener.
    """
    wanted = None if listeners is None else {id(x) for x in listeners}
    seen: dict[Any, int] = {}
    for listener in instance.listeners():
        occurrence = seen.get(listener.spec, 0)
        seen[listener.spec] = occurrence + 1
        if wanted is not None and id(listener) not in wanted:
            continue
        for k, port in enumerate(listener.ports):
            yield listener_name(str(instance.name), listener.spec.text, occurrence, k), port.fileno()


def handout(instances: Iterable[Any], slot: int, listeners: Iterable[Any] | None = None) -> list[tuple[str, int]]:
    """The sockets the worker in C{slot} is given (of C{listeners} only, when given: a reload's new ones)."""
    only = None if listeners is None else list(listeners)
    out: list[tuple[str, int]] = []
    for instance in instances:
        if served_by(instance, slot):
            out += listener_sockets(instance, only)
    return out


def resize(running: Iterable[int], target: int) -> tuple[list[int], list[int]]:
    """(slots to start, slots to stop) to go from the slots C{running} (or due to restart) to C{target} workers."""
    have = set(running)
    start = [slot for slot in range(target) if slot not in have]
    stop = sorted(slot for slot in have if slot >= target)
    return start, stop


def config_memfd(text: str) -> int:
    """A memfd holding C{text} (UTF-8), close-on-exec: what a worker is given as its config."""
    fd = os.memfd_create("socksvc-config", os.MFD_CLOEXEC)
    try:
        data = text.encode("utf-8")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        return fd
    except BaseException:
        os.close(fd)
        raise
