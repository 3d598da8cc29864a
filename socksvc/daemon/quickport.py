"""
A TCP listening port that lets its factory finish a connection before any
transport exists.

A greeting says one message and closes. Twisted's accept path builds a
whole transport for that (the address object, a non-blocking switch, an
epoll registration, the log prefix, then the teardown of all of it): most of
the daemon's CPU per greeting, and about half of the gap to uvloop, which
accepts, writes and closes in C. L{QuickPort} is Twisted's L{tcp.Port} with
one more step in its accept loop: each new socket is first offered to the
factory's C{quick(sock, address)} (L{QuickFactory}). The factory either
finishes the connection there and then (admits it, answers, closes, keeps
its books) and returns None, or returns the protocol to serve it with, which
gets a transport exactly as Twisted would have built it. Nothing else
changes: a factory without C{quick} gets Twisted's own accept loop, and so
does every error from C{accept} (EMFILE recovery, the accept error log).

C{doRead} uses the listening socket's C{_accept} (what C{socket.accept}
itself calls: the new descriptor and the peer's address, no socket object
built around it yet), so the descriptor can be wrapped without the
C{family} and C{type} properties C{accept} reads on every call.

L{quicken} turns a listening port that Twisted built (from an endpoint
string or a systemd descriptor) into a L{QuickPort} when its factory can use
it. L{QuickPort} adds no state and no constructor, only C{doRead}, so the
port keeps everything Twisted set up.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Protocol

from twisted.internet import tcp
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.logger import Logger

log = Logger(namespace="socksvc")
_socket = socket.socket  # what an accepted descriptor is wrapped in (a test replaces it)


class QuickFactory(Protocol):
    """What L{QuickPort} asks of a factory (besides being a server factory)."""

    def quick(self, sock: socket.socket, addr: IAddress) -> TwistedProtocol | None:
        """
        Serve the new connection C{sock} (blocking mode, as accepted; use
        C{MSG_DONTWAIT}) from C{addr} now and return None, having closed
        C{sock}; or return the protocol to serve it the usual way (C{sock}
        untouched but for what the protocol knows it sent), or None after
        closing C{sock} to turn it away.
        """


class QuickPort(tcp.Port):
    """
    L{tcp.Port} whose accept loop offers each socket to C{factory.quick} first.

    Twisted's loop takes in up to C{numberAccepts} peers per readable event
    and raises that by 20 whenever it used them all, without limit: cheap
    when each accept only builds a transport. Here each accept may be a
    whole connection's work, so the number stops at L{MAX_ACCEPTS}: a flood
    of greetings cannot keep the reactor from other connections for longer
    than that many greetings take (milliseconds).
    """

    MAX_ACCEPTS = 100

    def doRead(self) -> None:
        quick = getattr(self.factory, "quick", None)
        if quick is None:
            tcp.Port.doRead(self)
            return
        listener: Any = self.socket
        family = self.addressFamily
        accepted = 0
        while accepted < self.numberAccepts:
            try:
                fd, addr = listener._accept()
            except BlockingIOError:
                break
            except OSError:
                # EMFILE and the rest: Twisted's loop accepts again and handles
                # (and logs) the error its own way.
                tcp.Port.doRead(self)
                return
            accepted += 1
            try:
                sock = _socket(family, socket.SOCK_STREAM, 0, fd)
            except OSError:
                os.close(fd)  # not a socket object yet: nobody else would close it
                log.failure("{where}: a new connection failed", where=self.logPrefix())
                continue
            try:
                if len(addr) == 4:
                    # IPv6: the scope ID in the host, as Twisted's own loop does.
                    host = socket.getnameinfo(addr, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)[0]
                    addr = (host, *addr[1:])
                protocol = quick(sock, self._buildAddr(addr))
            except Exception:
                log.failure("{where}: a new connection failed", where=self.logPrefix())
                sock.close()
                continue
            if protocol is not None:
                try:
                    self._serve(sock, protocol, addr)
                except Exception:
                    # As Twisted's loop does: the transport, if there is one, is the protocol's now.
                    log.failure("{where}: a new connection failed", where=self.logPrefix())
        # Twisted's own scaling of the accept loop, up to MAX_ACCEPTS.
        if accepted == self.numberAccepts:
            self.numberAccepts = min(self.numberAccepts + 20, self.MAX_ACCEPTS)
        else:
            self.numberAccepts = max(1, accepted)

    def _serve(self, sock: socket.socket, protocol: Any, addr: tuple[Any, ...]) -> None:
        """The usual way: what Twisted's accept loop does with a protocol."""
        session = self.sessionno
        self.sessionno = session + 1
        transport = self.transport(sock, protocol, addr, self, session, self.reactor)
        protocol.makeConnection(transport)


def quicken(port: Any) -> bool:
    """
    Make a listening port a L{QuickPort} when it is Twisted's plain TCP port
    and its factory has C{quick}. True when it did.
    """
    if type(port) is tcp.Port and callable(getattr(port.factory, "quick", None)):
        port.__class__ = QuickPort
        return True
    return False
