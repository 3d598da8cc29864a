"""
A POP3 maildrop over a Maildir: what one logged-in session sees.

The session works on the list of messages it found at login (RFC 1939: the
maildrop is fixed for the session). DELE only marks; the files go at QUIT
(the UPDATE state), and a session that ends any other way removes nothing.
SMTP only ever adds files (tmp/ then a rename into new/), and deleting is an
unlink of the exact file listed, so POP3 and SMTP never trip over each other.
Two sessions on one Maildir at once are refused with [IN-USE] (L{Locks}).
"""

from __future__ import annotations

import os
from typing import IO, Any

from twisted.mail.interfaces import IMailboxPOP3
from zope.interface import implementer

from socksvc.services.mail.maildir import Maildir, scan


class Locks:
    """The Maildirs a session holds, per service."""

    def __init__(self) -> None:
        self.held: set[str] = set()

    def take(self, path: str) -> bool:
        if path in self.held:
            return False
        self.held.add(path)
        return True

    def release(self, path: str) -> None:
        self.held.discard(path)


@implementer(IMailboxPOP3)
class MaildirMailbox:
    """Twisted's POP3 mailbox interface over one Maildir (numbers are 0-based here, 1-based on the wire)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.entries = scan(Maildir(path))
        self.deleted: set[int] = set()
        self.file: IO[bytes] | None = None
        self.removed = 0

    def _check(self, i: int) -> None:
        if not 0 <= i < len(self.entries):
            raise ValueError("no such message")

    def exists(self, i: int) -> bool:
        return 0 <= i < len(self.entries) and i not in self.deleted

    def listMessages(self, i: int | None = None) -> Any:
        """Sizes (octets with CRLF line ends); a message marked deleted has size 0."""
        if i is None:
            return [0 if n in self.deleted else e.size for n, e in enumerate(self.entries)]
        self._check(i)
        return 0 if i in self.deleted else self.entries[i].size

    def live(self) -> list[tuple[int, int]]:
        """(1-based number, size) of every message not marked deleted."""
        return [(n + 1, e.size) for n, e in enumerate(self.entries) if n not in self.deleted]

    def getMessage(self, i: int) -> IO[bytes]:
        """The message's file (the previous one handed out is closed: transfers come one at a time)."""
        self._check(i)
        if i in self.deleted:
            raise ValueError("message deleted")
        self.close()
        try:
            self.file = open(self.entries[i].path, "rb")  # noqa: SIM115 - closed by close() or the next call
        except OSError:
            raise ValueError("message no longer exists") from None
        return self.file

    def getUidl(self, i: int) -> bytes:
        self._check(i)
        return self.entries[i].uid

    def deleteMessage(self, i: int) -> None:
        self._check(i)
        self.deleted.add(i)

    def undeleteMessages(self) -> None:
        self.deleted.clear()

    def sync(self) -> None:
        """QUIT: remove the messages marked deleted (one gone already is fine)."""
        self.close()
        for i in sorted(self.deleted):
            try:
                os.unlink(self.entries[i].path)
                self.removed += 1
            except FileNotFoundError:
                pass
        self.deleted.clear()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
