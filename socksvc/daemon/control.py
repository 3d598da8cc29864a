"""
The control channel between the supervisor and each worker: AMP commands.

One AF_UNIX stream socket pair per worker (the worker's end is its
descriptor 3), so descriptors travel with the commands
(L{twisted.protocols.amp.Descriptor}): listening sockets, the shared tables
(L{socksvc.daemon.shared}) and the config text (in a memfd, so a config of
any size and the very characters the supervisor checked reach the worker).

Supervisor -> worker:

 - L{Adopt}: hold a descriptor under a name until a later command uses it;
 - L{Start}: serve the config adopted as C{config}; answered once every
   listener the worker serves is listening (the worker's "ready"), or with
   L{Refused} and the one line that says why;
 - L{Prepare}, then L{Commit} or L{Abort}: a reload in two phases, so it is
   all or nothing across workers: Prepare checks the new config and plans
   (changing nothing), and only when every worker said yes does any commit;
 - L{Status}: the worker's figures per service (JSON, in pages of at most
   L{PAGE} bytes: an AMP value holds 64 KiB);
 - L{Heartbeat}: answered at once by a worker whose event loop turns;
 - L{Stop}: stop as on SIGTERM, then exit 0.

Worker -> supervisor: L{LogLine}, one finished log line, or L{Log}, one
log event (JSON), no answer: the supervisor writes them with the worker's
number (L{socksvc.daemon.logrelay}).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from twisted.internet.protocol import connectionDone
from twisted.protocols import amp
from twisted.python.failure import Failure

SUPERVISOR_ENV = "SOCKSVC_SUPERVISOR"
"""The supervisor's pid, in a worker's environment: a worker whose supervisor died before it could follow it exits."""

PAGE = 60_000
"""Most bytes of JSON in one L{Status} answer or one L{Log} event (AMP values hold 65,535)."""


class Channel(amp.AMP):
    """AMP without its two log lines per connection (a worker's start and end are logged as such)."""

    def makeConnection(self, transport: Any) -> None:
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        amp.BinaryBoxProtocol.connectionLost(self, reason)
        self.transport = None


class Refused(Exception):
    """A worker cannot do what it was asked; the message is the one line why."""


class Adopt(amp.Command):
    """Hold C{fd} under C{name} (a JSON list; see L{listener_name}) until a command uses it."""

    arguments: ClassVar[list[tuple[bytes, amp.Argument]]] = [(b"name", amp.Unicode()), (b"fd", amp.Descriptor())]


class Start(amp.Command):
    """
    Serve the config adopted as "config", in C{slot} of C{workers}; answered
    when listening. C{log_format} ("text" or "json"): send finished lines;
    empty: send events. C{base_dir}: where the config's relative paths start
    (its file's directory; empty: the working directory).
    """

    arguments: ClassVar[list[tuple[bytes, amp.Argument]]] = [
        (b"slot", amp.Integer()),
        (b"workers", amp.Integer()),
        (b"source", amp.Unicode()),
        (b"seed", amp.Unicode()),
        (b"log_format", amp.Unicode()),
        (b"base_dir", amp.Unicode()),
    ]
    response: ClassVar[list[tuple[bytes, amp.Argument]]] = [(b"pid", amp.Integer())]
    errors: ClassVar[dict[type[Exception], bytes]] = {Refused: b"REFUSED"}


class Prepare(amp.Command):
    """
    Reload, first phase: check the config adopted as "config", plan, and
    rehearse every new or changed service on a scratch state; change nothing.
    """

    arguments: ClassVar[list[tuple[bytes, amp.Argument]]] = [
        (b"source", amp.Unicode()),
        (b"workers", amp.Integer()),
        (b"base_dir", amp.Unicode()),
    ]
    errors: ClassVar[dict[type[Exception], bytes]] = {Refused: b"REFUSED"}


class Commit(amp.Command):
    """Reload, second phase: apply what Prepare planned (new sockets were adopted meanwhile)."""

    response: ClassVar[list[tuple[bytes, amp.Argument]]] = [(b"error", amp.Unicode(optional=True))]


class Abort(amp.Command):
    """Reload given up: forget what Prepare planned and the descriptors adopted for it."""


class Status(amp.Command):
    """The figures of the worker's services from index C{start} on (JSON list); C{next} is -1 at the end."""

    arguments: ClassVar[list[tuple[bytes, amp.Argument]]] = [(b"start", amp.Integer())]
    response: ClassVar[list[tuple[bytes, amp.Argument]]] = [(b"figures", amp.Unicode()), (b"next", amp.Integer())]


class Heartbeat(amp.Command):
    """Answered at once by a worker whose event loop turns."""


class Stop(amp.Command):
    """Stop accepting, say goodbye, give connections their grace, exit 0."""


class LogLine(amp.Command):
    """One log line the worker formatted itself (the supervisor writes it as it is); C{urgent}: flush at once."""

    arguments: ClassVar[list[tuple[bytes, amp.Argument]]] = [(b"line", amp.Unicode()), (b"urgent", amp.Boolean())]
    requiresAnswer = False


class Log(amp.Command):
    """One log event of the worker's, as JSON (L{socksvc.daemon.logrelay})."""

    arguments: ClassVar[list[tuple[bytes, amp.Argument]]] = [(b"event", amp.Unicode())]
    requiresAnswer = False


# -- names of adopted descriptors ---------------------------------------------------

CONFIG = json.dumps(["config"])
"""The name of the config text's memfd."""


def table_name(service: str) -> str:
    """The name a service's shared table is adopted under."""
    return json.dumps(["table", service])


def listener_name(service: str, spec: str, occurrence: int, k: int) -> str:
    """
    The name of the C{k}th socket of the C{occurrence}th listener of
    C{service} with listen spec C{spec} (a config may list the same spec
    twice; a C{systemd:} spec may stand for several sockets).
    """
    return json.dumps(["listen", service, spec, occurrence, k])


def page(items: list[Any], start: int) -> tuple[str, int]:
    """
    JSON of C{items[start:]}, as many as fit in L{PAGE} bytes (at least
    one, cut to fit), and the index to ask for next (-1: none left).
    """
    out: list[str] = []
    size = 2
    i = start
    while i < len(items):
        text = json.dumps(items[i], separators=(",", ":"))
        if len(text.encode()) + size + 1 > PAGE:
            if out:
                break
            text = json.dumps({"name": str(items[i].get("name", "?")), "truncated": True})
        out.append(text)
        size += len(text.encode()) + 1
        i += 1
    return "[" + ",".join(out) + "]", (i if i < len(items) else -1)
