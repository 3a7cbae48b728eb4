"""Staff pages: usage across all accounts and one account's ledger, holds, purchases and renders."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.template.loader import render_to_string
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rq import Queue, Worker
from rq.serializers import JSONSerializer

from accounts.models import User
from billing import ledger
from billing.models import CreditPack, Purchase, PurchaseStatus
from imaging.dashboard import stats
from imaging.dispatch import GPU_QUEUE, redis_connection
from imaging.models import Render
from tests.helpers_render import make_user


STAFF_PAGES = ["/staff/usage/", "/staff/accounts/{id}/"]


@pytest.fixture
def staff(db) -> Client:
    admin = User.objects.create_user("ops@example.com", "a-long-staff-password", is_staff=True)
    client = Client()
    client.force_login(admin)
    return client


@pytest.fixture
def gpu_queue():
    queue = Queue(GPU_QUEUE, connection=redis_connection(), serializer=JSONSerializer)
    queue.empty()
    yield queue
    queue.empty()


def add_render(user, status: str, *, seconds: float = 2.0, days_ago: int = 0, error_code: str = "") -> Render:
    created = timezone.now() - timedelta(days=days_ago, minutes=5)
    finished = created + timedelta(seconds=seconds) if status in ("succeeded", "failed") else None
    return Render.objects.create(
        user=user, status=status, scene_prompt="a beach", created_at=created,
        deadline_at=created + timedelta(minutes=10), started_at=created + timedelta(seconds=0.5) if finished else None,
        finished_at=finished, credits_charged=22 if status == "succeeded" else 0, error_code=error_code,
    )


def charge(user, reference: str) -> None:
    """A render's money as the API moves it: a hold, then its capture."""
    hold = ledger.reserve(user, 22, reference=reference, expires_at=timezone.now() + timedelta(minutes=5))
    assert ledger.capture(hold.id, reference=reference)


def paid_purchase(user, credits: int, amount: int, currency: str) -> Purchase:
    pack = CreditPack.objects.create(name=f"{credits} pack", credits=credits, price=amount, currency=currency)
    return Purchase.objects.create(user=user, pack=pack, credits=credits, amount=amount, currency=currency,
                                   status=PurchaseStatus.PAID, paid_at=timezone.now())


@pytest.mark.parametrize("page", STAFF_PAGES)
def test_staff_pages_send_strangers_to_sign_in(client, db, page):
    user = make_user("someone@example.com")
    response = client.get(page.format(id=user.pk))
    assert response.status_code == 302 and response["Location"].startswith("/login/")


@pytest.mark.parametrize("page", STAFF_PAGES)
def test_staff_pages_refuse_signed_in_users_who_are_not_staff(db, page):
    user = make_user("someone@example.com")
    client = Client()
    client.force_login(user)
    assert client.get(page.format(id=user.pk)).status_code == 403


def test_the_usage_page_shows_renders_outcomes_credits_and_top_accounts(staff):
    big = make_user("big@example.com", credits=22 * 10)
    small = make_user("small@example.com", credits=22 * 10)
    for i in range(3):
        add_render(big, "succeeded")
        charge(big, f"rnd_big_{i}")
    add_render(big, "failed", error_code="no_subject_found")
    add_render(small, "failed", error_code="no_subject_found")
    add_render(small, "failed", error_code="render_timeout")
    add_render(small, "succeeded")
    charge(small, "rnd_small_0")
    add_render(small, "succeeded", days_ago=45)  # outside the 30-day window

    page = staff.get("/staff/usage/").content.decode()

    assert 'data-testid="staff-renders">7<' in page
    assert 'data-testid="staff-credits-charged">88<' in page
    failures = re.search(r'data-testid="failures-by-code">(.*?)</table>', page, re.S).group(1)
    assert re.findall(r"<code>(\w+)</code></th><td class=\"num\">(\d+)<", failures) == [
        ("no_subject_found", "2"), ("render_timeout", "1")]
    top = re.search(r'data-testid="top-accounts">(.*?)</table>', page, re.S).group(1)
    assert re.findall(r">([a-z]+@example.com)<", top) == ["big@example.com", "small@example.com"]
    assert f'href="/staff/accounts/{big.pk}/"' in top
    assert "57.1 %" in page  # 4 of 7 finished renders succeeded
    assert page.count("<g>") == 30


def test_the_usage_page_shows_credits_sold_and_revenue_by_currency(staff):
    buyer = make_user("buyer@example.com")
    paid_purchase(buyer, 500, 1000, "usd")
    paid_purchase(buyer, 1000, 1800, "usd")
    paid_purchase(buyer, 500, 900, "eur")
    pack = CreditPack.objects.create(name="unpaid", credits=500, price=1000, currency="usd")
    Purchase.objects.create(user=buyer, pack=pack, credits=500, amount=1000, currency="usd")

    page = staff.get("/staff/usage/").content.decode()

    sales = re.search(r'data-testid="sales">(.*?)</table>', page, re.S).group(1)
    assert re.findall(r"<tr><th scope=\"row\">(\w+)</th><td class=\"num\">(\d+)</td><td class=\"num\">(\d+)</td>"
                      r"<td class=\"num\">([^<]+)</td>", sales) == [
        ("EUR", "1", "500", "9.00 EUR"), ("USD", "2", "1500", "28.00 USD")]


