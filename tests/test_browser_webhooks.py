"""End to end in headless Chromium: add a webhook endpoint, send a test event to a
loopback receiver, run the delivery, and find it in the endpoint's delivery log."""

from __future__ import annotations

import re

import pytest

from imaging.models import WebhookEndpoint
from tests.browser import browser_context, browser_page, screenshot  # noqa: F401  (fixtures)
from tests.helpers_render import make_user, render_env, run_default_jobs_in_process  # noqa: F401
from tests.webhook_receiver import Receiver


@pytest.mark.browser
@pytest.mark.usefixtures("render_env")
def test_a_developer_adds_an_endpoint_sends_a_test_event_and_sees_it_delivered(
    browser_page, screenshot, live_server, settings  # noqa: F811  (fixtures imported above)
):
    page = browser_page
    base = live_server.url
    make_user("hooks@example.com", credits=0)
    with Receiver() as receiver:
        settings.FETCH_ALLOW_PRIVATE_ADDRESSES = True
        settings.FETCH_ALLOWED_PORTS = [receiver.port]

        page.goto(f"{base}/login/")
        page.get_by_label("E-mail").fill("hooks@example.com")
        page.get_by_label("Password").fill("correct horse battery")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(re.compile(r".*/dashboard/$"))

        page.get_by_role("navigation", name="Main").get_by_role("link", name="Webhooks").click()
        page.wait_for_url(f"{base}/dashboard/webhooks/")
        screenshot("webhooks-empty")
        page.get_by_label("Endpoint URL").fill(receiver.url())
        page.get_by_role("button", name="Add endpoint").click()

        endpoint = WebhookEndpoint.objects.get()
        page.wait_for_url(f"{base}/dashboard/webhooks/{endpoint.public_id}/")
        assert page.get_by_test_id("new-secret").input_value() == endpoint.secret
        screenshot("secret-shown-once")

        page.get_by_role("button", name="Send test event").click()
        page.wait_for_url(f"{base}/dashboard/webhooks/{endpoint.public_id}/")
        row = page.get_by_test_id("delivery-row")
        assert row.get_by_test_id("delivery-status").inner_text() == "pending"
        assert page.get_by_test_id("new-secret").count() == 0

        run_default_jobs_in_process()  # the Django-side worker's part
        page.reload()
        screenshot("delivered")
        assert row.get_by_test_id("delivery-status").inner_text() == "succeeded"
        assert row.get_by_test_id("delivery-code").inner_text().strip() == "200"
        assert row.get_by_text("ping").is_visible()
        (got,) = receiver.received
        assert got.json["type"] == "ping" and got.verifies(endpoint.secret)
