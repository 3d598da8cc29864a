"""
Chat load clients of three kinds for bench/chatmix.py: line members (as in
bench/chat_load.py), IRC members and WebSocket members (the chat page's
protocol), many in one process, driven over stdin/stdout like chat_load.py.

    chatmix_load.py listen KIND HOST PORT COUNT PREFIX
    chatmix_load.py idle KIND HOST PORT COUNT PREFIX

KIND is line, irc or ws. The commands and answers are chat_load.py's
(listen: "ready", reset, expect M; idle: go, then hold). An IRC member
registers and joins #lobby (registered: its end of NAMES); a WebSocket
member opens the socket and sends its nickname in the same write
(registered: its room event). A WebSocket member counts the newlines in its
frames' payloads only (frame headers are binary: their bytes would miscount).
"""

from __future__ import annotations

import base64
import os
import struct
import sys
from typing import Any

import chat_load
from chat_load import Conn, Members, raise_nofile, say

MARKERS = {"line": b"-!- You are now in", "irc": b" 366 ", "ws": b'"t":"room"'}


def ws_frame(payload: bytes) -> bytes:
    """A masked text frame under 126 bytes (as a browser sends a nickname)."""
    key = os.urandom(4)
    return bytes([0x81, 0x80 | len(payload)]) + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class MixMembers(Members):
    """chat_load's members, speaking C{kind}."""

    kind = "line"

    def hello(self, c: Conn) -> bytes:
        nick = c.nick
        if self.kind == "irc":
            return b"NICK %s\r\nUSER %s 0 * :%s\r\nJOIN #lobby\r\n" % (nick, nick, nick)
        if self.kind == "ws":
            host, port = self.addr
            key = base64.b64encode(os.urandom(16))
            head = (
                b"GET /ws HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (host.encode(), port, key)
            )
            return head + ws_frame(nick)
        return nick + b"\r\n"

    def newlines(self, c: Conn, data: bytes) -> int:
        if self.kind != "ws":
            return data.count(b"\n")
        buf = c.tail + data
        n, i, size = 0, 0, len(buf)
        while size - i >= 2:
            length, offset = buf[i + 1] & 0x7F, i + 2
            if length == 126:
                if size - i < 4:
                    break
                length, offset = struct.unpack_from("!H", buf, i + 2)[0], i + 4
            elif length == 127:
                if size - i < 10:
                    break
                length, offset = struct.unpack_from("!Q", buf, i + 2)[0], i + 10
            if offset + length > size:
                break
            n += buf.count(b"\n", offset, offset + length)
            i = offset + length
        c.tail = buf[i:]
        return n


def main() -> None:
    raise_nofile()
    mode, kind, host, port, count, prefix = sys.argv[1:7]
    marker = MARKERS[kind]

    def make(*args: Any) -> MixMembers:
        members = MixMembers(*args)
        members.kind = kind
        return members

    try:
        if mode == "listen":
            chat_load.listen(host, int(port), int(count), prefix, marker, make)
        elif mode == "idle":
            chat_load.idle(host, int(port), int(count), prefix, marker, make)
        else:
            say({"error": f"unknown mode {mode}"})
    except Exception as e:  # one line for the bench to show
        say({"error": f"{type(e).__name__}: {e}"})


if __name__ == "__main__":
    main()
