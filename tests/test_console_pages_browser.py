"""The landing page, error pages, failed-render progress and offline docs, in headless Chromium.

Every page is saved under test-artifacts/screenshots/<test>/ (tests.browser) and, for
a quick look, as /tmp/screens/<name>.png. Requests are watched at the browser's
network layer: anything addressed off loopback is recorded and refused, so a page
that would fetch a web font or a CDN logo fails its test here instead of phoning home
in production. (Performance resource entries are no witness: Chrome also lists a load
that its Content-Security-Policy refused, which never left the browser.)
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.utils import timezone
from playwright.sync_api import Page, Route
from rq.job import Job

from accounts.models import User
from imaging.dispatch import redis_connection
from imaging.models import Render
from tests.browser import browser_context, browser_page, screenshot  # noqa: F401  (fixtures)
from tests.helpers_render import gpu_worker, make_user, product_png, render_env  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENS = Path("/tmp/screens")
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
LOOPBACK = {"localhost", "127.0.0.1", "::1"}
PASSWORD = "correct horse battery"  # tests.helpers_render.make_user's
RENDER_TIMEOUT_MS = 90_000


def shot(screenshot: Callable[..., Path], name: str) -> None:
    """The fixture's numbered screenshot, copied to /tmp/screens/<name>.png."""
    SCREENS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(screenshot(name), SCREENS / f"{name}.png")


def refuse_off_loopback(page: Page) -> list[str]:
    """Records and aborts every request the page sends to a host other than loopback."""
    outside: list[str] = []

    def handle(route: Route) -> None:
        if urlsplit(route.request.url).hostname in LOOPBACK:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.context.route("**/*", handle)
    return outside


def sign_in(page: Page, base: str, email: str) -> None:
    page.goto(f"{base}/login/")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/dashboard/")


def open_playground_with_a_product(page: Page, base: str, email: str, size: int) -> None:
    """Signs in and puts a product photo of ``size`` pixels in the playground's upload field."""
    sign_in(page, base, email)
    page.goto(f"{base}/dashboard/playground/")
    page.get_by_label("Image file").set_input_files(
        files=[{"name": "product.png", "mimeType": "image/png", "buffer": product_png(size)}])


def step_states(page: Page, panel: str) -> dict[str, str]:
    return page.locator(f"{panel} [data-step]").evaluate_all(
        "items => Object.fromEntries(items.map(i => [i.dataset.step, i.dataset.state || '']))")


FAILED_AT_GENERATING = {"queued": "done", "matting": "done", "generating": "failed",
                        "composing": "not-reached", "done": "not-reached"}


def test_the_landing_page_shows_its_before_and_after_and_its_links_work(
        browser_page, screenshot, live_server):
    from billing.models import CreditPack

    # Earlier transactional tests may have flushed the seeded packs: the page reads the table.
    for name, credits, price in (("Starter", 1100, 1000), ("Studio", 5500, 4500)):
        CreditPack.objects.get_or_create(name=name, defaults={"credits": credits, "price": price})
    page = browser_page
    base = live_server.url
    outside = refuse_off_loopback(page)

    page.goto(f"{base}/")
    assert page.get_by_role("heading", name="Replace the background of your product photos").is_visible()
    images = page.locator('[data-testid="landing-sample"] img')
    assert images.count() == 2
    page.wait_for_function("""() => [...document.querySelectorAll('[data-testid="landing-sample"] img')]
                                     .every(img => img.complete && img.naturalWidth > 0)""")
    assert page.get_by_label("Compare before and after").is_visible()  # console.js overlaid them
    assert page.get_by_test_id("price-per-call").inner_text() == "22 credits a call"
    assert page.get_by_test_id("landing-packs").get_by_role("row").count() >= 2
    shot(screenshot, "landing")
    page.set_viewport_size(PHONE)
    shot(screenshot, "landing-phone")
    page.set_viewport_size(DESKTOP)
    assert outside == []

    page.get_by_test_id("landing-actions").get_by_role("link", name="Read the docs").click()
    page.wait_for_url(f"{base}/docs/")
    page.go_back()
    page.get_by_test_id("landing-actions").get_by_role("link", name="Sign up").click()
    page.wait_for_url(f"{base}/signup/")
    assert page.get_by_role("button", name="Create account").is_visible()

    make_user("dana@example.com")
    sign_in(page, base, "dana@example.com")
    page.goto(f"{base}/")
    page.get_by_role("link", name="Open your dashboard").first.click()
    page.wait_for_url(f"{base}/dashboard/")


