"""The overview: credits, this month's renders and credits, success rate, a 30-day chart, the latest renders."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.template.loader import render_to_string
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.keys import issue_key
from billing import ledger
from imaging.dashboard import stats
from imaging.dashboard.chart import nice_ceiling, renders_chart
from imaging.models import Render
from tests.helpers_render import make_user

# The console is mounted here ahead of the site's URLs, as platform_site.urls mounts it.


def add_render(user, status: str = "succeeded", *, days_ago: int = 0, error_code: str = "",
               prompt: str = "a sunny beach") -> Render:
    created = timezone.now() - timedelta(days=days_ago)
    return Render.objects.create(
        user=user, status=status, scene_prompt=prompt, created_at=created,
        deadline_at=created + timedelta(minutes=10),
        finished_at=created + timedelta(seconds=3) if status in ("succeeded", "failed") else None,
        credits_charged=22 if status == "succeeded" else 0,
        error_code=error_code, error_message="It failed." if error_code else "",
    )


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_overview_needs_a_signed_in_user(client, db):
    response = client.get("/dashboard/")
    assert response.status_code == 302 and response["Location"] == "/login/?next=/dashboard/"


def test_the_overview_shows_available_and_held_credits(db):
    user = make_user("dev@example.com", credits=100)
    ledger.reserve(user, 22, reference="rnd_pending", expires_at=timezone.now() + timedelta(minutes=5))

    page = signed_in(user).get("/dashboard/").content.decode()

    assert re.search(r'data-testid="credits-available">78<', page)
    assert re.search(r'data-testid="credits-held">22<', page)


def test_the_overview_counts_this_months_renders_credits_and_success_rate(db):
    user = make_user("dev@example.com")
    for _ in range(3):
        add_render(user, "succeeded")
    add_render(user, "failed", error_code="no_subject_found")
    add_render(user, "queued")
    month_start = stats.month_start(timezone.now())
    old = add_render(user, "succeeded", days_ago=40)
    assert old.created_at < month_start  # last month's render is not counted

    page = signed_in(user).get("/dashboard/").content.decode()

    assert re.search(r'data-testid="month-renders">5 <', page)
    assert "66 credits charged" in page
    assert 'data-testid="success-rate">75.0 %<' in page


def test_the_success_rate_is_a_dash_before_any_render_has_finished(db):
    user = make_user("dev@example.com")
    add_render(user, "queued")

    page = signed_in(user).get("/dashboard/").content.decode()

    assert 'data-testid="success-rate">—<' in page


def test_the_chart_has_a_bar_for_each_of_the_last_30_days_with_succeeded_and_failed(db):
    user = make_user("dev@example.com")
    add_render(user, "succeeded", days_ago=0)
    add_render(user, "succeeded", days_ago=0)
    add_render(user, "failed", days_ago=2, error_code="render_failed")
    add_render(user, "succeeded", days_ago=31)  # outside the window

    page = signed_in(user).get("/dashboard/").content.decode()
    svg = page[page.index('<svg class="chart"'):page.index("</svg>")]

    assert svg.count("<g>") == 30
    assert svg.count('class="bar-ok"') == 1 and svg.count('class="bar-failed"') == 1
    assert "2 succeeded, 0 failed" in svg and "0 succeeded, 1 failed" in svg
    assert "Succeeded (2)" in page and "Failed (1)" in page


def test_renders_per_day_fills_empty_days_and_puts_today_last(db):
    user = make_user("dev@example.com")
    add_render(user, "succeeded", days_ago=1)
    now = timezone.now()

    days = stats.renders_per_day(Render.objects.filter(user=user), 30, now)

    assert len(days) == 30
    assert days[-1].day == timezone.localdate(now)
    assert [d.succeeded for d in days[-2:]] == [1, 0]
    assert sum(d.total for d in days) == 1


def test_the_chart_scales_to_a_round_maximum():
    assert [nice_ceiling(v) for v in (0, 1, 3, 7, 10, 11, 48, 120)] == [2, 2, 5, 10, 10, 20, 50, 200]
    chart = renders_chart([stats.DayCount(timezone.localdate(), succeeded=4, failed=1)])
    bar = chart.bars[0]
    assert bar.succeeded_height == pytest.approx(4 * (chart.baseline - chart.ticks[-1].y) / 5)
    assert bar.failed_y + bar.failed_height == pytest.approx(bar.succeeded_y)


def test_the_overview_lists_the_latest_five_renders_newest_first(db):
    user = make_user("dev@example.com")
    renders = [add_render(user, prompt=f"scene {i}", days_ago=10 - i) for i in range(7)]

    page = signed_in(user).get("/dashboard/").content.decode()

    shown = re.findall(r'data-render-id="(rnd_[0-9a-f]+)"', page)
    assert shown == [r.public_id for r in reversed(renders)][:5]


def test_the_overview_still_counts_active_keys(db):
    user = make_user("dev@example.com")
    issue_key(user, "one")
    issue_key(user, "two")

    page = signed_in(user).get("/dashboard/").content.decode()

    assert re.search(r'class="stat">2 <span class="stat-unit">of \d+ active', page)


def test_the_overview_runs_a_fixed_number_of_queries_however_many_renders(db):
    user = make_user("dev@example.com")
    client = signed_in(user)
    for i in range(3):
        add_render(user, days_ago=i)
    client.get("/dashboard/")
    with CaptureQueriesContext(connection) as few:
        client.get("/dashboard/")
    key, _ = issue_key(user, "server")
    for i in range(30):
        render = add_render(user, "failed" if i % 3 else "succeeded", days_ago=i % 20,
                            error_code="render_failed" if i % 3 else "")
        Render.objects.filter(pk=render.pk).update(api_key=key)  # shown as "API key “server”"
    with CaptureQueriesContext(connection) as many:
        client.get("/dashboard/")

    assert len(many.captured_queries) == len(few.captured_queries)


def nav_for(user, path: str) -> str:
    request = RequestFactory().get(path)
    request.user = user
    return render_to_string("partials/console_nav.html", {"user": user, "request": request})


def test_the_console_navigation_links_every_page_and_marks_the_current_one(db):
    user = make_user("dev@example.com")

    nav = nav_for(user, "/dashboard/renders/rnd_abc/")

    hrefs = re.findall(r'href="([^"]+)"', nav)
    assert hrefs == ["/dashboard/", "/dashboard/renders/", "/dashboard/playground/", "/dashboard/keys/",
                     "/dashboard/webhooks/", "/dashboard/billing/", "/docs/"]
    assert re.findall(r'href="([^"]+)" aria-current="page"', nav) == ["/dashboard/renders/"]
    assert re.findall(r'href="([^"]+)" aria-current="page"', nav_for(user, "/dashboard/")) == ["/dashboard/"]
