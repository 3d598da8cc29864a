import socket

from tests.support import daemon, echo_round_trip

CONFIG = """
[services.echo]
listen = ["tcp:0:interface=127.0.0.1", "udp:0:interface=127.0.0.1"]
[services.greeting]
listen = ["tcp:0:interface=127.0.0.1"]
[services.reverse]
listen = ["tcp:0:interface=127.0.0.1"]
"""


def test_every_service_answers_plain_sockets() -> None:
    with daemon(CONFIG) as d:
        with socket.create_connection(("127.0.0.1", d.port("echo")), timeout=5) as s:
            assert echo_round_trip(s, b"ping\x00\xff") == b"ping\x00\xff"
        with socket.create_connection(("127.0.0.1", d.port("greeting")), timeout=5) as s:
            assert s.recv(600) == b"Thank you for connecting\r\n"
        with socket.create_connection(("127.0.0.1", d.port("reverse")), timeout=5) as s:
            s.sendall(b"abc\n")
            assert s.recv(100) == b"cba\n"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(5)
            u.sendto(b"dgram", ("127.0.0.1", d.port("echo", "udp")))
            assert u.recvfrom(100)[0] == b"dgram"
