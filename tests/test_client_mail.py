"""
`socksvc mail` against the real daemon: send, list, read, delete, hash;
STARTTLS, STLS and AUTH; passwords; and the exit-status table.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from socksvc.client.common import EXIT_CONNECT, EXIT_NOT_FOUND, EXIT_OK, EXIT_PROTOCOL, EXIT_TIMEOUT, EXIT_USAGE
from socksvc.util.passwords import parse_hash, verify
from tests.support import Daemon, daemon
from tests.support.client import in_process
from tests.support.mail import self_signed, users_file
from tests.support.resolver import local_names_only  # noqa: F401 (autouse: no DNS from these tests)


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mailtls")
    self_signed(path)
    users_file(path, {"alice": ("wonderland", "")})
    return path


@pytest.fixture(scope="module")
def mail(tls_dir: Path) -> Iterator[Daemon]:
    cert, key = tls_dir / "cert.pem", tls_dir / "key.pem"
    tls = f'tls_certificate = "{cert}"\ntls_key = "{key}"\n'
    config = (
        f'[services.smtp]\nlisten = ["tcp:0:interface=127.0.0.1"]\nmaildir = "{tls_dir / "mail"}"\n{tls}'
        f'auth = "users"\nusers = "{tls_dir / "users"}"\n'
        f'[services.pop3]\nlisten = ["tcp:0:interface=127.0.0.1"]\nmaildir = "{tls_dir / "mail"}"\n{tls}'
        f'[services.denied]\ntype = "smtp"\nlisten = ["tcp:0:interface=127.0.0.1"]\nmaildir = "{tls_dir / "m2"}"\n'
        'deny = ["127.0.0.0/8"]\n'
    )
    with daemon(config) as d:
        yield d


def run(argv: list[str], capfd: pytest.CaptureFixture[str], stdin: bytes = b"") -> tuple[int, str, str]:
    code, out, err = in_process(argv, capfd, stdin)
    assert "Traceback" not in err
    return code, out, err


def smtp(d: Daemon, service: str = "smtp") -> list[str]:
    return ["127.0.0.1", str(d.port(service))]


def pop(d: Daemon) -> list[str]:
    return ["127.0.0.1", str(d.port("pop3"))]


AUTH = ["--auth", "alice", "--starttls"]


def test_send_list_read_delete(
    mail: Daemon, tls_dir: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOCKSVC_PASSWORD", "wonderland")
    cafile = ["--cafile", str(tls_dir / "cert.pem")]
    body = "Hello,\n.the build is green.\nGr\u00fc\u00dfe\n".encode()
    argv = ["mail", "send", *smtp(mail), "--from", "ci@example.org", "--to", "dev@example.org"]
    code, out, err = run([*argv, "--subject", "build 42", *AUTH, *cafile], capfd, body)
    assert (code, err) == (EXIT_OK, "")
    assert out.startswith("250 2.0.0 Ok: filed as ")
    code, out, err = run(["mail", "list", *pop(mail), "--user", "anyone", "--stls", *cafile], capfd)
    assert (code, err) == (EXIT_OK, "")
    assert out.splitlines()[-1].split("\t")[2:] == ["ci@example.org", "build 42"]
    number = out.splitlines()[-1].split("\t")[0]
    code, out, err = run(["mail", "read", number, *pop(mail), "--user", "x", "--stls", "--insecure"], capfd)
    assert code == EXIT_OK
    assert "Subject: build 42\n" in out and "with ESMTPSA id" in out
    assert out.endswith("Hello,\n.the build is green.\nGr\u00fc\u00dfe\n")
    code, out, err = run(["mail", "delete", number, *pop(mail), "--user", "x"], capfd)
    assert (code, out) == (EXIT_OK, "+OK bye (1 messages deleted)\n")
    assert run(["mail", "read", number, *pop(mail), "--user", "x"], capfd)[0] == EXIT_PROTOCOL


def test_passwords_come_from_a_file_or_the_environment_never_the_command_line(
    mail: Daemon, tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOCKSVC_PASSWORD", raising=False)
    pw = tmp_path / "pw"
    pw.write_text("wonderland\nignored\n")
    argv = ["mail", "send", *smtp(mail), "--from", "a@b.org", "--to", "c@d.org", *AUTH, "--insecure"]
    assert run([*argv, "--password-file", str(pw)], capfd, b"x\n")[0] == EXIT_OK
    pw.write_text("wrong\n")
    code, out, err = run([*argv, "--password-file", str(pw)], capfd, b"x\n")
    assert (code, out) == (EXIT_PROTOCOL, "")
    assert "refused AUTH: 535 5.7.8 Authentication credentials invalid" in err
    code, _out, err = run([*argv, "--password-file", str(tmp_path / "none")], capfd, b"x\n")
    assert code == EXIT_USAGE and "cannot read the password file" in err
    code, _out, err = run([*argv, "--password", "s3cr3t"], capfd, b"x\n")
    assert code == EXIT_USAGE and "argument --password: not on the command line" in err
    assert "s3cr3t" not in err


def test_a_password_never_crosses_to_another_host_in_the_clear(
    mail: Daemon, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOCKSVC_PASSWORD", "wonderland")
    monkeypatch.setattr("socksvc.client.mailnet.is_local", lambda sock: False)  # as if the host were remote
    argv = ["mail", "send", *smtp(mail), "--from", "a@b.org", "--to", "c@d.org", "--auth", "alice"]
    code, out, err = run(argv, capfd, b"x\n")
    assert (code, out) == (EXIT_USAGE, "")
    assert err.endswith("in the clear: add --starttls\n")
    code, _out, err = run(["mail", "list", *pop(mail), "--user", "x"], capfd)
    assert code == EXIT_USAGE and err.endswith("in the clear: add --stls\n")


def test_server_refusals_are_exit_6(mail: Daemon, capfd: pytest.CaptureFixture[str]) -> None:
    argv = ["mail", "send", *smtp(mail), "--from", "a@b.org", "--to", "c@d.org"]
    code, out, err = run(argv, capfd, b"no auth\n")
    assert (code, out) == (EXIT_PROTOCOL, "")
    port = mail.port("smtp")
    assert err == f"socksvc: 127.0.0.1 port {port} refused the sender a@b.org: 530 5.7.0 Authentication required\n"
    code, out, err = run(["mail", "send", *smtp(mail, "denied"), "--from", "a@b.org", "--to", "c@d.org"], capfd)
    assert (code, out) == (EXIT_PROTOCOL, "")
    assert err == f"socksvc: 127.0.0.1 port {mail.port('denied')} refused us: access denied\n"
    code, _out, err = run([*argv, "--starttls"], capfd, b"\xff\xfe\n")
    assert code == EXIT_USAGE and err == "socksvc: standard input is not UTF-8 text\n"


def test_unknown_host_refused_and_timed_out(capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
        code, _out, err = run(["mail", "list", "127.0.0.1", port, "--user", "x"], capfd)
        assert code == EXIT_CONNECT and err.endswith("connection refused\n")
        s.listen()
        code, _out, err = run(["mail", "list", "127.0.0.1", port, "--user", "x", "-t", "0.3"], capfd)
        assert code == EXIT_TIMEOUT and err.endswith("within 0.3 s\n")

    def unknown(*args: object, **kw: object) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unknown)
    code, _out, err = run(["mail", "send", "nosuch.example", "--from", "a@b.org", "--to", "c@d.org"], capfd)
    assert (code, err) == (EXIT_NOT_FOUND, "socksvc: cannot resolve host 'nosuch.example': name or service not known\n")


def test_bad_command_lines(capfd: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["mail", "send", "--to", "a@b.org"],
        ["mail", "send", "--from", "a <b>", "--to", "c@d.org"],
        ["mail", "read", "0", "--user", "x"],
        ["mail", "list"],
        ["mail"],
    ):
        code, out, err = run(argv, capfd)
        assert (code, out) == (EXIT_USAGE, ""), argv
        assert err.startswith("usage: socksvc mail"), err


def test_hash(tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCKSVC_PASSWORD", "s3cret")
    code, out, _err = run(["mail", "hash"], capfd)
    assert code == EXIT_OK
    assert verify(b"s3cret", parse_hash(out.strip()))
