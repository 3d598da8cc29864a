"""
Write-through: send at once when nothing is queued.

C{transport.write} only queues; the bytes leave on a later reactor
iteration, after an extra epoll_ctl to watch for writability and another to
stop. For a small reply on an idle connection that is most of the cost of an
echo round trip. L{write} sends straight from the socket when the transport
is a plain TCP or UNIX server transport whose buffer is empty, and hands
anything the kernel did not take (and everything, for TLS, test transports
and anything else) to C{transport.write}, so ordering, backpressure and
producers work exactly as before. L{send_last} is the same for a last word
followed by an orderly close (a greeting, a refusal line), and L{send_now}
for a last word before an abort.

L{send_and_drain} is the socket-level step under L{send_last}, for a
connection that has no transport yet (L{socksvc.daemon.quickport}).
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import tcp, unix

_PLAIN: tuple[type, ...] = (tcp.Server, unix.Server)


def idle_plain(transport: Any) -> bool:
    """True when C{transport} is a plain socket transport with nothing queued."""
    return (
        type(transport) in _PLAIN
        and not transport.TLS
        and transport.connected
        and not transport.disconnecting
        and not transport.dataBuffer
        and not transport._tempDataBuffer
        and not getattr(transport, "_writeDisconnecting", False)
        and not getattr(transport, "_writeDisconnected", False)
    )


def write(transport: Any, data: bytes) -> None:
    """Send C{data} now if the transport allows it, else queue it as usual."""
    if data and idle_plain(transport):
        try:
            sent = transport.socket.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            # Let Twisted find the error on its own write path and close cleanly.
            sent = 0
        if sent == len(data):
            return
        if sent:
            data = data[sent:]
    transport.write(data)


def send_now(transport: Any, data: bytes) -> None:
    """
    Best effort, for a last word before C{abortConnection}: abort discards
    whatever C{transport.write} queued, so try the socket first.
    """
    if idle_plain(transport):
        try:
            transport.socket.send(data)
        except OSError:
            pass
        return
    transport.write(data)


# Plain ints: the socket module's flags are enum members, and | on them builds a new member each call.
_MORE = int(getattr(socket, "MSG_MORE", 0))
_DONTWAIT = int(getattr(socket, "MSG_DONTWAIT", 0))
_DONTWAIT_MORE = _DONTWAIT | _MORE
_SINK = bytearray(65536)
"""Where input the peer sent before we closed goes (never looked at)."""


def send_last(transport: Any, data: bytes) -> int:
    """
    Send C{data} as the last thing on the connection and close it in order,
    at once, when the transport is an idle plain one and the kernel takes
    all of C{data}. Returns how many bytes the socket took: C{len(data)}
    means sent and closed; anything less means nothing was closed, and the
    caller writes C{data[sent:]} and closes its own way (C{transport.write}
    and C{loseConnection}, or an abort).

    After the data our FIN goes at once (C{shutdown(SHUT_WR)}), and what the
    peer already sent is read and thrown away (C{echo hi | nc HOST PORT}
    sends before it reads): closing a socket with unread input makes the
    kernel send a reset, which can overtake the data. One bounded read;
    whatever comes later is the peer's problem. Then the transport is told
    its write side is closed, so C{loseConnection} closes right away rather
    than on a later reactor turn with an empty send.
    """
    if not data or not idle_plain(transport):
        return 0
    sent = send_and_drain(transport.socket, data, more=not isinstance(transport, unix.Server))
    if sent != len(data):
        return sent
    # What Twisted sets itself once its own half-close is done: loseConnection
    # then closes (shutdown and close, in order) without waiting to write.
    transport._writeDisconnected = True
    # Our FIN is out: close() alone finishes, without Twisted's second shutdown().
    transport._shouldShutdown = False
    transport.loseConnection()
    return sent


def send_and_drain(sock: socket.socket, data: bytes, more: bool = True) -> int:
    """
    The socket side of L{send_last}, without blocking whatever mode C{sock}
    is in: send C{data}; if the kernel took all of it, shut down our side
    (the FIN follows the data) and read away, once, what the peer already
    sent, so that closing C{sock} next is an orderly close, not a reset.
    With C{more} (TCP), C{MSG_MORE} holds the data for the FIN so both leave
    in one segment. Returns how many bytes were sent (0 on an error);
    anything short of C{len(data)} left the socket as it was otherwise.
    Never raises C{OSError}; closing is the caller's.
    """
    try:
        sent: int = sock.send(data, _DONTWAIT_MORE if more else _DONTWAIT)
    except OSError:
        return 0
    if sent != len(data):
        return sent
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.recv_into(_SINK, 0, _DONTWAIT)
    except OSError:
        pass
    return sent
