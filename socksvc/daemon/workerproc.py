"""
The supervisor's side of one worker process: spawning it, its control
channel, its output, its death, and when to start the next one.

L{WorkerProcess} is one run of one slot: C{python -m socksvc.daemon.worker}
started with C{reactor.spawnProcess}, its descriptor 3 the far end of an
AF_UNIX socket pair that carries AMP (L{SupervisorControl}), its standard
output and error read and logged (a worker logs through the control channel;
these only carry what Python prints when it cannot start at all). The
environment is the supervisor's minus systemd's variables (the workers are
not socket-activated, may not notify, and have no watchdog of their own),
plus the hash seed every worker shares (L{socksvc.daemon.shared}) and the
supervisor's pid.

L{Backoff} says how long to wait before a dead worker's replacement starts:
1 s, doubling to 30 s while replacements keep dying, and 1 s again for a
worker that ran for a stable minute.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

import socksvc
from socksvc.daemon.control import SUPERVISOR_ENV, Channel, Log, LogLine

log = Logger(namespace="socksvc")

DROPPED_ENV = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
"""systemd's variables: meant for the supervisor alone."""
MAX_OUTPUT_LINE = 16384
"""A worker's stray output is logged in lines of at most this many bytes."""


@attrs.define
class Backoff:
    """Seconds before the next replacement of a worker that died (see the module doc)."""

    first: float = 1.0
    most: float = 30.0
    stable: float = 60.0
    current: float = 0.0

    def after(self, uptime: float) -> float:
        """The delay before restarting a worker that died after C{uptime} seconds."""
        if uptime >= self.stable or self.current <= 0:
            self.current = self.first
        else:
            self.current = min(self.most, self.current * 2)
        return self.current


def worker_env(environ: Mapping[str, str], seed: str, supervisor: int) -> dict[str, str]:
    """A worker's environment (see the module doc); socksvc is importable from where the supervisor has it."""
    env = {k: v for k, v in environ.items() if k not in DROPPED_ENV}
    env["PYTHONHASHSEED"] = seed
    env[SUPERVISOR_ENV] = str(supervisor)
    here = os.path.dirname(os.path.dirname(os.path.abspath(socksvc.__file__)))
    paths = [here, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != here]]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def describe_exit(reason: Failure) -> str:
    """How a process ended, in words: C{exited with status 1}, C{killed by SIGKILL}."""
    value = reason.value
    if isinstance(value, ProcessDone):
        return "exited with status 0"
    if isinstance(value, ProcessTerminated):
        if value.signal is not None:
            try:
                import signal

                name = signal.Signals(value.signal).name
            except ValueError:
                name = f"signal {value.signal}"
            return f"killed by {name}"
        return f"exited with status {value.exitCode}"
    return str(value)


class SupervisorControl(Channel):
    """The supervisor's end of one worker's control channel: the worker's log events arrive here."""

    def __init__(self, on_log: Callable[[str], None], on_line: Callable[[str, bool], None]) -> None:
        super().__init__()
        self.on_log = on_log
        self.on_line = on_line
        self.lost: Deferred[None] = Deferred()

    @Log.responder
    def log_event(self, event: str) -> dict[str, Any]:
        self.on_log(event)
        return {}

    @LogLine.responder
    def log_line(self, line: str, urgent: bool) -> dict[str, Any]:
        self.on_line(line, urgent)
        return {}

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        if not self.lost.called:
            self.lost.callback(None)


class _One(Factory):
    def __init__(self, one: Protocol) -> None:
        self.one = one

    def buildProtocol(self, addr: Any) -> Protocol:
        return self.one


class WorkerProcess(protocol.ProcessProtocol):
    """
    One run of one worker slot. C{on_log(slot, text)} gets its log events and
    output, C{on_line(line, urgent)} the lines it formatted itself;
    C{on_end(self, reason)} is called once when the process is gone.
    """

    def __init__(
        self,
        slot: int,
        reactor: Any,
        on_log: Callable[[int, str], None],
        on_end: Callable[[WorkerProcess, Failure], None],
        on_line: Callable[[str, bool], None] = lambda line, urgent: None,
    ) -> None:
        self.slot = slot
        self.reactor = reactor
        self.on_log = on_log
        self.on_end = on_end
        self.control = SupervisorControl(lambda text: on_log(slot, text), on_line)
        self.pid: int | None = None
        self.ready = False
        self.started_at = reactor.seconds()
        self.ended = False
        self.stopping = False
        self.generation = 0
        """Which config it runs (the supervisor's reload count when it was started or last committed)."""
        self.heartbeat_pending = 0
        """Heartbeats sent and not answered yet (the oldest first)."""
        self.last_answer = self.started_at
        self.starting: Deferred[Any] | None = None
        """The hand-over and start (the supervisor's), fired either way when it is over."""
        self._partial: dict[int, bytes] = {}
        self._waiters: list[Deferred[None]] = []

    def spawn(self, environ: Mapping[str, str]) -> None:
        """Start the process and connect the control channel."""
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.reactor.spawnProcess(
                self,
                sys.executable,
                [sys.executable, "-m", "socksvc.daemon.worker"],
                env=dict(environ),
                childFDs={0: "w", 1: "r", 2: "r", 3: child.fileno()},
            )
        finally:
            child.close()
        try:
            self.reactor.adoptStreamConnection(parent.fileno(), socket.AF_UNIX, _One(self.control))
        finally:
            parent.close()

    # -- the process -------------------------------------------------------------

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.pid = self.transport.pid
        self.transport.closeStdin()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        buffered = self._partial.get(childFD, b"") + data
        *lines, rest = buffered.split(b"\n")
        while len(rest) > MAX_OUTPUT_LINE:
            lines.append(rest[:MAX_OUTPUT_LINE])
            rest = rest[MAX_OUTPUT_LINE:]
        self._partial[childFD] = rest
        for line in lines:
            self._output(line)

    def _output(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip("\r")
        if text.strip():
            self.on_log(self.slot, text)

    def processEnded(self, reason: Failure) -> None:
        for rest in self._partial.values():
            if rest:
                self._output(rest)
        self._partial.clear()
        self.ended = True
        self.ready = False
        if self.control.transport is not None:
            self.control.transport.loseConnection()
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)
        self.on_end(self, reason)

    # -- asking it -----------------------------------------------------------------

    def call(self, command: type[amp.Command], **kw: Any) -> Deferred[Any]:
        """Send a command over the control channel (fails when the worker is gone)."""
        return self.control.callRemote(command, **kw)  # type: ignore[no-any-return]

    def signal(self, name: str) -> None:
        """Send a signal ("TERM", "KILL") unless the process has ended."""
        if self.ended or self.transport is None:
            return
        try:
            self.transport.signalProcess(name)
        except Exception:  # ProcessExitedAlready and the like: it is going anyway
            pass

    def gone(self) -> Deferred[None]:
        """Fires once the process has ended."""
        d: Deferred[None] = Deferred()
        if self.ended:
            d.callback(None)
        else:
            self._waiters.append(d)
        return d

    def describe(self) -> str:
        return f"worker {self.slot} (pid {self.pid})"
