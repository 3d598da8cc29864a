"""
The mail services' parts without a protocol: the DATA reader, the Subject,
Maildir writing and reading, password hashes, users files, TLS files.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin

from socksvc.config.loader import ConfigError
from socksvc.services.catalogue import loads
from socksvc.services.mail import maildir as md
from socksvc.services.mail.smtp import data
from socksvc.services.mail.users import PasswordChecker, parse_users
from socksvc.util import passwords
from tests.support.mail import self_signed, users_file

# -- the DATA reader ---------------------------------------------------------------


def read(chunks: list[bytes], max_size: int = 1 << 20) -> tuple[bytes, data.DataReader, bytes | None]:
    out: list[bytes] = []
    reader = data.DataReader(out.append, max_size)
    rest = None
    for chunk in chunks:
        rest = reader.feed(chunk)
        if rest is not None:
            break
    return b"".join(out), reader, rest


def test_the_reader_unstuffs_dots_and_stores_lf_line_ends() -> None:
    text, reader, rest = read([b"..a\r\n\r\nb..\r\n...\r\n.\r\nQUIT\r\n"])
    assert text == b".a\n\nb..\n..\n"
    assert rest == b"QUIT\r\n"
    assert reader.problem is None
    assert reader.size == len(b".a\r\n\r\nb..\r\n..\r\n")


def test_an_empty_message_ends_at_once() -> None:
    assert read([b".\r\nNOOP\r\n"])[0::2] == (b"", b"NOOP\r\n")


messages = st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")), max_size=20).map(
    lambda lines: b"".join(line + b"\r\n" for line in lines)
)


@given(messages, st.lists(st.integers(min_value=1, max_value=40), max_size=30))
def test_any_chunking_gives_the_same_result(message: bytes, cuts: list[int]) -> None:
    stuffed = b"".join(b"." + line if line.startswith(b".") else line for line in message.splitlines(True))
    stream = stuffed + b".\r\nAFTER"
    chunks, pos = [], 0
    for cut in cuts:
        chunks.append(stream[pos : pos + cut])
        pos += cut
    chunks.append(stream[pos:])
    whole = read([stream])
    split = read([c for c in chunks if c])
    assert whole[1].problem == split[1].problem
    if b"\0" in message:
        assert whole[1].problem == data.NUL
    else:
        assert whole[0] == split[0] == message.replace(b"\r\n", b"\n")
    assert whole[2] == b"AFTER"
    assert split[2] is not None and b"AFTER".startswith(split[2])


@pytest.mark.parametrize(
    ("chunks", "problem"),
    [
        ([b"a\nb\r\n.\r\n"], data.BARE),
        ([b"a\r", b"b\r\n.\r\n"], data.BARE),
        ([b"a\x00\r\n.\r\n"], data.NUL),
        ([b"x" * 999 + b"\r\n.\r\n"], data.LONG),
        ([b"x" * 500, b"x" * 500, b"x" * 500 + b"\r\n.\r\n"], data.LONG),
        ([b"y" * 100 + b"\r\n"] * 20 + [b".\r\n"], data.SIZE),
    ],
)
def test_problems_are_found_and_the_end_still_is(chunks: list[bytes], problem: str) -> None:
    _text, reader, rest = read(chunks, max_size=1024)
    assert reader.problem == problem
    assert rest == b""


def test_a_long_line_is_skipped_without_being_held() -> None:
    out: list[bytes] = []
    reader = data.DataReader(out.append, 1 << 30)
    for _ in range(1000):
        assert reader.feed(b"z" * 10000) is None
        assert reader.pending <= 1000
    assert reader.feed(b"\r\n.\r\n") == b""
    assert reader.problem == data.LONG


def test_write_errors_are_a_problem() -> None:
    def full(text: bytes) -> None:
        raise OSError(28, "No space left on device")

    reader = data.DataReader(full, 1 << 20)
    assert reader.feed(b"a\r\n.\r\n") == b""
    assert reader.problem == data.WRITE and reader.error is not None


def test_headers_are_captured_up_to_the_blank_line() -> None:
    _text, reader, _rest = read([b"Subject: a\r\n", b" b\r\nX: y\r\n\r\nSubject: body\r\n.\r\n"])
    assert bytes(reader.headers) == b"Subject: a\n b\nX: y\n"
    assert data.subject_of(bytes(reader.headers)) == "a b"


@pytest.mark.parametrize(
    ("headers", "subject"),
    [
        (b"Subject: SMTP e-mail test\n", "SMTP e-mail test"),
        (b"subject: folded\n\tline\n", "folded line"),
        (b"Subject: =?utf-8?q?caf=C3=A9?=\n", "caf\u00e9"),
        (b"Subject: =?utf-8?q?one=0D=0A-!-_two?=\n", "one -!- two"),
        (b"Subject: =?utf-8?b?YQpi?=\n", "a b"),
        (b"Subject: =?bogus?q?x?=\n", "=?bogus?q?x?="),
        (b"From: a\n", ""),
        (b"Subject: " + b"x" * 500 + b"\n", "x" * 199 + "\u2026"),
    ],
)
def test_subject_is_one_line(headers: bytes, subject: str) -> None:
    assert data.subject_of(headers) == subject


# -- Maildir -------------------------------------------------------------------------


def test_draft_abort_leaves_nothing(tmp_path: Path) -> None:
    box = md.Maildir(str(tmp_path / "m"))
    draft = md.Draft(box)
    draft.write(b"half\n")
    assert os.listdir(box.tmp) == [draft.name]
    draft.abort()
    assert os.listdir(box.tmp) == [] and os.listdir(box.new) == []
    assert oct(os.stat(box.path).st_mode & 0o777) == "0o700"


@pytest.mark.parametrize("durable", [True, False])
def test_draft_finish_files_into_every_box(tmp_path: Path, durable: bool) -> None:
    a, b = md.Maildir(str(tmp_path / "a")), md.Maildir(str(tmp_path / "sub" / "b"))
    draft = md.Draft(a)
    draft.write(b"x\ny\n")
    name = draft.finish([a, b, a], durable)
    assert name.endswith(",S=4,W=6")
    for box in (a, b):
        assert os.listdir(box.new) == [name]
        assert os.listdir(box.tmp) == []
        assert (Path(box.new) / name).read_bytes() == b"x\ny\n"
        assert oct(os.stat(Path(box.new) / name).st_mode & 0o777) == "0o600"


def test_finish_is_all_or_nothing(tmp_path: Path) -> None:
    a, b = md.Maildir(str(tmp_path / "a")), md.Maildir(str(tmp_path / "b"))
    b.ensure()
    os.rmdir(b.new)
    Path(b.new).write_text("not a directory")
    draft = md.Draft(a)
    draft.write(b"x\n")
    with pytest.raises(OSError):
        draft.finish([b], True)
    assert os.listdir(a.tmp) == [] and os.listdir(a.new) == []


def test_clean_tmp_removes_only_this_hosts_leftovers_of_other_processes(tmp_path: Path) -> None:
    box = md.Maildir(str(tmp_path))
    box.ensure()
    ours_dead = f"1700000000.M1P{os.getpid() + 1}Q1.{md.HOST}"
    ours_live = f"1700000000.M1P{os.getpid()}Q1.{md.HOST}"
    other_host = "1700000000.M1P12Q1.elsewhere"
    for name in (ours_dead, ours_live, other_host, "strange"):
        Path(box.tmp, name).write_text("x")
    assert md.clean_tmp(str(tmp_path), per_recipient=False) == 1
    assert sorted(os.listdir(box.tmp)) == sorted([ours_live, other_host, "strange"])


def test_scan_lists_new_and_cur_with_pop3_sizes(tmp_path: Path) -> None:
    box = md.Maildir(str(tmp_path))
    box.ensure()
    Path(box.new, "1.M1P1Q1.h,S=3,W=5").write_bytes(b"a\nb")
    Path(box.cur, "2.M1P1Q1.h:2,S").write_bytes(b"hello")
    Path(box.cur, ".hidden").write_bytes(b"x")
    Path(box.new, "3" + "z" * 100).write_bytes(b"long name")
    found = md.scan(box)
    assert [(e.size, e.uid) for e in found[:2]] == [(5, b"1.M1P1Q1.h"), (5, b"2.M1P1Q1.h")]
    assert len(found) == 3 and len(found[2].uid) == 40


def test_folder_names_are_safe() -> None:
    assert md.folder_name("Bob@Example.COM") == "bob@example.com"
    assert md.folder_name("../etc/passwd") == "%2E.%2Fetc%2Fpasswd"
    assert md.folder_name('"a b"@x') == "%22a%20b%22@x"
    assert "/" not in md.folder_name("/" * 300) and len(md.folder_name("/" * 300)) <= 255


def test_default_maildir() -> None:
    assert md.default_maildir({"STATE_DIRECTORY": "/var/lib/socksvc:/x"}) == "/var/lib/socksvc/mail"
    assert md.default_maildir({"XDG_DATA_HOME": "/d", "HOME": "/h"}) == "/d/socksvc/mail"
    assert md.default_maildir({"HOME": "/home/u"}) == "/home/u/.local/share/socksvc/mail"
    with pytest.raises(ValueError, match="set maildir"):
        md.default_maildir({"HOME": "/"})


def test_check_creatable(tmp_path: Path) -> None:
    md.check_creatable(str(tmp_path / "a" / "b"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is not a directory"):
        md.check_creatable(str(tmp_path / "file" / "m"))
    with pytest.raises(ValueError, match="absolute"):
        md.check_creatable("relative")
    (tmp_path / "m" / "new").mkdir(parents=True)
    (tmp_path / "m" / "cur").write_text("x")
    with pytest.raises(ValueError, match="cur is not a directory"):
        md.check_creatable(str(tmp_path / "m"))


# -- passwords and users ---------------------------------------------------------------


def test_hashes_round_trip_and_use_passlibs_format() -> None:
    h = passwords.hash_password("s\u00e9cret", ln=8)
    assert h.startswith("$scrypt$ln=8,r=8,p=1$")
    parsed = passwords.parse_hash(h)
    assert passwords.verify("s\u00e9cret".encode(), parsed)
    assert not passwords.verify(b"secret", parsed)


@pytest.mark.parametrize(
    "text",
    [
        "plain",
        "$scrypt$ln=8,r=8$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA",
        "$scrypt$ln=30,r=8,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA",
        "$scrypt$ln=16,r=64,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA",
        "$scrypt$ln=8,r=8,p=1$!!$AAAAAAAAAAAAAAAAAAAAAA",
    ],
)
def test_bad_or_too_costly_hashes_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        passwords.parse_hash(text)


def test_users_file_and_checker(tmp_path: Path) -> None:
    path = users_file(tmp_path, {"alice": ("pw", "alice@example.com"), "bob": ("pw2", "")})
    users = parse_users(str(path))
    assert users is not None
    assert [(u.name, u.mailbox) for u in users.entries] == [("alice", "alice@example.com"), ("bob", "")]
    checker = PasswordChecker(users)
    ok: list[object] = []
    checker.requestAvatarId(UsernamePassword(b"alice", b"pw")).addCallback(ok.append)
    assert ok == [b"alice"]
    for user, pw in [(b"alice", b"pw2"), (b"carol", b"pw"), (b"\xff", b"pw"), (b"", b"")]:
        failed: list[object] = []
        checker.requestAvatarId(UsernamePassword(user, pw)).addErrback(failed.append)
        assert failed and failed[0].check(UnauthorizedLogin)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("bad name:$scrypt$x", "line 1 of the users file: a user name is"),
        ("a:plain", "line 1 of the users file: not an scrypt hash"),
    ],
)
def test_users_file_errors_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "u"
    path.write_text(line + "\n")
    with pytest.raises(ValueError, match=message):
        parse_users(str(path))


# -- config --------------------------------------------------------------------------------


def config_error(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        loads(text, "t.toml")
    return str(e.value)


def test_config_errors_are_one_line_naming_the_key(tmp_path: Path) -> None:
    head = f'[services.smtp]\nlisten = ["tcp:0"]\nmaildir = "{tmp_path}/m"\n'
    assert config_error(head + 'auth = "users"').startswith("t.toml: services.smtp.users: auth = ")
    assert config_error(head + "require_tls = true") == (
        "t.toml: services.smtp.require_tls = true: needs tls_certificate (for STARTTLS)"
    )
    (tmp_path / "f").write_text("x")
    line = config_error(f'[services.smtp]\nlisten = ["tcp:0"]\nmaildir = "{tmp_path}/f/m"\n')
    assert line == f't.toml: services.smtp.maildir = "{tmp_path}/f/m": {tmp_path}/f is not a directory'
    assert "not a PEM file" in config_error(head + f'tls_certificate = "{tmp_path}/f"')
    pop = f'[services.pop3]\nlisten = ["tcp:0"]\nmaildir = "{tmp_path}/f"\n'
    assert config_error(pop) == f't.toml: services.pop3.maildir = "{tmp_path}/f": {tmp_path}/f is not a directory'


def test_a_key_that_does_not_match_is_a_config_error(tmp_path: Path) -> None:
    key, cert = self_signed(tmp_path)
    (tmp_path / "other").mkdir()
    other_key, _ = self_signed(tmp_path / "other")
    head = f'[services.smtp]\nlisten = ["tcp:0"]\nmaildir = "{tmp_path}/m"\ntls_certificate = "{cert}"\n'
    assert loads(head + f'tls_key = "{key}"').service("smtp").settings.tls_key is not None
    line = config_error(head + f'tls_key = "{other_key}"')
    assert line == f't.toml: services.smtp.tls_key = "{other_key}": the key does not match the certificate'
    assert config_error(head).endswith("no valid PEM private key (unencrypted) in the file")


def test_a_maildir_removed_while_running_is_made_again(tmp_path: Path) -> None:
    import shutil

    box = md.Maildir(str(tmp_path / "m"))
    md.Draft(box).abort()
    shutil.rmtree(box.path)
    draft = md.Draft(box)
    draft.write(b"x\n")
    draft.finish([], True)
    assert len(os.listdir(box.new)) == 1
