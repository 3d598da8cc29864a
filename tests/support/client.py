"""Client test helpers: the client run in this process, stderr checks, a console on a pipe input."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import socket
import sys
from collections.abc import Callable
from typing import Any

import pytest

from socksvc.client import main as client_main
from socksvc.client.main import run as client_run
from socksvc.client.target import Target


def run(argv: list[str], capsysbinary: Any) -> tuple[int, bytes, str]:
    """The client in this process: exit code, stdout bytes, stderr text."""
    with pytest.raises(SystemExit) as exc:
        client_main.main(argv)
    out, err = capsysbinary.readouterr()
    code = exc.value.code
    assert isinstance(code, int)
    return code, out, err.decode()


def one_error_line(err: str, pattern: str) -> None:
    """Exactly one line on stderr, matching C{pattern}; no traceback."""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert re.fullmatch(pattern, lines[0]), lines[0]


def console_session(port: int, body: Callable[..., Any], **kw: Any) -> Any:
    """Run C{body(console, pipe_input, screen)} next to a ChatConsole on a pipe input."""
    from prompt_toolkit.data_structures import Size
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output.vt100 import Vt100_Output

    from socksvc.client.chat.console import ChatConsole
    from socksvc.client.chat.net import open_stream

    async def main() -> Any:
        screen = io.StringIO()
        output = Vt100_Output(screen, lambda: Size(rows=24, columns=80), term="xterm", enable_cpr=False)
        with create_pipe_input() as pipe:
            target = Target("127.0.0.1", port)
            reader, writer = await open_stream(target, 5)
            console = ChatConsole(target, input=pipe, output=output, **kw)
            task = asyncio.create_task(console.run(reader, writer))
            try:
                return await body(console, pipe, screen, task)
            finally:
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task

    return asyncio.run(main())


def in_process(argv: list[str], capfd: pytest.CaptureFixture[str], stdin: bytes = b"") -> tuple[int, str, str]:
    """socksvc ARGV in this process (standard input a pipe holding C{stdin}): status, stdout, stderr."""
    r, w = os.pipe()
    os.write(w, stdin)
    os.close(w)
    saved = sys.stdin
    try:
        with os.fdopen(r, "r") as f:
            sys.stdin = f
            code = client_run(argv)
    finally:
        sys.stdin = saved
    out, err = capfd.readouterr()
    return code, out, err


def unknown_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every name lookup fails as an unknown name does (no DNS query leaves the machine)."""

    def getaddrinfo(*args: Any, **kw: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def one_line(err: str) -> str:
    assert "Traceback" not in err
    assert err.count("\n") == 1, err
    return err.rstrip("\n")
