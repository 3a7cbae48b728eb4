"""Money under concurrency: 50 simultaneous renders against credits for 20 charge exactly 20.

Runs on PostgreSQL (CI), where row locks are real; each request is a thread with its
own connection and real commits, and the renders run on a real echo GPU worker.
"""

from __future__ import annotations

import threading

import pytest

from billing.models import Hold, HoldStatus, LedgerEntry
from imaging.models import Render
from tests.helpers_render import (  # noqa: F401  (fixtures are found by name)
    CREDITS,
    account,
    api_client,
    gpu_worker,
    in_thread,
    make_user,
    post_render,
    product_png,
    render_env,
)


# These run on both databases: PostgreSQL serialises through row locks, SQLite through
# IMMEDIATE transactions (platform_site.settings); either way the money must be exact.


@pytest.mark.usefixtures("render_env")
def test_fifty_concurrent_renders_against_credits_for_twenty_charge_exactly_twenty(settings):
    settings.RENDER_SYNC_WINDOW_SECONDS = 60
    user = make_user("crowd@example.com", credits=20 * CREDITS)
    client = api_client(user)
    image = product_png(16)
    barrier = threading.Barrier(50)

    def render():
        barrier.wait()
        return post_render(client, image=image)

    with gpu_worker("echo"):
        futures = [in_thread(render) for _ in range(50)]
        responses = [future.result(timeout=120) for future in futures]

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] * 20 + [402] * 30, statuses
    assert all(r.json()["error"]["code"] == "insufficient_credits" for r in responses if r.status_code == 402)
    assert Render.objects.filter(status="succeeded", credits_charged=CREDITS).count() == 20
    assert Render.objects.count() == 20
    assert LedgerEntry.objects.filter(account__user=user, kind="usage").count() == 20
    assert Hold.objects.filter(account__user=user, status=HoldStatus.CAPTURED).count() == 20
    assert account(user).balance == 0 and account(user).held == 0
