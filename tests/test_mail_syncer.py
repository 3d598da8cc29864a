"""
The smtp service's durability without threads: its syncer child (AMP over a
pipe) fsyncs and answers, batches, fails what it held when killed (451) and
is replaced for the next message, exits when stopped; the mail service
starts no thread.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import pytest_twisted
from twisted.internet.defer import DeferredList

from socksvc.core.policy import Policy
from socksvc.services.catalogue import loads, types
from socksvc.services.mail.durable import Syncer, SyncerPool, SyncError
from socksvc.services.mail.smtp import state as smtp_state
from socksvc.services.mail.syncer import main
from socksvc.services.mail.syncwire import sync_paths
from tests.conftest import Loopback, until
from tests.support.mail import Session, ehlo


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


async def _stopped(syncer: Syncer) -> None:
    """Stop the syncer and wait for its child to be gone."""
    pid = syncer.pid
    syncer.stop()
    await until(lambda: syncer.pid is None, timeout=60, what="the syncer child to exit")
    assert pid is None or not psutil.pid_exists(pid)


def test_sync_paths_reports_each_failure_by_index(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x")
    (tmp_path / "link").symlink_to(f)
    paths = [bytes(f), bytes(tmp_path / "missing"), bytes(tmp_path), bytes(tmp_path / "link")]
    failed = sync_paths(paths)
    assert [i for i, _ in failed] == [1, 3]  # a missing path; a symlink is never followed
    assert "No such file" in failed[0][1]


def test_the_child_refuses_to_start_without_its_parent() -> None:
    assert main(["--parent"]) == 2


_PARENT = """
import os, subprocess, sys
child = subprocess.Popen(
    [sys.executable, "-m", "socksvc.services.mail.syncer", "--parent", str(os.getpid())],
    stdin=int(sys.argv[1]), stdout=subprocess.DEVNULL, pass_fds=[int(sys.argv[1])],
)
print(child.pid, flush=True)
sys.stdin.read()  # until killed
"""


def _gone(proc: psutil.Process, timeout: float = 10.0) -> bool:
    """Has C{proc} died within C{timeout} (a zombie counts: its new parent may be slow to reap)?"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.01)
    return False


def test_the_child_dies_with_its_parent_even_with_its_stdin_still_open() -> None:
    """PR_SET_PDEATHSIG: here the pipe to its stdin stays open (this process holds it), so only that can end it."""
    read_end, write_end = os.pipe()
    root = str(Path(__file__).resolve().parent.parent)
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(read_end)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        pass_fds=[read_end],
        env=dict(os.environ, PYTHONPATH=root),
    )
    try:
        assert parent.stdout is not None
        child = psutil.Process(int(parent.stdout.readline()))
        assert child.ppid() == parent.pid
        assert not _gone(child, timeout=0.3)  # it runs, waiting for commands
        parent.kill()
        parent.wait(10)
        assert _gone(child)
    finally:
        parent.kill()
        parent.wait(10)
        os.close(read_end)
        os.close(write_end)


@pytest_twisted.ensureDeferred
async def test_the_syncer_child_syncs_and_answers(tmp_path: Path) -> None:
    syncer = Syncer(_reactor(), "smtp")
    f = tmp_path / "message"
    f.write_bytes(b"text\n")
    try:
        await syncer.sync([str(f), str(tmp_path)])
        pid = syncer.pid
        assert syncer.started == 1 and pid is not None and pid != os.getpid()
        child = psutil.Process(pid)
        assert child.ppid() == os.getpid()
        assert "socksvc.services.mail.syncer" in " ".join(child.cmdline())

        with pytest.raises(SyncError, match="missing: No such file or directory"):
            await syncer.sync([str(tmp_path / "missing")])

        # Ten at once: the first goes out alone, the nine asked meanwhile in one more command.
        before = syncer.commands
        results = await DeferredList([syncer.sync([str(f), str(tmp_path)]) for _ in range(10)], consumeErrors=True)
        assert all(ok for ok, _ in results)
        assert syncer.commands - before == 2

        # In one command, a failing path fails every message that asked for it, and only those.
        gone = str(tmp_path / "gone")
        asked = [syncer.sync([str(f)]), syncer.sync([str(f), gone]), syncer.sync([gone, str(tmp_path)])]
        results = await DeferredList(asked, consumeErrors=True)
        assert [ok for ok, _ in results] == [True, False, False]
        assert syncer.started == 1 and syncer.pid == pid
    finally:
        await _stopped(syncer)
    assert syncer.started == 1


# -- the smtp service over a real socket --------------------------------------------


class _Client:
    def __init__(self, loop: Loopback, sock: socket.socket) -> None:
        self.loop, self.sock, self.buf = loop, sock, b""

    async def replies(self, count: int, timeout: float = 10.0) -> list[str]:
        """The next C{count} whole replies (a multi-line one as its last line)."""
        out: list[str] = []

        def more() -> bool:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                chunk = b""
            self.buf += chunk
            while b"\r\n" in self.buf:
                line, self.buf = self.buf.split(b"\r\n", 1)
                if line[3:4] != b"-":
                    out.append(line.decode())
            return len(out) >= count

        await until(more, timeout, what=f"{count} replies")
        return out

    async def say(self, data: str, count: int = 1) -> list[str]:
        self.sock.sendall(data.encode())
        return await self.replies(count)


