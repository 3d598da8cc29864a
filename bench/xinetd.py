"""
A private xinetd serving its internal services (time, daytime, chargen,
discard, echo) on free loopback ports: the reference socksvc's classic
services are compared with, byte for byte in the tests and side by side in
the benchmarks.

    with xinetd({"time": ("stream", "dgram"), "chargen": ("stream",)}) as x:
        x.port("time", "dgram")

It runs in the foreground (C{xinetd -dontfork -f CONF}) on a config written
to a temporary directory, logging each connection to a file there (as
socksvc logs each connection), with its connection-rate limit (cps: 50 a
second, then 10 s off, by default) lifted so that a benchmark measures the
service, not the throttle.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

HOST = "127.0.0.1"
START_TIMEOUT = 10.0


class XinetdError(Exception):
    """xinetd is missing or would not start; the message is one line."""


def missing() -> str | None:
    """Why xinetd cannot run here, or None."""
    if shutil.which("xinetd") is None:
        return "xinetd is not installed (Debian package xinetd)"
    if os.geteuid() != 0:
        return "xinetd's internal services need root (it sets the service's user)"
    return None


def free_port(kind: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM if kind == "stream" else socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def config(ports: Mapping[tuple[str, str], int], log: str) -> str:
    """An xinetd.conf with each (service, kind) as an internal service on its port."""
    out = [
        "defaults",
        "{",
        f"    log_type = FILE {log}",
        "    log_on_success = HOST DURATION",
        "    log_on_failure = HOST",
        "    cps = 1000000 1",
        "    instances = UNLIMITED",
        "    per_source = UNLIMITED",
        "}",
    ]
    for (name, kind), port in ports.items():
        out += [
            f"service {name}",
            "{",
            "    type = INTERNAL UNLISTED",
            f"    id = {name}-{kind}",
            f"    socket_type = {kind}",
            f"    protocol = {'tcp' if kind == 'stream' else 'udp'}",
            f"    port = {port}",
            f"    bind = {HOST}",
            "    wait = no",
            "    user = root",
            "}",
        ]
    return "\n".join(out) + "\n"


@dataclass
class Xinetd:
    proc: subprocess.Popen[bytes]
    ports: dict[tuple[str, str], int]
    log: str

    def port(self, name: str, kind: str = "stream") -> int:
        return self.ports[(name, kind)]


def _wait_listening(x: Xinetd, deadline: float) -> None:
    streams = [p for (_n, kind), p in x.ports.items() if kind == "stream"]
    for port in streams:
        while True:
            if x.proc.poll() is not None:
                raise XinetdError(f"xinetd exited with status {x.proc.returncode}")
            try:
                with socket.create_connection((HOST, port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise XinetdError(f"xinetd did not listen on {HOST}:{port}") from None
                select.select([], [], [], 0.05)
    if not streams:  # datagram only: give it the time it takes to read its config
        while "Started working" not in _read(x.log):
            if time.monotonic() > deadline or x.proc.poll() is not None:
                raise XinetdError("xinetd did not start")
            select.select([], [], [], 0.05)


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


@contextlib.contextmanager
def xinetd(services: Mapping[str, Sequence[str]]) -> Iterator[Xinetd]:
    """A private xinetd with C{services} ({name: ("stream", "dgram")}), stopped after."""
    why = missing()
    if why is not None:
        raise XinetdError(why)
    exe = shutil.which("xinetd") or "xinetd"
    with tempfile.TemporaryDirectory(prefix="socksvc-xinetd-") as tmp:
        ports = {(name, kind): free_port(kind) for name, kinds in services.items() for kind in kinds}
        log = os.path.join(tmp, "xinetd.log")
        conf = os.path.join(tmp, "xinetd.conf")
        with open(conf, "w", encoding="ascii") as f:
            f.write(config(ports, log))
        with open(os.path.join(tmp, "out.txt"), "wb") as out:
            proc = subprocess.Popen(
                [exe, "-dontfork", "-f", conf, "-pidfile", os.path.join(tmp, "pid")],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        x = Xinetd(proc, ports, log)
        try:
            _wait_listening(x, time.monotonic() + START_TIMEOUT)
            yield x
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
