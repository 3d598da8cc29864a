"""
The interactive chat console: prompt_toolkit on asyncio, asyncio streams.

Layout: one input line with a status toolbar under it. Every server line is
printed *above* the input line with prompt_toolkit's print_formatted_text,
which, while the prompt is running, erases the prompt, prints, and draws the
prompt again with what was being typed intact (run_in_terminal). Lines from
one network read are printed in one go.

Why asyncio and not Twisted here: prompt_toolkit's event loop is asyncio, and
Twisted's asyncioreactor has to be installed before anything imports
twisted.internet.reactor and cannot be restarted, which the `socksvc` command
line (other subcommands use the default reactor) and the in-process tests
cannot promise. asyncio streams give the same non-blocking I/O with no such
ordering rule. The daemon stays Twisted all the way.

Lost connection: said plainly on its own line, the toolbar turns red, and the
client reconnects by itself (L{socksvc.client.chat.link}, the network half);
Enter on an empty line retries at once.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable
from typing import TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.application import create_app_session, get_app_session, run_in_terminal
from prompt_toolkit.enums import DEFAULT_BUFFER
from prompt_toolkit.filters import has_focus
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.output import ColorDepth, Output
from prompt_toolkit.renderer import print_formatted_text as renderer_print_formatted_text
from prompt_toolkit.styles import Style

from socksvc.client.chat.format import (
    STYLE_RULES,
    ChatLine,
    Fragments,
    classify,
    decode,
    escape,
    fragments,
    own_line,
)
from socksvc.client.chat.link import Link
from socksvc.client.chat.terminal import ChatCompleter, terminals, to_nowhere
from socksvc.client.common import EXIT_INTERRUPTED
from socksvc.client.target import Target
from socksvc.util.lines import TooLong


class ChatConsole(Link):
    """One interactive chat session (possibly over several connections): the terminal half."""

    def __init__(
        self,
        target: Target,
        *,
        nick: str | None = None,
        reconnect: bool = True,
        color: bool = True,
        timestamps: bool = False,
        connect_timeout: float = 10.0,
        input: Input | None = None,
        output: Output | None = None,
    ) -> None:
        super().__init__(target, nick=nick, reconnect=reconnect, connect_timeout=connect_timeout)
        self.timestamps = timestamps
        self.color_depth = None if color else ColorDepth.DEPTH_1_BIT
        self.style = Style.from_dict(STYLE_RULES)
        self._input = input
        self._output = output
        self.exit_code = 0
        self.seen: dict[str, None] = {}  # nicknames seen, for completion (ordered, bounded)
        self.session: PromptSession[str] | None = None
        self._stopped = False
        self._quit_line: str | None = None
        self.hung_up = False
        """SIGHUP came: the terminal is gone."""
        self._terminals: list[TextIO] = []
        self._out: Output | None = None
        self.shown: list[ChatLine | str] = []
        """Every line shown, most recent last (bounded); for tests and /last."""

    # ------------------------------------------------------------ output

    def _print(self, frags: Fragments) -> Awaitable[None]:
        """
        Print C{frags} as one line above the prompt (the prompt is erased,
        the line printed, the prompt drawn again with its text intact). Lines
        print in the order asked; the network side awaits the future, so a
        slow terminal slows reading from the server rather than queueing.
        """
        if self.hung_up:  # no terminal to print on
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        output = self._out or get_app_session().output
        depth = self.color_depth or output.get_default_color_depth()

        def render() -> None:
            try:
                renderer_print_formatted_text(output, [*frags, ("", "\n")], self.style, color_depth=depth)
                output.flush()
            except OSError:  # the terminal went away (SIGHUP follows): nothing to show it on
                pass

        return run_in_terminal(render)

    def show_local(self, text: str, style: str = "class:local") -> None:
        """A line from the client itself (not the server)."""
        self._remember(text)
        self._print([(style, "-- " + escape(text))])

    async def show_error(self, text: str) -> None:
        self._remember(text)
        await self._print([("class:error", "-- " + escape(text))])

    def _remember(self, item: ChatLine | str) -> None:
        self.shown.append(item)
        if len(self.shown) > 1000:
            del self.shown[:500]

    def show_lines(self, lines: list[bytes | TooLong]) -> Awaitable[None] | None:
        frags: Fragments = []
        local_time = time.strftime("%H:%M") if self.timestamps else ""
        for raw in lines:
            if isinstance(raw, TooLong):
                self._remember("(a line over 1 MiB was skipped)")
                frags += [("class:local", "-- (a line over 1 MiB was skipped)"), ("", "\n")]
                continue
            line = classify(decode(raw))
            self._remember(line)
            if line.kind == "notice" and not line.history:
                self._learn(line.text)
            if line.nick and line.kind != "notice":
                self.seen.pop(line.nick, None)
                self.seen[line.nick] = None
                if len(self.seen) > 500:
                    del self.seen[next(iter(self.seen))]
            frags += [*fragments(line, self.nick, local_time), ("", "\n")]
        return self._print(frags[:-1]) if frags else None

    # ------------------------------------------------------------ prompt

    def prompt_text(self) -> FormattedText:
        if not self.registered:
            return FormattedText([("class:prompt", "nickname> ")])
        return FormattedText([("class:prompt", f"{escape(self.nick)}> ")])

    def toolbar(self) -> FormattedText:
        return FormattedText(self._toolbar())

    def _toolbar(self) -> Fragments:
        where = str(self.target)
        if self.state == "connected":
            room = f" in {escape(self.room)}" if self.room else ""
            return [("class:bottom-toolbar", f" {where}{room} - connected  (Ctrl-D or /quit to leave) ")]
        if self.state == "waiting":
            left = max(0, round(self.retry_at - time.monotonic()))
            text = f" {where} - disconnected ({self.status}); retry in {left}s, Enter retries now "
            return [("class:toolbar.bad", text)]
        return [("class:toolbar.bad", f" {where} - {self.state}... ")]

    def _key_bindings(self) -> KeyBindings:
        kb = KeyBindings()

        @kb.add("c-c")
        def _interrupt(event: KeyPressEvent) -> None:
            buffer = event.app.current_buffer
            if buffer.text:
                buffer.reset()
            else:  # leave cleanly, as Ctrl-D does, but exit 130 as every command does on Ctrl-C
                self.exit_code = EXIT_INTERRUPTED
                event.app.exit(exception=EOFError())

        @kb.add("enter", filter=has_focus(DEFAULT_BUFFER))
        def _enter(event: KeyPressEvent) -> None:
            # The prompt never returns: Enter hands the line over and clears the
            # buffer, so the terminal stays in raw mode for the whole session
            # and nothing typed ahead is ever echoed by the tty between prompts.
            buffer = event.app.current_buffer
            text = buffer.text
            buffer.reset(append_to_history=True)
            self.handle_input(text)

        return kb

    def _invalidate(self) -> None:
        if self.session is not None and self.session.app.is_running:
            self.session.app.invalidate()

    def stop(self, code: int) -> None:
        """Leave the prompt loop (from the network side)."""
        self.exit_code = code
        self._stopped = True
        self._leave()

    # ------------------------------------------------------------ input

    def handle_input(self, text: str) -> None:
        """What the user entered (a paste may hold several lines)."""
        for line in text.splitlines() or [""]:
            if self.quitting:
                return
            self._handle_line(line)

    def _handle_line(self, line: str) -> None:
        words = line.split(maxsplit=1)
        command = words[0].lower() if words and words[0].startswith("/") else ""
        arg = words[1].strip() if len(words) > 1 else ""
        if command == "/quit":
            self.quitting = True
            self._quit_line = line
            self._leave()
            return
        if self.writer is None:
            if line.strip():
                self.show_local(
                    "not connected: that line was not sent (Enter retries the connection now)", "class:error"
                )
            self.retry_now.set()
            return
        if not line.strip():
            return
        local_time = time.strftime("%H:%M") if self.timestamps else ""
        if not self.registered and (command == "/nick" or not command):
            # Before a nickname is taken, the server takes the first plain line as one.
            self.nick = (arg if command else line).strip()
        elif command == "/nick":
            pass  # the nickname changes when the server says "You are now known as ..."
        elif not command or line.startswith("//"):
            # The server does not echo our own messages: show them as others see them.
            self._print(own_line("message", self.nick, line[1:] if command else line, local_time))
        elif command == "/me":
            self._print(own_line("action", self.nick, arg, local_time))
        elif command != "/msg":  # /msg is confirmed by the server ("-> *nick* text")
            self._print([("class:local", escape(line))])
        self.send(line)

    # ------------------------------------------------------------ main

    async def run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
        """Chat on an open connection until the user leaves; return the exit code."""
        if self._input is not None or self._output is not None:
            with create_app_session(input=self._input, output=self._output):
                return await self._run(reader, writer)
        return await self._run(reader, writer)

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
        self.retry_now = asyncio.Event()
        self._out = get_app_session().output
        self._terminals = terminals()
        self.session = PromptSession(
            history=InMemoryHistory(),
            bottom_toolbar=self.toolbar,
            style=self.style,
            color_depth=self.color_depth,
            key_bindings=self._key_bindings(),
            completer=ChatCompleter(lambda: self.seen),
            complete_while_typing=False,
            refresh_interval=1.0,
            erase_when_done=True,
        )
        self._net = asyncio.create_task(self.network(reader, writer))
        loop = asyncio.get_running_loop()
        handled = []
        # SIGTERM: leave as Ctrl-D does (send /quit, put the terminal back), not mid-redraw.
        # SIGHUP: the terminal is gone: /quit first, then leave without drawing anything.
        for sig, handler in ((signal.SIGTERM, self._leave), (signal.SIGHUP, self._hang_up)):
            try:
                loop.add_signal_handler(sig, handler)
                handled.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass
        try:
            try:
                # Returns only when the user leaves (Ctrl-D, Ctrl-C, /quit) or
                # the network side stops us (a lost connection with --no-reconnect).
                await self.session.prompt_async(self.prompt_text)
            except (EOFError, KeyboardInterrupt):
                pass
            except OSError:
                # The terminal went away under the prompt (its input ended, its
                # last redraw failed with EIO) before SIGHUP came: the same.
                self._terminal_gone()
            if self.session.app.input.closed:  # a terminal's input ends only when it hangs up
                self._terminal_gone()
            if not self._stopped:
                await self.quit(self._quit_line)
        finally:
            if not self._net.done():
                self._net.cancel()
                try:
                    await self._net
                except (asyncio.CancelledError, Exception):
                    pass
            if self.writer is not None:
                self.writer.close()
            for sig in handled:
                loop.remove_signal_handler(sig)
            if self.hung_up:  # its SIGHUP may still be on the way: we are leaving already
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
        return self.exit_code

    def _leave(self) -> None:
        """End the prompt (once: Ctrl-D, /quit, SIGTERM, SIGHUP and the network side may all ask)."""
        app = self.session.app if self.session is not None else None
        if app is not None and app.is_running and app.future is not None and not app.future.done():
            app.exit(exception=EOFError())

    def _hang_up(self) -> None:
        """SIGHUP: the terminal (window) is gone."""
        self._terminal_gone()
        self._leave()

    def _terminal_gone(self) -> None:
        """
        The terminal went away (SIGHUP, or its input ended or failed first):
        send C{/quit} at once, before anything can wait on the dead terminal;
        nothing more is drawn (L{_print}), and what prompt_toolkit still
        writes goes to /dev/null instead of failing.
        """
        if not self.hung_up:
            self.hung_up = True
            self.say_quit()
            to_nowhere(self._terminals)
