"""
What one close line costs the daemon, with and without [daemon] log_buffer.
Not run in CI; the figures go in docs/logging.md.

    python -m bench.logcost [--lines 200000] [--repeat 5]

For text and JSON, unbuffered (one write and flush a line, the default)
and buffered (log_buffer = 65536), it logs the policy's own close event
(the same Logger call, format and fields as L{socksvc.core.policy.Policy.closed})
through socksvc's observer into:

- a file in the temporary directory (what twistd's --logfile writes);
- a pipe drained by another process (what systemd's journal reads).

It prints microseconds of CPU time per line (user and system, best of
--repeat runs; CPU time, not wall time, so that other processes on a busy
machine do not count): the cost from the log call to the line handed to
the kernel, which is what a connection pays. The first column is Twisted's
own part (C{Logger.emit} building the event, with an observer that does
nothing), the same in every row.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import Logger

from socksvc.daemon.logformat import FastTextObserver, JsonObserver
from socksvc.daemon.logsink import LineSink, LogFile


def close_line(log: Logger, n: int) -> None:
    """The policy's close event, as it logs it."""
    log.info(
        "{service}: {peer} closed after {duration:.3f}s, {bytes_in} bytes in, {bytes_out} bytes out{_why}",
        event="close",
        service="echo",
        peer=f"192.0.2.7:{40000 + n % 20000}",
        source="192.0.2.7",
        duration=0.0123,
        bytes_in=64,
        bytes_out=64,
        reason="",
        _why="",
    )


def per_line(observer: Callable[[Any], None], sink: LineSink, lines: int) -> float:
    log = Logger(namespace="socksvc", observer=observer)  # type: ignore[arg-type]
    started = time.process_time()
    for n in range(lines):
        close_line(log, n)
    sink.stop_buffering()
    return (time.process_time() - started) / lines * 1e6


def measure(make_out: Callable[[], Any], kind: str, buffer: int, lines: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        out = make_out()
        sink = LineSink(out, buffer=buffer, flush_after=1.0, clock=Clock())
        observer = JsonObserver(sink) if kind == "json" else FastTextObserver(sink)
        best = min(best, per_line(observer, sink, lines))
        out.close()
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="socksvc-logcost-")
    path = os.path.join(tmp, "socksvc.log")
    drain = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert drain.stdin is not None
    pipe_fd = drain.stdin.fileno()

    def to_file() -> Any:
        if os.path.exists(path):
            os.unlink(path)
        return LogFile(path)

    def to_pipe() -> Any:
        return os.fdopen(os.dup(pipe_fd), "w", encoding="utf-8")

    with open(os.devnull, "w") as devnull:
        null = LineSink(devnull)
        emit = min(per_line(lambda event: None, null, args.lines) for _ in range(args.repeat))
    print(f"{args.lines} close lines, best of {args.repeat}; Python {sys.version.split()[0]}; CPU us per line")
    print(f"Logger.emit alone (Twisted's part, in every figure below): {emit:.2f} us")
    print(f"{'format':6} {'destination':12} {'unbuffered':>12} {'log_buffer=64K':>16}")
    try:
        for kind in ("text", "json"):
            for name, make_out in (("file", to_file), ("pipe", to_pipe)):
                plain = measure(make_out, kind, 0, args.lines, args.repeat)
                buffered = measure(make_out, kind, 65536, args.lines, args.repeat)
                print(f"{kind:6} {name:12} {plain:9.2f} us {buffered:13.2f} us")
    finally:
        drain.stdin.close()
        drain.wait()
        if os.path.exists(path):
            os.unlink(path)
        os.rmdir(tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
