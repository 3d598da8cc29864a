"""
The SMTP protocol over a string transport and a fake clock: the RFC 5321
dialogue, limits, bad input, STARTTLS, AUTH and filing.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from socksvc.services.mail.maildir import Maildir
from tests.support.mail import (
    Session,
    ehlo,
    new_files,
    self_signed,
    smtp_context,
    tmp_files,
    users_file,
)


def mail(tmp: Path, body: str = "", **kw: str) -> Session:
    return Session(smtp_context(tmp, body), **kw)


def transaction(s: Session, rcpts: int = 1) -> None:
    ehlo(s)
    assert s.codes("MAIL FROM:<a@example.com>\r\n") == [250]
    for n in range(rcpts):
        assert s.codes(f"RCPT TO:<r{n}@example.com>\r\n") == [250]
    assert s.codes("DATA\r\n") == [354]


def test_greeting_and_ehlo_extensions(tmp_path: Path) -> None:
    s = mail(tmp_path, 'hostname = "mx.test"')
    assert s.lines() == ["220 mx.test ESMTP socksvc"]
    lines = ehlo(s)
    assert lines[0] == "250-mx.test Hello client.example [127.0.0.1]"
    assert lines[1:] == [
        "250-SIZE 26214400",
        "250-8BITMIME",
        "250-PIPELINING",
        "250-ENHANCEDSTATUSCODES",
        "250 HELP",
    ]


def test_a_message_is_filed_with_trace_lines_and_lf_line_ends(tmp_path: Path) -> None:
    s = mail(tmp_path)
    transaction(s)
    lines = s.send("Subject: hi\r\n\r\nbody\r\n..dot\r\n.\r\n")
    assert lines[0].startswith("250 2.0.0 Ok: filed as ")
    [f] = new_files(tmp_path / "mail")
    text = f.read_bytes()
    assert text.startswith(b"Return-Path: <a@example.com>\nReceived: from client.example ([127.0.0.1])\n")
    assert text.endswith(b"\nSubject: hi\n\nbody\n.dot\n")
    lfs = text.count(b"\n")
    assert f",S={len(text)},W={len(text) + lfs}" in f.name
    assert tmp_files(tmp_path / "mail") == []


def test_trace_false_files_the_message_exactly(tmp_path: Path) -> None:
    s = mail(tmp_path, "trace = false")
    transaction(s)
    s.send("a\r\nb\r\n.\r\n")
    [f] = new_files(tmp_path / "mail")
    assert f.read_bytes() == b"a\nb\n"


def test_the_terminator_may_come_byte_by_byte(tmp_path: Path) -> None:
    s = mail(tmp_path, "trace = false")
    transaction(s)
    for byte in b"x\r\n.\r\nNOOP\r\n":
        s.proto.dataReceived(bytes([byte]))
    out = s.lines()
    assert out[0].startswith("250 2.0.0 Ok")
    assert out[1] == "250 2.0.0 Ok"
    assert new_files(tmp_path / "mail")[0].read_bytes() == b"x\n"


def test_pipelined_commands_are_answered_in_order(tmp_path: Path) -> None:
    s = mail(tmp_path, "trace = false")
    ehlo(s)
    codes = s.codes("MAIL FROM:<a@x.org>\r\nRCPT TO:<b@x.org>\r\nRCPT TO:<c@x.org>\r\nDATA\r\n")
    assert codes == [250, 250, 250, 354]
    codes = s.codes("one\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<d@x.org>\r\nDATA\r\ntwo\r\n.\r\nQUIT\r\n")
    assert codes == [250, 250, 250, 354, 250, 221]
    assert [f.read_bytes() for f in new_files(tmp_path / "mail")] == [b"one\n", b"two\n"]
    assert s.transport.disconnecting


@pytest.mark.parametrize("command", ["MAIL FROM:<a@b.c>", "RCPT TO:<a@b.c>", "DATA", "AUTH PLAIN", "STARTTLS"])
def test_commands_before_ehlo_are_out_of_sequence(tmp_path: Path, command: str) -> None:
    key, cert = self_signed(tmp_path)
    s = mail(tmp_path, f'tls_certificate = "{cert}"\ntls_key = "{key}"\nauth = "any"')
    s.lines()
    [line] = s.send(command + "\r\n")
    assert line.startswith("503 5.5.1 "), line


def test_noop_rset_vrfy_help_quit_work_before_ehlo(tmp_path: Path) -> None:
    s = mail(tmp_path)
    s.lines()
    assert s.codes("NOOP\r\nRSET\r\nVRFY bob\r\nHELP\r\n") == [250, 250, 252, 214]
    assert s.send("QUIT\r\n") == ["221 2.0.0 Bye"]
    assert s.transport.disconnecting


def test_unknown_and_malformed_commands(tmp_path: Path) -> None:
    s = mail(tmp_path)
    ehlo(s)
    assert s.send("FOO\r\n") == ["500 5.5.1 Command unrecognized"]
    assert s.send("\xff\xfe\r\n") == ["500 5.5.1 Command unrecognized"]
    assert s.send(b"NO\x00OP\r\n") == ["500 5.5.2 Syntax error"]
    assert s.send("MAIL TO:<a@b>\r\n") == ["501 5.5.4 Syntax: MAIL FROM:<address>"]
    assert s.send("HELO\r\n") == ["501 Syntax: HELO your-domain-name"]


def test_a_bare_lf_ends_no_command(tmp_path: Path) -> None:
    s = mail(tmp_path)
    s.lines()
    assert s.send("EHLO x\nQUIT\n") == ["500 5.5.2 Syntax error: lines end with CRLF (RFC 5321 2.3.8)"] * 2
    assert not s.transport.disconnecting


def test_an_overlong_command_line_is_refused_and_memory_stays_bounded(tmp_path: Path) -> None:
    s = mail(tmp_path)
    ehlo(s)
    assert s.send("NOOP " + "x" * 600 + "\r\n") == ["500 5.5.2 Line too long"]
    for _ in range(100):
        assert s.send(b"y" * 65536) == []
        assert len(s.proto.buf) <= 65536
    assert s.send("\r\nNOOP\r\n") == ["500 5.5.2 Line too long", "250 2.0.0 Ok"]


def test_size_is_refused_early_by_the_size_parameter(tmp_path: Path) -> None:
    s = mail(tmp_path, "max_message_size = 2048")
    ehlo(s)
    assert s.send("MAIL FROM:<a@b.org> SIZE=2049\r\n") == ["552 5.3.4 Message size exceeds fixed maximum message size"]
    assert s.codes("MAIL FROM:<a@b.org> SIZE=2048 BODY=8BITMIME\r\n") == [250]


def test_size_is_refused_late_while_streaming_and_nothing_stays(tmp_path: Path) -> None:
    s = mail(tmp_path, "max_message_size = 2048")
    transaction(s)
    for _ in range(40):
        assert s.send(b"y" * 78 + b"\r\n") == []
    assert s.proto.draft is None  # given up as soon as it grew too big
    assert s.send(".\r\n") == ["552 5.3.4 Message size exceeds fixed maximum message size"]
    assert new_files(tmp_path / "mail") == [] and tmp_files(tmp_path / "mail") == []
    assert s.codes("RSET\r\n") == [250]


@pytest.mark.parametrize(
    ("text", "reply"),
    [
        (b"a\nb\r\n", "554 5.6.0 Message refused: a bare CR or LF (lines end with CRLF, RFC 5321 2.3.8)"),
        (b"a\rb\r\n", "554 5.6.0 Message refused: a bare CR or LF (lines end with CRLF, RFC 5321 2.3.8)"),
        (b"a\x00b\r\n", "554 5.6.0 Message refused: a NUL byte in the text"),
        (b"x" * 8000 + b"\r\n", "500 5.5.2 Line too long: at most 1000 octets with CRLF (RFC 5321 4.5.3.1.6)"),
    ],
)
def test_bad_text_is_refused_at_the_end_of_data(tmp_path: Path, text: bytes, reply: str) -> None:
    s = mail(tmp_path)
    transaction(s)
    assert s.send(b"Subject: x\r\n\r\n" + text + b"more\r\n.\r\nNOOP\r\n") == [reply, "250 2.0.0 Ok"]
    assert new_files(tmp_path / "mail") == [] and tmp_files(tmp_path / "mail") == []


def test_smuggling_terminators_do_not_end_the_data(tmp_path: Path) -> None:
    s = mail(tmp_path)
    transaction(s)
    # <LF>.<LF>, <LF>.<CR><LF>, <CR>.<CR>: none ends the data; the real end refuses the bare LFs/CRs.
    assert s.send(b"a\n.\nMAIL FROM:<evil@x>\r\nb\r\n.\nc\r.\rd\r\n") == []
    assert s.send(b".\r\n") == ["554 5.6.0 Message refused: a bare CR or LF (lines end with CRLF, RFC 5321 2.3.8)"]


def test_a_line_of_exactly_1000_octets_is_fine(tmp_path: Path) -> None:
    s = mail(tmp_path, "trace = false")
    transaction(s)
    assert s.codes(b"x" * 998 + b"\r\n.\r\n") == [250]


def test_101_recipients(tmp_path: Path) -> None:
    s = mail(tmp_path)
    transaction_codes = []
    ehlo(s)
    s.send("MAIL FROM:<a@b.org>\r\n")
    for n in range(101):
        transaction_codes += s.codes(f"RCPT TO:<r{n}@b.org>\r\n")
    assert transaction_codes == [250] * 100 + [452]
    assert s.send("RCPT TO:<late@b.org>\r\n") == ["452 4.5.3 Too many recipients"]
    assert s.codes("DATA\r\nhello\r\n.\r\n") == [354, 250]


def test_domains_refuse_other_recipients_and_postmaster_is_always_taken(tmp_path: Path) -> None:
    s = mail(tmp_path, 'domains = ["Example.COM."]')
    ehlo(s)
    s.send("MAIL FROM:<a@elsewhere.org>\r\n")
    assert s.send("RCPT TO:<x@other.org>\r\n") == ["550 5.7.1 Relaying denied: not a domain this server takes mail for"]
    assert s.codes("RCPT TO:<x@example.com>\r\nRCPT TO:<Postmaster>\r\n") == [250, 250]
    assert s.send("RCPT TO:<nodomain>\r\n") == ["553 5.1.3 Recipient address needs a local part and a domain"]


def test_control_characters_are_no_part_of_an_address(tmp_path: Path) -> None:
    s = mail(tmp_path)
    ehlo(s)
    assert s.send('MAIL FROM:<"a\x1b[31m"@b.org>\r\n') == ["501 5.5.2 Syntax error: a control character"]
    s.send("MAIL FROM:<a@b.org>\r\n")
    assert s.send("RCPT TO:<c\x7f@d.org>\r\n") == ["501 5.5.2 Syntax error: a control character"]
    assert s.codes('RCPT TO:<"c d"@d.org>\r\n') == [250]


def test_non_ascii_addresses_need_smtputf8_which_is_not_offered(tmp_path: Path) -> None:
    s = mail(tmp_path)
    ehlo(s)
    assert s.send("MAIL FROM:<jos\u00e9@example.com>\r\n") == [
        "553 5.6.7 Non-ASCII address: this server does not offer SMTPUTF8"
    ]
    assert s.send("MAIL FROM:<a@b.org> SMTPUTF8\r\n") == ["555 5.6.7 SMTPUTF8 is not offered by this server"]
    assert s.send("MAIL FROM:<a@b.org> FOO=1\r\n") == ["555 5.5.4 MAIL FROM parameter FOO not recognized"]


def test_per_recipient_maildirs_get_one_copy_each(tmp_path: Path) -> None:
    s = mail(tmp_path, "per_recipient = true\ntrace = false")
    ehlo(s)
    s.send("MAIL FROM:<a@b.org>\r\nRCPT TO:<One@B.org>\r\nRCPT TO:<two@b.org>\r\nRCPT TO:<one@b.org>\r\n")
    assert s.codes("DATA\r\nhi\r\n.\r\n") == [354, 250]
    root = tmp_path / "mail"
    folders = {p.name: new_files(p) for p in root.iterdir()}
    assert {k: [f.read_bytes() for f in v] for k, v in folders.items()} == {
        "one@b.org": [b"hi\n"],
        "two@b.org": [b"hi\n"],
    }


def test_the_data_timeout_gives_421_and_leaves_nothing(tmp_path: Path) -> None:
    s = mail(tmp_path, "data_timeout = 2\ncommand_timeout = 10")
    transaction(s)
    s.send("partial line\r\nand")
    s.clock.advance(1.9)
    assert s.send("more") == []  # data resets the timer
    s.clock.advance(1.9)
    assert s.lines() == []
    s.clock.advance(0.2)
    [line] = s.lines()
    assert line.startswith("421 4.4.2 ") and line.endswith("Error: timeout exceeded")
    assert s.transport.disconnecting
    assert tmp_files(tmp_path / "mail") == [] and new_files(tmp_path / "mail") == []


def test_the_command_timeout(tmp_path: Path) -> None:
    s = mail(tmp_path, "command_timeout = 5")
    s.lines()
    s.clock.advance(4.9)
    assert s.lines() == []
    s.clock.advance(0.2)
    assert s.lines()[0].startswith("421 4.4.2")


def test_a_dropped_connection_in_data_leaves_nothing(tmp_path: Path) -> None:
    s = mail(tmp_path)
    transaction(s)
    s.send("Subject: half\r\n\r\nhalf a message\r\n")
    assert len(tmp_files(tmp_path / "mail")) == 1
    s.close()
    assert tmp_files(tmp_path / "mail") == [] and new_files(tmp_path / "mail") == []


def test_a_store_that_cannot_be_made_gets_451(tmp_path: Path) -> None:
    s = mail(tmp_path)
    (tmp_path / "mail").write_text("in the way")  # a file where the Maildir should be
    transaction_lines = ehlo(s)
    assert transaction_lines
    s.send("MAIL FROM:<a@b.org>\r\nRCPT TO:<c@d.org>\r\n")
    assert s.send("DATA\r\n") == ["451 4.3.0 Cannot store mail now, try again later"]
    assert s.ctx.state.counters["rejected_store"] == 1


def test_input_waits_while_a_message_is_made_durable(tmp_path: Path) -> None:
    from twisted.internet.defer import Deferred

    from socksvc.services.mail.syncwire import fsync_path

    s = mail(tmp_path, "trace = false")
    pending: list[tuple[Deferred[None], list[str]]] = []

    def later(paths: list[str]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        pending.append((d, paths))
        return d

    def settle() -> None:  # the file, then (once it is in new/) its directory
        for _ in range(2):
            d, paths = pending.pop()
            for path in paths:
                fsync_path(path)
            d.callback(None)

    s.ctx.state.sync = later
    transaction(s)
    assert s.send("one\r\n.\r\n") == []  # not answered before it is on disk
    assert s.send("NOOP\r\nMAIL FROM:<b@c.org>\r\n") == []  # pipelined: waits its turn
    assert s.transport.producerState == "producing"
    settle()
    out = s.lines()
    assert out[0].startswith("250 2.0.0 Ok: filed as ") and out[1:] == ["250 2.0.0 Ok", "250 2.1.0 Sender OK"]
    assert s.codes("RCPT TO:<x@y.org>\r\nDATA\r\ntwo\r\n.\r\nNOOP\r\n") == [250, 354]
    assert s.transport.producerState == "paused"  # what came after the dot waits, reading paused
    settle()
    assert [int(x[:3]) for x in s.lines()] == [250, 250]
    assert s.transport.producerState == "producing"
    assert [p.read_bytes() for p in new_files(tmp_path / "mail")] == [b"one\n", b"two\n"]


def test_a_reload_applies_to_the_next_message(tmp_path: Path) -> None:
    from socksvc.services.catalogue import loads

    s = mail(tmp_path, 'hostname = "old.test"')
    assert s.lines() == ["220 old.test ESMTP socksvc"]
    text = f'[services.smtp]\nlisten = ["tcp:0"]\nmaildir = "{tmp_path / "other"}"\nhostname = "new.test"\n'
    s.ctx.reconfigure(loads(text).service("smtp").settings)
    assert ehlo(s)[0].startswith("250-new.test Hello")
    transaction(s)
    assert s.codes("x\r\n.\r\n") == [250]
    assert len(new_files(tmp_path / "other")) == 1


# -- STARTTLS ------------------------------------------------------------------------


def test_starttls_drops_what_was_pipelined_behind_it_and_forgets_ehlo(tmp_path: Path) -> None:
    key, cert = self_signed(tmp_path)
    s = mail(tmp_path, f'tls_certificate = "{cert}"\ntls_key = "{key}"', host="192.0.2.1")
    assert "250-STARTTLS" in ehlo(s)
    assert s.send("STARTTLS\r\nMAIL FROM:<injected@x>\r\n") == ["220 2.0.0 Ready to start TLS"]
    assert s.transport.tls is s.ctx.state.tls
    assert s.send("MAIL FROM:<a@b.org>\r\n") == ["503 5.5.1 Send EHLO or HELO first"]
    lines = ehlo(s)
    assert "250-STARTTLS" not in lines and "250 HELP" in lines
    assert s.send("STARTTLS\r\n") == ["503 5.5.1 TLS already active"]


def test_require_tls_refuses_mail_before_starttls(tmp_path: Path) -> None:
    key, cert = self_signed(tmp_path)
    s = mail(tmp_path, f'tls_certificate = "{cert}"\ntls_key = "{key}"\nrequire_tls = true')
    ehlo(s)
    assert s.send("MAIL FROM:<a@b.org>\r\n") == ["530 5.7.0 Must issue a STARTTLS command first"]
    s.send("STARTTLS\r\n")
    ehlo(s)
    assert s.codes("MAIL FROM:<a@b.org>\r\n") == [250]


def test_starttls_without_a_certificate(tmp_path: Path) -> None:
    s = mail(tmp_path)
    ehlo(s)
    assert s.send("STARTTLS\r\n") == ["502 5.5.1 STARTTLS not available"]


# -- AUTH --------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def plain(authz: str, user: str, password: str) -> str:
    response = b64("\0".join((authz, user, password)).encode())
    return f"AUTH PLAIN {response}\r\n"


def test_auth_is_off_by_default(tmp_path: Path) -> None:
    s = mail(tmp_path)
    assert not any("AUTH" in line for line in ehlo(s))
    assert s.send("AUTH PLAIN\r\n") == ["502 5.5.1 AUTH not available"]


def test_auth_any_on_loopback_plain_and_login(tmp_path: Path) -> None:
    s = mail(tmp_path, 'auth = "any"')
    assert "250-AUTH PLAIN LOGIN" in ehlo(s)
    assert s.send(plain("", "app", "whatever")) == ["235 2.7.0 Authentication successful"]
    assert s.send("AUTH PLAIN\r\n") == ["503 5.5.1 Already authenticated"]
    t = mail(tmp_path, 'auth = "any"')
    ehlo(t)
    assert t.send("AUTH LOGIN\r\n") == ["334 VXNlcm5hbWU6"]
    assert t.send(b64(b"app") + "\r\n") == ["334 UGFzc3dvcmQ6"]
    assert t.send(b64(b"pw") + "\r\n") == ["235 2.7.0 Authentication successful"]
    assert t.codes("MAIL FROM:<a@b.org>\r\n") == [250]


def test_auth_is_not_offered_in_the_clear_off_loopback(tmp_path: Path) -> None:
    s = mail(tmp_path, 'auth = "any"', host="192.0.2.1")
    assert not any("AUTH" in line for line in ehlo(s))
    assert s.send(plain("", "a", "b")) == ["538 5.7.11 Encryption required for requested authentication mechanism"]
    u = mail(tmp_path, 'auth = "any"', host="unix")
    assert "250-AUTH PLAIN LOGIN" in ehlo(u)


def test_auth_users_checks_passwords_and_is_required(tmp_path: Path) -> None:
    users = users_file(tmp_path, {"alice": ("secret", "")})
    s = mail(tmp_path, f'auth = "users"\nusers = "{users}"')
    ehlo(s)
    assert s.send("MAIL FROM:<a@b.org>\r\n") == ["530 5.7.0 Authentication required"]
    assert s.send(plain("", "alice", "wrong")) == ["535 5.7.8 Authentication credentials invalid"]
    assert s.send(plain("", "nobody", "secret")) == ["535 5.7.8 Authentication credentials invalid"]
    assert s.send("AUTH PLAIN\r\n") == ["334 "]
    assert s.send("*\r\n") == ["501 5.7.0 Authentication aborted"]
    assert s.send("AUTH PLAIN !!!\r\n") == ["501 5.5.2 Cannot decode the response (base64)"]
    assert s.send(plain("alice", "alice", "secret")) == ["235 2.7.0 Authentication successful"]
    assert s.codes("MAIL FROM:<a@b.org>\r\nRCPT TO:<c@d.org>\r\nDATA\r\nx\r\n.\r\n") == [250, 250, 354, 250]
    assert b"with ESMTPA id" in new_files(tmp_path / "mail")[0].read_bytes()


def test_three_failed_auths_end_the_session(tmp_path: Path) -> None:
    users = users_file(tmp_path, {"alice": ("secret", "")})
    s = mail(tmp_path, f'auth = "users"\nusers = "{users}"')
    ehlo(s)
    bad = plain("", "alice", "wrong")
    assert s.codes(bad * 2) == [535, 535]
    assert s.send(bad) == ["421 4.7.0 Too many failed authentications"]
    assert s.transport.disconnecting


def test_auth_attempts_are_rate_limited_per_service(tmp_path: Path) -> None:
    s = mail(tmp_path, 'auth = "any"\nauth_rate = 1')
    ehlo(s)
    s.send("AUTH LOGIN\r\n*\r\nAUTH LOGIN\r\n*\r\n")
    assert s.send("AUTH LOGIN\r\n") == [
        "454 4.7.0 Temporary authentication failure: too many attempts, try again later"
    ]
    s.clock.advance(1.0)
    assert s.send("AUTH LOGIN\r\n") == ["334 VXNlcm5hbWU6"]


def test_an_overlong_auth_line_cancels_the_exchange(tmp_path: Path) -> None:
    s = mail(tmp_path, 'auth = "any"')
    ehlo(s)
    s.send("AUTH PLAIN\r\n")
    s.send("A" * 20000)
    assert s.send("\r\nNOOP\r\n") == ["500 5.5.6 Authentication Exchange line is too long", "250 2.0.0 Ok"]


# -- announcements -------------------------------------------------------------------------


def test_each_filed_message_is_announced_rate_limited(tmp_path: Path) -> None:
    s = mail(tmp_path, 'announce = "lobby"\nannounce_rate = 1')
    posted: list[tuple[str, str]] = []
    s.ctx.notices.subscribe(lambda room, text: posted.append((room, text)) is None)
    ehlo(s)
    for n in range(8):
        s.send(f"MAIL FROM:<f@x.org>\r\nRCPT TO:<t{n}@y.org>\r\nDATA\r\nSubject: n{n}\r\n\r\n.\r\n")
    assert posted == [("lobby", f"mail for t{n}@y.org from f@x.org: n{n}") for n in range(5)]
    s.clock.advance(10)
    assert posted[-1] == ("lobby", "mail: 3 more messages filed (not announced)")


def test_mailbox_for_catch_all_is_one_maildir(tmp_path: Path) -> None:
    ctx = smtp_context(tmp_path)
    assert ctx.state.mailbox_for("a@b") == ctx.state.mailbox_for("c@d") == Maildir(str(tmp_path / "mail"))
