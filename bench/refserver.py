"""
The reference servers socksvc is measured against (run as a script).

    python bench/refserver.py IMPL SERVICE [--message TEXT]

IMPL is C{twisted} (the default epoll reactor), C{asyncio} (the stdlib
loop) or C{uvloop} (asyncio on uvloop). SERVICE is C{echo} (TCP), C{greeting}
(send the message, close) or C{udp} (datagram echo). Each binds 127.0.0.1
port 0, prints C{bench-ref: listening on tcp 127.0.0.1:PORT} (or udp) and
serves until SIGTERM or SIGINT.

These are the textbook servers, on purpose: the cost of socksvc's features
is measured against code with none. The one addition is TCP_NODELAY in the
Twisted echo and greeting (asyncio and uvloop set it on every TCP
connection by default, and socksvc sets it too), so all four compare alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
from typing import Any

HOST = "127.0.0.1"
DEFAULT_MESSAGE = "Thank you for connecting\r\n"


def announce(kind: str, port: int) -> None:
    print(f"bench-ref: listening on {kind} {HOST}:{port}", flush=True)


# -- Twisted ------------------------------------------------------------------


def run_twisted(service: str, message: bytes) -> None:
    from twisted.internet import reactor
    from twisted.internet.protocol import DatagramProtocol, Factory, Protocol

    r: Any = reactor

    class Echo(Protocol):
        def connectionMade(self) -> None:
            self.transport.setTcpNoDelay(True)  # type: ignore[union-attr]

        def dataReceived(self, data: bytes) -> None:
            self.transport.write(data)  # type: ignore[union-attr]

    class Greeting(Protocol):
        def connectionMade(self) -> None:
            self.transport.setTcpNoDelay(True)  # type: ignore[union-attr]
            self.transport.write(message)  # type: ignore[union-attr]
            self.transport.loseConnection()  # type: ignore[union-attr]

    class UDPEcho(DatagramProtocol):
        def datagramReceived(self, datagram: bytes, addr: Any) -> None:
            self.transport.write(datagram, addr)  # type: ignore[union-attr]

    if service == "udp":
        port = r.listenUDP(0, UDPEcho(), interface=HOST)
        announce("udp", port.getHost().port)
    else:
        factory = Factory.forProtocol(Echo if service == "echo" else Greeting)
        factory.noisy = False
        port = r.listenTCP(0, factory, interface=HOST)
        announce("tcp", port.getHost().port)
    r.run()


# -- asyncio / uvloop -----------------------------------------------------------


class AsyncEcho(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class AsyncGreeting(asyncio.Protocol):
    message = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t: Any = transport
        t.write(self.message)
        t.close()


class AsyncUDPEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)


async def serve_asyncio(service: str, message: bytes, sock: socket.socket | None = None) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)
    if service == "udp":
        transport, _ = await loop.create_datagram_endpoint(AsyncUDPEcho, local_addr=(HOST, 0))
        announce("udp", transport.get_extra_info("sockname")[1])
        await stop
        transport.close()
        return
    AsyncGreeting.message = message
    factory = AsyncEcho if service == "echo" else AsyncGreeting
    if sock is not None:  # one of several processes on one listening socket (--processes)
        server = await loop.create_server(factory, sock=sock)
    else:
        server = await loop.create_server(factory, HOST, 0)
        announce("tcp", server.sockets[0].getsockname()[1])
    await stop
    server.close()


def serve_processes(impl: str, service: str, message: bytes, processes: int) -> int:
    """C{processes} asyncio (or uvloop) processes serving one listening socket, bound here and inherited."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    sock.listen(1024)
    sock.setblocking(False)
    children = []
    for _ in range(processes - 1):
        pid = os.fork()
        if pid == 0:
            import ctypes

            ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG: never outlive the parent
            _run(impl, service, message, sock)
            os._exit(0)
        children.append(pid)
    announce("tcp", sock.getsockname()[1])
    try:
        _run(impl, service, message, sock)
    finally:
        for pid in children:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
    return 0


def _run(impl: str, service: str, message: bytes, sock: socket.socket) -> None:
    if impl == "uvloop":
        import uvloop

        uvloop.run(serve_asyncio(service, message, sock))
    else:
        asyncio.run(serve_asyncio(service, message, sock))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="a reference server for the socksvc benchmarks")
    p.add_argument("impl", choices=("twisted", "asyncio", "uvloop"))
    p.add_argument("service", choices=("echo", "greeting", "udp"))
    p.add_argument("--message", default=DEFAULT_MESSAGE, help="the greeting (default: socksvc's default)")
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="asyncio and uvloop over TCP: this many processes on one listening socket (as socksvc's workers)",
    )
    a = p.parse_args(argv)
    message = a.message.encode("utf-8")
    if a.processes > 1 and a.impl != "twisted" and a.service != "udp":
        return serve_processes(a.impl, a.service, message, a.processes)
    if a.impl == "twisted":
        run_twisted(a.service, message)
    elif a.impl == "asyncio":
        asyncio.run(serve_asyncio(a.service, message))
    else:
        import uvloop

        uvloop.run(serve_asyncio(a.service, message))
    return 0


if __name__ == "__main__":
    sys.exit(main())
