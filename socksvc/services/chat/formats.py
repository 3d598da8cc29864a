"""
Chat text formats: every line a member receives is made here.

A live line is an optional C{[HH:MM] } stamp, the body with every unsafe
character made visible, and CRLF; notices start with C{-!- }; replayed
history lines with C{[history HH:MM] }. The line shapes are in
L{socksvc.wire}, which the console client parses with.
"""

from __future__ import annotations

import time
from typing import Any

from socksvc.services.chat.sanitize import visible
from socksvc.wire import CHAT_HISTORY, CHAT_NOTICE

CRLF = b"\r\n"
LIST_WIDTH = 400  # characters of names on one /who or /rooms line


class Formatter:
    """Formats lines for one chat service (timestamps per its settings, times from its clock)."""

    def __init__(self, clock: Any, timestamps: bool) -> None:
        self.clock = clock
        self.timestamps = timestamps
        self._stamp_minute = -1
        self._stamp_text = ""

    def stamp(self, now: float | None = None) -> str:
        """C{HH:MM} (server local time) for C{now}."""
        if now is None:
            now = self.clock.seconds()
        minute = int(now // 60)
        if minute != self._stamp_minute:
            self._stamp_minute = minute
            self._stamp_text = time.strftime("%H:%M", time.localtime(now))
        return self._stamp_text

    def line(self, body: str) -> bytes:
        """
        A live line as sent: optional timestamp, body, CRLF. Every line sent
        goes through here, so this is where unsafe characters are made visible.
        """
        body = visible(body)
        if self.timestamps:
            body = f"[{self.stamp()}] {body}"
        return body.encode("utf-8") + CRLF

    def notice_lines(self, text: str) -> bytes:
        return self.line(CHAT_NOTICE + text)

    def history_line(self, when: float, body: str) -> bytes:
        """A line replayed from a room's history (C{body} is already visible)."""
        return f"[{CHAT_HISTORY} {self.stamp(when)}] {body}".encode() + CRLF

    def notice_list(self, head: str, items: list[str]) -> bytes:
        """Notices listing C{items} after C{head}, wrapped at L{LIST_WIDTH} characters."""
        out: list[bytes] = []
        line: list[str] = []
        width = 0
        for item in items:
            if line and width + len(item) > LIST_WIDTH:
                out.append(self.notice_lines(head + ", ".join(line)))
                line, width = [], 0
            line.append(item)
            width += len(item) + 2
        out.append(self.notice_lines(head + ", ".join(line)))
        return b"".join(out)
