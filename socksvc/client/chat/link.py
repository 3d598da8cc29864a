"""
The network half of the chat console: one connection to the server at a
time, our own state followed from the server's notices (nickname, room),
and after a lost connection a reconnect with exponential backoff (1 s
doubling to 30 s; Enter retries at once), taking the nickname again and
rejoining the room. L{socksvc.client.chat.console.ChatConsole} is the
terminal half; it shows what this side hands it through the hooks below.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable

from socksvc.client.chat.format import escape, fold_nick
from socksvc.client.chat.net import open_stream
from socksvc.client.common import EXIT_PROTOCOL, ClientError, refusal
from socksvc.client.target import Target, describe
from socksvc.util.lines import LineSplitter, TooLong
from socksvc.wire import CHAT_DISCONNECTED, CHAT_NICK_ACCEPTED, CHAT_NICK_REFUSED, CHAT_SHUTDOWN

MAX_LINE = 1 << 20
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
QUIT_WAIT = 2.0
"""After /quit, how long to wait for the server to close before leaving anyway."""

_KNOWN_AS = re.compile(re.escape(CHAT_NICK_ACCEPTED) + r"(\S+)")
_IN_ROOM = re.compile(r"You are now in (\S+) \(\d+ members?\)")


class Link:
    """The connection (or connections, over reconnects) of one console session."""

    def __init__(self, target: Target, *, nick: str | None, reconnect: bool, connect_timeout: float) -> None:
        self.target = target
        self.nick = nick or ""
        """The nickname we have (or asked for, before the server said yes)."""
        self.registered = False
        self.room: str | None = None
        """The room the server last said we are in; rejoined after a reconnect."""
        self._rejoin: str | None = None
        self._last_notice = ""
        self.reconnect = reconnect
        self.connect_timeout = connect_timeout
        self.state = "connecting"
        self.status = ""
        self.retry_at = 0.0
        self.quitting = False
        self._quit_sent = False
        self.writer: asyncio.StreamWriter | None = None
        self.retry_now = asyncio.Event()
        self._net: asyncio.Task[None] | None = None
        self.refused: str | None = None
        """The reason when the server's first line on this connection was a refusal (C{socksvc: REASON})."""

    # ------------------------------------------------------------ hooks (the console's)

    def show_lines(self, lines: list[bytes | TooLong]) -> Awaitable[None] | None:
        """Show server lines; the network side awaits what this returns."""
        raise NotImplementedError

    def show_local(self, text: str, style: str = "class:local") -> None:
        """Show a line from the client itself."""
        raise NotImplementedError

    async def show_error(self, text: str) -> None:
        """Show an error from the client itself, and wait until it is shown."""
        raise NotImplementedError

    def stop(self, code: int) -> None:
        """Leave, with exit code C{code}."""
        raise NotImplementedError

    def _invalidate(self) -> None:
        """Our state changed: redraw what shows it."""

    # ------------------------------------------------------------ our state

    def _learn(self, text: str) -> None:
        """Follow our own state from the server's notices (see docs/chat.md)."""
        self._last_notice = text
        m = _KNOWN_AS.fullmatch(text)
        if m is not None:
            self.nick = m.group(1)
            self.registered = True
        elif text.startswith(CHAT_NICK_REFUSED) and not self.registered:
            self.nick = ""
        elif (m := _IN_ROOM.fullmatch(text)) is not None:
            rejoin, self._rejoin = self._rejoin, None
            self.room = m.group(1)
            if rejoin is not None and fold_nick(rejoin) != fold_nick(self.room):
                # After a reconnect the server puts us in its first room: go back.
                self.send(f"/join {rejoin}")
        else:
            return
        self._invalidate()

    # ------------------------------------------------------------ network

    def send(self, line: str) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(line.encode("utf-8") + b"\n")

    def _on_connect(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.state = "connected"
        self.registered = False
        self._rejoin = self.room
        if self.nick:
            self.send(f"/nick {self.nick}")
        self._invalidate()

    async def _pump(self, reader: asyncio.StreamReader) -> str:
        """Show what the server sends until it stops; return why it stopped."""
        self._last_notice = ""
        self.refused = None
        splitter = LineSplitter(MAX_LINE)
        first = True  # the first line may be the daemon's refusal ("socksvc: REASON")
        while True:
            try:
                data = await reader.read(65536)
            except OSError as e:
                return describe(e)
            if not data:
                if splitter.pending:
                    await self._shown(self.show_lines(splitter.feed(b"\n")))
                if self._last_notice.startswith(CHAT_DISCONNECTED) or self._last_notice == CHAT_SHUTDOWN:
                    return "the server said: " + escape(self._last_notice)
                return "closed by the server"
            lines = splitter.feed(data)
            if first and lines:
                first = False
                if not isinstance(lines[0], TooLong) and (reason := refusal(lines[0])) is not None:
                    self.refused = reason
                    return f"refused: {reason}"
            await self._shown(self.show_lines(lines))

    @staticmethod
    async def _shown(printing: Awaitable[None] | None) -> None:
        if printing is not None:
            await printing

    async def network(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            self._on_connect(writer)
            reason = await self._pump(reader)
            self.writer = None
            writer.close()
            if self.quitting:
                return
            self.state = "disconnected"
            self.status = reason
            if self.refused is not None and not self.registered:
                # The daemon's access list or connection limits: say so plainly and leave.
                await self.show_error(f"{self.target} refused us: {self.refused}")
                self.stop(EXIT_PROTOCOL)
                return
            self.show_local(f"connection to {self.target} lost: {reason}", "class:error")
            if not self.reconnect:
                self.stop(EXIT_PROTOCOL)
                return
            self.show_local("reconnecting automatically; press Enter to retry now, Ctrl-D to leave")
            delay = BACKOFF_FIRST
            while True:
                self.state = "waiting"
                self.retry_at = time.monotonic() + delay
                self.retry_now.clear()
                self._invalidate()
                try:
                    await asyncio.wait_for(self.retry_now.wait(), delay)
                except TimeoutError:
                    pass
                self.state = "connecting"
                self._invalidate()
                try:
                    reader, writer = await open_stream(self.target, self.connect_timeout)
                except ClientError as e:
                    self.status = e.message
                    self.show_local(f"reconnect failed: {self.status}", "class:error")
                    delay = min(delay * 2, BACKOFF_MAX)
                    continue
                self.show_local(f"reconnected to {self.target}")
                break

    def say_quit(self, line: str | None = None) -> None:
        """Send C{/quit} (with the user's reason) once; nothing here waits or touches the terminal."""
        self.quitting = True
        if not self._quit_sent and self.writer is not None and not self.writer.is_closing():
            self._quit_sent = True
            self.send(line or "/quit")

    async def quit(self, line: str | None = None) -> None:
        """Send /quit (with the user's reason), wait briefly for the close, leave."""
        self.say_quit(line)
        writer = self.writer
        if writer is not None and not writer.is_closing():
            try:
                await asyncio.wait_for(writer.drain(), QUIT_WAIT)
            except (OSError, TimeoutError):
                pass
            if self._net is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(self._net), QUIT_WAIT)
                except (TimeoutError, asyncio.CancelledError, Exception):
                    pass
