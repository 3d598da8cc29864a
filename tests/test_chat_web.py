"""
The chat's web listener over StringTransport with a fake clock: the page and
its headers, the WebSocket's limits (Origin, message size, pings, handshake
time and size), and a browser's member in the same rooms as line clients.
"""

from __future__ import annotations

import pytest

from socksvc.services.chat import page
from socksvc.services.chat.weblimits import HANDSHAKE_TIMEOUT, MAX_REQUEST, same_origin
from tests.support import peer
from tests.support import websocket as ws
from tests.support.chat import Chat, CountingTransport
from tests.support.irc import WebClient, irc_client


def http(chat: Chat, request: bytes) -> tuple[str, dict[str, str], bytes, CountingTransport]:
    """One plain HTTP request: status line, headers, body, and the transport (closed after)."""
    client = WebClient.__new__(WebClient)
    chat.port += 1
    addr = peer(port=chat.port)
    factory = chat.state.views.get("_web_factory")
    if factory is None:
        from socksvc.services.chat import web

        factory = chat.state.views["_web_factory"] = web.make_factory(chat.ctx)
    client.proto = factory.buildProtocol(addr)
    transport = CountingTransport(peerAddress=addr)
    client.proto.makeConnection(transport)
    client.proto.dataReceived(request)
    head, _, body = transport.value().partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines)}
    return status, headers, body, transport


# -- the page -----------------------------------------------------------------------


def test_page_files_and_their_security_headers() -> None:
    chat = Chat()
    for path, kind in (("/", "text/html"), ("/chat.js", "text/javascript"), ("/chat.css", "text/css")):
        status, headers, body, transport = http(chat, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:7080\r\n\r\n".encode())
        assert status == "HTTP/1.1 200 OK"
        assert headers["content-type"].startswith(kind)
        assert int(headers["content-length"]) == len(body) == len(page.FILES[path][1])
        csp = headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "style-src 'self'" in csp
        assert "connect-src 'self' ws://127.0.0.1:7080 wss://127.0.0.1:7080" in csp
        assert "require-trusted-types-for 'script'" in csp and "frame-ancestors 'none'" in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert transport.disconnecting  # one request per connection
    status, headers, body, _ = http(chat, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == "HTTP/1.1 200 OK" and body == b"" and int(headers["content-length"]) > 0


def test_page_has_no_html_insertion_and_no_external_asset() -> None:
    assert "innerHTML" not in page.JS and "insertAdjacentHTML" not in page.JS and "eval(" not in page.JS
    assert "http://" not in page.HTML + page.JS + page.CSS and "https://" not in page.HTML + page.CSS
    assert "<script>" not in page.HTML and "style=" not in page.HTML  # nothing inline: the CSP forbids it
    for label in ('for="nick-input"', 'for="say-text"', 'for="room-input"', 'role="log"', 'role="status"'):
        assert label in page.HTML


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", "404"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", "405"),
        (b"GET / SPDY/3\r\nHost: x\r\n\r\n", "400"),
        (b"garbage\r\n\r\n", "400"),
        (b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", "426"),  # the WebSocket path without an upgrade
    ],
)
def test_bad_requests_get_one_short_answer(request_bytes: bytes, status: str) -> None:
    got, _headers, body, transport = http(Chat(), request_bytes)
    assert got.split(" ")[1] == status
    assert len(body) < 100 and transport.disconnecting


def test_request_head_is_bounded() -> None:
    chat = Chat()
    got, _, _, transport = http(chat, b"GET / HTTP/1.1\r\nX-Junk: " + b"a" * (MAX_REQUEST + 10))
    assert got.split(" ")[1] == "431" and transport.disconnecting


def test_slow_request_head_times_out() -> None:
    chat = Chat()
    _, _, _, transport = http(chat, b"GET / HTTP/1.1\r\n")
    assert transport.value() == b"" and transport.connected
    chat.clock.advance(HANDSHAKE_TIMEOUT)
    assert not transport.connected or transport.disconnecting


@pytest.mark.parametrize("host", ["evil.example\r\nX: y", "a b", "x'y", "<script>"])
def test_a_strange_host_is_not_put_in_the_policy(host: str) -> None:
    assert page.clean_host(host) == ""
    assert "ws://" not in page.headers(page.clean_host(host))[0][1]


# -- the WebSocket's limits ---------------------------------------------------------------