def test_render_time_percentiles_come_from_finished_renders_in_the_window(staff):
    user = make_user("dev@example.com")
    for seconds in (1, 2, 3, 4, 100):
        add_render(user, "succeeded", seconds=seconds)
    add_render(user, "failed", seconds=500)  # failures are not render times

    page = staff.get("/staff/usage/").content.decode()

    times = re.search(r'data-testid="render-times">(.*?)</table>', page, re.S).group(1)
    assert '<th scope="row">p50</th><td class="num">3.0 s</td><td class="num">2.5 s</td>' in times
    assert "5 most recent" in page


def test_percentiles_interpolate_between_ranks():
    values = [1.0, 2.0, 3.0, 4.0]
    assert stats.percentile(values, 50) == 2.5
    assert stats.percentile(values, 0) == 1.0 and stats.percentile(values, 100) == 4.0
    assert stats.percentile([], 50) is None


def test_the_usage_page_shows_the_gpu_queue_depth_and_the_workers_seen(staff, gpu_queue):
    for i in range(2):
        gpu_queue.enqueue_call("gpu_worker.tasks.replace_background", args=({"render_id": f"x{i}"},))
    worker = Worker([gpu_queue], connection=gpu_queue.connection, name="gpu-box-1", serializer=JSONSerializer)
    worker.register_birth()
    try:
        page = staff.get("/staff/usage/").content.decode()
    finally:
        worker.register_death()

    assert re.search(r'data-testid="gpu-depth">2 <', page)
    workers = re.search(r'data-testid="workers-gpu">(.*?)</table>', page, re.S).group(1)
    assert "gpu-box-1" in workers


def test_the_usage_page_runs_a_fixed_number_of_queries_however_much_data(staff):
    user = make_user("dev@example.com", credits=22 * 40)
    add_render(user, "succeeded")
    staff.get("/staff/usage/")
    with CaptureQueriesContext(connection) as few:
        staff.get("/staff/usage/")
    for i in range(20):
        other = make_user(f"u{i}@example.com", credits=22)
        add_render(other, "succeeded" if i % 2 else "failed", days_ago=i, error_code="" if i % 2 else f"code_{i % 3}")
        charge(other, f"rnd_many_{i}")
    with CaptureQueriesContext(connection) as many:
        staff.get("/staff/usage/")

    assert len(many.captured_queries) == len(few.captured_queries)


def test_the_window_can_be_chosen_and_a_bad_one_falls_back_to_30_days(staff):
    user = make_user("dev@example.com")
    add_render(user, "succeeded", days_ago=10)

    week = staff.get("/staff/usage/?days=7").content.decode()
    bogus = staff.get("/staff/usage/?days=abc").content.decode()

    assert 'data-testid="staff-renders">0<' in week and week.count("<g>") == 7
    assert 'data-testid="staff-renders">1<' in bogus and bogus.count("<g>") == 30


def test_finding_an_account_by_email_opens_it(staff):
    user = make_user("Found@Example.com")

    found = staff.get("/staff/usage/", {"email": "found@example.com"})
    missing = staff.get("/staff/usage/", {"email": "nobody@example.com"})

    assert found.status_code == 302 and found["Location"] == f"/staff/accounts/{user.pk}/"
    assert "No account with the e-mail address" in missing.content.decode()


def test_an_account_page_shows_its_ledger_holds_purchases_and_renders_only(staff):
    user = make_user("dev@example.com", credits=100)
    other = make_user("other@example.com", credits=100)
    charge(user, "rnd_mine_charged")
    ledger.reserve(user, 22, reference="rnd_mine_pending", expires_at=timezone.now() + timedelta(minutes=5))
    charge(other, "rnd_theirs_charged")
    paid_purchase(user, 500, 1000, "usd")
    mine = add_render(user, "succeeded")
    theirs = add_render(other, "failed", error_code="render_failed")

    page = staff.get(f"/staff/accounts/{user.pk}/").content.decode()

    assert "dev@example.com" in page and 'data-testid="account-balance">78<' in page
    assert "<code>test:" in page and "<code>rnd_mine_charged</code>" in page  # grant and usage entries
    assert "rnd_mine_pending" in page and "Pending" in page
    assert "10.00 USD" in page
    assert mine.public_id in page
    assert "rnd_theirs_charged" not in page and theirs.public_id not in page


def test_an_unknown_account_is_404(staff):
    assert staff.get("/staff/accounts/987654/").status_code == 404


def test_only_staff_see_the_staff_link_in_the_navigation(db):
    staff_user = User.objects.create_user("ops@example.com", "a-long-staff-password", is_staff=True)
    developer = make_user("dev@example.com")

    def nav(user) -> str:
        request = RequestFactory().get("/staff/usage/")
        request.user = user
        return render_to_string("partials/console_nav.html", {"user": user, "request": request})

    assert 'href="/staff/usage/" aria-current="page">Staff usage<' in nav(staff_user)
    assert "/staff/" not in nav(developer)
