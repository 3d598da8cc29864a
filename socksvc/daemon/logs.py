"""
A faster text log observer, line for line the same as twistd's.

twistd's text observer (L{twisted.logger.textFileLogObserver}) formats the
time of every event with C{datetime} and C{strftime}, and every message
through a C{string.Formatter} that looks each field up through a mapping
wrapper. For a daemon that logs a line per connection that is most of the
cost of a short connection. L{FastTextObserver} writes the same lines
(C{2026-11-21T11:44:17+0000 [socksvc#info] message}) but:

 - formats the time prefix once per second of log time (the time zone offset
   of the local time, as twistd prints it, cannot change within a second);
 - formats a message whose fields are all plain names (C{{peer}},
   C{{duration:.3f}}) with C{str.format_map}, and checks each format string
   only once;
 - hands everything else (tracebacks, C{{callable()}} fields, events without
   a string format, anything that fails to format) to Twisted's own
   L{formatEventAsClassicLogText}, so the output never differs.

L{choose_text_observer} decides whether socksvc may install it: only where
twistd would itself log text to standard output. L{choose_json_observer}
gives C{log_format = "json"} the same destination twistd would use (stdout,
or its C{--logfile} opened as twistd opens it), and leaves C{--syslog} and
C{--logger} to twistd. Both read twistd's options through
L{log_destination}.
"""

from __future__ import annotations

import signal
import string
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, Literal

from twisted.logger import (
    ILogObserver,
    LogEvent,
    Logger,
    formatEventAsClassicLogText,
    formatTime,
    jsonFileLogObserver,
)
from zope.interface import implementer

_log = Logger(namespace="socksvc")

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
"""twistd's (L{twisted.logger.textFileLogObserver}'s) time format."""

MAX_FORMATS = 1024
"""Format strings remembered at most (events normally use a few dozen literal ones)."""

_formatter = string.Formatter()


def _plain(fmt: str) -> bool:
    """True when C{fmt} formats the same with C{str.format_map} as with Twisted's formatter."""
    try:
        for _literal, field, _spec, _conversion in _formatter.parse(fmt):
            if field is None:
                continue
            # Twisted calls "{name()}" fields; attribute and index lookups
            # ("{a.b}", "{a[0]}") and positional fields are left to it too.
            if not field.isidentifier():
                return False
            if _spec and "{" in _spec:
                return False
    except ValueError:
        return False
    return True


