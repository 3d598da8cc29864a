"""
Maildir, as qmail defined it (https://cr.yp.to/proto/maildir.html): a
message is written to C{tmp/}, then renamed into C{new/}; readers take
C{new/} and C{cur/} and never look at C{tmp/}.

Writing (L{Draft}): the file is created in C{tmp/} (mode 0600, O_EXCL,
O_NOFOLLOW), filled as DATA arrives (so a message is never held in memory),
and on success fsynced, linked into every other recipient's C{new/}, renamed
into its own C{new/}, and every C{new/} directory fsynced: only then does the
SMTP client get its 250 (the fsyncs are done by a child process: see
L{socksvc.services.mail.durable}). A message given up midway is unlinked from
C{tmp/}; what a killed daemon left in C{tmp/} is removed at the next start
(L{clean_tmp}: files this host's socksvc named, by any other process).

Stored text has LF line ends (the Maildir convention, and what mail readers
and Twisted's POP3 expect); names carry the size on disk and the size with
CRLF line ends, as Dovecot writes them: C{UNIQUE,S=size,W=size_with_crlf}.

Reading (L{scan}) is for POP3: the messages of C{new/} and C{cur/}, each with
its POP3 size and unique id.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import socket
import stat
import time
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from socksvc.services.mail.syncwire import fsync_path

DIR_MODE = 0o700
FILE_MODE = 0o600
_NAME = re.compile(r"(\d+)\.M(\d+)P(\d+)Q(\d+)\.(.+)")


def default_maildir(environ: Mapping[str, str] = os.environ) -> str:
    """
    Where mail goes when the config names no maildir: C{$STATE_DIRECTORY/mail}
    under systemd (StateDirectory=), else C{$XDG_DATA_HOME/socksvc/mail}
    (C{~/.local/share/socksvc/mail}). ValueError when there is no home to use.
    """
    state = environ.get("STATE_DIRECTORY", "").split(":")[0]
    if os.path.isabs(state):
        return os.path.join(state, "mail")
    data = environ.get("XDG_DATA_HOME", "")
    if os.path.isabs(data):
        return os.path.join(data, "socksvc", "mail")
    home = environ.get("HOME", "")
    if not os.path.isabs(home) or home == "/":
        raise ValueError('no default maildir (no $STATE_DIRECTORY, $XDG_DATA_HOME or $HOME); set maildir = "/path"')
    return os.path.join(home, ".local", "share", "socksvc", "mail")


def check_creatable(path: str, maildir: bool = True) -> None:
    """
    ValueError (a short reason) unless C{path} is a writable directory or can
    be made one; with C{maildir}, its tmp/, new/ and cur/ too. What C{--check}
    runs, so that its OK means the first delivery can file the message.
    """
    if not os.path.isabs(path):
        raise ValueError("must be an absolute path")
    probe = path
    while True:
        try:
            st = os.stat(probe)
        except (FileNotFoundError, NotADirectoryError):
            parent = os.path.dirname(probe)
            if parent == probe:
                raise ValueError(f"cannot create {path}") from None
            probe = parent
            continue
        except (OSError, ValueError) as e:
            raise ValueError(f"{probe}: {getattr(e, 'strerror', None) or e}") from None
        break
    if not stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{probe} is not writable" + ("" if probe == path else f", so {path} cannot be made"))
    if probe == path and maildir:
        for sub in ("tmp", "new", "cur"):
            check_creatable(os.path.join(path, sub), maildir=False)


def folder_name(address: str) -> str:
    """
    The Maildir folder of one recipient (C{per_recipient}): the address in
    lower case, with anything but letters, digits and C{@ . _ + = -} written
    as C{%XX}, and never starting with a dot.
    """
    out = []
    for i, ch in enumerate(address.lower()):
        if (ch.isascii() and ch.isalnum()) or ch in "@_+=-" or (ch == "." and i > 0):
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)[:255] or "%00"


def _host_tag() -> str:
    """This host's name as a Maildir name part ("/" and ":" escaped, as qmail does)."""
    return socket.gethostname().replace("/", "\\057").replace(":", "\\072") or "localhost"


