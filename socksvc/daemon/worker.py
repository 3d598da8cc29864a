"""
A worker process: C{python -m socksvc.daemon.worker}, started by the supervisor.

It is given one descriptor, 3: its end of the control channel
(L{socksvc.daemon.control}), over which the supervisor hands it the config
text, the shared tables and the listening sockets, then tells it to start
(L{WorkerControl}). It runs socksvc's reactor, serves the services of its
L{socksvc.daemon.workerdaemon.WorkerDaemon}, and logs only through the
supervisor (L{socksvc.daemon.logrelay}).

It never outlives the supervisor: the kernel sends it SIGTERM when the
supervisor dies (C{PR_SET_PDEATHSIG}, set before anything else; if the
supervisor is already gone by then it exits at once), and it stops when
the control channel closes. SIGTERM and SIGINT stop it as they stop the
daemon (stop accepting, chat says goodbye, connections get their grace),
then it exits 0. SIGHUP and SIGUSR1 are the supervisor's: ignored here.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import socket
import sys
from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.internet.error import ReactorNotRunning
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger, globalLogBeginner
from twisted.python.failure import Failure

from socksvc.config.loader import Config, ConfigError
from socksvc.daemon import reactor as socksvc_reactor
from socksvc.daemon.control import (
    CONFIG,
    SUPERVISOR_ENV,
    Abort,
    Adopt,
    Channel,
    Commit,
    Heartbeat,
    Log,
    LogLine,
    Prepare,
    Refused,
    Start,
    Status,
    Stop,
    page,
)
from socksvc.daemon.errors import StartupError
from socksvc.daemon.figures import service_figures
from socksvc.daemon.logrelay import Relay
from socksvc.daemon.reload import plan_reload, rehearse_plan
from socksvc.daemon.workerdaemon import WorkerDaemon
from socksvc.services.catalogue import loads

log = Logger(namespace="socksvc")

CONTROL_FD = 3
"""The worker's end of the control channel."""
PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel for C{sig} when the parent process dies (Linux prctl); True if it agreed."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def read_text(fd: int) -> str:
    """The whole of a memfd's text (from the start); C{fd} is closed."""
    try:
        chunks = []
        offset = 0
        while chunk := os.pread(fd, 1 << 20, offset):
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks).decode("utf-8")
    finally:
        os.close(fd)


