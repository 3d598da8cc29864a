"""
What the daemon and the C{socksvc} client agree on, in one place both import.

Nothing here imports anything of socksvc's: the client (which imports only
this module and L{socksvc.util}) and the daemon read the same constants, so
a refusal line, a default port, a chat command or a chat line shape cannot
drift between the two ends.
"""

from __future__ import annotations

# -- refusals ------------------------------------------------------------------

REFUSAL_PREFIX = "socksvc: "
"""A refused peer reads one line, C{socksvc: REASON} CRLF, then the daemon closes."""
REFUSAL = REFUSAL_PREFIX.encode("ascii")

# -- default ports (the embedded default config, loopback only) ----------------

DEFAULT_INTERFACE = "127.0.0.1"
ECHO_PORT = 7007
GREETING_PORT = 7017
REVERSE_PORT = 7071
CHAT_PORT = 7070
CHAT_IRC_PORT = 7667
"""The chat's IRC listener (standard IRC: 6667, 6697 over TLS)."""
CHAT_WEB_PORT = 7080
"""The chat's web page and WebSocket."""
DISCARD_PORT = 7009
DAYTIME_PORT = 7013
CHARGEN_PORT = 7019
TIME_PORT = 7037
ADMIN_PORT = 9107
"""The admin HTTP listener of the embedded default (/metrics, the status page); `socksvc status` asks it."""
STATUS_PATH = "/status.json"
"""Where the admin listener serves its figures as JSON (what `socksvc status` reads)."""
SMTP_PORT = 7025
POP3_PORT = 7110

DEFAULT_PORTS: dict[str, int] = {
    "echo": ECHO_PORT,
    "greeting": GREETING_PORT,
    "reverse": REVERSE_PORT,
    "chat": CHAT_PORT,
    "discard": DISCARD_PORT,
    "daytime": DAYTIME_PORT,
    "chargen": CHARGEN_PORT,
    "time": TIME_PORT,
    "smtp": SMTP_PORT,
    "pop3": POP3_PORT,
}
"""Service name -> the loopback port of the embedded default (and the client's default)."""

# -- reverse ---------------------------------------------------------------------

REVERSE_TOO_LONG = "error: line longer than {max_line} bytes"
"""The reverse service's last line (then CRLF, then it closes) for a line over its C{max_line}."""

# -- chat ------------------------------------------------------------------------

CHAT_COMMANDS = ("/nick", "/join", "/rooms", "/who", "/msg", "/me", "/topic", "/help", "/quit")
"""Every chat command a member may type (case-insensitive), as the console completes them."""

CHAT_NOTICE = "-!- "
"""A server notice: joins, parts, quits, renames, topics, errors."""
CHAT_ERROR_TEXT = "error: "
"""How a notice's text starts when it reports an error in what the member sent."""
CHAT_ERROR = CHAT_NOTICE + CHAT_ERROR_TEXT
"""A notice that reports an error in what the member sent."""
CHAT_NICK_ACCEPTED = "You are now known as "
"""The notice text, then the nickname, when a C{/nick} (or a first line) was accepted."""
CHAT_NICK_REFUSED = CHAT_ERROR_TEXT + "nickname refused: "
"""The notice text, then the reason (taken, reserved, too long, ...), when a nickname was not accepted."""
CHAT_PRIVATE_SENT = "-> "
"""Starts the confirmation of a private message the member sent: C{-> *nick* text}."""
CHAT_HISTORY = "history"
"""A replayed line starts C{[history HH:MM] }."""
CHAT_DISCONNECTED = "Disconnected: "
"""Starts the last notice before the server closes a member's connection: C{Disconnected: REASON}."""
CHAT_QUIT = CHAT_DISCONNECTED + "quit"
"""The last notice after a member's own C{/quit}."""
CHAT_SHUTDOWN = "server is shutting down"
"""The last notice when the daemon stops."""
CHAT_MISSED = "You missed {missed} lines (you were not reading fast enough)"
"""The notice a member that could not keep up gets once it reads again."""
