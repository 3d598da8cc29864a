"""
Mail end to end against the real daemon on port 0: the tutorial's smtplib
code, poplib and mailbox.Maildir reading back, swaks, SIGKILL durability,
memory while 100 MiB stream past the size limit, and bad input.
"""

from __future__ import annotations

import mailbox
import os
import poplib
import shutil
import signal
import smtplib
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.support import TWISTD, Daemon, daemon, start_daemon
from tests.support.mail import TUTORIAL_MESSAGE, SmtpClient, self_signed, users_file

SWAKS = shutil.which("swaks")


def config(tmp: Path, smtp: str = "", pop3: str = "", chat: bool = False) -> str:
    text = (
        f'[services.smtp]\nlisten = ["tcp:0:interface=127.0.0.1"]\nmaildir = "{tmp / "mail"}"\n{smtp}\n'
        f'[services.pop3]\nlisten = ["tcp:0:interface=127.0.0.1"]\nmaildir = "{tmp / "mail"}"\n{pop3}\n'
    )
    if chat:
        text += '[services.chat]\nlisten = ["tcp:0:interface=127.0.0.1"]\nflood_rate = 0\n'
    return text


@pytest.fixture
def mail_daemon(tmp_path: Path) -> Iterator[Daemon]:
    with daemon(config(tmp_path)) as d:
        yield d


def new_dir(tmp: Path) -> list[Path]:
    new = tmp / "mail" / "new"
    return sorted(new.iterdir()) if new.is_dir() else []


def tmp_dir(tmp: Path) -> list[Path]:
    t = tmp / "mail" / "tmp"
    return sorted(t.iterdir()) if t.is_dir() else []


def tutorial(port: int) -> None:
    """The tutorial's code, as written (but for the port)."""
    sender = "from@fromdomain.com"
    receivers = ["to@todomain.com"]
    message = TUTORIAL_MESSAGE
    smtpObj = smtplib.SMTP("localhost", port)
    smtpObj.sendmail(sender, receivers, message)
    smtpObj.quit()


@pytest.mark.parametrize("trace", [True, False])
def test_the_tutorial_delivers_and_poplib_and_mailbox_read_it_back(tmp_path: Path, trace: bool) -> None:
    with daemon(config(tmp_path, smtp=f"trace = {str(trace).lower()}")) as d:
        tutorial(d.port("smtp"))
        wire = TUTORIAL_MESSAGE.replace("\n", "\r\n").encode()
        pop = poplib.POP3("127.0.0.1", d.port("pop3"), timeout=20)
        pop.user("me")
        pop.pass_("anything")
        assert pop.stat()[0] == 1
        _resp, lines, octets = pop.retr(1)
        got = b"".join(line + b"\r\n" for line in lines)
        assert octets == len(got)
        if trace:
            head, _, rest = got.partition(b"From: From Person")
            assert head.startswith(b"Return-Path: <from@fromdomain.com>\r\nReceived: from ")
            assert b"From: From Person" + rest == wire
        else:
            assert got == wire
        pop.quit()
    box = mailbox.Maildir(str(tmp_path / "mail"), create=False)
    [msg] = box.values()
    assert msg["Subject"] == "SMTP e-mail test"
    assert msg["To"] == "To Person <to@todomain.com>"
    assert msg.get_payload() == "This is a test e-mail message.\n"


def test_poplib_deletes_while_smtp_delivers(mail_daemon: Daemon, tmp_path: Path) -> None:
    tutorial(mail_daemon.port("smtp"))
    pop = poplib.POP3("127.0.0.1", mail_daemon.port("pop3"), timeout=20)
    pop.user("me")
    pop.pass_("x")
    with smtplib.SMTP("127.0.0.1", mail_daemon.port("smtp")) as s:
        s.sendmail("a@b.org", ["c@d.org"], "Subject: second\r\n\r\nwhile POP3 reads\r\n")
    assert pop.stat()[0] == 1
    pop.dele(1)
    pop.quit()
    [left] = new_dir(tmp_path)
    assert b"Subject: second" in left.read_bytes()


# -- swaks ----------------------------------------------------------------------------


def swaks(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    if SWAKS is None:
        pytest.skip("swaks is not installed (apt-get install swaks)")
    cmd = [SWAKS, "--server", f"127.0.0.1:{port}", "--from", "swaks@example.org", "--to", "you@example.com"]
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False
    )


def swaks_tls() -> None:
    if SWAKS is None:
        pytest.skip("swaks is not installed (apt-get install swaks)")
    support = subprocess.run([SWAKS, "--support"], capture_output=True, text=True, timeout=60, check=False)
    if "=== TLS supported" not in support.stdout + support.stderr:
        pytest.skip("swaks has no TLS here (apt-get install libnet-ssleay-perl libio-socket-ssl-perl)")


