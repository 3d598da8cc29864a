"""
Mail: socksvc's smtp service against aiosmtpd (1.4.6, with its Maildir
handler), in the same run.

- "mail, fsync off": messages a second, 1 KiB and 100 KiB, 4 clients, each
  on its own connection sending one message after another (bench/load.py
  KIND smtp). aiosmtpd never fsyncs, so socksvc runs with C{fsync = false}
  here: like with like.
- "mail, fsync on": the same cells with socksvc's default (every message
  fsynced, and its directory, before the 250), against the same aiosmtpd
  figures: the ratio is what durability costs on this disk.
- "mail memory": the server's RSS growth (peak during the message, over its
  RSS before) while one client sends one 100 MiB message (socksvc streams
  it to disk; aiosmtpd holds it in memory).

Both servers file into a fresh temporary Maildir, removed afterwards.

    python -m bench --only mail
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from bench import harness
from bench.harness import HOST, TWISTD, BenchError, Case, Plan, Running, Samples, clients_name, note, plan_timing

HERE = os.path.dirname(os.path.abspath(__file__))
SINK = os.path.join(HERE, "aiosmtpd_sink.py")
SOCKSVC, DURABLE, AIOSMTPD = "socksvc", "socksvc fsync", "aiosmtpd"
SIZES = (1024, 100 * 1024)
CLIENTS = 4
BIG = 100 << 20
QUICK_BIG = 8 << 20
LIMIT = 200 << 20
"""Both servers' message size limit: over the 100 MiB message."""


def aiosmtpd_missing() -> str | None:
    try:
        import aiosmtpd  # noqa: F401
    except ImportError as e:
        return f"aiosmtpd: not importable ({e}); install the bench extra (pip install -e '.[bench]'); column skipped"
    return None


def socksvc_config(maildir: str, fsync: bool) -> str:
    return (
        f'[services.smtp]\nlisten = ["tcp:0:interface={HOST}"]\nmaildir = "{maildir}"\n'
        f"fsync = {'true' if fsync else 'false'}\nmax_message_size = {LIMIT}\n"
    )


@contextlib.contextmanager
def mail_server(name: str) -> Iterator[Running]:
    """One server with its own temporary Maildir (removed after)."""
    maildir = tempfile.mkdtemp(prefix=f"socksvc-bench-mail-{name.replace(' ', '-')}-")
    try:
        if name == AIOSMTPD:
            pattern = re.compile(rf"bench-ref: listening on tcp {re.escape(HOST)}:(\d+)")
            cmd = [
                sys.executable,
                SINK,
                os.path.join(maildir, "mail"),
                str(LIMIT),
            ]  # it makes tmp/ new/ cur/ only in a new directory
            with harness.launch(name, cmd, pattern) as running:
                yield running
        else:
            if not os.path.exists(TWISTD):
                raise BenchError(f"socksvc: {TWISTD} not found (run from the project's venv)")
            pattern = re.compile(rf"\] smtp: listening on tcp {re.escape(HOST)}:(\d+)")
            cmd = [TWISTD, "--nodaemon", "--pidfile=", "socksvc", "--config", "{config}"]
            config = socksvc_config(maildir, name == DURABLE)
            with harness.launch(name, cmd, pattern, config) as running:
                yield running
    finally:
        shutil.rmtree(maildir, ignore_errors=True)


def servers() -> list[str]:
    names = [SOCKSVC, DURABLE, AIOSMTPD]
    why = aiosmtpd_missing()
    if why is not None:
        note(why)
        names.remove(AIOSMTPD)
    return names


def rates(quick: bool, names: list[str]) -> list[dict[str, Any]]:
    rounds, duration = plan_timing(quick)
    sizes = SIZES[:1] if quick else SIZES
    cases = [Case(f"{harness.size_name(size)}, {clients_name(CLIENTS)}", "smtp", CLIENTS, size) for size in sizes]
    plan = Plan("mail", "smtp", "message", cases, rounds, duration)
    samples = Samples(plan)
    with contextlib.ExitStack() as stack:
        up: list[Running] = []
        for name in names:
            try:
                up.append(stack.enter_context(mail_server(name)))
            except BenchError as e:
                note(f"mail: {e}; {name} skipped")
        for case in cases:
            for r in range(rounds):
                k = r % len(up) if up else 0
                for running in up[k:] + up[:k]:
                    samples.run(case, running, [x for x in up if x is not running])
    return split(samples.rows(names))


