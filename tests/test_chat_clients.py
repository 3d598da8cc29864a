"""
The chat with the clients people use, over real loopback sockets against the
real daemon: a line user (what nc does), WeeChat (weechat-headless) and ii,
all in #lobby, each seeing the others' lines under the right nicknames;
and an IRC client over TLS (an ssl: spec in the irc list, with no line
listener at all).
"""

from __future__ import annotations

import datetime
import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import daemon
from tests.support.netclients import II, Ii, LineUser, WeeChat, scratch, wait_until, weechat_missing

CONFIG = """
[services.chat]
listen = ["tcp:0:interface=127.0.0.1"]
irc = ["tcp:0:interface=127.0.0.1"]
flood_rate = 0
"""


def test_nc_weechat_and_ii_in_lobby_see_each_other() -> None:
    missing = weechat_missing() or (None if II else "ii is missing (apt-get install ii; .ci/run does)")
    if missing:
        pytest.skip(missing)
    with daemon(CONFIG) as d, scratch("socksvc-weechat-") as wee_home, scratch("socksvc-ii-") as ii_home:
        port, irc_port = d.port("chat"), d.port("chat/irc")
        nelly = LineUser(port, "nelly")
        wee = WeeChat(irc_port, "wee", wee_home)
        ii = Ii(irc_port, "iiuser", ii_home)
        try:
            nelly.wait_for("-!- wee has joined lobby")
            nelly.wait_for("-!- iiuser has joined lobby")

            nelly.send("hello from nc", "/me waves")
            wait_until(lambda: wee.saw(r"\tnelly\thello from nc$"), "WeeChat to show nelly's line")
            wait_until(lambda: wee.saw(r"\t \*\tnelly waves$"), "WeeChat to show nelly's action")
            wait_until(lambda: ii.saw(r"<nelly> hello from nc$"), "ii to show nelly's line")

            wee.say("hello from wee")
            wee.say("/me bows")
            nelly.wait_for("<wee> hello from wee")
            nelly.wait_for("* wee bows")
            wait_until(lambda: ii.saw(r"<wee> hello from wee$"), "ii to show wee's line")

            ii.say("hello from ii")
            nelly.wait_for("<iiuser> hello from ii")
            wait_until(lambda: wee.saw(r"\tiiuser\thello from ii$"), "WeeChat to show iiuser's line")

            wee.say("/topic lunch at noon")
            nelly.wait_for("-!- wee set the topic of lobby to: lunch at noon")
            ii.stop()
            nelly.wait_for("-!- iiuser has quit*")
            wait_until(lambda: wee.saw(r"iiuser.* has quit"), "WeeChat to show iiuser's quit")
        finally:
            wee.stop()
            ii.stop()
            nelly.close()


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = tmp / "key.pem", tmp / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def test_irc_over_tls(tmp_path: Path) -> None:
    key, cert = self_signed(tmp_path)
    config = f"""
[services.chat]
irc = ["ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"]
"""
    with daemon(config) as d:
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        raw = socket.create_connection(("127.0.0.1", d.port("chat/irc")), timeout=10)
        with context.wrap_socket(raw) as tls:
            tls.sendall(b"NICK tess\r\nUSER tess 0 * :Tess\r\nJOIN #lobby\r\n")
            got = b""
            while b"366 tess #lobby" not in got:
                chunk = tls.recv(65536)
                assert chunk, got
                got += chunk
            assert b" 001 tess :Welcome to socksvc chat, tess" in got
            assert b":tess!tess@chat.socksvc JOIN #lobby" in got


def test_irc_and_web_under_workers() -> None:
    """With workers, chat is served by worker 0 alone: its irc and web sockets get their own factories there."""
    config = '[daemon]\nworkers = 2\n[services.chat]\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
    config += 'irc = ["tcp:0:interface=127.0.0.1"]\nweb = ["tcp:0:interface=127.0.0.1"]\n'
    with daemon(config) as d:
        with socket.create_connection(("127.0.0.1", d.port("chat/irc")), timeout=10) as irc:
            irc.sendall(b"PING :workers\r\n")
            assert irc.recv(100) == b":chat.socksvc PONG chat.socksvc :workers\r\n"
        with socket.create_connection(("127.0.0.1", d.port("chat/web")), timeout=10) as web:
            web.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert web.recv(100).startswith(b"HTTP/1.1 200 OK\r\n")
