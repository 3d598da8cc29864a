"""
Which log observer the daemon runs, and where its lines go.

twistd decides where its log goes (stdout under C{-n}, its C{--logfile}, a
daemon's C{twistd.log}, C{--syslog}, C{--logger}); L{log_destination} reads
that decision from twistd's options (or its command line). socksvc then
gives twistd's Application its own observer
(L{socksvc.daemon.logformat}): text lines identical to twistd's (faster), or
JSON lines in socksvc's schema (C{[daemon] log_format}), written through a
L{socksvc.daemon.logsink.LineSink} (C{log_buffer}, C{log_flush}) to stdout
or to the log file, which socksvc opens itself (L{LogFile}: appended to,
created with C{log_mode}, reopened by path on SIGUSR1 for logrotate, never
rotated by the daemon). With C{--syslog} twistd's syslog observer is kept,
minus the ports' start lines; with C{--logger} the admin's observer is kept
untouched; a C{log_format = "json"} that cannot be honoured there is one
warning line.

Under C{twist} (which ignores the Application's observer and picks JSON
whenever its stdout is not a terminal) socksvc sets twist's observer
factory instead, so C{log_format} decides there too, unless twist's own
C{--log-format} was given on its command line (L{twist_log_format}).
"""

from __future__ import annotations

import atexit
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, Literal

from twisted.logger import ILogObserver, LegacyLogObserverWrapper, LogEvent, Logger
from zope.interface import implementer

from socksvc.config.schema import DaemonSettings
from socksvc.daemon.logformat import FastTextObserver, JsonObserver, is_port_noise
from socksvc.daemon.logsink import LineSink, LogFile, LogFileError

__all__ = [
    "FastTextObserver",
    "JsonObserver",
    "LineSink",
    "LogDestination",
    "LogFile",
    "LogFileError",
    "log_destination",
    "observer_for",
]

_log = Logger(namespace="socksvc")

Observer = Callable[[LogEvent], None]

LogKind = Literal["stdout", "file", "syslog", "logger", "other"]


@dataclass(frozen=True)
class LogDestination:
    """
    Where twistd sends its log (L{log_destination}): C{"stdout"}; C{"file"}
    (C{path}); C{"syslog"} or C{"logger"} (its own observer, C{option} names
    the option that chose it); C{"other"} (not twistd, or a choice twistd
    itself refuses).
    """

    kind: LogKind
    path: str = ""
    option: str = ""


def _argv_options(argv: Sequence[str]) -> dict[str, Any]:
    """
    twistd's log options (as its parsed options would hold them) read from
    its command line (C{sys.argv}): C{--nodaemon}/C{-n}, C{--logfile}/C{-l},
    C{--syslog}, C{--logger}, their abbreviations and C{=} forms. The scan
    stops at the subcommand, C{--}, or a value it cannot tell from an option,
    so what it misses errs towards twistd's daemon default (C{twistd.log}).
    """
    found: dict[str, Any] = {"nodaemon": False}
    args = list(argv[1:])
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--" or not arg.startswith("-"):
            break  # the subcommand: what follows is socksvc's own options
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            if len(name) >= 3 and "nodaemon".startswith(name):
                found["nodaemon"] = True
                continue
            known = [opt for opt in ("logfile", "logger", "syslog") if opt.startswith(name)]
            if len(known) > 1:
                found["logger"] = arg  # ambiguous ("--log"): surely not stdout
            elif known == ["syslog"]:
                found["syslog"] = True
            elif known:
                if not eq and i < len(args):
                    value = args[i]
                    i += 1
                found[known[0]] = value
        else:
            flags = arg[1:]
            for n, flag in enumerate(flags):
                if flag == "n":
                    found["nodaemon"] = True
                elif flag == "l":
                    value = flags[n + 1 :]
                    if not value and i < len(args):
                        value = args[i]
                        i += 1
                    found["logfile"] = value
                    break
                elif flag not in "oeb":
                    break  # an option that takes a value (or one we do not know): the rest is its value
    return found


