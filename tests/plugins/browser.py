"""pytest plugin: headless Debian Chromium driven by Playwright for Python (sync API).

Register with ``pytest_plugins = ["tests.plugins.browser"]`` (or ``-p tests.plugins.browser``).

Fixtures:

* ``browser`` (session) -> ``playwright.sync_api.Browser``: ``/usr/bin/chromium`` (override with
  ``CHROMIUM_PATH``), headless, flags for root + closed network. Never runs ``playwright install``.
* ``page`` (function) -> ``playwright.sync_api.Page``: a fresh context with a 1280x800 viewport,
  closed after the test.
* ``screenshot`` (function) -> ``Callable[[str], Path]``: saves a full-page screenshot of ``page``
  as ``test-artifacts/<test name>-<label>.png`` and returns the path.

Helper: :func:`save_screenshot(page, name) <save_screenshot>` for any page.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS_DIR = REPO_ROOT / "test-artifacts"
CHROMIUM_PATH = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}


def save_screenshot(page: Page, name: str, *, full_page: bool = True) -> Path:
    """Saves a PNG screenshot into test-artifacts/ (gitignored) and returns its path."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "screenshot"
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS_DIR / f"{safe}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


@pytest.fixture(scope="session")
def playwright_instance() -> Iterator[Playwright]:
    """The Playwright driver for the session."""
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="session")
def browser(playwright_instance: Playwright) -> Iterator[Browser]:
    """Headless Debian Chromium for the session."""
    if not Path(CHROMIUM_PATH).is_file():
        raise RuntimeError(
            f"{CHROMIUM_PATH} not found; run `bash scripts/install-system-deps.sh` "
            "(or `make system-deps`) as root. Do not run `playwright install`."
        )
    browser = playwright_instance.chromium.launch(
        executable_path=CHROMIUM_PATH, headless=True, args=CHROMIUM_ARGS
    )
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page in a fresh browser context (1280x800), closed after the test."""
    context = browser.new_context(viewport={"width": VIEWPORT["width"], "height": VIEWPORT["height"]})
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def screenshot(page: Page, request: pytest.FixtureRequest) -> Callable[[str], Path]:
    """``screenshot("label")`` saves test-artifacts/<test name>-<label>.png of ``page``."""

    def take(label: str) -> Path:
        return save_screenshot(page, f"{request.node.name}-{label}")

    return take
