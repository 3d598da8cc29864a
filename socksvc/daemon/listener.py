"""
Listeners: one listen spec of one service, bound and released.

Binding is synchronous and fails loudly: L{Listener.bind} raises
L{StartupError} with one line naming the service and the address. Stream
specs go through Twisted's endpoints; udp: specs through C{listenUDP} here
(the only place datagram ports are bound); C{systemd:} specs adopt the
socket-activated descriptors.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from socksvc.config.listen import ListenSpec, check_socket_directory
from socksvc.config.loader import BindKey, bind_key
from socksvc.daemon import systemd
from socksvc.daemon.accept import guard_port
from socksvc.daemon.errors import StartupError
from socksvc.daemon.quickport import quicken

log = Logger(namespace="socksvc")

MAX_DATAGRAM = 65536
"""Bytes read per datagram: more than the largest UDP payload (65507 over IPv4, 65527 over IPv6)."""
SOCKET_BUFFER = 1 << 20
"""SO_RCVBUF/SO_SNDBUF asked for (the kernel caps it at net.core.rmem_max/wmem_max)."""


def is_udp(port: Any) -> bool:
    try:
        return str(getattr(port.getHost(), "type", "")).upper() == "UDP"
    except Exception:
        return False


def stream_endpoint(reactor: Any, spec: ListenSpec) -> Any:
    """
    The Twisted endpoint for a parsed stream spec, built from its checked
    fields (never from the string: Twisted would read key files itself, and
    take its own defaults for the backlog and a UNIX socket's mode).
    """
    if spec.scheme == "tcp":
        assert spec.port is not None
        return endpoints.TCP4ServerEndpoint(reactor, spec.port, spec.backlog, spec.interface)
    if spec.scheme == "tcp6":
        assert spec.port is not None
        return endpoints.TCP6ServerEndpoint(reactor, spec.port, spec.backlog, spec.interface or "::")
    if spec.scheme == "ssl":
        assert spec.port is not None and spec.tls is not None
        return endpoints.SSL4ServerEndpoint(reactor, spec.port, spec.tls.options(), spec.backlog, spec.interface)
    if spec.scheme == "unix":
        return endpoints.UNIXServerEndpoint(reactor, spec.path, spec.backlog, spec.mode, spec.lockfile)
    raise ValueError(f"not a stream spec that binds: {spec.text}")


def listen_stream(reactor: Any, spec: ListenSpec, factory: Any) -> Any:
    """Start listening on a stream spec; gives a Deferred of the port."""
    if spec.scheme == "unix":
        check_socket_directory(spec.path)  # gone since the config was loaded: say so, not ENOENT on PATH.lock
    return stream_endpoint(reactor, spec).listen(factory)


def port_description(port: IListeningPort) -> str:
    """Where a listening port actually is: C{tcp 127.0.0.1:7007}, C{udp [::1]:7007}, C{unix /run/x}."""
    host: Any = port.getHost()
    kind = str(getattr(host, "type", "")).lower()
    if hasattr(host, "port"):
        h = getattr(host, "host", "")
        if ":" in h:
            h = f"[{h}]"
        return f"{kind or 'tcp'} {h}:{host.port}"
    name = getattr(host, "name", host)
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return f"unix {name}"


def tune_buffers(port: Any) -> None:
    """Ask for SOCKET_BUFFER-sized receive and send buffers on a UDP port's socket (best effort)."""
    sock = getattr(port, "socket", None)
    if sock is None:
        return
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            if sock.getsockopt(socket.SOL_SOCKET, opt) < SOCKET_BUFFER:
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        except OSError:
            pass  # the defaults still work


def listen_udp(reactor: Any, spec: ListenSpec, protocol: DatagramProtocol) -> Any:
    """
    Bind a udp: listen spec (an IPv6 interface means an IPv6 socket; no
    interface means all IPv4 addresses). Reads whole datagrams of any legal
    size. (The daemon records the bound port in its UDP port set.)
    """
    assert spec.port is not None
    port = reactor.listenUDP(spec.port, protocol, interface=spec.interface, maxPacketSize=MAX_DATAGRAM)
    tune_buffers(port)
    return port


def _socket_of(port: Any) -> socket.socket | None:
    """A real listening port's socket (None for a test reactor's stand-in)."""
    sock = getattr(port, "socket", None)
    return sock if isinstance(sock, socket.socket) else None


def _bind_reason(failure: Failure) -> str:
    err = failure.value
    # CannotListenError's text repeats the address; keep the OS's reason.
    sock_err = getattr(err, "socketError", None)
    if sock_err is not None and getattr(sock_err, "strerror", None):
        return str(sock_err.strerror)
    if isinstance(err, OSError) and err.strerror:
        # A UNIX socket's lock file (PATH.lock) or its directory: name the file, not a pid.
        name = err.filename2 if err.filename2 is not None else err.filename
        return f"{err.strerror}: {os.fsdecode(name)}" if isinstance(name, str | bytes) else err.strerror
    return " ".join(str(sock_err or err).split()) or err.__class__.__name__


class Listener(Service):
    """
    One listen spec of one service: binds it, and unbinds on stop. A
    C{systemd:name=NAME} spec may stand for several inherited sockets (a
    socket unit with both ListenStream= and ListenDatagram=), hence
    C{ports}; C{port} is the first.
    """

    def __init__(self, instance: Any, spec: ListenSpec, index: int = 0, key: str = "listen") -> None:
        self.instance = instance
        self.spec = spec
        self.key = key
        """The listen list this spec is in: C{listen}, or an extra one of the type's (chat: irc, web)."""
        self.ports: list[Any] = []
        self.taken_from: Listener | None = None
        """The listener whose socket this one took over (L{take_over}), until the reload commits."""
        # Two identical specs (two "udp:0", say) are legal: names must still differ.
        self.setName(f"{index}:{spec.text}" if key == "listen" else f"{key}[{index}]:{spec.text}")

    def factory(self) -> Any:
        """The stream factory this listener serves (its list's: an extra list has its own)."""
        if self.key == "listen":
            return self.instance.factory()  # any instance (the admin listener's too) has this one
        return self.instance.factory(self.key)

    @property
    def label(self) -> str:
        """The service's name, and the listen key when not C{listen}: C{chat}, C{chat/irc}."""
        name: str = self.instance.context.name
        return name if self.key == "listen" else f"{name}/{self.key}"

    @property
    def port(self) -> Any:
        return self.ports[0] if self.ports else None

    @port.setter
    def port(self, value: Any) -> None:
        self.ports = [] if value is None else [value]

    def bind(self) -> None:
        if self.ports:
            return
        context = self.instance.context
        stype = self.instance.stype
        where = f"service {self.label!r} cannot listen on {self.spec.text!r}"
        result: list[Any] = []
        if self.instance.adopt is not None:  # a worker process: the supervisor bound the sockets
            try:
                self.ports = self.instance.adopt(self)
            except Exception as e:
                raise StartupError(f"{where}: {e}") from None
        elif self.spec.scheme == "systemd":
            self._adopt(where)
        elif self.spec.kind == "datagram":
            assert stype.datagram is not None
            try:
                self.port = listen_udp(context.reactor, self.spec, stype.datagram(context))
            except Exception as e:
                raise StartupError(f"{where}: {_bind_reason(Failure(e))}") from None
        else:
            factory = self.factory()
            try:
                d: Deferred[IListeningPort] = listen_stream(context.reactor, self.spec, factory)
            except Exception as e:  # the socket's directory is gone, the TLS files went bad...
                raise StartupError(f"{where}: {_bind_reason(Failure(e))}") from None
            d.addBoth(result.append)
            if not result:
                # An endpoint that binds later (rare): report a failure when it comes.
                d.addCallbacks(self._bound, self._late_failure)
                return
            if isinstance(result[0], Failure):
                raise StartupError(f"{where}: {_bind_reason(result[0])}")
            self.port = result[0]
        for port in self.ports:
            self._announce(port)

    def held_key(self) -> BindKey | None:
        """
        The address this listener holds, as L{bind_key} says it: its spec's,
        with the port the kernel chose when the spec said port 0 (a reload
        to C{tcp:PORT} on that very port is then the same address).
        """
        key = bind_key(self.spec)
        if key is not None or self.spec.port != 0 or len(self.ports) != 1:
            return key
        try:
            port = int(self.port.getHost().port)
        except (AttributeError, TypeError, ValueError):
            return None
        return bind_key(attrs.evolve(self.spec, port=port))

    def can_take_over(self, old: Listener) -> bool:
        """
        Can this (new) listener serve on C{old}'s socket instead of binding
        its own? When both bind exactly the same address (a TCP, TLS or UDP
        port and interface; not a UNIX path, not a systemd socket) and the
        reactor can adopt a descriptor.
        """
        if self.spec.scheme in ("systemd", "unix") or old.spec.scheme in ("systemd", "unix"):
            return False
        if self.spec.kind != old.spec.kind or len(old.ports) != 1:
            return False
        key = bind_key(self.spec)
        if key is None or key != old.held_key():
            return False
        reactor = self.instance.context.reactor
        method = "adoptDatagramPort" if self.spec.kind == "datagram" else "adoptStreamPort"
        return callable(getattr(reactor, method, None)) and _socket_of(old.port) is not None

    def take_over(self, old: Listener) -> None:
        """
        Serve this spec on C{old}'s socket (L{can_take_over}): the new port
        works on a duplicate of the descriptor, so the address is never
        unbound and connections waiting in the old accept queue are served;
        the new spec's backlog and TLS certificate apply. C{old} keeps its
        port until it is released (then only its duplicate closes). Raises
        L{StartupError}.
        """
        context = self.instance.context
        stype = self.instance.stype
        where = f"service {context.name!r} cannot listen on {self.spec.text!r}"
        sock = _socket_of(old.port)
        assert sock is not None
        try:
            if self.spec.kind == "datagram":
                assert stype.datagram is not None
                port = context.reactor.adoptDatagramPort(
                    sock.fileno(), sock.family, stype.datagram(context), maxPacketSize=MAX_DATAGRAM
                )
                tune_buffers(port)
            else:
                factory: Any = self.factory()  # this spec's list's: a port moved from web to irc serves IRC
                if self.spec.tls is not None:
                    factory = TLSMemoryBIOFactory(self.spec.tls.options(), False, factory)
                if self.spec.backlog:
                    sock.listen(self.spec.backlog)  # listen() again only sets the queue length
                port = context.reactor.adoptStreamPort(sock.fileno(), sock.family, factory)
        except Exception as e:
            raise StartupError(f"{where}: {_bind_reason(Failure(e))}") from None
        # When the old port closes it must only close its descriptor: Twisted
        # would shutdown() a socket it bound itself first, and that stops the
        # listening socket for every descriptor of it, ours included. (The
        # same flag Twisted clears on the ports it adopts.)
        old.port._shouldShutdown = False
        self.port = port
        self.taken_from = old
        self._announce(port)

    def _announce(self, port: Any) -> None:
        """A port is bound: guard its accept errors and say where it listens."""
        context = self.instance.context
        where = port_description(port)
        guard_port(port, context.reactor, f"{self.label}: {where}")
        quicken(port)
        log.info(
            "{_label}: listening on {where}",
            event="listen",
            service=context.name,
            listen_key=self.key,
            where=where,
            spec=self.spec.text,
            _label=self.label,
        )

    def _adopt(self, where: str) -> None:
        """Take over the socket-activated descriptors this spec names."""
        context = self.instance.context
        stype = self.instance.stype
        extra = self.key != "listen"  # an extra list (chat's irc, web) serves streams only, with its own factory
        try:
            fds = systemd.sockets_for(self.spec.text)
        except (LookupError, ValueError) as e:
            raise StartupError(f"{where}: {e}") from None
        ports: list[Any] = []
        try:
            for fd in fds:
                ports.append(
                    systemd.adopt(
                        context.reactor,
                        fd,
                        self.factory if extra or stype.stream is not None else None,
                        (lambda: stype.datagram(context)) if stype.datagram is not None and not extra else None,  # type: ignore[misc]
                        MAX_DATAGRAM,
                    )
                )
        except Exception as e:
            for port in ports:
                port.stopListening()
            raise StartupError(f"{where}: {e}") from None
        for port in ports:
            if is_udp(port):
                tune_buffers(port)  # an adopted UDP socket gets the buffers listen_udp gives its own
        self.ports = ports

    def _bound(self, port: IListeningPort) -> None:
        self.port = port
        self._announce(port)

    def _late_failure(self, failure: Failure) -> None:
        context = self.instance.context
        log.critical(
            "{service}: cannot listen on {spec}: {reason}; stopping",
            service=self.label,
            spec=self.spec.text,
            reason=_bind_reason(failure),
        )
        context.reactor.stop()

    def release(self) -> Deferred[Any]:
        """Stop listening (established connections stay); fires once the sockets are closed."""
        ports, self.ports = self.ports, []
        old, self.taken_from = self.taken_from, None
        if old is not None and old.ports and self.spec.kind == "stream" and old.spec.backlog:
            # A take-over undone: the socket goes on serving the old spec, with its backlog.
            sock = _socket_of(old.port)
            if sock is not None:
                try:
                    sock.listen(old.spec.backlog)
                except OSError:
                    pass
        return DeferredList([maybeDeferred(p.stopListening) for p in ports], consumeErrors=True)

    def privilegedStartService(self) -> None:
        self.bind()
        super().privilegedStartService()

    def startService(self) -> None:
        self.bind()  # twist (unlike twistd) only calls startService
        super().startService()

    def stopService(self) -> Deferred[Any] | None:
        super().stopService()
        if not self.ports:
            return None
        return self.release()