def split(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """
    Two benchmarks out of one run: "mail, fsync off" (socksvc with fsync =
    false against aiosmtpd) and "mail, fsync on" (socksvc's default against
    the same aiosmtpd figures).
    """
    out = []
    for row in rows:
        cpu = " cpu" if row["bench"].endswith(" cpu") else ""
        if row["server"] == SOCKSVC:
            out.append({**row, "bench": f"mail, fsync off{cpu}"})
        elif row["server"] == DURABLE:
            out.append({**row, "bench": f"mail, fsync on{cpu}", "server": SOCKSVC})
        else:
            out.append({**row, "bench": f"mail, fsync off{cpu}"})
            out.append({**row, "bench": f"mail, fsync on{cpu}"})
    return out


# -- memory ------------------------------------------------------------------------


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise BenchError("cannot read the server's RSS")


def reply(sock: socket.socket, buf: bytearray) -> bytes:
    while True:
        end = buf.find(b"\r\n")
        while end >= 0:
            line = bytes(buf[:end])
            del buf[: end + 2]
            if line[3:4] != b"-":
                return line
            end = buf.find(b"\r\n")
        chunk = sock.recv(65536)
        if not chunk:
            raise BenchError("the server closed the connection")
        buf += chunk


def big_message(port: int, pid: int, size: int) -> tuple[float, float]:
    """(peak RSS growth in MiB, MiB/s) while one message of C{size} bytes goes to the server."""
    with socket.create_connection((HOST, port), timeout=60) as sock:
        buf = bytearray()
        for command, code in ((b"", b"220"), (b"EHLO bench\r\n", b"250")):
            sock.sendall(command)
            if not reply(sock, buf).startswith(code):
                raise BenchError("the server did not greet")
        sock.sendall(b"MAIL FROM:<bench@example.org>\r\n")
        reply(sock, buf)
        sock.sendall(b"RCPT TO:<sink@example.org>\r\n")
        reply(sock, buf)
        sock.sendall(b"DATA\r\n")
        if not reply(sock, buf).startswith(b"354"):
            raise BenchError("DATA was refused")
        before = peak = rss(pid)
        chunk = (b"y" * 998 + b"\r\n") * 1048  # 1 MiB, near enough
        sent = 0
        start = time.monotonic()
        sock.sendall(b"Subject: big\r\n\r\n")
        while sent < size:
            sock.sendall(chunk)
            sent += len(chunk)
            peak = max(peak, rss(pid))
        sock.sendall(b".\r\n")
        sock.setblocking(False)
        done = b""
        while not done:  # sample while the server finishes (parsing, writing, fsync)
            peak = max(peak, rss(pid))
            try:
                done = reply(sock, buf)
            except BlockingIOError:
                time.sleep(0.005)
        elapsed = time.monotonic() - start
        if not done.startswith(b"250"):
            raise BenchError(f"the big message was refused: {done[:80]!r}")
    return (peak - before) / (1 << 20), sent / (1 << 20) / elapsed


def memory(quick: bool, names: list[str]) -> list[dict[str, Any]]:
    size = QUICK_BIG if quick else BIG
    case = f"{size >> 20} MiB message, 1 client"
    rows = []
    for name in names:
        if name == SOCKSVC:
            continue  # the default (fsync on) is the one that matters here
        try:
            with mail_server(name) as running:
                growth, speed = big_message(running.port, running.proc.pid, size)
        except (BenchError, OSError) as e:
            note(f"mail memory {name}: {e}")
            continue
        server = SOCKSVC if name == DURABLE else name
        base = {"bench": "mail memory", "case": case, "server": server}
        rows.append({**base, "value": round(max(growth, 0.01), 2), "unit": "MiB RSS growth", "higher_is_better": False})
        rows.append(
            {**base, "bench": "mail memory speed", "value": round(speed, 1), "unit": "MiB/s", "higher_is_better": True}
        )
    return rows


def run(quick: bool) -> list[dict[str, Any]]:
    names = servers()
    return rates(quick, names) + memory(quick, names)
