"""
The chat console's connection: asyncio streams to a L{Target}.

The same grammar, order of addresses, failure wording and exit codes as
L{socksvc.client.target.connect} (which the plain line mode uses): only the
waiting is asyncio's, so the console keeps answering keys while it
connects or reconnects.
"""

from __future__ import annotations

import asyncio
import socket

from socksvc.client.target import Attempts, Target, addresses, nodelay, resolve_failed

STREAM_LIMIT = 1 << 20
"""asyncio's buffer limit for the console's reader (a line is bounded by the splitter as well)."""


async def open_stream(target: Target, timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """
    asyncio streams to C{target}; a failure raises the one
    L{socksvc.client.common.ClientError} that L{socksvc.client.target.connect}
    would raise.
    """
    loop = asyncio.get_running_loop()
    attempts = Attempts(target, timeout)
    if target.path is not None:
        try:
            return await asyncio.wait_for(asyncio.open_unix_connection(target.path, limit=STREAM_LIMIT), timeout)
        except (OSError, TimeoutError) as e:
            attempts.failed(e)
            raise attempts.error() from None
    deadline = loop.time() + timeout
    try:
        infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise resolve_failed(target, e) from None
    for family, sockaddr in addresses(target, infos):
        left = deadline - loop.time()
        if left <= 0:
            attempts.failed(TimeoutError())
            break
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, sockaddr), left)
        except (OSError, TimeoutError) as e:
            sock.close()
            attempts.failed(e)
            continue
        except BaseException:  # cancelled (the user left while we were connecting)
            sock.close()
            raise
        nodelay(sock)
        return await asyncio.open_connection(sock=sock, limit=STREAM_LIMIT)
    raise attempts.error()
