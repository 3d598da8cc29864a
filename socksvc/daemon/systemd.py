"""
systemd integration: sd_notify, socket-activated descriptors, the watchdog.

Nothing here needs systemd or a library for it: the notify protocol is one
datagram per message to the AF_UNIX socket named by C{NOTIFY_SOCKET}, and
socket activation is C{LISTEN_PID}, C{LISTEN_FDS} and C{LISTEN_FDNAMES} in
the environment, with the descriptors from 3 up.

- L{Notifier} sends notify messages; without C{NOTIFY_SOCKET} it is off and
  silent. Abstract-namespace addresses (C{@name}) work.
- L{Supervisor} speaks for the daemon: C{READY=1}, a C{STATUS=} line with
  live figures every few seconds, C{WATCHDOG=1} at half of C{WATCHDOG_USEC}
  from a reactor timer (so a stuck event loop stops the pings),
  C{RELOADING=1} / C{READY=1} around a reload, C{STOPPING=1}.
- L{inherited} reads the activated descriptors once. Importing
  L{twisted.internet.endpoints} consumes C{LISTEN_PID} and C{LISTEN_FDS} (its
  C{systemd:} endpoint parser reads them at import time and deletes them from
  C{os.environ}), so L{inherited} takes whichever comes first: the
  environment, or the parse Twisted already made. C{LISTEN_FDNAMES} is left
  in the environment by Twisted, so names work either way.
- L{socksvc.config.listen.parse_systemd_spec} checks a C{systemd:} listen spec (C{systemd:name=NAME}, or
  Twisted's C{systemd:domain=INET:index=N}); L{sockets_for} finds its
  descriptors, L{adopt} turns one into a listening port.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from socksvc.config.listen import parse_systemd_spec

log = Logger(namespace="socksvc")

STATUS_INTERVAL = 5.0
"""Seconds between STATUS= refreshes."""
MAX_STATUS = 400
"""STATUS= lines are cut to this many characters (systemctl shows one line)."""
SD_LISTEN_FDS_START = 3


# -- sd_notify -----------------------------------------------------------------


def notify_address(value: str | None) -> str | bytes | None:
    """
    The address to send to for a C{NOTIFY_SOCKET} value: a path, or (for
    C{@name}) the abstract-namespace name as bytes with a leading NUL.
    None when the value is unset, empty or not an AF_UNIX address.
    """
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode("utf-8", "surrogateescape")
    if value.startswith("/"):
        return value
    return None  # vsock:... and other transports: not supported


class Notifier:
    """
    Sends sd_notify messages to one address. Off (every call a no-op) when
    there is no address. Never blocks and never raises: a message that cannot
    be sent is dropped, and logged once.
    """

    def __init__(self, address: str | bytes | None) -> None:
        self.address = address
        self._sock: socket.socket | None = None
        self._failed = False
        self.sent: list[str] = []
        """The last few messages sent (for tests and debugging)."""

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        return cls(notify_address(env.get("NOTIFY_SOCKET")))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send one message of C{KEY=value} lines; True if it went."""
        if self.address is None:
            return False
        text = "\n".join(lines)
        self.sent = [*self.sent[-19:], text]
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(text.encode("utf-8", "replace"), self.address)
        except OSError as e:
            if not self._failed:
                self._failed = True
                log.warn(
                    "socksvc: cannot notify systemd at {address!r}: {error}",
                    event="notify_error",
                    address=self.address,
                    error=e.strerror or str(e),
                )
            return False
        self._failed = False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as systemd wants it in MONOTONIC_USEC=."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """
    Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when
    the watchdog is off or meant for another process (WATCHDOG_PID).
    """
    env = os.environ if environ is None else environ
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 2_000_000


class Supervisor:
    """
    What the daemon tells systemd, and when. C{status} gives the live
    figures for STATUS= (called at every refresh).
    """

    def __init__(
        self,
        clock: Any,
        notifier: Notifier,
        status: Callable[[], str],
        watchdog: float | None = None,
        interval: float = STATUS_INTERVAL,
        monotonic: Callable[[], int] = monotonic_usec,
    ) -> None:
        self.clock = clock
        self.notifier = notifier
        self.status = status
        self.watchdog = watchdog
        self.interval = interval
        self.monotonic = monotonic
        self._status_loop: LoopingCall | None = None
        self._watchdog_loop: LoopingCall | None = None
        self.ready = False

    def _loop(self, fn: Callable[[], Any], interval: float) -> LoopingCall:
        loop = LoopingCall(fn)
        loop.clock = self.clock
        loop.start(interval, now=False)
        return loop

    def _status_line(self) -> str:
        try:
            text = self.status()
        except Exception:  # a figure that cannot be computed must not stop the daemon
            log.failure("socksvc: computing the systemd status failed")
            text = "running"
        text = " ".join(text.split())
        return "STATUS=" + (text if len(text) <= MAX_STATUS else text[: MAX_STATUS - 3] + "...")

    def started(self) -> None:
        """Every listener is bound: READY=1, then the timers."""
        if not self.notifier.enabled:
            return
        self.ready = True
        self.notifier.send("READY=1", self._status_line())
        if self._status_loop is None:
            self._status_loop = self._loop(self.refresh, self.interval)
        if self.watchdog is not None and self._watchdog_loop is None:
            self.ping()
            self._watchdog_loop = self._loop(self.ping, self.watchdog)

    def refresh(self) -> None:
        self.notifier.send(self._status_line())

    def ping(self) -> None:
        self.notifier.send("WATCHDOG=1")

    def failed(self, line: str) -> None:
        """Start-up failed: say why (systemd shows it next to the failure)."""
        self.notifier.send(f"STATUS=start-up failed: {line}"[:MAX_STATUS])

    def reloading(self) -> None:
        self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={self.monotonic()}", "STATUS=reloading the config")

    def reloaded(self) -> None:
        """Reload over (applied or not): READY=1 and a fresh STATUS=."""
        self.notifier.send("READY=1", self._status_line())

    def stopping(self) -> None:
        for loop in (self._status_loop, self._watchdog_loop):
            if loop is not None and loop.running:
                loop.stop()
        self._status_loop = self._watchdog_loop = None
        self.notifier.send("STOPPING=1", "STATUS=stopping")


# -- socket activation ---------------------------------------------------------


@attrs.frozen
class Inherited:
    """The descriptors systemd passed, with their names (in order)."""

    fds: tuple[int, ...] = ()
    names: tuple[str, ...] = ()
    problem: str = ""
    """Why LISTEN_FDS was set but could not be used (empty when fine)."""

    def named(self, name: str) -> list[int]:
        return [fd for fd, n in zip(self.fds, self.names, strict=False) if n == name]


def read_environment(environ: Mapping[str, str], pid: int) -> Inherited | None:
    """
    Parse LISTEN_PID / LISTEN_FDS / LISTEN_FDNAMES, or None when LISTEN_FDS
    is not set for this process.
    """
    if "LISTEN_FDS" not in environ or environ.get("LISTEN_PID") != str(pid):
        return None
    try:
        count = int(environ["LISTEN_FDS"])
    except ValueError:
        return Inherited(problem=f"LISTEN_FDS={environ['LISTEN_FDS']!r} is not a number")
    if count < 0:
        return Inherited(problem=f"LISTEN_FDS={count} is negative")
    fds = tuple(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count))
    return Inherited(fds, _names(environ, count))


def _names(environ: Mapping[str, str], count: int) -> tuple[str, ...]:
    raw = environ.get("LISTEN_FDNAMES", "")
    names = tuple(raw.split(":")) if raw else ()
    if len(names) != count:
        # Older systemd, or a launcher that sets no names: systemd's own default.
        return ("unknown",) * count
    return names


_INHERITED: Inherited | None = None


def inherited(refresh: bool = False) -> Inherited:
    """
    The descriptors this process was started with, read once and shared.
    """
    global _INHERITED
    if _INHERITED is not None and not refresh:
        return _INHERITED
    found = read_environment(os.environ, os.getpid())
    if found is None:
        # twisted.internet.endpoints may have consumed LISTEN_PID/LISTEN_FDS
        # already; it keeps what it read on its systemd endpoint parser.
        from twisted.internet import endpoints

        parsed = getattr(getattr(endpoints, "_SystemdParser", None), "_sddaemon", None)
        fds = tuple(parsed.inheritedDescriptors()) if parsed is not None else ()
        found = Inherited(fds, _names(os.environ, len(fds))) if fds else Inherited()
    _INHERITED = found
    return found


def sockets_for(text: str, found: Inherited | None = None) -> list[int]:
    """
    The inherited descriptors a C{systemd:} spec refers to (a name may label
    several: a socket unit with ListenStream= and ListenDatagram= gives both
    the same name). Raises L{LookupError} with a one-line reason.
    """
    name, index = parse_systemd_spec(text)
    found = inherited() if found is None else found
    if found.problem:
        raise LookupError(f"systemd passed unusable sockets: {found.problem}")
    if not found.fds:
        raise LookupError(
            f"no socket named {name!r} was passed: not started by socket activation "
            "(no LISTEN_FDS; start the .socket unit, or use tcp:/udp: listen specs)"
            if name is not None
            else "no sockets were passed: not started by socket activation (no LISTEN_FDS)"
        )
    if index is not None:
        if index >= len(found.fds):
            raise LookupError(f"index {index} is out of range: {len(found.fds)} sockets were passed")
        return [found.fds[index]]
    assert name is not None
    fds = found.named(name)
    if not fds:
        passed = ", ".join(sorted(set(found.names)))
        raise LookupError(f"no socket named {name!r} was passed (FileDescriptorName= passed: {passed})")
    return fds


@attrs.frozen
class SocketInfo:
    family: int
    type: int
    listening: bool


def describe_fd(fd: int) -> SocketInfo:
    """Family, type and listening state of a descriptor (OSError if not a socket)."""
    sock = socket.socket(fileno=os.dup(fd))
    try:
        listening = bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
        return SocketInfo(int(sock.family), int(sock.type), listening)
    finally:
        sock.close()


FAMILIES: dict[int, str] = {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6", socket.AF_UNIX: "UNIX"}


def adopt(
    reactor: Any,
    fd: int,
    stream: Callable[[], Any] | None,
    datagram: Callable[[], Any] | None,
    max_packet: int,
) -> Any:
    """
    Start serving on an inherited descriptor: a listening stream socket
    becomes a TCP or UNIX port (C{stream()} gives the factory), a datagram
    socket a UDP port (C{datagram()} gives the protocol). The inherited
    descriptor stays open (Twisted works on its own duplicate), so a reload
    can adopt it again. Raises L{ValueError} with a one-line reason.
    """
    try:
        info = describe_fd(fd)
    except OSError as e:
        raise ValueError(f"descriptor {fd} is not a usable socket: {e.strerror or e}") from None
    family = FAMILIES.get(info.family)
    if family is None:
        raise ValueError(f"descriptor {fd} is of address family {info.family}, not IPv4, IPv6 or UNIX")
    os.set_blocking(fd, False)
    os.set_inheritable(fd, False)  # not for our children
    if info.type == socket.SOCK_STREAM:
        if stream is None:
            raise ValueError("it is a stream socket; this service type serves datagrams only")
        if not info.listening:
            raise ValueError("it is a stream socket that is not listening (the socket unit needs Accept=no)")
        return reactor.adoptStreamPort(fd, info.family, stream())
    if info.type == socket.SOCK_DGRAM:
        if datagram is None:
            raise ValueError("it is a datagram socket; this service type serves streams only")
        if info.family == socket.AF_UNIX:
            raise ValueError("UNIX datagram sockets are not supported (use ListenDatagram= with a port)")
        return reactor.adoptDatagramPort(fd, info.family, datagram(), maxPacketSize=max_packet)
    raise ValueError(f"descriptor {fd} is neither a stream nor a datagram socket (type {info.type})")