def log_destination(options: Mapping[str, Any] | None, argv: Sequence[str] = ()) -> LogDestination:
    """
    Where twistd logs, decided as twistd's own loggers decide it
    (C{twisted.scripts._twistd_unix.UnixAppLogger}): C{--logger}, then
    C{--syslog}, then C{--logfile} (C{-} = stdout, which a daemon may not
    use), then stdout under C{--nodaemon}, else C{twistd.log}. C{options}
    are twistd's parsed options (the socksvc plugin options' C{parent});
    without them C{argv} is read. Options without C{nodaemon} are not
    twistd's (C{twist}'s, which picks its own observer): C{"other"}.
    """
    if options is None:
        options = _argv_options(argv)
    elif "nodaemon" not in options:
        return LogDestination("other")
    if options.get("logger"):
        return LogDestination("logger", option="--logger")
    if options.get("syslog"):
        return LogDestination("syslog", option="--syslog")
    nodaemon = bool(options.get("nodaemon"))
    path = options.get("logfile") or ""
    if path == "-":
        # twistd refuses a daemon logging to stdout ("Daemons cannot log to stdout").
        return LogDestination("stdout") if nodaemon else LogDestination("other")
    if path:
        return LogDestination("file", path=str(path), option="--logfile")
    if nodaemon:
        return LogDestination("stdout")
    return LogDestination("file", path="twistd.log")


def open_log_file(path: str, mode: str = "0644") -> LogFile:
    """
    C{path} opened for the log (L{LogFile}: appended to, created with
    C{mode}, an octal string). Raises L{LogFileError} naming the file and
    the reason when it cannot be opened.
    """
    return LogFile.open(path, int(mode, 8))


def make_observer(log_format: str, sink: LineSink) -> Observer:
    """The observer for C{log_format} ("text" or "json") writing to C{sink}."""
    if log_format == "json":
        return JsonObserver(sink)
    return FastTextObserver(sink)


def make_sink(out: Any, daemon: DaemonSettings, reactor: Any) -> LineSink:
    """A sink on C{out} with the daemon's buffer settings (no buffering without a reactor)."""
    return LineSink(out, daemon.log_buffer, daemon.log_flush, reactor)


def reopen_logs(sink: LineSink) -> None:
    """SIGUSR1's work, on the reactor: flush, reopen the log file by path, say so (or why not) in one line."""
    try:
        path = sink.reopen()
    except OSError as e:
        path = getattr(sink.out, "path", "?")
        _log.error(
            "socksvc: cannot reopen log file {path}: {error}; still writing to the old one",
            event="log_reopen",
            path=path,
            error=e.strerror or str(e),
        )
        return
    if path is not None:
        _log.info("socksvc: log file {path} reopened (SIGUSR1)", event="log_reopen", path=path)


def reopen_on_sigusr1(sink: LineSink, reactor: Any) -> bool:
    """
    SIGUSR1 reopens the log file by path (logrotate's move-then-signal), or
    flushes the buffer when the log is a stream, on the reactor; it never
    kills the daemon. Left alone when SIGUSR1 already has a handler. True
    when installed.
    """
    if signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, None):
        return False

    def on_sigusr1(signum: int, frame: Any) -> None:
        reactor.callFromThread(reopen_logs, sink)

    try:
        signal.signal(signal.SIGUSR1, on_sigusr1)
    except ValueError:  # not the main thread
        return False
    return True


def attach(sink: LineSink, reactor: Any, signals: bool) -> None:
    """
    Tie C{sink} to the process: flushed when the reactor has shut down (and
    unbuffered from then on), at interpreter exit, and on SIGUSR1 (with
    C{signals}).
    """
    if reactor is not None and hasattr(reactor, "addSystemEventTrigger"):
        reactor.addSystemEventTrigger("after", "shutdown", sink.stop_buffering)
        if signals:
            reopen_on_sigusr1(sink, reactor)
    if sink.limit:
        atexit.register(sink.flush_quietly)


@implementer(ILogObserver)
class WithoutPortNoise:
    """C{observer}, minus the lines Twisted's ports log when they start listening (L{is_port_noise})."""

    def __init__(self, observer: Observer) -> None:
        self.observer = observer

    def __call__(self, event: LogEvent) -> None:
        if not is_port_noise(event):
            self.observer(event)


def syslog_observer(prefix: str) -> Observer:
    """twistd's own C{--syslog} observer, without the ports' start lines."""
    from twisted.python.syslog import SyslogObserver

    legacy: Any = SyslogObserver(prefix).emit
    return WithoutPortNoise(LegacyLogObserverWrapper(legacy))


def _warn_ignored(log_format: str, tool: str, option: str) -> None:
    _log.warn(
        'socksvc: log_format = "{configured}" ignored: {tool} was told to log with {option}',
        event="log_format",
        configured=log_format,
        tool=tool,
        option=option,
    )


