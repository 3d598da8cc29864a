"""
Durability without threads: L{Syncer}, the smtp service's end of its syncer
child (L{socksvc.services.mail.syncer}).

A message is acknowledged only once it is on disk, and fsync waits for the
disk; the reactor must not. So the fsyncs are done by a small child process
the daemon speaks AMP to over its stdin and stdout: C{sync(paths)} returns a
Deferred that fires when every path is fsynced (files before the
directories naming them), or fails with L{SyncError} (the message then gets
451 and is removed).

 - The child is started when it is first needed (C{reactor.spawnProcess}),
   and kept.
 - One L{Sync} command is in flight at a time; what is asked meanwhile goes
   out together in the next one (several messages' paths per command).
 - A child that dies fails what it was doing (451), and the next request
   starts a new one: at once after a healthy life, after 0.1 s, 0.2 s, ...
   (at most L{MAX_BACKOFF}) when children keep dying young.
 - L{Syncer.stop} lets what was asked finish, then closes the child's
   stdin: it exits. The child also dies with the daemon (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import os
import sys
from collections import deque
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ProcessDone
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from socksvc.services.mail.syncwire import BUDGET, MAX_PATH, MAX_PATHS, QuietAMP, Sync, cost, error_text
from socksvc.util.ratelimit import RateLimitedLog
from socksvc.util.visible import visible

log = Logger(namespace="socksvc")

HEALTHY = 10.0
"""Seconds a child must have lived for its death not to count as a crash loop."""
FIRST_BACKOFF = 0.1
MAX_BACKOFF = 5.0
CHILD_MODULE = "socksvc.services.mail.syncer"
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
"""Where the socksvc package is: on the child's PYTHONPATH, so C{-m} finds this very copy."""


class SyncError(Exception):
    """A path could not be fsynced, or the syncer child went away: the message was not made durable."""


class _Request:
    __slots__ = ("d", "done", "remaining")

    def __init__(self, remaining: int) -> None:
        self.d: Deferred[None] = Deferred()
        self.remaining = remaining
        self.done = False

    def settle(self, error: SyncError | None) -> None:
        if self.done:
            return
        self.done = True
        if error is None:
            self.d.callback(None)
        else:
            self.d.errback(Failure(error))


class _Child(ProcessProtocol):
    """One syncer child: AMP over its stdin and stdout; what it writes to stderr is logged."""

    def __init__(self, owner: Syncer) -> None:
        self.owner = owner
        self.amp = QuietAMP()
        self.started = owner.reactor.seconds()
        self.closing = False

    def connectionMade(self) -> None:
        self.amp.makeConnection(self.transport)

    def outReceived(self, data: bytes) -> None:
        self.amp.dataReceived(data)

    def errReceived(self, data: bytes) -> None:
        self.owner.child_said(data)

    def processEnded(self, reason: Failure) -> None:
        self.owner.ended(self, reason)
        self.amp.connectionLost(reason)  # fails the command in flight, if any


def child_command() -> list[str]:
    return [sys.executable, "-m", CHILD_MODULE, "--parent", str(os.getpid())]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH", "")) if p)
    return env


