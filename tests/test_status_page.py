"""
The status page in a real browser: Debian's chromium (/usr/bin/chromium)
driven by Playwright, against the real daemon. It shows every service,
updates in place when a client connects, logs no console error, and shows
attacker text (a chat topic that is pure HTML; names the nickname rules
would never allow, served by a routed status.json) as text, running nothing.

Set SOCKSVC_SCREENSHOT=PATH to save a screenshot (docs/status-page.png is one).
"""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import daemon
from tests.support.browser import Page as Browser
from tests.support.browser import browser as launch
from tests.support.browser import need_browser

CONFIG = """
[daemon]
http = ["tcp:0:interface=127.0.0.1"]
[services.echo]
listen = ["tcp:0:interface=127.0.0.1", "udp:0:interface=127.0.0.1"]
[services.greeting]
listen = ["tcp:0:interface=127.0.0.1"]
[services.reverse]
listen = ["tcp:0:interface=127.0.0.1"]
[services.chat]
listen = ["tcp:0:interface=127.0.0.1"]
"""
XSS = "<img src=x onerror=alert(1)>"
TOPIC = XSS + "<script>alert(2)</script><b>bold?</b>"

sync_api = need_browser()


@pytest.fixture
def browser() -> Iterator[Browser]:
    """One page in a fresh chromium profile (tests/support/browser.py)."""
    with launch(sync_api) as chromium:
        yield chromium.page(1280, 900)


def chat_member(port: int, nick: bytes, topic: bytes) -> socket.socket:
    """A chat member that set its room's topic (the socket stays open: the caller closes it)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(nick + b"\n/topic " + topic + b"\n")
    got = b""
    while b"set the topic" not in got:
        chunk = s.recv(4096)
        assert chunk, got
        got += chunk
    return s


def figure(page: Any, service: str, name: str) -> str:
    return str(page.text_content(f'[data-service="{service}"] [data-figure="{name}"]'))


def test_status_page_live_and_escaped(browser: Browser) -> None:
    page = browser.page
    with daemon(CONFIG) as d:
        admin = d.port("admin/http")
        mallory = chat_member(d.port("chat"), b"img.src-x_onerror", TOPIC.encode())
        try:
            page.goto(f"http://127.0.0.1:{admin}/")
            for service in ("echo", "greeting", "reverse", "chat", "admin/http"):
                page.wait_for_selector(f'[data-service="{service}"]')
            assert figure(page, "echo", "connections").startswith("0 / 1,024")
            page.evaluate("window.__sameDocument = 1")
            with socket.create_connection(("127.0.0.1", d.port("echo")), timeout=10):
                page.wait_for_function(
                    """() => (document.querySelector('[data-service="echo"] [data-figure="connections"]') || {})
                        .textContent.startsWith('1 / ')""",
                    timeout=20000,
                )
                assert page.evaluate("window.__sameDocument") == 1, "the page was reloaded"
            # The topic is shown as the very text that was sent, and made no element.
            topic = page.text_content('[data-service="chat"] [data-figure="room_list"] td:nth-child(3)')
            assert topic == TOPIC
            assert figure(page, "chat", "names") == "img.src-x_onerror"
            assert page.locator('[data-service="chat"] [data-figure="bus"]').count() == 0, "no bus"
            assert page.locator("main img, main script, main b").count() == 0
            if os.environ.get("SOCKSVC_SCREENSHOT"):
                page.screenshot(path=os.environ["SOCKSVC_SCREENSHOT"], full_page=True)
            # Readable on a phone: nothing wider than the screen.
            page.set_viewport_size({"width": 390, "height": 844})
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        finally:
            mallory.close()
    assert browser.dialogs == []
    assert browser.errors() == []


def test_names_the_server_would_refuse_still_show_as_text(browser: Browser) -> None:
    """The page never relies on the nickname rules: a status.json full of markup renders as text."""
    page = browser.page
    with daemon(CONFIG) as d:
        admin = d.port("admin/http")
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/status.json", timeout=10) as r:
            figures = json.loads(r.read())
        chat = next(s for s in figures["services"] if s["name"] == "chat")
        chat["chat"]["names"] = [XSS, '"><svg onload=alert(4)>', "</td></tr><tr><td>x"]
        chat["chat"]["room_list"] = [{"name": "<script>alert(3)</script>", "members": 1, "topic": XSS}]
        chat["listeners"] = ["<iframe src=javascript:alert(5)>"]
        chat["chat"]["bus"] = {"up": 0, "linked": 1, "nodes": 3, "queued": 2}  # one of two workers linked
        body = json.dumps(figures)
        page.route(
            "**/status.json", lambda route: route.fulfill(status=200, content_type="application/json", body=body)
        )
        page.goto(f"http://127.0.0.1:{admin}/")
        page.wait_for_selector('[data-service="chat"] [data-figure="names"] li')
        names = page.locator('[data-service="chat"] [data-figure="names"] li').all_text_contents()
        assert names == chat["chat"]["names"]
        assert page.text_content('[data-service="chat"] [data-figure="room_list"] td') == "<script>alert(3)</script>"
        assert page.text_content('[data-service="chat"] .listeners') == "<iframe src=javascript:alert(5)>"
        assert figure(page, "chat", "bus") == "down in some workers (1 linked), 3 nodes, 2 queued"
        assert page.locator("main img, main svg, main script, main iframe").count() == 0
    assert browser.dialogs == []
    assert browser.errors() == []
