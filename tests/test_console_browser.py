"""The console end to end in headless Chromium, with a real GPU worker process.

A developer signs up, creates a key, runs a playground render that a real
``python -m gpu_worker`` process (the echo engine until the tiny models are wired in)
picks up from the real Redis, watches its progress, compares before and after, and
finds it in the gallery. Staff look at the usage page; anyone reads the docs. Every
page is saved under test-artifacts/screenshots/ at desktop and phone widths.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from accounts.models import ApiKey, User
from billing import ledger
from billing.models import CreditPack, Purchase, PurchaseStatus
from imaging.models import Render
from platform_site.api_errors import REGISTRY
from tests.browser import browser_context, browser_page, screenshot  # noqa: F401  (fixtures)
from tests.helpers_render import gpu_worker, make_user, product_png, render_env  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
RENDER_TIMEOUT_MS = 90_000


@pytest.fixture
def gpu_worker_process(render_env):
    """``python -m gpu_worker`` on its full pipeline: classical matting, tiny demo scene models."""
    with gpu_worker(None) as worker:
        yield worker


def sign_in(page, base: str, email: str, password: str) -> None:
    page.goto(f"{base}/login/")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/dashboard/$|.*/staff/.*"))


def test_a_developer_runs_a_playground_render_and_finds_it_in_the_gallery(
        browser_page, screenshot, live_server, gpu_worker_process):
    page = browser_page
    base = live_server.url

    page.goto(f"{base}/signup/")
    page.get_by_label("E-mail").fill("dana@example.com")
    page.get_by_label("Password").fill("a-long-browser-password")
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url(f"{base}/dashboard/")
    assert page.get_by_role("heading", name="Overview", exact=True).is_visible()
    # No credits until the address is verified, and the overview says why.
    assert page.get_by_test_id("verify-email-notice").is_visible()
    assert int(page.get_by_test_id("credits-available").inner_text()) == 0
    screenshot("overview-new-account")
    link = re.search(r"https?://[^/\s]+(/verify-email/[^\s/]+/)", mail.outbox[-1].body).group(1)
    page.goto(f"{base}{link}")
    page.wait_for_url(f"{base}/dashboard/")
    assert page.get_by_test_id("verify-email-notice").count() == 0
    assert int(page.get_by_test_id("credits-available").inner_text()) == 220

    page.goto(f"{base}/dashboard/keys/")
    page.get_by_label("Key name").fill("laptop")
    page.get_by_label("Key name").press("Enter")
    page.wait_for_url(f"{base}/dashboard/keys/")
    raw_key = page.get_by_test_id("new-key").input_value()
    key = ApiKey.objects.get(user__email="dana@example.com")
    assert raw_key.startswith(key.display_prefix)
    screenshot("key-created")

    page.goto(f"{base}/dashboard/playground/")
    available_before = int(page.get_by_test_id("credits-available").inner_text())
    screenshot("playground")
    # The URL field is hidden until "Paste a URL" is chosen (JS shows one source at a time).
    assert page.get_by_label("Image URL").is_hidden()
    page.get_by_label("Image file").set_input_files(
        files=[{"name": "product.png", "mimeType": "image/png", "buffer": product_png(96)}])
    page.get_by_label("Scene prompt").fill("on a marble kitchen counter, morning light")
    page.get_by_role("button", name="Render for 22 credits").click()

    page.locator("[data-playground-progress]").wait_for(state="visible")
    assert page.locator("[data-progress-label]").inner_text() != ""
    screenshot("playground-progress")
    page.locator("[data-result-succeeded]").wait_for(state="visible", timeout=RENDER_TIMEOUT_MS)
    assert page.url == f"{base}/dashboard/playground/"  # no page load: the result came in place

    render = Render.objects.get(user__email="dana@example.com")
    assert render.status == "succeeded" and render.api_key is None and render.credits_charged == 22
    for image in ("[data-result-before]", "[data-result-after]"):
        assert page.eval_on_selector(image, "img => img.complete && img.naturalWidth") == 96
    assert int(page.get_by_test_id("credits-available").inner_text()) == available_before - 22
    assert page.locator('[data-playground-progress] li[data-state="done"]').count() == 5

    # The comparison slider works from the keyboard.
    slider = page.get_by_label("Compare before and after")
    slider.focus()
    slider.press("Home")
    assert page.eval_on_selector("[data-compare-result] .compare-frame", "f => f.style.getPropertyValue('--pos')") == "0%"
    for _ in range(25):
        slider.press("ArrowRight")
    assert slider.input_value() == "25"
    screenshot("playground-result")
    page.set_viewport_size(PHONE)
    screenshot("playground-result-phone")
    page.set_viewport_size(DESKTOP)

    page.goto(f"{base}/dashboard/renders/")
    card = page.locator(f'[data-render-id="{render.public_id}"]')
    assert card.is_visible()
    assert card.get_by_text("on a marble kitchen counter").is_visible()
    for image in card.locator("img.thumb").all():
        image.scroll_into_view_if_needed()
        assert page.evaluate("img => img.complete && img.naturalWidth > 0", image.element_handle())
    screenshot("gallery")
    page.set_viewport_size(PHONE)
    screenshot("gallery-phone")
    page.set_viewport_size(DESKTOP)

    card.get_by_role("link").click()
    page.wait_for_url(f"{base}/dashboard/renders/{render.public_id}/")
    assert page.get_by_role("heading", name="Before and after").is_visible()
    assert page.get_by_test_id("matte").is_visible()
    curl = page.get_by_test_id("curl").inner_text()
    assert key.display_prefix in curl and raw_key not in curl
    assert raw_key not in page.content()
    screenshot("render-detail")
    page.set_viewport_size(PHONE)
    screenshot("render-detail-phone")
    page.set_viewport_size(DESKTOP)

    page.goto(f"{base}/dashboard/")
    assert page.get_by_test_id("month-renders").inner_text().startswith("1")
    assert page.get_by_test_id("success-rate").inner_text() == "100.0 %"
    assert page.locator(f'[data-render-id="{render.public_id}"]').is_visible()
    screenshot("overview-after-render")
    page.set_viewport_size(PHONE)
    screenshot("overview-phone")


def test_staff_see_usage_across_accounts(browser_page, screenshot, live_server, render_env):
    page = browser_page
    User.objects.create_user("ops@example.com", "a-long-staff-password", is_staff=True)
    now = timezone.now()
    for n, email in enumerate(("big@example.com", "small@example.com")):
        user = make_user(email, credits=22 * 20)
        for i in range(8 - 5 * n):
            created = now - timedelta(days=i % 9, hours=1)
            status = "failed" if i % 4 == 3 else "succeeded"
            Render.objects.create(
                user=user, status=status, scene_prompt="a beach", created_at=created,
                deadline_at=created + timedelta(minutes=10), started_at=created + timedelta(seconds=1),
                finished_at=created + timedelta(seconds=3 + i), credits_charged=22 if status == "succeeded" else 0,
                error_code="no_subject_found" if status == "failed" else "")
            if status == "succeeded":
                hold = ledger.reserve(user, 22, reference=f"rnd_{n}_{i}", expires_at=now + timedelta(minutes=5))
                ledger.capture(hold.id, reference=f"rnd_{n}_{i}")
        pack = CreditPack.objects.create(name=f"Pack {n}", credits=500, price=1000 + n, currency="usd")
        Purchase.objects.create(user=user, pack=pack, credits=500, amount=1000 + n, currency="usd",
                                status=PurchaseStatus.PAID, paid_at=now)

    sign_in(page, live_server.url, "ops@example.com", "a-long-staff-password")
    page.goto(f"{live_server.url}/staff/usage/")
    assert page.get_by_role("heading", name="Usage across all accounts").is_visible()
    assert page.get_by_test_id("staff-renders").inner_text() == "11"
    assert page.get_by_test_id("top-accounts").get_by_role("link", name="big@example.com").is_visible()
    assert page.get_by_test_id("failures-by-code").get_by_text("no_subject_found").is_visible()
    assert page.get_by_test_id("sales").get_by_text("20.01 USD").is_visible()
    assert page.locator("svg.chart rect").count() > 0
    screenshot("staff-usage")
    page.set_viewport_size(PHONE)
    screenshot("staff-usage-phone")
    page.set_viewport_size(DESKTOP)

    page.get_by_test_id("top-accounts").get_by_role("link", name="big@example.com").click()
    page.wait_for_url(re.compile(r".*/staff/accounts/\d+/$"))
    assert page.get_by_role("heading", name="big@example.com").is_visible()
    assert page.get_by_test_id("account-ledger").get_by_text("rnd_0_0").is_visible()
    screenshot("staff-account")


def test_the_docs_list_every_error_code(browser_page, screenshot, live_server, db):
    page = browser_page
    page.goto(f"{live_server.url}/docs/")

    listed = page.locator("[data-error-code]").evaluate_all("rows => rows.map(r => r.dataset.errorCode)")
    assert sorted(listed) == sorted(REGISTRY)
    assert page.get_by_role("link", name="Swagger UI").is_visible()
    assert page.get_by_role("link", name="Redoc").is_visible()
    screenshot("docs")
    page.set_viewport_size(PHONE)
    screenshot("docs-phone")
