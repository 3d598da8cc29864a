"""
The chat page in a real browser (Debian's chromium through Playwright)
against the real daemon: two tabs and a line user in one room see each
other's lines; a message with <script>, an onerror attribute and bidi
characters shows as visible text and runs nothing; closing a tab tells the
room; the page works from the keyboard alone, names its controls, fits a
phone, and reconnects by itself (its nickname and room back) when the daemon
comes back.

Set SOCKSVC_SCREENSHOT=PATH to save a screenshot (docs/web-chat.png is one).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from tests.support import Daemon, daemon
from tests.support.browser import Page, browser, need_browser
from tests.support.netclients import LineUser

sync_api = need_browser()

CONFIG = """
[services.chat]
listen = ["tcp:0:interface=127.0.0.1"]
web = ["tcp:0:interface=127.0.0.1"]
rooms = ["lobby", "dev"]
history = 20
flood_rate = 0
"""
HOSTILE = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2;alert(2)"> \u202eevil\u202c done'


@pytest.fixture(scope="module")
def chat() -> Iterator[Daemon]:
    with daemon(CONFIG) as d:
        yield d


def enter(page: Page, url: str, nick: str) -> None:
    """Open the page and take a nickname with the keyboard only."""
    p = page.page
    p.goto(url)
    p.wait_for_selector("#status:has-text('Connected')")
    p.keyboard.type(nick)  # the nickname box has the focus (autofocus)
    p.keyboard.press("Enter")
    p.wait_for_selector("#chat:not([hidden])")
    p.wait_for_selector("#room-title:has-text('lobby')")


def log_has(page: Page, text: str) -> None:
    page.page.wait_for_selector(f"#log li:has-text({text!r})", timeout=15000)


def test_two_pages_and_a_line_user_in_one_room(chat: Daemon) -> None:
    url = f"http://127.0.0.1:{chat.port('chat/web')}/"
    nelly = LineUser(chat.port("chat"), "nelly")
    try:
        with browser(sync_api) as b:
            ann, bea = b.page(), b.page(390, 844)  # bea is on a phone
            enter(ann, url, "ann")
            enter(bea, url, "bea")
            nelly.wait_for("-!- ann has joined lobby")
            nelly.wait_for("-!- bea has joined lobby")

            nelly.send("hello pages")
            log_has(ann, "nelly: hello pages")
            log_has(bea, "nelly: hello pages")

            ann.page.keyboard.type("hi from ann")  # the message box has the focus after joining
            ann.page.keyboard.press("Enter")
            nelly.wait_for("<ann> hi from ann")
            log_has(bea, "ann: hi from ann")

            bea.page.fill("#say-text", "/msg nelly psst")
            bea.page.press("#say-text", "Enter")
            nelly.wait_for("*bea* psst")
            nelly.send("/msg bea back")
            log_has(bea, "nelly to you (private): back")

            # who is here: the names list follows joins
            ann.page.wait_for_selector("#people button:has-text('nelly')")
            ann.page.wait_for_selector("#people button:has-text('bea')")

            nelly.send(HOSTILE)
            shown = "nelly: " + HOSTILE.replace("\u202e", "\\u202e").replace("\u202c", "\\u202c")
            for page in (ann, bea):
                log_has(page, "done")
                texts = page.page.locator("#log li").all_text_contents()
                assert any(t.endswith(shown) for t in texts), texts[-3:]
                assert page.page.evaluate("window.pwned") is None
                assert page.page.locator("#log img, #log script").count() == 0
                assert page.dialogs == []

            # the phone layout: the message box fits the screen
            box = bea.page.locator("#say-text").bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
            # screen-reader names
            assert ann.page.get_by_role("log").count() == 1
            assert ann.page.get_by_label("Join or create a room").count() == 1

            shot = os.environ.get("SOCKSVC_SCREENSHOT")
            if shot:
                nelly.send("/me waves at the browsers")
                log_has(ann, "waves at the browsers")
                ann.page.screenshot(path=shot)

            bea.page.close()
            nelly.wait_for("-!- bea has quit*")
            ann.page.wait_for_selector("#log li:has-text('bea left the chat')")
            assert ann.errors() == [] and bea.errors() == []
    finally:
        nelly.close()


def test_switch_rooms_and_history(chat: Daemon) -> None:
    url = f"http://127.0.0.1:{chat.port('chat/web')}/"
    nelly = LineUser(chat.port("chat"), "nelly2")
    try:
        nelly.send("/join dev", "said before you came")
        nelly.wait_for("-!- You are now in dev*")
        with browser(sync_api) as b:
            cy = b.page()
            enter(cy, url, "cy")
            cy.page.click("#rooms button:has-text('dev')")
            cy.page.wait_for_selector("#room-title:has-text('dev')")
            log_has(cy, "said before you came")
            assert cy.page.locator("#log li.history").count() >= 1
            nelly.wait_for("-!- cy has joined dev")
            nelly.send("/topic dev things")
            cy.page.wait_for_selector("#topic:has-text('dev things')")
            assert cy.errors() == []
    finally:
        nelly.close()


def test_reconnects_by_itself_and_takes_its_name_and_room_back() -> None:
    """The daemon restarts on the same port (the one the kernel gave the first): the page comes back alone."""
    first = daemon(CONFIG)
    d = first.__enter__()
    try:
        port = d.port("chat/web")
        with browser(sync_api) as b:
            dee = b.page()
            enter(dee, f"http://127.0.0.1:{port}/", "dee")
            dee.page.click("#rooms button:has-text('dev')")
            dee.page.wait_for_selector("#room-title:has-text('dev')")
            first.__exit__(None, None, None)
            first = None
            dee.page.wait_for_selector("#status:has-text('reconnecting')")
            again = CONFIG.replace('web = ["tcp:0:', f'web = ["tcp:{port}:')
            try:
                second = daemon(again)
                d2 = second.__enter__()
            except Exception as e:  # someone took the port meanwhile
                pytest.skip(f"port {port} could not be bound again: {e}")
            try:
                dee.page.wait_for_selector("#status:has-text('Connected as dee')", timeout=60000)
                nelly = LineUser(d2.port("chat"), "nelly3")
                nelly.send("/join dev")
                nelly.wait_for("-!- You are now in dev*")
                deadline = time.monotonic() + 30
                while True:  # the page asks for its room back right after its nickname
                    nelly.send("/who")
                    if "dee" in nelly.wait_for("-!- Members of dev*"):
                        break
                    assert time.monotonic() < deadline, "the page never came back to dev"
                    dee.page.wait_for_timeout(200)
                nelly.close()
            finally:
                second.__exit__(None, None, None)
    finally:
        if first is not None:
            first.__exit__(None, None, None)
