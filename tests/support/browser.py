"""
A real browser for page tests: Debian's chromium (/usr/bin/chromium), driven
by Playwright's sync API (never `playwright install`: its downloaded browser
is not used), headless, in a fresh profile removed afterwards. Each page
records its console errors, uncaught exceptions and dialogs (an alert() that
ran is a dialog).

Tests that use it skip with a one-line reason where chromium or Playwright is
missing: call L{need_browser} at module level.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def need_browser() -> Any:
    """Playwright's sync API, or skip the module saying what is missing."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)", allow_module_level=True)
    return pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the test extra has it)")


class Page:
    """One page (tab), with everything it reported."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.console: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))

        def dialog(d: Any) -> None:
            self.dialogs.append(d.message)
            d.dismiss()

        page.on("dialog", dialog)

    def errors(self) -> list[str]:
        return [line for line in self.console if line.startswith(("error", "pageerror"))]


class Browser:
    """A chromium with a fresh profile; L{page} opens a tab."""

    def __init__(self, context: Any) -> None:
        self.context = context

    def page(self, width: int = 1280, height: int = 800) -> Page:
        page = self.context.new_page()
        page.set_viewport_size({"width": width, "height": height})
        return Page(page)


@contextlib.contextmanager
def browser(sync_api: Any) -> Iterator[Browser]:
    profile = tempfile.mkdtemp(prefix="socksvc-chromium-")
    try:
        with sync_api.sync_playwright() as p:
            context = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                yield Browser(context)
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
