"""Headless Chromium for end-to-end tests: Debian's /usr/bin/chromium through Playwright.

Import the three fixtures into your test module (importing a fixture is what makes
pytest see it there, and the other two depend on ``browser_context``)::

    import pytest
    from tests.browser import browser_context, browser_page, screenshot  # noqa: F401

    @pytest.mark.browser
    @pytest.mark.django_db(transaction=True)
    def test_it_shows_the_docs(browser_page, screenshot, live_server):
        browser_page.goto(live_server.url + "/docs/")
        screenshot("docs")

- ``browser_context``: a fresh Chromium with its own throwaway user-data-dir (no
  cookies, cache or storage shared between tests);
- ``browser_page``: a page in it, with a 15 s default timeout;
- ``screenshot(step)``: saves ``test-artifacts/screenshots/<test name>/NN-<step>.png``
  (numbered in the order taken); a page that failed a test is saved as ``NN-failed.png``.

The browser makes no requests of its own (background networking, component updates,
sync and QUIC are off), so it only talks to the live server on loopback. Tests skip,
saying why, only when /usr/bin/chromium is missing; ``make test`` installs it.

Playwright's sync API keeps an asyncio loop registered on the test thread, which makes
Django refuse ORM calls from that thread; the fixture sets DJANGO_ALLOW_ASYNC_UNSAFE for
the duration of the test so the test may still check the database directly, and closes
the connections the test opened that way (see ``_remember_connections_opened_here``).
Use ``live_server`` with ``@pytest.mark.django_db(transaction=True)``: the server runs
in another thread and only sees committed data.
"""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created
from playwright.sync_api import BrowserContext, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # runs as root in containers, where the sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT_DIR = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
DEFAULT_TIMEOUT_MS = 15_000
VIEWPORT = {"width": 1280, "height": 900}


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:120] or "step"


@pytest.fixture
def browser_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[BrowserContext]:
    """A fresh headless Chromium (its own user-data-dir), closed after the test."""
    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install chromium`, "
            "or run `make test`, which installs it)"
        )
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    profile = tmp_path / "chromium-profile"
    opened = _remember_connections_opened_here()
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                user_data_dir=str(profile),
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_ARGS,
                viewport=VIEWPORT,
            )
            try:
                yield context
            finally:
                context.close()
    finally:
        connection_created.disconnect(dispatch_uid=_CONNECTION_WATCH)
        for connection in opened:
            connection.close()
        shutil.rmtree(profile, ignore_errors=True)


_CONNECTION_WATCH = "tests.browser.connections"


def _remember_connections_opened_here() -> list[BaseDatabaseWrapper]:
    """Database connections the test itself opens while Playwright runs.

    Django keeps connections in context variables, and with Playwright's greenlets the
    test body ends up with its own connection objects, which pytest-django never sees
    and so never closes; on PostgreSQL the test database then cannot be dropped at
    the end of the run ("is being accessed by other users"). The fixture closes them.
    The live server's request threads close their own.
    """
    test_thread = threading.get_ident()
    opened: list[BaseDatabaseWrapper] = []

    def remember(sender: object, connection: BaseDatabaseWrapper, **kwargs: object) -> None:
        if threading.get_ident() == test_thread:
            opened.append(connection)

    connection_created.connect(remember, weak=False, dispatch_uid=_CONNECTION_WATCH)
    return opened


@pytest.fixture
def browser_page(browser_context: BrowserContext, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A page in ``browser_context``; saved as a screenshot if the test fails."""
    page = browser_context.pages[0] if browser_context.pages else browser_context.new_page()
    page.set_default_timeout(DEFAULT_TIMEOUT_MS)
    failures_before = request.session.testsfailed
    yield page
    # The call phase's report is counted before teardown runs, so this sees the failure.
    if request.session.testsfailed > failures_before and not page.is_closed():
        _save(page, request.node.name, "failed", _next_index(request.node.name))


def _test_dir(test_name: str) -> Path:
    return SCREENSHOT_DIR / _safe_name(test_name)


def _next_index(test_name: str) -> int:
    directory = _test_dir(test_name)
    return len(list(directory.glob("*.png"))) + 1 if directory.exists() else 1


def _save(page: Page, test_name: str, step: str, index: int) -> Path:
    path = _test_dir(test_name) / f"{index:02d}-{_safe_name(step)}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture
def screenshot(browser_page: Page, request: pytest.FixtureRequest) -> Callable[..., Path]:
    """``screenshot(step, page=None) -> Path``: a full-page PNG of the current page.

    Earlier screenshots of the same test are removed first, so the folder always shows
    exactly the latest run, in order.
    """
    test_name = request.node.name
    shutil.rmtree(_test_dir(test_name), ignore_errors=True)
    counter = iter(range(1, 10_000))

    def take(step: str, page: Page | None = None) -> Path:
        return _save(page or browser_page, test_name, step, next(counter))

    return take