@implementer(ILogObserver)
class FastTextObserver:
    """
    Writes events to C{out} as twistd's text observer does, faster (see the
    module doc). C{out} is flushed after every line, as twistd does.
    """

    def __init__(self, out: IO[str], time_format: str = TIME_FORMAT) -> None:
        self.out = out
        self.time_format = time_format
        self._second: int | None = None
        self._prefix = ""
        self._plain: dict[str, bool] = {}

    def stamp(self, when: float | None) -> str:
        """The time as twistd prints it, computed once per second."""
        if when is None:
            return "-"
        second = int(when // 1)
        if second != self._second:
            self._prefix = formatTime(when, self.time_format)
            self._second = second
        return self._prefix

    def format(self, event: LogEvent) -> str | None:
        """The line for C{event} (ending in a newline), or None when there is nothing to write."""
        fmt = event.get("log_format")
        if type(fmt) is str and "log_failure" not in event:
            plain = self._plain.get(fmt)
            if plain is None:
                plain = _plain(fmt)
                if len(self._plain) >= MAX_FORMATS:
                    self._plain.clear()
                self._plain[fmt] = plain
            if plain:
                try:
                    text = fmt.format_map(event)
                except Exception:
                    text = ""  # Twisted says what went wrong its own way
                if text:
                    system = event.get("log_system")
                    if system is None:
                        level = event.get("log_level")
                        system = f"{event.get('log_namespace', '-')}#{level.name if level is not None else '-'}"
                    line = f"{self.stamp(event.get('log_time'))} [{system}] {text}"
                    if "\n" in line:
                        line = line.replace("\n", "\n\t")
                    return line + "\n"
        return formatEventAsClassicLogText(event, formatTime=self.stamp)

    def __call__(self, event: LogEvent) -> None:
        text = self.format(event)
        if text:
            self.out.write(text)
            self.out.flush()


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


def choose_text_observer(
    out: IO[str],
    options: Mapping[str, Any] | None,
    argv: Sequence[str] = (),
) -> Callable[[LogEvent], None] | None:
    """
    The observer socksvc should give twistd's Application for text logging,
    or None to leave twistd's own choice alone: L{FastTextObserver} on C{out}
    only where twistd would write text to stdout (L{log_destination}).
    """
    if log_destination(options, argv).kind != "stdout":
        return None
    return FastTextObserver(out)


class LogFileError(Exception):
    """The log file twistd was told to write cannot be opened; C{str()} is the one line to print."""


def open_log_file(path: str) -> Any:
    """
    C{path} opened as twistd opens its C{--logfile}: a
    L{twisted.python.logfile.LogFile}, appended to, rotated at its default
    size (1 MB; this Twisted's twistd has no rotation options). Raises
    L{LogFileError} naming the file and the reason when it cannot be opened.
    """
    from twisted.python.logfile import LogFile

    try:
        return LogFile.fromFullPath(path)
    except OSError as e:
        raise LogFileError(f"{path}: cannot open log file: {e.strerror or e}") from None


def rotate_on_sigusr1(log_file: Any, reactor: Any) -> bool:
    """
    As twistd does for its own log file: SIGUSR1 rotates C{log_file} (on the
    reactor), unless SIGUSR1 already has a handler. True when installed.
    """
    if signal.getsignal(signal.SIGUSR1):  # twistd's test: neither None nor SIG_DFL (0)
        return False

    def rotate(signum: int, frame: Any) -> None:
        reactor.callFromThread(log_file.rotate)

    try:
        signal.signal(signal.SIGUSR1, rotate)
    except ValueError:  # not the main thread
        return False
    return True


def choose_json_observer(
    out: IO[str],
    options: Mapping[str, Any] | None,
    argv: Sequence[str] = (),
    reactor: Any = None,
) -> Callable[[LogEvent], None] | None:
    """
    The observer socksvc should give twistd's Application for
    C{log_format = "json"} (one JSON object a line), written where twistd
    would write its own log (L{log_destination}): C{out} for stdout; the
    C{--logfile} (or a daemon's C{twistd.log}) opened as twistd opens it
    (L{open_log_file}, which raises L{LogFileError}), rotated on SIGUSR1 as
    twistd's is when C{reactor} is given; None for C{--syslog}, C{--logger}
    and anything that is not twistd's choice to make here.
    """
    where = log_destination(options, argv)
    if where.kind == "stdout":
        return jsonFileLogObserver(out, recordSeparator="")
    if where.kind == "file":
        log_file = open_log_file(where.path)
        if reactor is not None:
            rotate_on_sigusr1(log_file, reactor)
        return jsonFileLogObserver(log_file, recordSeparator="")
    return None


def observer_for(log_format: str, options: Mapping[str, Any] | None, reactor: Any) -> Callable[[LogEvent], None] | None:
    """
    The observer twistd's Application should log to, or None to keep
    twistd's own. C{log_format = "json"}: JSON where twistd would write its
    own log (stdout, or its --logfile opened as twistd opens it; with
    --syslog or --logger twistd's observer stays, and a warning says
    log_format is ignored). Text: the same lines as twistd's own observer,
    faster, but only where twistd itself would write them to stdout.
    Raises L{LogFileError} when the log file cannot be opened. C{reactor}
    is for SIGUSR1 rotation (None: no signal handler).
    """
    if log_format == "json":
        json_observer = choose_json_observer(sys.stdout, options, sys.argv, reactor)
        if json_observer is None:
            option = log_destination(options, sys.argv).option
            if option:
                _log.warn(
                    'socksvc: log_format = "json" ignored: twistd was told to log with {option}',
                    event="log_format",
                    option=option,
                )
        return json_observer
    return choose_text_observer(sys.stdout, options, sys.argv)
