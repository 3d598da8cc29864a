"""
The mail benchmark's reference: aiosmtpd (1.4.6, the bench extra) with its
Maildir handler (aiosmtpd.handlers.Mailbox), on asyncio's default loop.

    python bench/aiosmtpd_sink.py MAILDIR MAX_MESSAGE_SIZE

Prints C{bench-ref: listening on tcp 127.0.0.1:PORT} once it listens, as
bench/refserver.py does. aiosmtpd files with mailbox.Maildir: written to
tmp/ and renamed into new/, never fsynced.
"""

from __future__ import annotations

import asyncio
import sys

from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import SMTP

HOST = "127.0.0.1"


async def main(maildir: str, limit: int) -> None:
    loop = asyncio.get_running_loop()
    handler = Mailbox(maildir)
    # hostname given: aiosmtpd would otherwise ask getfqdn() (DNS) for it.
    server = await loop.create_server(lambda: SMTP(handler, hostname="localhost", data_size_limit=limit), HOST, 0)
    port = server.sockets[0].getsockname()[1]
    print(f"bench-ref: listening on tcp {HOST}:{port}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    except KeyboardInterrupt:
        pass