HOST = _host_tag()


class Maildir:
    """One Maildir: C{path} with C{tmp/}, C{new/} and C{cur/}."""

    __slots__ = ("cur", "new", "path", "tmp")

    def __init__(self, path: str) -> None:
        self.path = path
        self.tmp = os.path.join(path, "tmp")
        self.new = os.path.join(path, "new")
        self.cur = os.path.join(path, "cur")

    _ready: set[str] = set()
    """Maildirs made (or found) already by this process: not asked again for every message."""

    def ensure(self, again: bool = False) -> list[str]:
        """Make what is missing (mode 0700); the directories made, parents first."""
        if self.path in Maildir._ready and not again:
            return []
        made = []
        for d in (self.path, self.tmp, self.new, self.cur):
            try:
                os.mkdir(d, DIR_MODE)
            except FileExistsError:
                continue
            except FileNotFoundError:
                os.makedirs(os.path.dirname(d), DIR_MODE, exist_ok=True)
                os.mkdir(d, DIR_MODE)
            made.append(d)
        Maildir._ready.add(self.path)
        return made

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Maildir) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)


_counter = 0


def unique_name() -> str:
    """A new unique name, qmail style: C{SECONDS.MMICROS(6 digits)PPIDQN.HOST}."""
    global _counter
    _counter += 1
    now = time.time()
    sec = int(now)
    return f"{sec}.M{int((now - sec) * 1e6):06d}P{os.getpid()}Q{_counter}.{HOST}"  # padded: names sort by time


class Draft:
    """One message being written into a Maildir's C{tmp/}."""

    def __init__(self, box: Maildir) -> None:
        self.box = box
        self.made = box.ensure()
        retried = False
        while True:
            self.name = unique_name()
            self.tmp_path = os.path.join(box.tmp, self.name)
            try:
                self.fd: int | None = os.open(
                    self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, FILE_MODE
                )
            except FileExistsError:
                continue
            except FileNotFoundError:  # removed since it was made: make it again, once
                if retried:
                    raise
                retried = True
                self.made += box.ensure(again=True)
                continue
            break
        self.size = 0
        self.lines = 0

    def write(self, data: bytes) -> None:
        """Append C{data} (LF line ends; every LF counts as a CRLF line end in the W= size)."""
        assert self.fd is not None
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        self.size += len(data)
        self.lines += data.count(b"\n")

    def abort(self) -> None:
        """Give the message up: nothing of it stays (unless it is published: then see L{withdraw})."""
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)
        if self.published is None:
            try:
                os.unlink(self.tmp_path)
            except FileNotFoundError:
                pass

    published: list[str] | None = None
    """The paths of the message in C{new/} directories, once L{publish} has put it there."""

    def seal(self) -> str:
        """Close the file: all of it is written. The path to fsync before L{publish}."""
        fd, self.fd = self.fd, None
        assert fd is not None
        os.close(fd)
        return self.tmp_path

    def publish(self, others: Iterable[Maildir]) -> tuple[str, list[str]]:
        """
        File the sealed message into its own C{new/} and every other Maildir's
        C{new/}: hard links, or a copy across file systems, then the rename.
        Its final name, and what to fsync (in this order) before it can be
        called durable: the copies, then every C{new/} and any directory made
        for it. All or nothing: on an error nothing is left in any C{new/}
        nor in C{tmp/}, and the error is raised.
        """
        assert self.fd is None and self.published is None
        final = f"{self.name},S={self.size},W={self.size + self.lines}"
        linked: list[str] = []
        copies: list[str] = []
        try:
            boxes = [b for b in dict.fromkeys(others) if b != self.box]
            made = list(self.made)
            for box in boxes:
                made += box.ensure()
                target = os.path.join(box.new, final)
                try:
                    try:
                        os.link(self.tmp_path, target)
                    except FileNotFoundError:  # its new/ was removed since it was made
                        made += box.ensure(again=True)
                        os.link(self.tmp_path, target)
                except OSError as e:
                    if e.errno != errno.EXDEV:
                        raise
                    shutil.copyfile(self.tmp_path, target)
                    copies.append(target)
                linked.append(target)
            own = os.path.join(self.box.new, final)
            os.rename(self.tmp_path, own)
        except BaseException:
            _unlink_all([*linked, self.tmp_path])
            raise
        self.published = [own, *linked]
        dirs = dict.fromkeys([self.box.new, *(b.new for b in boxes), *(os.path.dirname(m) for m in made)])
        return final, [*copies, *dirs]

    def withdraw(self) -> None:
        """Take a published message back out of every C{new/} (it could not be made durable)."""
        if self.published is not None:
            _unlink_all(self.published)

    def finish(self, others: Iterable[Maildir], durable: bool) -> str:
        """
        L{seal}, L{publish} and, with C{durable}, the fsyncs, all blocking:
        for C{fsync = false}, tests and tools. The smtp service has its
        fsyncs done by its syncer child (L{socksvc.services.mail.durable}).
        """
        path = self.seal()
        try:
            if durable:
                fsync_path(path)
        except BaseException:
            self.abort()
            raise
        final, paths = self.publish(others)
        if durable:
            try:
                for p in paths:
                    fsync_path(p)
            except BaseException:
                self.withdraw()
                raise
        return final


