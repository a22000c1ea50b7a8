"""A real browser for the tests of what a user sees: Debian's headless Chromium, driven by
Playwright, with a fresh profile each time (what a new user's browser remembers: nothing).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# as root, with no sandbox and no calls home (the machine's network is closed)
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@contextmanager
def fresh_browser() -> Iterator:
    """A Playwright browser context on a new, empty profile. Without Chromium the test
    fails in one line that says how to get it (Playwright's own error is a traceback)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: `make test` installs Debian's "
                    "(apt-get install chromium)", pytrace=False)  # fmt: skip

    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=FLAGS, headless=True,
            viewport={"width": 1600, "height": 1000},
        )  # fmt: skip
        context.set_default_timeout(30_000)
        try:
            yield context
        finally:
            context.close()