def _real_context(tmp_path: Path, body: str = "") -> Any:
    """An smtp service's context on the real reactor (which can start processes)."""
    reactor = _reactor()
    text = f'[services.smtp]\nlisten = ["tcp:0"]\nmaildir = "{tmp_path / "mail"}"\ntrace = false\n{body}\n'
    cfg = loads(text, "<test>").service("smtp")
    return types()["smtp"].context("smtp", cfg.settings, Policy("smtp", cfg.policy, reactor), reactor, set())


def _forbidden(*args: object, **kw: object) -> None:
    raise AssertionError("the mail service used the reactor's thread pool")


@pytest_twisted.ensureDeferred
async def test_a_killed_syncer_gives_451_and_the_next_message_a_new_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reactor = _reactor()
    threads = threading.active_count()
    monkeypatch.setattr(reactor, "getThreadPool", _forbidden)
    monkeypatch.setattr(reactor, "callInThread", _forbidden)
    # One child in the pool, so the test knows which one holds the message.
    monkeypatch.setattr(smtp_state, "SyncerPool", lambda reactor, name: SyncerPool(reactor, name, size=1))
    ctx = _real_context(tmp_path)
    loop = Loopback(types()["smtp"].stream(ctx))  # type: ignore[misc]
    state: Any = ctx.state
    new, tmp = tmp_path / "mail" / "new", tmp_path / "mail" / "tmp"
    try:
        _, sock = await loop.connect()
        c = _Client(loop, sock)
        assert (await c.replies(1))[0].startswith("220 ")
        assert (await c.say("EHLO me\r\n"))[0].startswith("250 ")
        envelope = "MAIL FROM:<a@b.org>\r\nRCPT TO:<c@d.org>\r\nDATA\r\n"
        assert [r[:3] for r in await c.say(envelope, 3)] == ["250", "250", "354"]
        assert (await c.say("one\r\n.\r\n"))[0].startswith("250 2.0.0 Ok: filed as ")
        syncer: Syncer = state.syncer.syncers[0]
        first = syncer.pid
        assert first is not None and syncer.started == 1

        # The child is stopped before it can read the command, then killed: the message it held gets 451.
        os.kill(first, signal.SIGSTOP)
        assert [r[:3] for r in await c.say(envelope, 3)] == ["250", "250", "354"]
        sent = syncer.commands
        sock.sendall(b"two\r\n.\r\n")
        await until(lambda: syncer.commands > sent, what="the sync command to be sent")
        os.kill(first, signal.SIGKILL)
        # A killed child is noticed when the reactor reaps it: under a loaded full run that took over 10 s.
        assert await c.replies(1, 30) == ["451 4.3.0 Local error in processing: the message could not be stored"]
        assert state.counters["rejected_store"] == 1
        assert [p.read_bytes() for p in sorted(new.iterdir())] == [b"one\n"] and list(tmp.iterdir()) == []

        # The next message starts a new child and is filed.
        assert [r[:3] for r in await c.say(envelope, 3)] == ["250", "250", "354"]
        assert (await c.say("three\r\n.\r\n"))[0].startswith("250 2.0.0 Ok: filed as ")
        assert syncer.started == 2 and syncer.pid not in (None, first)
        assert sorted(p.read_bytes() for p in new.iterdir()) == [b"one\n", b"three\n"]
        assert threading.active_count() == threads
    finally:
        state.shutdown()
        await loop.close()
    await until(lambda: syncer.pid is None, timeout=60, what="the syncer child to exit with the service")


def test_fsync_false_starts_no_child(tmp_path: Path) -> None:
    s = Session(_real_context(tmp_path, "fsync = false"))
    ehlo(s)
    assert s.codes("MAIL FROM:<a@b.org>\r\nRCPT TO:<c@d.org>\r\nDATA\r\nx\r\n.\r\n") == [250, 250, 354, 250]
    assert s.ctx.state.syncer is None
    assert [p.read_bytes() for p in (tmp_path / "mail" / "new").iterdir()] == [b"x\n"]


@pytest_twisted.ensureDeferred
async def test_a_pool_spreads_concurrent_fsyncs_over_its_children(tmp_path: Path) -> None:
    """Concurrent messages go to different children, so their fsyncs overlap (and no thread is used)."""
    pool = SyncerPool(_reactor(), "smtp", size=3)
    f = tmp_path / "message"
    f.write_bytes(b"text\n")
    try:
        results = await DeferredList([pool.sync([str(f), str(tmp_path)]) for _ in range(3)], consumeErrors=True)
        assert all(ok for ok, _ in results)
        pids = {s.pid for s in pool.syncers}
        assert len(pids) == 3 and None not in pids
        assert pool.started == 3
    finally:
        pool.stop()