def test_origin_check() -> None:
    assert same_origin("http://127.0.0.1:7080", "127.0.0.1:7080", False, ())
    assert same_origin("HTTP://LOCALHOST:7080/", "localhost:7080", False, ())
    assert same_origin("https://chat.example", "chat.example:443", True, ())
    assert not same_origin("http://evil.example", "127.0.0.1:7080", False, ())
    assert not same_origin("http://127.0.0.1:7081", "127.0.0.1:7080", False, ())
    assert not same_origin("https://127.0.0.1:7080", "127.0.0.1:7080", False, ())
    assert not same_origin("null", "127.0.0.1:7080", False, ())
    assert same_origin("https://app.example", "127.0.0.1:7080", False, ("https://app.example",))
    chat = Chat('web_origins = ["https://app.example"]')
    assert WebClient(chat).status == "HTTP/1.1 101 Switching Protocols"
    assert WebClient(chat, origin=None).status.startswith("HTTP/1.1 101")  # not a browser
    assert WebClient(chat, origin="https://app.example").status.startswith("HTTP/1.1 101")
    refused = WebClient(chat, origin="http://evil.example")
    assert refused.status == "HTTP/1.1 403 Refused"
    assert refused.proto.close_reason == "websocket refused: origin not allowed"


def test_message_over_max_line_closes_with_1009() -> None:
    chat = Chat("max_line = 100")
    c = WebClient(chat)
    c.events()
    c.proto.dataReceived(ws.frame("x" * 101))
    ((opcode, payload),) = c.frames()
    assert opcode == ws.CLOSE and payload[:2] == (1009).to_bytes(2, "big")
    chat.clock.advance(10)
    assert not c.transport.connected or c.transport.disconnecting
    assert "exceeds payload limit of 100" in c.proto.close_reason


def test_binary_messages_are_refused() -> None:
    chat = Chat()
    c = WebClient(chat)
    c.events()
    c.proto.dataReceived(ws.frame(b"\x00\x01", opcode=ws.BINARY))
    ((opcode, payload),) = c.frames()
    assert opcode == ws.CLOSE and payload[:2] == (1003).to_bytes(2, "big")


def test_pings_and_the_ping_timeout() -> None:
    chat = Chat("ping_interval = 30\nping_timeout = 10")
    alice = chat.connect("alice")
    c = WebClient(chat)
    c.send("carol")
    c.events()
    alice.lines()
    chat.clock.advance(30)
    assert [op for op, _ in c.frames()] == [ws.PING]
    chat.clock.advance(10)
    assert not c.transport.connected or c.transport.disconnecting
    c.lose()  # what the aborted transport says next
    assert alice.lines() == ["-!- carol has quit (connection closed)"]


# -- a browser's member, in the same rooms ---------------------------------------------------


def test_register_talk_and_see_the_room() -> None:
    chat = Chat("history = 5")
    alice = chat.connect("alice")
    alice.send("hi <script>alert(1)</script> \u202eevil")
    bob = irc_client(chat, "bob", "#lobby")
    c = WebClient(chat)
    events = c.events()
    assert [e["t"] for e in events] == ["notice", "notice"]
    assert events[0]["text"] == "Welcome to socksvc chat"
    c.send("carol")
    you, room = c.events()
    assert you == {"t": "you", "nick": "carol", "old": None}
    assert room["t"] == "room" and room["room"] == "lobby" and room["size"] == 3
    assert room["members"] == ["alice", "bob", "carol"]
    (said,) = room["history"]
    assert said["nick"] == "alice" and said["text"] == "hi <script>alert(1)</script> \\u202eevil"
    assert alice.lines()[-1] == "-!- carol has joined lobby"
    bob.lines()

    c.send("hello all", "/me waves", "/msg alice psst")
    assert alice.lines() == ["<carol> hello all", "* carol waves", "*carol* psst"]
    assert bob.lines() == [
        ":carol!carol@chat.socksvc PRIVMSG #lobby :hello all",
        ":carol!carol@chat.socksvc PRIVMSG #lobby :\x01ACTION waves\x01",
    ]
    assert c.events() == [{"t": "sent", "to": "alice", "text": "psst", "kind": "say"}]
    alice.send("hey carol", "/msg carol back")
    bob.send("PRIVMSG #lobby :\x01ACTION bows\x01")
    said1, private, said2 = c.events()
    assert said1 == {"t": "say", "nick": "alice", "text": "hey carol"}
    assert private == {"t": "private", "from": "alice", "to": "carol", "text": "back", "kind": "say"}
    assert (said2["nick"], said2["kind"], said2["text"]) == ("bob", "action", "bows")