def failed_at_generating(user: User) -> Render:
    """A render the worker failed while generating: the row, and its job's meta in Redis."""
    created = timezone.now() - timedelta(seconds=40)
    render = Render.objects.create(
        user=user, status="failed", scene_prompt="on a marble kitchen counter", job_id="job-failed-1",
        error_code="model_unavailable",
        error_message="A model the render needs is not available on the GPU worker; nothing was charged.",
        created_at=created, deadline_at=created + timedelta(minutes=10),
        started_at=created + timedelta(seconds=1), finished_at=created + timedelta(seconds=6))
    meta = {"stage": "generating", "stage_started_at": created.isoformat(),
            "error": {"code": "model_unavailable", "message": "scene weights are missing"}}
    redis_connection().hset(Job.key_for(render.job_id), "meta", json.dumps(meta))
    redis_connection().expire(Job.key_for(render.job_id), 600)
    return render


def test_a_render_that_failed_while_generating_shows_where_it_stopped(
        browser_page, screenshot, live_server):
    page = browser_page
    user = make_user("dana@example.com")
    render = failed_at_generating(user)

    sign_in(page, live_server.url, "dana@example.com")
    page.goto(f"{live_server.url}/dashboard/renders/{render.public_id}/")

    assert step_states(page, ".progress-panel") == FAILED_AT_GENERATING
    assert page.locator("[data-progress-label]").inner_text() == "Failed while generating the scene"
    assert page.get_by_test_id("error-code").inner_text() == "model_unavailable"
    # What the cross and the words say, not colour alone.
    failed = page.locator('[data-step="generating"]')
    assert failed.evaluate("li => getComputedStyle(li, '::before').content") == '"✗ "'
    composing = page.locator('[data-step="composing"]')
    assert composing.evaluate("li => getComputedStyle(li, '::after').content") == '" (not reached)"'
    shot(screenshot, "render-failed-at-generating")


def test_a_playground_render_without_scene_weights_fails_at_generating_and_says_why(
        browser_page, screenshot, live_server, render_env, tmp_path):
    page = browser_page
    user = make_user("dana@example.com")

    # The production scene model with an empty model directory: a fresh machine.
    with gpu_worker(None, SCENE_MODEL="sdxl-inpainting", MODEL_DIR=str(tmp_path), HF_HUB_OFFLINE="1"):
        open_playground_with_a_product(page, live_server.url, "dana@example.com", 96)
        page.get_by_role("button", name="soft grey paper sweep").click()
        assert page.get_by_label("Scene prompt").input_value() == "soft grey paper sweep"
        page.get_by_label("Scene prompt").fill("on a marble kitchen counter, morning light")
        page.get_by_role("button", name="Render for 22 credits").click()
        page.locator("[data-result-failed]").wait_for(state="visible", timeout=RENDER_TIMEOUT_MS)

    render = Render.objects.get(user=user)
    assert render.status == "failed" and render.error_code == "model_unavailable"
    assert render.failed_stage == "generating"  # kept on the render, not only in Redis
    assert step_states(page, "[data-playground-progress]") == FAILED_AT_GENERATING
    status = page.request.get(f"{live_server.url}/dashboard/renders/{render.public_id}/status").json()
    message = status["error"]["message"]
    shown = page.locator("[data-result-error-message]")
    # All of it, with its `backticked` commands set as code.
    assert shown.inner_text() == message.replace("`", "") != ""
    assert shown.locator("code").all_inner_texts() == re.findall(r"`([^`]+)`", message)
    assert shown.evaluate("p => p.scrollWidth <= p.clientWidth && p.scrollHeight <= p.clientHeight + 1")
    assert page.locator("[data-result-error-code]").inner_text() == "model_unavailable"
    shot(screenshot, "playground-failed-at-generating")