class Syncer:
    """The smtp service's fsyncs, done by a child process (see the module's docstring)."""

    def __init__(self, reactor: Any, name: str, command: Sequence[str] | None = None) -> None:
        self.reactor = reactor
        self.name = name
        self.command = list(command) if command is not None else None
        self.started = 0
        """Children started so far."""
        self.commands = 0
        """L{Sync} commands sent so far (fewer than requests when they are batched)."""
        self._child: _Child | None = None
        self._queue: deque[tuple[_Request, bytes]] = deque()
        self._in_flight = False
        self._closing = False
        self._deaths = 0
        self._not_before = 0.0
        self._start_call: IDelayedCall | None = None
        self._log = RateLimitedLog(reactor)

    @property
    def load(self) -> int:
        """Paths waiting, plus one for a command in flight: how busy this syncer is."""
        return len(self._queue) + self._in_flight

    @property
    def pid(self) -> int | None:
        """The running child's process id, if there is one."""
        child = self._child
        return None if child is None or child.transport is None else child.transport.pid

    def sync(self, paths: Sequence[str | bytes]) -> Deferred[None]:
        """fsync C{paths} in this order (open read-only, fsync, close); fires when all are on disk."""
        encoded = [os.fsencode(p) for p in paths]
        if any(len(p) > MAX_PATH or b"\0" in p for p in encoded):
            return fail(SyncError("path too long"))
        if not encoded:
            return succeed(None)
        request = _Request(len(encoded))
        self._queue.extend((request, p) for p in encoded)
        self._pump()
        return request.d

    def stop(self) -> None:
        """Let what was asked finish, then close the child's stdin (it exits); later requests start another."""
        self._closing = True
        self._pump()

    # -- the child ----------------------------------------------------------------

    def _pump(self) -> None:
        if self._in_flight:
            return  # its answer sends the rest
        while self._queue and self._queue[0][0].done:
            self._queue.popleft()
        child = self._child
        if not self._queue:
            if self._closing and child is not None and not child.closing and child.transport is not None:
                child.closing = True
                child.transport.closeStdin()
            return
        if child is None or child.closing:
            child = self._start()
            if child is None:
                return
        batch: list[tuple[_Request, bytes]] = []
        budget = BUDGET
        while self._queue and len(batch) < MAX_PATHS and cost(self._queue[0][1]) <= budget:
            request, path = self._queue.popleft()
            if not request.done:
                batch.append((request, path))
                budget -= cost(path)
        if not batch:
            self._pump()
            return
        # A path asked for by several messages (their new/) is synced once, at its last place: each
        # message's own paths keep their order (a file before the directory naming it).
        last = {p: i for i, (_r, p) in enumerate(batch)}
        paths = [p for i, (_r, p) in enumerate(batch) if last[p] == i]
        self._in_flight = True
        self.commands += 1
        try:
            d = child.amp.callRemote(Sync, paths=paths)
        except Exception as e:  # the pipe is gone already: processEnded follows
            d = fail(e)
        d.addCallbacks(self._answered, self._lost, callbackArgs=(batch, paths), errbackArgs=(batch,))

    def _answered(self, answer: dict[str, Any], batch: list[tuple[_Request, bytes]], paths: list[bytes]) -> None:
        self._in_flight = False
        failed = {paths[int(row["index"])]: str(row["error"]) for row in answer.get("failed", ())}
        for request, path in batch:
            if path in failed:
                request.settle(SyncError(f"{visible(os.fsdecode(path))}: {failed[path]}"))
                continue
            request.remaining -= 1
            if request.remaining == 0:
                request.settle(None)
        self._pump()

    def _lost(self, failure: Failure, batch: list[tuple[_Request, bytes]]) -> None:
        self._in_flight = False
        error = SyncError(f"the syncer child failed: {error_text(failure.value)}")
        for request, _path in batch:
            request.settle(error)
        self._pump()

    def _start(self) -> _Child | None:
        now = self.reactor.seconds()
        if now < self._not_before:
            if self._start_call is None:
                self._start_call = self.reactor.callLater(self._not_before - now, self._retry)
            return None
        child = _Child(self)
        argv = self.command or child_command()
        try:
            self.reactor.spawnProcess(child, argv[0], argv, env=child_env(), childFDs={0: "w", 1: "r", 2: "r"})
        except Exception as e:
            self._died(now, f"could not be started: {error_text(e)}")
            while self._queue:
                self._queue.popleft()[0].settle(SyncError(f"the syncer child could not be started: {error_text(e)}"))
            return None
        self._child = child
        self.started += 1
        return child

    def _retry(self) -> None:
        self._start_call = None
        self._pump()

    def ended(self, child: _Child, reason: Failure) -> None:
        """The child exited (called before its AMP hears of it, so that a new one can be started)."""
        if child is self._child:
            self._child = None
        if child.closing and reason.check(ProcessDone):
            return
        self._died(child.started, f"exited ({error_text(reason.value)})")

    def _died(self, since: float, how: str) -> None:
        now = self.reactor.seconds()
        self._deaths = self._deaths + 1 if now - since < HEALTHY else 1
        self._not_before = now + min(FIRST_BACKOFF * 2 ** (self._deaths - 1), MAX_BACKOFF)

        def emit(held: int) -> None:
            more = f" (and {held} more)" if held else ""
            log.warn(
                "{service}: the fsync helper {how}; messages waiting for it get 451, the next starts another{more}",
                event="mail_syncer",
                service=self.name,
                how=how,
                more=more,
            )

        self._log("died", emit)

    def child_said(self, data: bytes) -> None:
        text = visible(data.decode("utf-8", "replace").strip()[:300])
        if not text:
            return

        def emit(held: int) -> None:
            log.warn("{service}: the fsync helper says: {text}", event="mail_syncer", service=self.name, text=text)

        self._log("stderr", emit)


SYNCERS = 4
"""Syncer children per smtp service: file systems complete concurrent fsyncs together, so
four children file several times more durable messages a second than one (docs/mail.md)."""


class SyncerPool:
    """
    A few L{Syncer}s side by side: each request goes to the least busy one
    (its own child, started on first use), so fsyncs run concurrently, as the
    file system likes, and no thread is needed.
    """

    def __init__(self, reactor: Any, name: str, size: int = SYNCERS, command: Sequence[str] | None = None) -> None:
        self.syncers = [Syncer(reactor, name, command) for _ in range(max(1, size))]

    def sync(self, paths: Sequence[str | bytes]) -> Deferred[None]:
        """L{Syncer.sync} on the least busy syncer."""
        return min(self.syncers, key=lambda s: s.load).sync(paths)

    def stop(self) -> None:
        for syncer in self.syncers:
            syncer.stop()

    @property
    def started(self) -> int:
        return sum(s.started for s in self.syncers)