def test_switch_rooms_who_rooms_topic_and_errors() -> None:
    chat = Chat('rooms = ["lobby", "dev"]\nflood_rate = 0')
    alice = chat.connect("alice")
    c = WebClient(chat)
    c.send("carol")
    c.events()
    c.send("/join dev")
    room = c.events()[-1]
    assert room["t"] == "room" and room["room"] == "dev" and room["members"] == ["carol"]
    assert alice.lines()[-1] == "-!- carol has left lobby"
    c.send("/who", "/rooms", "/topic dev talk", "/join l0bby", "/bogus")
    who, rooms, topic, err1, err2 = c.events()
    assert who == {"t": "who", "room": "dev", "size": 1, "members": ["carol"]}
    assert rooms == {"t": "rooms", "rooms": [["lobby", 1], ["dev", 1]]}
    assert topic == {"t": "topic", "room": "dev", "nick": "carol", "text": "dev talk"}
    assert err1["t"] == "error" and err1["code"] == "room" and "looks like" in err1["text"]
    assert err2["t"] == "error" and "unknown command" in err2["text"]


def test_closing_the_tab_tells_the_room() -> None:
    chat = Chat()
    alice = chat.connect("alice")
    c = WebClient(chat)
    c.send("carol")
    alice.lines()
    c.lose()
    assert alice.lines() == ["-!- carol has quit (connection closed)"]
    assert "carol" not in chat.state.nicks


def test_quit_closes_the_websocket() -> None:
    chat = Chat()
    c = WebClient(chat)
    c.send("carol")
    c.events()
    c.send("/quit see you")
    events = c.events()
    assert events[-1] == {"t": "bye", "text": "Disconnected: quit"}
    assert [op for op, _ in c.frames()] in ([], [ws.CLOSE])


def test_flood_control_and_nickname_refusals() -> None:
    chat = Chat("flood_burst = 3\nflood_rate = 1")
    chat.connect("alice")
    c = WebClient(chat)
    c.events()
    c.send("alice")
    (err,) = c.events()
    assert err["t"] == "error" and err["code"] == "nick_taken"
    c.send("carol")
    c.events()
    chat.clock.advance(5)
    c.send("1", "2", "3", "4", "5")
    assert [e["t"] for e in c.events()] == ["error"]  # one flood notice; lines 1 to 3 went to the room


def test_slow_browser_is_stalled_and_cut_off_alone() -> None:
    chat = Chat("send_queue_max = 4096\nstall_timeout = 5\nflood_rate = 0")
    alice = chat.connect("alice")
    c = WebClient(chat, buffer=1000)
    c.send("carol")
    for i in range(200):
        alice.send(f"line {i} " + "x" * 50)
    assert c.member.stalled
    chat.clock.advance(5)
    assert "carol has quit (not reading)" in alice.lines()[-1]


def test_auditorium_room_sends_no_roster_until_asked() -> None:
    chat = Chat("announce_max = 2\nflood_rate = 0")
    for nick in ("a1", "a2", "a3"):
        chat.connect(nick)
    c = WebClient(chat)
    c.events()
    c.send("carol")
    _you, room = c.events()
    assert room["live"] is False and room["members"] == ["carol"] and room["size"] == 4
    c.send("/who")
    assert c.events()[0]["members"] == ["a1", "a2", "a3", "carol"]


def test_input_budget_holds_reading_then_cuts_off() -> None:
    chat = Chat("throttle_kick = 10\ninput_line_rate = 10\ninput_burst = 1")
    alice = chat.connect("alice")
    c = WebClient(chat)
    c.send("carol")
    alice.lines()
    c.proto.dataReceived(b"".join(ws.frame("/who") for _ in range(500)))
    assert c.transport.producerState == "paused"
    for _ in range(11):
        chat.clock.advance(1)  # over budget all along, a second at a time
    assert c.proto.close_reason == "sending too fast"
    assert alice.lines()[-1] == "-!- carol has quit (sending too fast)"


@pytest.mark.parametrize("origin", ["chat.example.org", "https://x.example/path", "javascript:alert(1)", ""])
def test_web_origins_must_be_origins(origin: str) -> None:
    from socksvc.config.loader import ConfigError
    from socksvc.services.catalogue import loads

    with pytest.raises(ConfigError, match="web_origins"):
        loads(f'[services.chat]\nlisten = ["tcp:0"]\nweb_origins = ["{origin}"]\n', "t.toml")
