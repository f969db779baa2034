"""Debian's headless Chromium, driven by Playwright, for the tests of what a person sees.

Never ``playwright install``: the browser comes from apt (``.ci/run`` installs it); without
it, the tests marked :data:`needs_chromium` are skipped, saying why.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.stack import ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-results"
"""Where the browser tests leave their screenshots."""

ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    # This machine's network is closed: no background calls to Google's hosts.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)"
)


@contextmanager
def chromium(*extra_args: str) -> Iterator[Any]:
    """A launched browser (Playwright's sync API), closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[*ARGS, *extra_args])
        try:
            yield browser
        finally:
            browser.close()
