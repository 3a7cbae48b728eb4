"""End to end in headless Chromium: sign up, create a key, see it once, use it, revoke it."""

from __future__ import annotations

import re

import pytest

from accounts.models import ApiKey, User
from tests.browser import browser_context, browser_page, screenshot  # noqa: F401  (fixtures)

KEY_SHAPE = re.compile(r"pxl_live_[0-9A-Za-z]{38}")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_new_user_signs_up_creates_a_key_sees_it_once_and_revokes_it(
    browser_page, screenshot, live_server
):
    page = browser_page
    base = live_server.url

    page.goto(f"{base}/signup/")
    screenshot("signup")
    page.get_by_label("E-mail").fill("erin@example.com")
    page.get_by_label("Password").fill("a-long-browser-password")
    page.get_by_role("button", name="Create account").click()

    page.wait_for_url(f"{base}/dashboard/")
    assert page.get_by_role("heading", name="Overview").is_visible()
    screenshot("dashboard")
    assert User.objects.filter(email="erin@example.com").exists()

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Keys").click()
    page.wait_for_url(f"{base}/dashboard/keys/")
    screenshot("keys-empty")

    # Keyboard only: type the name and press Enter.
    page.get_by_label("Key name").fill("browser test")
    page.get_by_label("Key name").press("Enter")
    page.wait_for_url(f"{base}/dashboard/keys/")
    new_key = page.get_by_test_id("new-key")
    raw = new_key.input_value()
    screenshot("key-shown-once")
    assert KEY_SHAPE.fullmatch(raw)
    assert page.get_by_text("this is the only time it is shown").is_visible()

    key = ApiKey.objects.get(user__email="erin@example.com")
    assert raw.endswith(key.last_four) and raw.startswith(key.display_prefix)

    # The key works against the API (the session cookie plays no part there).
    api = page.request.get(f"{base}/v1/account", headers={"Authorization": f"Bearer {raw}"})
    assert api.status == 200 and api.json()["email"] == "erin@example.com"

    page.reload()
    screenshot("keys-after-reload")
    assert page.get_by_test_id("new-key").count() == 0
    assert raw not in page.content()
    assert page.get_by_role("cell", name=key.masked).is_visible()

    row = page.get_by_role("row").filter(has_text="browser test")
    row.get_by_text("Revoke…").click()
    screenshot("revoke-confirm")
    row.get_by_role("button", name="Revoke “browser test”").click()
    page.wait_for_url(f"{base}/dashboard/keys/")
    screenshot("key-revoked")

    assert page.get_by_role("status").filter(has_text="Revoked").is_visible()
    assert page.get_by_role("heading", name="Revoked keys").is_visible()
    key.refresh_from_db()
    assert key.revoked_at is not None
    refused = page.request.get(f"{base}/v1/account", headers={"Authorization": f"Bearer {raw}"})
    assert refused.status == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert refused.json()["error"]["code"] == "invalid_api_key"
