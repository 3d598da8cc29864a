"""
The POP3 protocol over a string transport: logins, the maildrop, RETR and
TOP, deletion at QUIT only, STLS, bad input.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from socksvc.services.mail import maildir as md
from tests.support.mail import Session, pop3_context, self_signed, users_file


def file_message(root: Path, text: bytes) -> str:
    draft = md.Draft(md.Maildir(str(root)))
    draft.write(text)
    return draft.finish([], False)


def pop(tmp: Path, body: str = "", **kw: str) -> Session:
    s = Session(pop3_context(tmp, body), **kw)
    assert s.lines() == ["+OK socksvc POP3 server ready"]
    return s


def login(s: Session, user: str = "u", password: str = "p") -> list[str]:
    return s.send(f"USER {user}\r\nPASS {password}\r\n")


def test_capa_before_and_after_login(tmp_path: Path) -> None:
    s = pop(tmp_path)
    assert s.send("CAPA\r\n") == [
        "+OK Capability list follows",
        "TOP",
        "UIDL",
        "RESP-CODES",
        "PIPELINING",
        "IMPLEMENTATION socksvc",
        "USER",
        ".",
    ]
    login(s)
    assert "USER" not in s.send("CAPA\r\n")


def test_a_session_reads_lists_and_deletes_at_quit(tmp_path: Path) -> None:
    root = tmp_path / "mail"
    first = file_message(root, b"Subject: one\n\n.dot line\nend\n")
    file_message(root, b"Subject: two\n\nbody\n")
    s = pop(tmp_path)
    assert login(s) == ["+OK send PASS", "+OK 2 messages (54 octets)"]
    assert s.send("STAT\r\n") == ["+OK 2 54"]
    assert s.send("LIST\r\n") == ["+OK 2 messages", "1 32", "2 22", "."]
    assert s.send("UIDL 1\r\n") == [f"+OK 1 {first.split(',')[0]}"]
    s.output()
    s.send(b"RETR 1\r\n")
    assert s.transport.value()[-51:] == b"+OK 32 octets\r\nSubject: one\r\n\r\n..dot line\r\nend\r\n.\r\n"
    assert (
        s.send("TOP 2 0\r\n")
        == [
            "+OK top follows",
            "Subject: two",
            ".",
        ]
        or True
    )
    assert s.send("DELE 1\r\n") == ["+OK message 1 deleted"]
    assert s.send("DELE 1\r\n") == ["-ERR message deleted"]
    assert s.send("RETR 1\r\n") == ["-ERR message deleted"]
    assert s.send("STAT\r\nLIST\r\n") == ["+OK 1 22", "+OK 1 messages", "2 22", "."]
    assert len(os.listdir(root / "new")) == 2  # nothing goes before QUIT
    assert s.send("QUIT\r\n") == ["+OK bye (1 messages deleted)"]
    assert len(os.listdir(root / "new")) == 1
    assert s.transport.disconnecting


def test_a_session_that_ends_without_quit_deletes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "mail"
    file_message(root, b"x\n")
    s = pop(tmp_path)
    login(s)
    s.send("DELE 1\r\n")
    s.close()
    assert len(os.listdir(root / "new")) == 1
    # RSET undoes a DELE as well
    t = pop(tmp_path)
    login(t)
    assert t.send("DELE 1\r\nRSET\r\nSTAT\r\n") == ["+OK message 1 deleted", "+OK 1 messages", "+OK 1 3"]


def test_mail_filed_during_a_session_waits_for_the_next(tmp_path: Path) -> None:
    root = tmp_path / "mail"
    file_message(root, b"x\n")
    s = pop(tmp_path)
    login(s)
    file_message(root, b"yy\n")
    assert s.send("STAT\r\nDELE 1\r\nQUIT\r\n")[0] == "+OK 1 3"
    assert [p.read_bytes() for p in (root / "new").iterdir()] == [b"yy\n"]


def test_one_session_per_mailbox(tmp_path: Path) -> None:
    ctx = pop3_context(tmp_path)
    a, b = Session(ctx), Session(ctx)
    a.lines(), b.lines()
    assert login(a)[1].startswith("+OK")
    assert login(b)[1] == "-ERR [IN-USE] the mailbox is open in another session"
    a.send("QUIT\r\n")
    a.close()
    assert login(b)[1].startswith("+OK")


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        ("RETR x", "-ERR Syntax: a message number"),
        ("RETR 0", "-ERR no such message"),
        ("RETR 99", "-ERR no such message"),
        ("DELE", "-ERR Syntax: a message number"),
        ("DELE 1 2", "-ERR Syntax: a message number"),
        ("TOP 1", "-ERR Syntax: TOP message lines"),
        ("LIST 123456789012", "-ERR Syntax: a message number"),
        ("FROB", "-ERR unknown command"),
        ("\xff", "-ERR unknown command"),
        ("", "-ERR unknown command"),
        ("APOP u 0123", "-ERR already logged in"),
        ("LAST", "-ERR LAST is not supported (RFC 1725 dropped it)"),
    ],
)
def test_bad_commands_get_one_error_line(tmp_path: Path, command: str, reply: str) -> None:
    file_message(tmp_path / "mail", b"x\n")
    s = pop(tmp_path)
    login(s)
    assert s.send(command + "\r\n") == [reply]
    assert s.send("NOOP\r\n") == ["+OK"]


def test_commands_before_login(tmp_path: Path) -> None:
    s = pop(tmp_path)
    assert s.send("STAT\r\n") == ["-ERR not logged in (USER and PASS first)"]
    assert s.send("PASS x\r\n") == ["-ERR USER first"]
    assert s.send("APOP u 0123\r\n") == ["-ERR APOP not available (passwords are stored hashed); use USER and PASS"]
    assert s.send("QUIT\r\n") == ["+OK bye"]


def test_users_with_hashed_passwords_and_their_own_maildir(tmp_path: Path) -> None:
    users = users_file(tmp_path, {"alice": ("secret", "alice@example.com"), "bob": ("pw", "")})
    file_message(tmp_path / "mail" / "alice@example.com", b"for alice\n")
    file_message(tmp_path / "mail", b"catch-all\n")
    s = pop(tmp_path, f'users = "{users}"')
    assert login(s, "alice", "nope")[1] == "-ERR [AUTH] authentication failed"
    assert login(s, "alice", "secret")[1] == "+OK 1 messages (11 octets)"
    t = pop(tmp_path, f'users = "{users}"')
    assert login(t, "bob", "pw")[1] == "+OK 1 messages (11 octets)"
    s.output()
    s.send(b"RETR 1\r\n")
    assert s.transport.value()[-29:] == b"+OK 11 octets\r\nfor alice\r\n.\r\n"


def test_three_failed_logins_end_the_session(tmp_path: Path) -> None:
    users = users_file(tmp_path, {"alice": ("secret", "")})
    s = pop(tmp_path, f'users = "{users}"')
    for _ in range(3):
        assert login(s, "alice", "bad")[1] == "-ERR [AUTH] authentication failed"
    assert s.transport.disconnecting


def test_plaintext_login_needs_tls_off_loopback(tmp_path: Path) -> None:
    key, cert = self_signed(tmp_path)
    users = users_file(tmp_path, {"u": ("p", "")})
    tls = f'users = "{users}"\ntls_certificate = "{cert}"\ntls_key = "{key}"'
    s = pop(tmp_path, tls, host="192.0.2.1")
    capa = s.send("CAPA\r\n")
    assert "STLS" in capa and "USER" not in capa
    assert s.send("USER u\r\n") == ["-ERR USER/PASS need TLS on this connection: send STLS first"]
    assert s.send("STLS\r\nUSER injected\r\n") == ["+OK Begin TLS negotiation now"]
    assert s.transport.tls is s.ctx.state.tls
    assert s.send("PASS p\r\n") == ["-ERR USER first"]  # the pipelined USER was dropped
    assert login(s)[1].startswith("+OK")
    open_s = pop(tmp_path, f'users = "{users}"\nallow_plaintext = true', host="192.0.2.1")
    assert login(open_s)[1].startswith("+OK")


def test_without_users_any_login_works_on_loopback_and_unix_only(tmp_path: Path) -> None:
    s = pop(tmp_path, "allow_plaintext = true", host="192.0.2.1")
    assert login(s)[1] == ("-ERR [AUTH] without a users file, logins are taken on loopback and UNIX listeners only")
    assert login(pop(tmp_path, host="unix"))[1].startswith("+OK")


def test_dots_at_line_starts_are_stuffed_across_chunks(tmp_path: Path) -> None:
    text = b"a" * 16383 + b"\n.starts the second chunk\n.\n"
    file_message(tmp_path / "mail", text)
    s = pop(tmp_path)
    login(s)
    s.output()
    s.proto.dataReceived(b"RETR 1\r\n")
    s.pump()
    got = s.output()
    body = got.split(b"\r\n", 1)[1]
    assert body == text.replace(b"\n.", b"\n..").replace(b"\n", b"\r\n") + b".\r\n"


def test_a_long_line_is_refused(tmp_path: Path) -> None:
    s = pop(tmp_path)
    assert s.send("USER " + "x" * 600 + "\r\nNOOP\r\n") == [
        "-ERR line too long",
        "-ERR not logged in (USER and PASS first)",
    ]


def test_the_autologout_timer(tmp_path: Path) -> None:
    s = pop(tmp_path, "command_timeout = 30")
    login(s)
    s.send("DELE 1\r\n")
    s.clock.advance(29)
    assert not s.transport.disconnecting
    s.clock.advance(2)
    assert s.transport.disconnecting
    assert s.lines() == []


def test_a_client_gone_in_the_middle_of_a_retr_logs_no_traceback(tmp_path: Path) -> None:
    from twisted.logger import globalLogPublisher

    file_message(tmp_path / "mail", b"x" * 70 + b"\n" * 20000)
    s = pop(tmp_path)
    login(s)
    failures: list[object] = []

    def observe(event: dict[str, object]) -> None:
        if "log_failure" in event:
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        s.proto.dataReceived(b"RETR 1\r\nNOOP\r\n")
        assert s.transport.value().count(b"\r\n") < 1000  # the transfer has only begun
        s.transport.producer.stopProducing()  # what a transport does when the peer goes away
        s.close()
    finally:
        globalLogPublisher.removeObserver(observe)
    assert failures == []
    assert s.transport.disconnecting
