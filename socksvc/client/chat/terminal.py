"""
The console's terminal: raw-mode input that stays raw, Tab completion, and
what to do with stdout/stderr once the terminal has gone away.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import TextIO

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.input import Input
from prompt_toolkit.input.vt100 import Vt100Input

from socksvc.wire import CHAT_COMMANDS


class StayRawInput(Vt100Input):
    """
    Terminal input that stays in raw mode while lines are printed above the
    prompt. prompt_toolkit's run_in_terminal switches the tty to cooked mode
    around each print (meant for running other programs), and in cooked mode
    the tty itself echoes keys typed at that moment onto the screen, in the
    middle of the output. We only print, so raw mode is right throughout.
    """

    def cooked_mode(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()


def terminal_input() -> Input:
    """prompt_toolkit input for the real terminal on stdin (see L{StayRawInput})."""
    return StayRawInput(sys.stdin)


class ChatCompleter(Completer):
    """Tab completes commands at the start of a line and nicknames seen so far."""

    def __init__(self, nicks: Callable[[], Iterable[str]]) -> None:
        self.nicks = nicks

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        word = document.get_word_before_cursor(WORD=True)
        before = document.text_before_cursor
        if before.startswith("/") and " " not in before:
            for cmd in CHAT_COMMANDS:
                if cmd.startswith(before.lower()):
                    yield Completion(cmd + " ", start_position=-len(before))
            return
        if not word:
            return
        folded = word.casefold()
        for nick in sorted(self.nicks()):
            if nick.casefold().startswith(folded) and nick != word:
                yield Completion(nick, start_position=-len(word))


def terminals() -> list[TextIO]:
    """Which of stdout and stderr are the terminal (looked at while it is still there)."""
    found = []
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            if stream.isatty():
                found.append(stream)
    return found


def to_nowhere(streams: list[TextIO]) -> None:
    """Point the descriptors of C{streams} at /dev/null: their terminal has gone away."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        for stream in streams:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                os.dup2(devnull, stream.fileno())
    finally:
        os.close(devnull)
