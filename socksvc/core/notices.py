"""
Server notices from one service into another's rooms, inside one daemon.

Services never import each other (an import-linter contract), so the mail
service cannot call the chat's state. Instead the daemon makes one
L{NoticeBus} and gives it to every service's context: a service with rooms
(chat) subscribes a C{post(room, text)} callable when its state is made and
unsubscribes when it stops; a service with something to say (smtp's
C{announce}) calls L{NoticeBus.post}. The text is plain text: the receiving
service formats and escapes it as its own notices (for chat: one C{-!- }
line, control characters made visible).
"""

from __future__ import annotations

from collections.abc import Callable

Post = Callable[[str, str], bool]
"""C{post(room, text)}: True if the room exists there and the notice went out."""


class NoticeBus:
    """The daemon's one notice bus (a context made alone, as in tests, gets its own)."""

    def __init__(self) -> None:
        self._posts: dict[int, Post] = {}
        self._next = 0

    def subscribe(self, post: Post) -> Callable[[], None]:
        """Take notices with C{post}; call the result to stop."""
        key = self._next
        self._next += 1
        self._posts[key] = post

        def unsubscribe() -> None:
            self._posts.pop(key, None)

        return unsubscribe

    def post(self, room: str, text: str) -> int:
        """Post C{text} to C{room} wherever it exists; how many services took it."""
        return sum(1 for post in list(self._posts.values()) if post(room, text))
