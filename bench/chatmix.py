"""
Chat across kinds of client: socksvc's chat with line, IRC and WebSocket
members in one room, against the same room of line members only, in the
same run (fresh daemons, alternating order, best of the rounds), driven by
client processes (bench/chatmix_load.py).

- "chat mix fan-out": 500 listeners split evenly over line, IRC and
  WebSocket clients, one line sender sends 4000 lines as fast as it can;
  delivered lines a second, against 500 line listeners (target: the mix at
  least 0.7x the line-only figure: rendering an event for a view costs once
  per view, not per member).
- "chat mix memory": 10,000 idle members of one kind registered in #lobby
  (IRC: NICK, USER, JOIN; WebSocket: the handshake and a nickname; line:
  a nickname): the daemon's RSS per member, each kind on a fresh daemon.

    python -m bench --only chatmix [--quick]
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from bench import chat, harness

HOST = chat.HOST
LOAD = chat.LOAD.replace("chat_load.py", "chatmix_load.py")
NOTES: list[str] = []
KINDS = ("line", "irc", "ws")
MARKER = chat.MARKERS["socksvc"]

CONFIG = f"""
[daemon]
log_format = "text"

[services.chat]
listen = ["tcp:0:interface={HOST}:backlog=4096"]
irc = ["tcp:0:interface={HOST}:backlog=4096"]
web = ["tcp:0:interface={HOST}:backlog=4096"]
max_connections = 0
max_per_source = 0
max_per_subnet = 0
idle_timeout = 0
flood_rate = 0
input_line_rate = 0
input_byte_rate = 0
ping_interval = 0
log_connections = false
"""


class Ports:
    def __init__(self, running: harness.Running) -> None:
        self.running = running
        with open(running.log_path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        found = dict(re.findall(rf"\] (chat(?:/irc|/web)?): listening on tcp {re.escape(HOST)}:(\d+)", text))
        self.by_kind = {"line": int(found["chat"]), "irc": int(found["chat/irc"]), "ws": int(found["chat/web"])}


@contextlib.contextmanager
def daemon() -> Iterator[Ports]:
    cmd = [chat.TWISTD, "--nodaemon", "--pidfile=", "socksvc", "--config", "{config}"]
    pattern = re.compile(rf"chat/web: listening on tcp {re.escape(HOST)}:(\d+)")
    config = CONFIG
    with harness.launch("socksvc", cmd, pattern, config, start_timeout=30, stop_timeout=20) as running:
        yield Ports(running)


class MixLoad(chat.Load):
    """One chatmix_load.py process."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, LOAD, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )


def load(ports: Ports, mode: str, kind: str, count: int, prefix: str) -> chat.Load:
    return MixLoad(mode, kind, HOST, str(ports.by_kind[kind]), str(count), prefix)


def fanout(ports: Ports, mix: dict[str, int], lines: int) -> tuple[float, float]:
    """Delivered lines a second to listeners of the kinds in C{mix} (kind -> count), and server CPU us a line."""
    loads: list[chat.Load] = []
    try:
        # Three listener processes in both cases (one per kind, or three of line members): the
        # same shape of load on this machine's two cores, so the ratio compares the server's work.
        per_kind = 3 // len(mix)
        for kind, count in mix.items():
            for j, part in enumerate(harness.split_clients(count, per_kind)):
                loads.append(load(ports, "listen", kind, part, f"{kind}{j}x"))
        for each in loads:
            each.expect("ready")
        sender = chat.Load("send", HOST, str(ports.by_kind["line"]), "sender", MARKER)
        sender.expect("ready")
        time.sleep(0.3)  # join notices settle
        for each in loads:
            each.tell("reset")
        for each in loads:
            each.expect("reset")
        for each in loads:
            each.tell(f"expect {lines}")
        cpu0 = chat.cpu_seconds(ports.running.proc.pid)
        sender.tell(f"go {lines} {chat.LINE_SIZE}")
        sent = sender.read()
        results = [each.read(300) for each in loads]
        cpu1 = chat.cpu_seconds(ports.running.proc.pid)
        loads.append(sender)
        last = max(r["last"] for r in results)
        delivered = sum(r["lines"] for r in results)
        return float(delivered) / (last - sent["t0"]), (cpu1 - cpu0) / max(1, delivered) * 1e6
    finally:
        for each in loads:
            each.stop()


def memory(kind: str, clients: int) -> float:
    """The daemon's RSS per idle member of C{kind} (KiB), C{clients} of them registered in #lobby."""
    with daemon() as ports:
        loads: list[chat.Load] = []
        try:
            time.sleep(0.2)
            rss0 = chat.rss_kib(ports.running.proc.pid)
            for j, count in enumerate(harness.split_clients(clients, 4)):
                loads.append(load(ports, "idle", kind, count, f"{kind}{j}x"))
            for each in loads:
                each.expect("ready")
            for each in loads:
                each.tell("go")
            results = [each.read(300) for each in loads]
            registered = sum(r["registered"] for r in results)
            if registered < clients:
                raise chat.BenchError(f"only {registered} of {clients} {kind} members registered")
            time.sleep(1.0)
            return (chat.rss_kib(ports.running.proc.pid) - rss0) / clients
        finally:
            for each in loads:
                each.stop()


def run(quick: bool) -> list[dict[str, Any]]:
    chat.raise_nofile()
    listeners, lines, rounds = (30, 300, 1) if quick else (500, 4000, 3)
    clients = 300 if quick else 10000
    third = listeners // 3
    cases = {
        "socksvc": {"line": listeners - 2 * third, "irc": third, "ws": third},
        "line only": {"line": listeners},
    }
    best: dict[str, float] = {}
    samples: dict[str, list[int]] = {}
    cpu: dict[str, list[float]] = {}
    for r in range(rounds):
        for name in cases if r % 2 == 0 else reversed(list(cases)):
            try:
                with daemon() as ports:
                    rate, us = fanout(ports, cases[name], lines)
            except chat.BenchError as e:
                NOTES.append(f"chat mix fan-out {name}: {e}")
                continue
            samples.setdefault(name, []).append(round(rate))
            cpu.setdefault(name, []).append(round(us, 3))
            best[name] = max(best.get(name, 0.0), rate)
    rows = []
    mix = cases["socksvc"]
    case = f"{listeners} listeners ({mix['line']} line, {mix['irc']} IRC, {mix['ws']} WebSocket), {lines} lines"
    for name, rate in best.items():
        rows.append(
            chat.row(
                "chat mix fan-out",
                case,
                name,
                rate,
                "delivered lines/s",
                True,
                samples=samples[name],
                server_cpu_us_per_line=cpu[name],
            )
        )
    for kind, label in (("line", "line"), ("irc", "IRC"), ("ws", "WebSocket")):
        try:
            per = memory(kind, clients)
        except chat.BenchError as e:
            NOTES.append(f"chat mix memory {label}: {e}")
            continue
        rows.append(
            chat.row("chat mix memory", f"RSS per idle {label} member, {clients}", "socksvc", per, "KiB", False)
        )
    return rows


if __name__ == "__main__":
    for got in run("--quick" in sys.argv):
        print(got)
    for note in NOTES:
        print("note:", note)