# -- twist ------------------------------------------------------------------------

_TWIST_VALUED = ("reactor", "log-level", "log-file", "log-format")
_TWIST_FLAGS = ("help", "version")


def is_twist(options: Mapping[str, Any] | None) -> bool:
    """True for twist's parsed options (they carry its observer factory; twistd's have C{nodaemon})."""
    return options is not None and "fileLogObserverFactory" in options and "nodaemon" not in options


def twist_log_format(argv: Sequence[str]) -> str | None:
    """
    The C{--log-format} given on twist's command line (C{"text"} or
    C{"json"}), or None when twist chose one itself (JSON whenever its
    stdout is not a terminal). Reads the options before the subcommand, in
    their C{=} and abbreviated forms.
    """
    found = None
    args = list(argv[1:])
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--" or not arg.startswith("--"):
            break
        name, eq, value = arg[2:].partition("=")
        known = [o for o in (*_TWIST_VALUED, *_TWIST_FLAGS) if o.startswith(name)] if name else []
        if name in known:
            known = [name]
        if len(known) != 1:
            break  # twist refuses it
        if known[0] in _TWIST_VALUED and not eq:
            if i >= len(args):
                break
            value = args[i]
            i += 1
        if known[0] == "log-format":
            found = value.lower()
    return found if found in ("text", "json") else None


def _twist_sink(log_file: IO[str], daemon: DaemonSettings, reactor: Any) -> LineSink:
    """twist's log file as a sink: a named file is reopened by socksvc (so SIGUSR1 can reopen it by path)."""
    name = getattr(log_file, "name", None)
    if isinstance(name, str) and not name.startswith("<") and log_file.writable() and not log_file.isatty():
        try:
            ours = LogFile(name, int(daemon.log_mode, 8))
        except OSError:
            return make_sink(log_file, daemon, reactor)  # twist opened it: keep writing there
        log_file.close()
        return make_sink(ours, daemon, reactor)
    return make_sink(log_file, daemon, reactor)


def configure_twist(options: Any, daemon: DaemonSettings, reactor: Any, signals: bool, argv: Sequence[str]) -> None:
    """
    Make C{log_format} decide twist's observer: twist builds it from
    C{options["fileLogObserverFactory"]} when it starts logging. An explicit
    twist C{--log-format} wins (one warning when it differs).
    """
    log_format = daemon.log_format
    explicit = twist_log_format(argv)
    if explicit is not None and explicit != log_format:
        _warn_ignored(log_format, "twist", f"--log-format {explicit}")
        log_format = explicit

    def factory(log_file: IO[str]) -> Observer:
        sink = _twist_sink(log_file, daemon, reactor)
        attach(sink, reactor, signals)
        return make_observer(log_format, sink)

    options["fileLogObserverFactory"] = factory
    options["logFormat"] = log_format


# -- the choice --------------------------------------------------------------------


def observer_for(
    daemon: DaemonSettings,
    options: Mapping[str, Any] | None,
    reactor: Any,
    *,
    signals: bool = True,
    out: IO[str] | None = None,
    argv: Sequence[str] | None = None,
) -> Observer | None:
    """
    The observer twistd's Application should log to, or None to keep
    twistd's own (see the module doc). C{options} are twistd's (or twist's)
    parsed options, None to read C{argv} (default C{sys.argv}); C{out} is
    stdout (default C{sys.stdout}). C{reactor} drives the buffer's timer
    and the shutdown flush (None: unbuffered); with C{signals}, SIGUSR1
    reopens the log file. Raises L{LogFileError} when the log file cannot
    be opened.
    """
    out = sys.stdout if out is None else out
    argv = sys.argv if argv is None else argv
    if is_twist(options):
        configure_twist(options, daemon, reactor, signals, argv)
        return None
    where = log_destination(options, argv)
    if where.kind == "stdout":
        sink = make_sink(out, daemon, reactor)
    elif where.kind == "file":
        sink = make_sink(open_log_file(where.path, daemon.log_mode), daemon, reactor)
    else:
        if daemon.log_format == "json" and where.option:
            _warn_ignored("json", "twistd", where.option)
        if where.kind == "syslog":
            prefix = (options or {}).get("prefix") or "twisted"
            return syslog_observer(str(prefix))
        return None
    attach(sink, reactor, signals)
    return make_observer(daemon.log_format, sink)