def _unlink_all(paths: Iterable[str]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass


def clean_tmp(root: str, per_recipient: bool) -> int:
    """
    Remove what an earlier socksvc on this host left in C{tmp/} (a message
    it was writing when it was killed): files named by this host, by any
    process but this one. How many were removed.
    """
    dirs = [os.path.join(root, "tmp")]
    if per_recipient:
        try:
            with os.scandir(root) as it:
                dirs = [os.path.join(e.path, "tmp") for e in it if e.is_dir(follow_symlinks=False)]
        except OSError:
            return 0
    mine = str(os.getpid())
    removed = 0
    for d in dirs:
        try:
            with os.scandir(d) as it:
                names = [e.name for e in it if e.is_file(follow_symlinks=False)]
        except OSError:
            continue
        for name in names:
            m = _NAME.fullmatch(name)
            if m is None or m.group(5) != HOST or m.group(3) == mine:
                continue
            try:
                os.unlink(os.path.join(d, name))
                removed += 1
            except OSError:
                pass
    return removed


# -- reading (POP3) ---------------------------------------------------------------


class Entry(NamedTuple):
    """One message as POP3 lists it."""

    path: str
    size: int
    """Octets with CRLF line ends (the W= size), or the file's size when the name does not say."""
    uid: bytes


_W = re.compile(r",W=(\d{1,15})(?:[,:]|$)")


def _uid(name: str) -> bytes:
    base = name.split(":", 1)[0].split(",", 1)[0]
    if 0 < len(base) <= 70 and all(0x21 <= ord(c) <= 0x7E for c in base):
        return base.encode("ascii")
    return hashlib.sha1(base.encode("utf-8", "surrogateescape")).hexdigest().encode("ascii")


def scan(box: Maildir) -> list[Entry]:
    """The messages in C{new/} and C{cur/} (oldest name first); a missing Maildir is empty."""
    found: list[tuple[str, Entry]] = []
    for d in (box.new, box.cur):
        try:
            with os.scandir(d) as it:
                entries = [e for e in it if not e.name.startswith(".") and e.is_file(follow_symlinks=False)]
        except OSError:
            continue
        for e in entries:
            m = _W.search(e.name)
            if m is not None:
                size = int(m.group(1))
            else:
                try:
                    size = e.stat(follow_symlinks=False).st_size
                except OSError:
                    continue
            found.append((e.name, Entry(e.path, size, _uid(e.name))))
    found.sort(key=lambda item: item[0])
    return [entry for _name, entry in found]