def test_swaks_plain_and_pipelined(mail_daemon: Daemon, tmp_path: Path) -> None:
    done = swaks(mail_daemon.port("smtp"), "--header", "Subject: plain")
    assert done.returncode == 0, done.stdout + done.stderr
    done = swaks(mail_daemon.port("smtp"), "--pipeline", "--header", "Subject: pipelined")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PIPELINING" in done.stdout
    texts = [p.read_bytes() for p in new_dir(tmp_path)]
    assert [b"Subject: plain" in texts[0], b"Subject: pipelined" in texts[1]] == [True, True]


def test_swaks_8bit_body(mail_daemon: Daemon, tmp_path: Path) -> None:
    body = tmp_path / "body"
    text = "Gr\u00fc\u00dfe, \u65e5\u672c, \u00e9t\u00e9 \u2014 8-bit\n"
    body.write_bytes(text.encode("utf-8"))
    done = swaks(
        mail_daemon.port("smtp"),
        "--body",
        f"@{body}",
        "--add-header",
        "Content-Type: text/plain; charset=utf-8",
        "--add-header",
        "Content-Transfer-Encoding: 8bit",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [f] = new_dir(tmp_path)
    assert text.encode("utf-8") in f.read_bytes()


def test_swaks_starttls_and_auth(tmp_path: Path) -> None:
    swaks_tls()
    key, cert = self_signed(tmp_path)
    users = users_file(tmp_path, {"app": ("s3cret", "")})
    smtp = f'tls_certificate = "{cert}"\ntls_key = "{key}"\nrequire_tls = true\nauth = "users"\nusers = "{users}"'
    with daemon(config(tmp_path, smtp=smtp)) as d:
        port = d.port("smtp")
        refused = swaks(port, "--header", "Subject: no tls")
        assert refused.returncode != 0 and "530 5.7.0 Must issue a STARTTLS command first" in refused.stdout
        bad = swaks(port, "--tls", "--auth", "PLAIN", "--auth-user", "app", "--auth-password", "wrong")
        assert bad.returncode != 0 and "535 5.7.8" in bad.stdout
        for mech in ("PLAIN", "LOGIN"):
            done = swaks(
                port, "--tls", "--auth", mech, "--auth-user", "app", "--auth-password", "s3cret", "--h-Subject", mech
            )
            assert done.returncode == 0, done.stdout + done.stderr
    texts = [p.read_bytes() for p in new_dir(tmp_path)]
    assert len(texts) == 2 and all(b"with ESMTPSA id" in t for t in texts)


# -- durability -------------------------------------------------------------------------


def test_sigkill_right_after_the_250_leaves_the_message_whole(tmp_path: Path) -> None:
    d = start_daemon(config(tmp_path, smtp="trace = false"))
    try:
        c = SmtpClient(d.port("smtp"))
        c.say("EHLO me\r\n")
        body = b"".join(b"line %d of a message that must survive\r\n" % n for n in range(5000))
        assert c.say(b"MAIL FROM:<a@b.org>\r\nRCPT TO:<c@d.org>\r\nDATA\r\n", 3)[2].startswith("354")
        c.sock.sendall(body + b".\r\n")
        assert c.reply().startswith("250 2.0.0 Ok: filed as ")
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(10)
    finally:
        d.stop()
    [f] = new_dir(tmp_path)
    assert f.read_bytes() == body.replace(b"\r\n", b"\n")
    assert tmp_dir(tmp_path) == []


def test_sigkill_during_data_leaves_nothing_after_the_next_start(tmp_path: Path) -> None:
    text = config(tmp_path)
    d = start_daemon(text)
    try:
        c = SmtpClient(d.port("smtp"))
        c.say("EHLO me\r\n")
        assert c.say(b"MAIL FROM:<a@b.org>\r\nRCPT TO:<c@d.org>\r\nDATA\r\n", 3)[2].startswith("354")
        c.sock.sendall(b"Subject: never finished\r\n\r\n" + b"x" * 70000)
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(10)
    finally:
        d.stop()
    assert new_dir(tmp_path) == []
    assert len(tmp_dir(tmp_path)) == 1  # what the killed daemon was writing
    with daemon(text) as again:
        assert "removed 1 unfinished messages from an earlier run" in again.output
        assert tmp_dir(tmp_path) == [] and new_dir(tmp_path) == []


# -- bad input ------------------------------------------------------------------------------


def test_100_mib_past_the_limit_is_refused_with_flat_memory(tmp_path: Path) -> None:
    with daemon(config(tmp_path, smtp="max_message_size = 10485760")) as d:
        proc = psutil.Process(d.proc.pid)
        c = SmtpClient(d.port("smtp"))
        c.say("EHLO me\r\n")
        assert c.say("MAIL FROM:<a@b.org> SIZE=104857600\r\n")[0].startswith("552 5.3.4")
        c.say(b"MAIL FROM:<a@b.org>\r\nRCPT TO:<c@d.org>\r\nDATA\r\n", 3)
        before = proc.memory_info().rss
        peak = before
        line = b"z" * 998 + b"\r\n"
        chunk = line * 1048  # about 1 MiB
        for _ in range(100):
            c.sock.sendall(chunk)
            peak = max(peak, proc.memory_info().rss)
        assert c.say(".\r\n") == ["552 5.3.4 Message size exceeds fixed maximum message size"]
        assert (peak - before) < 8 << 20, f"RSS grew {(peak - before) >> 20} MiB"
        assert new_dir(tmp_path) == [] and tmp_dir(tmp_path) == []
        assert c.code(b"MAIL FROM:<a@b.org>\r\n") == 250


def test_bad_input_gets_the_rfc_reply_and_nothing_else_breaks(tmp_path: Path) -> None:
    with daemon(config(tmp_path, smtp="data_timeout = 1\ntrace = false")) as d:
        port = d.port("smtp")
        c = SmtpClient(port)
        assert c.say("MAIL FROM:<a@b.org>\r\n") == ["503 5.5.1 Send EHLO or HELO first"]
        c.say("EHLO me\r\n")
        c.say("MAIL FROM:<a@b.org>\r\n")
        codes = [int(r[:3]) for r in c.say("".join(f"RCPT TO:<r{n}@x.org>\r\n" for n in range(101)), 101)]
        assert codes == [250] * 100 + [452]
        assert c.say("DATA\r\n")[0].startswith("354")
        for bad, reply in [
            (b"bare\nLF\r\n", "554 5.6.0 Message refused: a bare CR or LF"),
            (b"N\x00UL\r\n", "554 5.6.0 Message refused: a NUL byte in the text"),
            (b"L" * 8000 + b"\r\n", "500 5.5.2 Line too long"),
        ]:
            [got] = c.say(bad + b".\r\n")
            assert got.startswith(reply), got
            c.say(b"MAIL FROM:<a@b.org>\r\nRCPT TO:<c@d.org>\r\nDATA\r\n", 3)
        [got] = c.say(b"fine\r\n.\r\n")
        assert got.startswith("250 2.0.0")
        # A DATA that never ends: the data timeout (1 s here) answers 421 and closes.
        c.say(b"MAIL FROM:<a@b.org>\r\nRCPT TO:<c@d.org>\r\nDATA\r\n", 3)
        c.sock.sendall(b"and then nothing more")
        assert c.reply().startswith("421 4.4.2 ")
        assert c.sock.recv(100) == b""
        # Other clients were never held up, and the daemon still files.
        tutorial(port)
    filed = [p.read_bytes() for p in new_dir(tmp_path)]
    assert len(filed) == 2 and filed[0] == b"fine\n" and tmp_dir(tmp_path) == []


def test_headers_cannot_inject_a_line_into_the_chat_announcement(tmp_path: Path) -> None:
    smtp = 'announce = "lobby"\ntrace = false'
    with daemon(config(tmp_path, smtp=smtp, chat=True)) as d:
        chat = socket.create_connection(("127.0.0.1", d.port("chat")), timeout=20)
        chat.sendall(b"watcher\r\n")
        got = b""
        while b"You are now in lobby" not in got:
            got += chat.recv(65536)
        evil = (
            "Subject: =?utf-8?q?hi=0D=0A-!-_mail_for_admin_from_root:_fake?=\r\n"
            " -!- folded line \x1b[31mred\r\n"
            "X-Other: x\r\n\r\nbody\r\n"
        )
        with smtplib.SMTP("127.0.0.1", d.port("smtp")) as s:
            s.sendmail("a@b.org", ["to@x.org"], evil)
            s.sendmail("a@b.org", ["to@x.org"], "Subject: sentinel\r\n\r\n.\r\n")
        got = b""
        while b"sentinel" not in got:
            got += chat.recv(65536)
        assert got.split(b"\r\n") == [
            b"-!- mail for to@x.org from a@b.org: hi -!- mail for admin from root: fake -!- folded line ^[[31mred",
            b"-!- mail for to@x.org from a@b.org: sentinel",
            b"",
        ]
        chat.close()


def test_the_embedded_default_checks_its_maildir(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data"), "STATE_DIRECTORY": ""}
    ok = subprocess.run([TWISTD, "socksvc", "--check"], capture_output=True, text=True, env=env, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert not (tmp_path / "data").exists()  # checked, not made
    (tmp_path / "data").write_text("not a directory")
    bad = subprocess.run([TWISTD, "socksvc", "--check"], capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 1
    assert f"services.smtp.maildir: {tmp_path / 'data'} is not a directory" in bad.stdout + bad.stderr
