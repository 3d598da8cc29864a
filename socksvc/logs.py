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
twistd would itself log text to standard output.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from twisted.logger import ILogObserver, LogEvent, formatEventAsClassicLogText, formatTime
from zope.interface import implementer

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


def wants_default_logging(argv: Sequence[str]) -> bool:
    """
    From twistd's command line (C{sys.argv}), when its options are not at
    hand: True unless twistd would log to standard output on its own, that is
    unless C{--nodaemon} was given and none of C{--logfile}, C{--syslog},
    C{--logger} (or their abbreviations, or C{-l}). Errs towards True: then
    twistd's own observer runs, which is always right, only slower.
    """
    nodaemon = False
    for arg in argv[1:]:
        if arg == "--":
            break
        if not arg.startswith("-"):
            break  # the subcommand: what follows is socksvc's own options
        if arg.startswith("--"):
            name = arg[2:].split("=", 1)[0]
            if len(name) >= 3 and "nodaemon".startswith(name):
                nodaemon = True
            elif any(opt.startswith(name) for opt in ("logfile", "logger", "syslog")) or not name:
                return True
        else:
            flags = arg[1:]
            for flag in flags:
                if flag == "n":
                    nodaemon = True
                elif flag == "l":
                    return True
                elif flag not in "oeb":
                    break  # an option that takes a value (or one we do not know): the rest is its value
    return not nodaemon


def choose_text_observer(
    out: IO[str],
    options: Mapping[str, Any] | None,
    argv: Sequence[str] = (),
) -> Callable[[LogEvent], None] | None:
    """
    The observer socksvc should give twistd's Application for text logging,
    or None to leave twistd's own choice alone. C{options} are twistd's
    parsed options (the socksvc plugin options' C{parent}); without them
    C{argv} is read (L{wants_default_logging}).
    """
    if options is not None:
        if options.get("logger") or options.get("syslog") or not options.get("nodaemon"):
            return None
        if options.get("logfile") not in (None, "", "-"):
            return None
    elif wants_default_logging(argv):
        return None
    return FastTextObserver(out)