class WorkerControl(Channel):
    """The worker's end of the control channel: the supervisor's commands (L{socksvc.daemon.control})."""

    def __init__(self, reactor: Any, relay: Relay | None = None) -> None:
        super().__init__()
        self.reactor = reactor
        self.relay = relay
        self.held: dict[str, int] = {}
        self.daemon: WorkerDaemon | None = None
        self.failed = False
        self._pending: tuple[Config, int] | None = None

    def _config(self, source: str, base_dir: str) -> Config:
        fd = self.held.pop(CONFIG, None)
        if fd is None:
            raise Refused("no config text was handed over")
        try:
            return loads(read_text(fd), source, base_dir or None)
        except ConfigError as e:
            raise Refused(str(e)) from None
        except UnicodeDecodeError as e:
            raise Refused(f"{source}: not UTF-8 text (byte {e.start})") from None

    def _drop_held(self) -> None:
        for fd in self.held.values():
            os.close(fd)
        self.held.clear()

    @Adopt.responder
    def adopt(self, name: str, fd: int) -> dict[str, Any]:
        old = self.held.pop(name, None)
        if old is not None:
            os.close(old)
        self.held[name] = fd
        return {}

    @Start.responder
    def start(self, slot: int, workers: int, source: str, seed: str, log_format: str, base_dir: str) -> dict[str, Any]:
        if self.daemon is not None:
            raise Refused("this worker has started already")
        if log_format and self.relay is not None:
            self.relay.lines(log_format, slot, self._send_line)
        try:
            if os.environ.get("PYTHONHASHSEED") != seed:
                raise Refused(
                    "started without the supervisor's hash seed: the shared per-source counts would not agree"
                )
            config = self._config(source, base_dir)
            daemon = WorkerDaemon(config, self.reactor, slot, workers, self.held)
            daemon.startService()
        except Refused:
            self._fail()
            raise
        except StartupError as e:
            self._fail()
            raise Refused(e.line) from None
        except Exception as e:
            log.failure("socksvc: worker {slot} could not start", slot=slot)
            self._fail()
            raise Refused(f"worker {slot} could not start: {e.__class__.__name__}: {e}") from None
        self.daemon = daemon
        self._drop_held()
        self.reactor.addSystemEventTrigger("before", "shutdown", daemon.stopService)
        return {"pid": os.getpid()}

    def _send_line(self, line: str, urgent: bool) -> None:
        self.callRemote(LogLine, line=line, urgent=urgent)

    def _fail(self) -> None:
        self.failed = True
        self._drop_held()
        self.reactor.callLater(0, self.reactor.stop)

    @Prepare.responder
    def prepare(self, source: str, workers: int, base_dir: str) -> dict[str, Any]:
        daemon = self.daemon
        if daemon is None:
            raise Refused("this worker has not started")
        config = self._config(source, base_dir)
        running = {i.config.name: i for i in daemon.instances()}
        failure = rehearse_plan(running, plan_reload({n: i.config for n, i in running.items()}, config))
        if failure is not None:
            raise Refused(failure)
        self._pending = (config, workers)
        return {}

    @Commit.responder
    def commit(self) -> Any:
        pending, self._pending = self._pending, None
        daemon = self.daemon
        if pending is None or daemon is None:
            return {"error": "nothing was prepared"}
        config, workers = pending

        async def apply() -> dict[str, Any]:
            try:
                daemon.set_workers(workers)
                error = await daemon.commit(config)
            except Exception as e:
                log.failure("socksvc: applying the reload failed")
                error = f"{e.__class__.__name__}: {e}"
            finally:
                self._drop_held()
            return {} if error is None else {"error": error}

        return ensureDeferred(apply())

    @Abort.responder
    def abort(self) -> dict[str, Any]:
        self._pending = None
        self._drop_held()
        return {}

    @Status.responder
    def status(self, start: int) -> dict[str, Any]:
        services = [service_figures(i) for i in self.daemon.instances()] if self.daemon is not None else []
        figures, following = page(services, start)
        return {"figures": figures, "next": following}

    @Heartbeat.responder
    def heartbeat(self) -> dict[str, Any]:
        return {}

    @Stop.responder
    def stop(self) -> dict[str, Any]:
        self.reactor.callLater(0, self._stop)
        return {}

    def _stop(self) -> None:
        try:
            self.reactor.stop()
        except ReactorNotRunning:
            pass  # stopping already (a SIGTERM came too)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self._drop_held()
        self.reactor.callLater(0, self._stop)  # the supervisor is gone: so is this worker


class One(Factory):
    """A factory for the one protocol of an adopted connection."""

    def __init__(self, protocol: Protocol) -> None:
        self.one = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        return self.one


def _stderr(text: str) -> None:
    try:
        os.write(2, text.encode("utf-8", "replace"))
    except OSError:
        pass


def main() -> int:
    """Run a worker; its exit status (0 after a stop, 1 when it could not start)."""
    die_with_parent()
    expected = os.environ.get(SUPERVISOR_ENV)
    if expected and str(os.getppid()) != expected:
        return 1  # the supervisor died before the prctl: nobody to serve for
    for sig in (signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)
    if hasattr(select, "epoll") and "twisted.internet.reactor" not in sys.modules:
        socksvc_reactor.install()
    from twisted.internet import reactor

    relay = Relay(_stderr)
    globalLogBeginner.beginLoggingTo([relay], redirectStandardIO=True)
    control = WorkerControl(reactor, relay)

    def send(text: str) -> None:
        control.callRemote(Log, event=text)

    reactor.adoptStreamConnection(CONTROL_FD, socket.AF_UNIX, One(control))  # type: ignore[attr-defined]
    os.close(CONTROL_FD)
    relay.send = send
    reactor.run()  # type: ignore[attr-defined]
    return 1 if control.failed else 0


if __name__ == "__main__":
    sys.exit(main())
