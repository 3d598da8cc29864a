"""
The attacking side of bench/attack.py: N connections from one address,
each sending cheap input as fast as the server takes it, for a while.

    python bench/attack_load.py KIND HOST PORT CONNECTIONS SECONDS

KIND is chat-blank (blank lines to chat), chat-telnet (telnet IAC NOP to
chat), reverse-plain (4 KiB ASCII lines to reverse) or reverse-marks (4 KiB
lines of combining marks). Chat connections register a nickname first.
Whatever the server sends is read and thrown away. Prints one JSON line:
for each connection, the bytes the server took in each 0.5 s bucket and
when (if) the server closed it. Bounded: it stops by itself after SECONDS.
Loopback only (the bench gives it 127.0.0.1).
"""

from __future__ import annotations

import errno
import json
import selectors
import socket
import sys
import time

BUCKET = 0.5
LINE = 4096


def payload(kind: str) -> bytes:
    if kind == "chat-blank":
        return b"\n" * 65536
    if kind == "chat-telnet":
        return b"\xff\xf1" * 32768  # IAC NOP
    if kind == "reverse-plain":
        return (b"a" * (LINE - 1) + b"\n") * 16
    if kind == "reverse-marks":
        line = ("a" + "\u0301" * ((LINE - 2) // 2)).encode()[: LINE - 1]
        return (line + b"\n") * 16
    raise SystemExit(f"attack_load: unknown kind {kind!r}")


def main(argv: list[str]) -> int:
    kind, host, port_s, count_s, seconds_s = argv
    port, count, seconds = int(port_s), int(count_s), float(seconds_s)
    if host not in ("127.0.0.1", "::1", "localhost"):
        raise SystemExit("attack_load: loopback only")
    data = payload(kind)
    sel = selectors.DefaultSelector()
    socks: list[socket.socket] = []
    for i in range(count):
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        # A small send buffer: the kernel would otherwise take megabytes per socket at the start,
        # and copying them is this process's CPU, not the daemon's (the machine has two cores).
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        s.settimeout(10)
        s.connect((host, port))
        if kind.startswith("chat"):
            s.sendall(f"attacker{i}\n".encode())
        s.setblocking(False)
        socks.append(s)
    buckets = [[0] * (int(seconds / BUCKET) + 2) for _ in socks]
    closed: list[float | None] = [None] * count
    offset = [0] * count
    for i, s in enumerate(socks):
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, i)
    print(json.dumps({"ready": True}), flush=True)
    t0 = time.monotonic()
    end = t0 + seconds
    while True:
        now = time.monotonic()
        if now >= end:
            break
        for key, events in sel.select(timeout=min(0.1, end - now)):
            i = key.data
            s = socks[i]
            gone = False
            if events & selectors.EVENT_READ:
                try:
                    if not s.recv(65536):
                        gone = True
                except BlockingIOError:
                    pass
                except OSError:
                    gone = True
            if not gone and events & selectors.EVENT_WRITE:
                try:
                    sent = s.send(data[offset[i] :] or data)
                    offset[i] = (offset[i] + sent) % len(data)
                    buckets[i][int((time.monotonic() - t0) / BUCKET)] += sent
                except BlockingIOError:
                    pass
                except OSError as e:
                    if e.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                        gone = True
                    else:
                        raise
            if gone:
                closed[i] = time.monotonic() - t0
                sel.unregister(s)
                s.close()
    for i, s in enumerate(socks):
        if closed[i] is None:
            sel.unregister(s)
            s.close()
    print(json.dumps({"bucket": BUCKET, "seconds": seconds, "sent": buckets, "closed": closed}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