def test_a_studio_render_in_the_playground_finishes_on_a_fresh_machine_without_weights(
        browser_page, screenshot, live_server, render_env, tmp_path):
    page = browser_page
    user = make_user("erin@example.com")

    # The default configuration on a fresh machine: SCENE_MODEL=auto, no weights at all.
    with gpu_worker(None, SCENE_MODEL="auto", MODEL_DIR=str(tmp_path), HF_HUB_OFFLINE="1"):
        open_playground_with_a_product(page, live_server.url, "erin@example.com", 160)
        page.get_by_role("button", name="pure white background").click()
        page.get_by_role("button", name="Render for 22 credits").click()
        page.locator("[data-result-succeeded]").wait_for(state="visible", timeout=RENDER_TIMEOUT_MS)
        page.locator("[data-result-after]").evaluate(
            "img => img.complete || new Promise(done => img.addEventListener('load', done))")

    render = Render.objects.get(user=user)
    assert render.status == "succeeded" and render.scene["engine"] == "studio"
    after = page.locator("[data-result-after]")
    assert after.evaluate("img => img.naturalWidth") == 160
    assert step_states(page, "[data-playground-progress]") == {
        "queued": "done", "matting": "done", "generating": "done", "composing": "done", "done": "done"}
    shot(screenshot, "playground-studio-render")
    page.goto(f"{live_server.url}/dashboard/renders/{render.public_id}/")
    assert "studio engine" in page.get_by_test_id("result-scene").inner_text()
    assert "(100%)" in page.get_by_test_id("result-exactness").inner_text()
    shot(screenshot, "render-detail-studio")


def test_a_signed_in_user_who_is_not_staff_gets_the_styled_403(browser_page, screenshot, live_server):
    page = browser_page
    make_user("dana@example.com")  # not staff
    sign_in(page, live_server.url, "dana@example.com")

    response = page.goto(f"{live_server.url}/staff/usage/")

    assert response.status == 403
    assert page.get_by_role("heading", name="You don't have access to this page").is_visible()
    assert page.get_by_role("navigation", name="Main").get_by_role("link", name="Overview").is_visible()
    header = page.locator(".site-header").evaluate("h => getComputedStyle(h).backgroundColor")
    assert header == "rgb(246, 248, 250)"  # site.css loaded: --wash
    shot(screenshot, "error-403")
    page.get_by_role("link", name="Go to your dashboard").click()
    page.wait_for_url(f"{live_server.url}/dashboard/")


def test_an_unknown_page_gets_the_styled_404(browser_page, screenshot, live_server):
    page = browser_page
    response = page.goto(f"{live_server.url}/no/such/page/")

    assert response.status == 404
    assert page.get_by_role("heading", name="There is no page here").is_visible()
    shot(screenshot, "error-404")
    page.get_by_role("link", name="Go to the home page").click()
    page.wait_for_url(f"{live_server.url}/")


def test_the_docs_swagger_and_redoc_make_no_request_off_loopback(browser_page, screenshot, live_server):
    page = browser_page
    base = live_server.url
    outside = refuse_off_loopback(page)

    page.goto(f"{base}/docs/")
    assert page.get_by_role("heading", name="Docs", exact=True).is_visible()
    shot(screenshot, "docs")
    assert outside == []

    page.goto(f"{base}/v1/docs/")
    header = page.locator(".swagger-ui .info table th")
    header.first.wait_for()
    assert header.all_inner_texts() == ["code", "status", "type", "meaning"]
    # The columns' words stand apart (they ran together as "statustype").
    gap = header.evaluate_all("""ths => {
        const box = th => { const r = document.createRange(); r.selectNodeContents(th);
                            return r.getBoundingClientRect(); };
        return box(ths[2]).left - box(ths[1]).right; }""")
    assert gap >= 16
    shot(screenshot, "swagger")
    assert outside == []

    page.goto(f"{base}/v1/redoc/")
    page.get_by_role("heading", name=re.compile("PixelAPI")).first.wait_for()
    page.wait_for_function("() => !document.querySelector('img[alt=\"redocly logo\"]')")
    font = page.get_by_role("heading", name=re.compile("PixelAPI")).first.evaluate(
        "h => getComputedStyle(h).fontFamily")
    assert font.startswith("system-ui") and "Montserrat" not in font
    shot(screenshot, "redoc")
    assert outside == []
