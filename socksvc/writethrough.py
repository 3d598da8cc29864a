"""
Write-through: send at once when nothing is queued.

C{transport.write} only queues; the bytes leave on a later reactor
iteration, after an extra epoll_ctl to watch for writability and another to
stop. For a small reply on an idle connection that is most of the cost of an
echo round trip. L{write} sends straight from the socket when the transport
is a plain TCP or UNIX server transport whose buffer is empty, and hands
anything the kernel did not take (and everything, for TLS, test transports
and anything else) to C{transport.write}, so ordering, backpressure and
producers work exactly as before.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp, unix

_PLAIN: tuple[type, ...] = (tcp.Server, unix.Server)


def _idle_plain(transport: Any) -> bool:
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
    if data and _idle_plain(transport):
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
    if _idle_plain(transport):
        try:
            transport.socket.send(data)
        except OSError:
            pass
        return
    transport.write(data)
