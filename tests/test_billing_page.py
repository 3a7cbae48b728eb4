"""The Billing page: balances, price, packs, the paginated ledger and its CSV download."""

from __future__ import annotations

import csv
import io
from itertools import count

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing import ledger
from billing.models import CreditPack

pytestmark = pytest.mark.django_db

_emails = count()


def make_user(**extra):
    from accounts.models import User

    return User.objects.create_user(email=f"reader{next(_emails)}@example.com", password="pw-123456789",
                                    email_verified_at=timezone.now(), **extra)


@pytest.fixture
def user(client):
    user = make_user()
    client.force_login(user)
    return user


def page_text(client, **params) -> str:
    response = client.get(reverse("billing:index"), params)
    assert response.status_code == 200
    return response.content.decode()


def test_the_billing_page_lives_at_the_dashboard_url():
    assert reverse("billing:index") == "/dashboard/billing/"
    assert reverse("billing:ledger_csv") == "/dashboard/billing/ledger.csv"


def test_the_billing_page_needs_a_signed_in_user():
    for url in (reverse("billing:index"), reverse("billing:ledger_csv")):
        response = Client().get(url)
        assert response.status_code == 302 and "/login/" in response["Location"]


def test_it_shows_available_and_held_credits_and_the_price_of_a_render(user, client):
    ledger.reserve(user, 22, reference="rnd_page")
    html = page_text(client)
    assert 'data-testid="credits-available">198<' in html
    assert 'data-testid="credits-held">22<' in html
    assert 'data-testid="render-cost">22 ' in html
    assert "Enough for 9 renders." in html


def test_it_lists_active_packs_only(user, client, settings):
    settings.STRIPE_SECRET_KEY, settings.STRIPE_WEBHOOK_SECRET = "sk_test_x", "whsec_x"
    CreditPack.objects.create(name="Visible pack", credits=2200, price=1900)
    CreditPack.objects.create(name="Retired pack", credits=440, price=500, active=False)
    html = page_text(client)
    assert "Visible pack" in html and "19.00 USD" in html and '<td class="amount">100</td>' in html
    assert "Retired pack" not in html
    assert 'action="/dashboard/billing/checkout/"' in html and "csrfmiddlewaretoken" in html


def test_the_default_packs_come_from_a_migration():
    names = set(CreditPack.objects.filter(active=True).values_list("name", flat=True))
    assert {"Starter", "Studio", "Scale"} <= names
    assert all(p.credits % 22 == 0 for p in CreditPack.objects.all())


def test_without_stripe_keys_it_says_purchases_are_unavailable_and_still_works(user, client, settings):
    settings.STRIPE_SECRET_KEY = ""
    CreditPack.objects.create(name="Some pack", credits=220, price=300)
    html = page_text(client)
    assert "Purchases are unavailable" in html
    assert 'action="/dashboard/billing/checkout/"' not in html
    assert 'data-testid="credits-available">220<' in html


def test_a_canceled_checkout_says_nothing_was_charged(user, client):
    assert "Checkout was canceled. Nothing was charged." in page_text(client, checkout="canceled")
    assert 'data-testid="checkout-notice"' not in page_text(client, checkout="<script>")


def test_the_ledger_is_paginated_newest_first(user, client):
    for i in range(30):
        ledger.grant(user, i + 1, reference=f"gift-{i}")
    first = page_text(client)
    assert first.index("gift-29") < first.index("gift-28")
    assert "gift-5" in first and "gift-4" not in first  # 25 per page: gift-29 .. gift-5
    assert "Page 1 of 2" in first
    second = page_text(client, page=2)
    assert "gift-4" in second and f"signup:{user.pk}" in second and "gift-5<" not in second


def test_a_page_number_out_of_range_shows_the_last_page(user, client):
    assert f"signup:{user.pk}" in page_text(client, page=99)
    assert f"signup:{user.pk}" in page_text(client, page="x")


def test_it_shows_only_the_signed_in_users_ledger(user, client):
    other = make_user()
    ledger.grant(other, 5, reference="not-yours")
    assert "not-yours" not in page_text(client)


def test_the_ledger_downloads_as_csv_newest_first(user, client):
    ledger.grant(user, 10, reference="gift-a")
    hold = ledger.reserve(user, 22, reference="rnd_csv")
    ledger.capture(hold.pk)
    staff = make_user(is_staff=True)
    ledger.adjust(user, 3, reason="=HYPERLINK(\"http://evil\")", staff_user=staff)

    response = client.get(reverse("billing:ledger_csv"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert 'filename="ledger.csv"' in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == ["created_at", "kind", "amount", "balance_after", "reference", "note", "owed_change", "owed_after"]
    assert [(r[1], r[2], r[3]) for r in rows[1:]] == [
        ("adjustment", "3", "211"), ("usage", "-22", "208"), ("grant", "10", "230"), ("grant", "220", "220"),
    ]
    assert rows[1][5].startswith("'="), "a formula in a note must not run in a spreadsheet"
    assert rows[2][4] == "rnd_csv"
