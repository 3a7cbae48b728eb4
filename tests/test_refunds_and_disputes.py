"""Refunds and disputes take a purchase's credits back, exactly once, in any delivery order.

Every event here goes through the real webhook view with a payload signed by the test's
own secret. A purchase of 1,100 credits for 10.00 USD is paid first (payment intent
``pi_…``); then the refund or dispute events arrive. After each scenario the test looks
at the balances, the entries written, whether renders are allowed (402 while owing) and
``audit_ledger``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import StringIO
from itertools import count
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connections
from django.test import Client, override_settings
from django.urls import reverse

from accounts.keys import issue_key
from accounts.models import User
from billing import ledger
from billing.models import (
    CreditPack,
    EntryKind,
    LedgerEntry,
    PaymentReversal,
    Purchase,
    PurchaseStatus,
    StripeEvent,
)
from imaging.renders import refuse_if_short
from tests import stripe_events as se
from tests.concurrency import race

pytestmark = pytest.mark.django_db

CREDITS, PRICE = 1100, 1000
_n = count()


@pytest.fixture(autouse=True)
def stripe_configured(settings):
    settings.STRIPE_SECRET_KEY = "sk_test_fake"
    settings.STRIPE_WEBHOOK_SECRET = se.SECRET


@dataclass
class Payment:
    user: User
    purchase: Purchase
    intent: str
    charge: str

    def refresh(self) -> Payment:
        self.purchase.refresh_from_db()
        return self


def new_user() -> User:
    with override_settings(SIGNUP_GRANT_CREDITS=0):
        return User.objects.create_user(f"customer{next(_n)}@example.com", "pw-123456789")


def open_purchase(user: User, credits: int = CREDITS, price: int = PRICE) -> Purchase:
    pack = CreditPack.objects.create(name=f"Pack {next(_n)}", credits=credits, price=price, currency="usd")
    return Purchase.objects.create(user=user, pack=pack, credits=credits, amount=price, currency="usd",
                                   stripe_checkout_session_id=se.next_id("cs_test"), status=PurchaseStatus.OPEN)


def paid(user: User | None = None, credits: int = CREDITS, price: int = PRICE) -> Payment:
    """A purchase paid through checkout.session.completed, with its payment intent."""
    user = user or new_user()
    purchase = open_purchase(user, credits, price)
    intent = se.next_id("pi")
    response = se.deliver(se.checkout_completed(purchase, payment_intent=intent))
    assert response.json()["outcome"] == "credited"
    return Payment(user, purchase, intent, se.next_id("ch")).refresh()


def spend(user: User, renders: int) -> None:
    for _ in range(renders):
        hold = ledger.reserve(user, 22, reference=se.next_id("rnd"))
        assert ledger.capture(hold.pk)


def refund(p: Payment, amount_refunded: int, *, at: int = 10, refunds: list | None = None) -> Any:
    return se.deliver(se.charge_refunded(payment_intent=p.intent, charge=p.charge, amount=p.purchase.amount,
                                         amount_refunded=amount_refunded, created=se.T0 + at, refunds=refunds))


def refund_object_event(p: Payment, type: str, refund_id: str, amount: int, status: str, *, at: int) -> dict:
    return se.refund_event(type, refund=refund_id, payment_intent=p.intent, charge=p.charge, amount=amount,
                           status=status, created=se.T0 + at)


def dispute(p: Payment, type: str, status: str, *, dispute_id: str, at: int, amount: int | None = None) -> dict:
    return se.dispute_event(type, dispute=dispute_id, payment_intent=p.intent, charge=p.charge,
                            amount=p.purchase.amount if amount is None else amount, status=status,
                            created=se.T0 + at)


def money(user: User) -> tuple[int, int, int]:
    b = ledger.balances(user)
    return b.balance, b.held, b.owed


def written(user: User, *kinds: str) -> list[tuple[str, int, int]]:
    entries = LedgerEntry.objects.filter(account__user=user).order_by("id")
    if kinds:
        entries = entries.filter(kind__in=kinds)
    return [(e.kind, e.amount, e.owed_change) for e in entries]


def outcome(response: Any) -> str:
    assert response.status_code == 200, response.content
    return response.json()["outcome"]


def render_refusal(user: User) -> tuple[int, str]:
    """What the render API answers this user (only called when it must refuse before fetching)."""
    _, raw = issue_key(user, se.next_id("key"))
    response = Client(headers={"Authorization": f"Bearer {raw}"}).post(
        "/v1/image/replace-background",
        {"image_url": "https://example.com/product.png", "scene_prompt": "a beach"},
        content_type="application/json",
    )
    return response.status_code, response.json()["error"]["code"]


def audit_is_clean() -> bool:
    out, err = StringIO(), StringIO()
    call_command("audit_ledger", stdout=out, stderr=err)
    return "ledger balanced" in out.getvalue() and err.getvalue() == ""


# --- refunds ---------------------------------------------------------------------------------


def test_a_full_refund_before_any_spend_takes_every_credit_back_and_owes_nothing():
    p = paid()
    assert money(p.user) == (CREDITS, 0, 0)

    assert outcome(refund(p, PRICE)) == "credits_taken_back"

    assert money(p.user) == (0, 0, 0)
    assert written(p.user) == [("purchase", CREDITS, 0), ("reversal", -CREDITS, 0)]
    assert p.refresh().purchase.credits_reversed == CREDITS
    reversal = LedgerEntry.objects.get(kind=EntryKind.REVERSAL)
    assert reversal.purchase_id == p.purchase.pk and reversal.reference.startswith("evt_")
    assert render_refusal(p.user) == (402, "insufficient_credits")
    assert audit_is_clean()


def test_a_refund_after_some_renders_takes_what_is_left_and_records_the_rest_as_owed():
    p = paid()
    spend(p.user, 3)  # 66 credits already spent

    assert outcome(refund(p, PRICE)) == "credits_taken_back"

    assert money(p.user) == (0, 0, 66)
    assert written(p.user, "reversal") == [("reversal", -(CREDITS - 66), 66)]
    entry = LedgerEntry.objects.get(kind=EntryKind.REVERSAL)
    assert (entry.balance_after, entry.owed_after) == (0, 66)
    assert audit_is_clean()


def test_an_account_that_owes_gets_402_credits_owed_and_cannot_reserve():
    p = paid()
    spend(p.user, 3)
    refund(p, PRICE)

    status, code = render_refusal(p.user)
    assert (status, code) == (402, "credits_owed")
    with pytest.raises(ledger.CreditsOwed):
        ledger.reserve(p.user, 22, reference="rnd_while_owing")
    # A gift smaller than the debt is swallowed by it: still nothing available.
    staff = User.objects.create_user("staff-small@example.com", "pw-123456789", is_staff=True)
    ledger.adjust(p.user, 10, reason="goodwill", staff_user=staff)
    assert money(p.user) == (0, 0, 56)
    assert render_refusal(p.user) == (402, "credits_owed")
    assert audit_is_clean()


def test_the_402_message_says_why_renders_are_refused():
    p = paid()
    spend(p.user, 1)
    refund(p, PRICE)
    _, raw = issue_key(p.user, "why")
    body = Client(headers={"Authorization": f"Bearer {raw}"}).post(
        "/v1/image/replace-background", {"image_url": "https://example.com/a.png", "scene_prompt": "x"},
        content_type="application/json").json()["error"]
    assert body["type"] == "payment_error"
    assert "owes 22 credits" in body["message"] and "refunded or disputed" in body["message"]
    account = Client(headers={"Authorization": f"Bearer {raw}"}).get("/v1/account").json()
    assert (account["credits_available"], account["credits_owed"]) == (0, 22)


def test_a_new_purchase_settles_what_is_owed_first_and_renders_resume():
    p = paid()
    spend(p.user, 3)
    refund(p, PRICE)

    second = paid(p.user)

    assert money(p.user) == (CREDITS - 66, 0, 0)
    assert written(second.user, "purchase", "settlement")[-2:] == [("purchase", CREDITS, 0), ("settlement", -66, -66)]
    refuse_if_short(p.user)  # no longer refused
    assert ledger.reserve(p.user, 22, reference="rnd_after_settling").amount == 22
    assert audit_is_clean()


def test_staff_settle_what_is_owed_with_a_positive_adjustment():
    p = paid()
    spend(p.user, 2)
    refund(p, PRICE)
    staff = User.objects.create_user("staff-settles@example.com", "pw-123456789", is_staff=True)

    ledger.adjust(p.user, 44, reason="customer refunded in error, debt forgiven", staff_user=staff)

    assert money(p.user) == (0, 0, 0)
    assert written(p.user)[-2:] == [("adjustment", 44, 0), ("settlement", -44, -44)]
    assert render_refusal(p.user) == (402, "insufficient_credits")
    assert audit_is_clean()


def test_a_render_that_fails_while_the_account_owes_pays_the_debt_with_its_released_hold():
    p = paid()
    spend(p.user, 1)
    in_flight = ledger.reserve(p.user, 22, reference="rnd_in_flight")
    refund(p, PRICE)  # 22 spent and 22 held: 1,056 taken, 44 owed, the 22 held left alone
    assert money(p.user) == (22, 22, 44)

    ledger.release(in_flight.pk)

    assert money(p.user) == (0, 0, 22)
    assert written(p.user)[-1] == ("settlement", -22, -22)
    assert audit_is_clean()


def test_a_partial_refund_takes_back_its_share_rounded_down():
    p = paid()

    assert outcome(refund(p, 333)) == "credits_taken_back"  # 1,100 x 333 / 1,000 = 366.3

    assert money(p.user) == (CREDITS - 366, 0, 0)
    assert p.refresh().purchase.credits_reversed == 366
    refuse_if_short(p.user)
    assert audit_is_clean()


def test_two_partial_refunds_add_up_to_the_refunded_total():
    p = paid()
    refund(p, 250, at=10)
    refund(p, 1000, at=20)

    assert money(p.user) == (0, 0, 0)
    assert written(p.user, "reversal") == [("reversal", -275, 0), ("reversal", -825, 0)]
    assert audit_is_clean()


def test_partial_refunds_delivered_out_of_order_take_back_the_latest_total_once():
    p = paid()
    later = se.charge_refunded(payment_intent=p.intent, charge=p.charge, amount=PRICE, amount_refunded=500,
                               created=se.T0 + 20)
    earlier = se.charge_refunded(payment_intent=p.intent, charge=p.charge, amount=PRICE, amount_refunded=250,
                                 created=se.T0 + 10)

    assert outcome(se.deliver(later)) == "credits_taken_back"
    assert outcome(se.deliver(earlier)) == "no_change"

    assert money(p.user) == (CREDITS - 550, 0, 0)
    assert written(p.user, "reversal") == [("reversal", -550, 0)]
    assert audit_is_clean()


def test_refund_created_and_charge_refunded_for_one_refund_take_it_back_once():
    p = paid()
    refund_id = se.next_id("re")
    created = refund_object_event(p, "refund.created", refund_id, 400, "succeeded", at=10)
    charged = se.charge_refunded(payment_intent=p.intent, charge=p.charge, amount=PRICE, amount_refunded=400,
                                 created=se.T0 + 10)

    assert outcome(se.deliver(created)) == "credits_taken_back"
    assert outcome(se.deliver(charged)) == "no_change"

    assert money(p.user) == (CREDITS - 440, 0, 0)
    assert PaymentReversal.objects.filter(purchase=p.purchase).count() == 2  # the refund and the charge total
    assert audit_is_clean()


def test_a_charge_refunded_event_that_lists_its_refunds_is_read_whole():
    p = paid()
    refunds = [se.refund_object(refund=se.next_id("re"), payment_intent=p.intent, charge=p.charge, amount=300,
                                status="succeeded"),
               se.refund_object(refund=se.next_id("re"), payment_intent=p.intent, charge=p.charge, amount=200,
                                status="pending")]

    assert outcome(refund(p, 500, refunds=refunds)) == "credits_taken_back"

    assert money(p.user) == (CREDITS - 550, 0, 0)
    assert PaymentReversal.objects.filter(purchase=p.purchase, kind="refund").count() == 2
    assert audit_is_clean()


def test_a_refund_that_fails_gives_its_credits_back():
    p = paid()
    refund_id = se.next_id("re")
    assert outcome(se.deliver(refund_object_event(p, "refund.created", refund_id, 500, "pending", at=10))) \
        == "credits_taken_back"
    assert outcome(refund(p, 500, at=11)) == "no_change"  # the same refund, seen on the charge
    assert money(p.user) == (CREDITS - 550, 0, 0)

    assert outcome(se.deliver(refund_object_event(p, "refund.failed", refund_id, 500, "failed", at=30))) \
        == "credits_reinstated"
    # A late "pending" for the same refund cannot revive it.
    assert outcome(se.deliver(refund_object_event(p, "refund.updated", refund_id, 500, "pending", at=12))) \
        == "no_change"

    assert money(p.user) == (CREDITS, 0, 0)
    assert written(p.user, "reversal", "reinstatement") == [("reversal", -550, 0), ("reinstatement", 550, 0)]
    assert audit_is_clean()


# --- disputes --------------------------------------------------------------------------------


def test_a_dispute_opened_then_won_gives_the_credits_back():
    p = paid()
    dispute_id = se.next_id("dp")

    assert outcome(se.deliver(dispute(p, "charge.dispute.created", "needs_response", dispute_id=dispute_id,
                                      at=10))) == "credits_taken_back"
    assert money(p.user) == (0, 0, 0)
    assert render_refusal(p.user) == (402, "insufficient_credits")
    assert outcome(se.deliver(dispute(p, "charge.dispute.updated", "under_review", dispute_id=dispute_id,
                                      at=20))) == "no_change"

    assert outcome(se.deliver(dispute(p, "charge.dispute.closed", "won", dispute_id=dispute_id, at=30))) \
        == "credits_reinstated"

    assert money(p.user) == (CREDITS, 0, 0)
    assert written(p.user, "reversal", "reinstatement") == [("reversal", -CREDITS, 0), ("reinstatement", CREDITS, 0)]
    assert p.refresh().purchase.credits_reversed == 0
    refuse_if_short(p.user)
    assert audit_is_clean()


def test_a_dispute_won_after_spending_clears_the_debt_before_adding_credits():
    p = paid()
    spend(p.user, 5)  # 110 spent
    dispute_id = se.next_id("dp")
    se.deliver(dispute(p, "charge.dispute.created", "needs_response", dispute_id=dispute_id, at=10))
    assert money(p.user) == (0, 0, 110)
    assert render_refusal(p.user) == (402, "credits_owed")

    se.deliver(dispute(p, "charge.dispute.closed", "won", dispute_id=dispute_id, at=30))

    assert money(p.user) == (CREDITS - 110, 0, 0)
    assert written(p.user, "reinstatement") == [("reinstatement", CREDITS - 110, -110)]
    refuse_if_short(p.user)
    assert audit_is_clean()


def test_a_dispute_opened_then_lost_keeps_the_credits_gone():
    p = paid()
    spend(p.user, 2)
    dispute_id = se.next_id("dp")
    se.deliver(dispute(p, "charge.dispute.created", "needs_response", dispute_id=dispute_id, at=10))

    assert outcome(se.deliver(dispute(p, "charge.dispute.closed", "lost", dispute_id=dispute_id, at=30))) \
        == "no_change"

    assert money(p.user) == (0, 0, 44)
    assert written(p.user, "reversal", "reinstatement") == [("reversal", -(CREDITS - 44), 44)]
    assert render_refusal(p.user) == (402, "credits_owed")
    assert PaymentReversal.objects.get(stripe_id=dispute_id).status == "lost"
    assert audit_is_clean()


@pytest.mark.parametrize("closed_as,credits_left,closed_at", [
    ("won", CREDITS, 30), ("lost", 0, 30),
    # Event times are whole seconds: a final state wins a tie too.
    ("won", CREDITS, 10), ("lost", 0, 10),
])
def test_a_dispute_closed_before_its_opening_arrives_ends_as_closed(closed_as, credits_left, closed_at):
    p = paid()
    dispute_id = se.next_id("dp")
    opened = dispute(p, "charge.dispute.created", "needs_response", dispute_id=dispute_id, at=10)
    closed = dispute(p, "charge.dispute.closed", closed_as, dispute_id=dispute_id, at=closed_at)

    se.deliver(closed)
    assert outcome(se.deliver(opened)) == "no_change"

    assert money(p.user) == (credits_left, 0, 0)
    assert PaymentReversal.objects.get(stripe_id=dispute_id).status == closed_as
    assert len(written(p.user, "reversal", "reinstatement")) == (0 if closed_as == "won" else 1)
    assert audit_is_clean()


def test_a_partial_dispute_takes_back_its_share():
    p = paid()
    se.deliver(dispute(p, "charge.dispute.created", "warning_needs_response", dispute_id=se.next_id("dp"),
                       at=10, amount=200))
    assert money(p.user) == (CREDITS - 220, 0, 0)
    assert audit_is_clean()


def test_a_refund_and_a_dispute_together_never_take_more_than_the_purchase_gave():
    p = paid()
    refund(p, 600, at=10)
    se.deliver(dispute(p, "charge.dispute.created", "needs_response", dispute_id=se.next_id("dp"), at=20))

    assert p.refresh().purchase.credits_reversed == CREDITS
    assert money(p.user) == (0, 0, 0)
    assert audit_is_clean()


# --- duplicates, order, strangers -------------------------------------------------------------


def _scenario_events(p: Payment) -> dict[str, list[dict]]:
    dispute_id, refund_id = se.next_id("dp"), se.next_id("re")
    return {
        "full refund": [se.charge_refunded(payment_intent=p.intent, charge=p.charge, amount=PRICE,
                                           amount_refunded=PRICE, created=se.T0 + 10)],
        "partial refund": [refund_object_event(p, "refund.created", refund_id, 250, "succeeded", at=10)],
        "dispute won": [dispute(p, "charge.dispute.created", "needs_response", dispute_id=dispute_id, at=10),
                        dispute(p, "charge.dispute.closed", "won", dispute_id=dispute_id, at=30)],
        "dispute lost": [dispute(p, "charge.dispute.created", "needs_response", dispute_id=dispute_id, at=10),
                         dispute(p, "charge.dispute.closed", "lost", dispute_id=dispute_id, at=30)],
    }


EXPECTED_BALANCE = {"full refund": 0, "partial refund": CREDITS - 275, "dispute won": CREDITS, "dispute lost": 0}


@pytest.mark.parametrize("scenario", list(EXPECTED_BALANCE))
def test_every_event_delivered_twice_changes_the_ledger_once(scenario):
    p = paid()
    events = _scenario_events(p)[scenario]
    for event in events:
        first = outcome(se.deliver(event))
        assert outcome(se.deliver(event)) == "duplicate_event", first
    once = written(p.user)

    for event in events:
        se.deliver(event)

    assert written(p.user) == once
    assert money(p.user) == (EXPECTED_BALANCE[scenario], 0, 0)
    assert StripeEvent.objects.filter(event_id__in=[e["id"] for e in events]).count() == len(events)
    assert audit_is_clean()


@pytest.mark.parametrize("scenario", list(EXPECTED_BALANCE))
def test_every_scenario_delivered_in_reverse_order_ends_the_same(scenario):
    p = paid()
    for event in reversed(_scenario_events(p)[scenario]):
        se.deliver(event)
    assert money(p.user) == (EXPECTED_BALANCE[scenario], 0, 0)
    assert audit_is_clean()


def test_a_refund_that_overtakes_its_checkout_is_applied_when_the_checkout_is_paid():
    user = new_user()
    purchase = open_purchase(user)
    intent, charge = se.next_id("pi"), se.next_id("ch")
    early = se.charge_refunded(payment_intent=intent, charge=charge, amount=PRICE, amount_refunded=500,
                               created=se.T0 + 10)

    assert outcome(se.deliver(early)) == "unknown_payment"
    assert money(user) == (0, 0, 0)
    assert PaymentReversal.objects.get(stripe_id=charge).purchase_id is None

    assert outcome(se.deliver(se.checkout_completed(purchase, payment_intent=intent))) == "credited"

    assert money(user) == (CREDITS - 550, 0, 0)
    assert written(user) == [("purchase", CREDITS, 0), ("reversal", -550, 0)]
    assert PaymentReversal.objects.get(stripe_id=charge).purchase_id == purchase.pk
    assert audit_is_clean()


def test_a_refund_of_a_payment_we_never_sold_is_stored_and_changes_nothing():
    p = paid()
    event = se.charge_refunded(payment_intent="pi_someone_else", charge="ch_someone_else", amount=PRICE,
                               amount_refunded=PRICE, created=se.T0)
    assert outcome(se.deliver(event)) == "unknown_payment"
    assert money(p.user) == (CREDITS, 0, 0)
    recorded = StripeEvent.objects.get(event_id=event["id"])
    assert (recorded.outcome, recorded.purchase_id) == ("unknown_payment", None)
    assert audit_is_clean()


def test_an_expired_checkout_closes_the_purchase_and_credits_nothing():
    user = new_user()
    purchase = open_purchase(user)

    assert outcome(se.deliver(se.checkout_expired(purchase))) == "marked_expired"

    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.EXPIRED and money(user) == (0, 0, 0)
    page = Client()
    page.force_login(user)
    assert "expired without a payment" in page.get(
        reverse("billing:purchase", args=[purchase.client_reference_id])).content.decode()
    assert audit_is_clean()


def test_an_expiry_after_payment_leaves_the_purchase_paid():
    p = paid()
    assert outcome(se.deliver(se.checkout_expired(p.purchase))) == "already_paid"
    assert p.refresh().purchase.status == PurchaseStatus.PAID and money(p.user) == (CREDITS, 0, 0)


@pytest.mark.parametrize("break_it", [
    lambda obj: obj.pop("amount_refunded"),
    lambda obj: obj.update(amount_refunded="500"),
    lambda obj: obj.update(amount_refunded=-5),
    lambda obj: obj.update(payment_intent=12),
])
def test_a_signed_refund_event_with_missing_or_mistyped_fields_is_rejected(break_it):
    p = paid()
    event = se.charge_refunded(payment_intent=p.intent, charge=p.charge, amount=PRICE, amount_refunded=500,
                               created=se.T0)
    break_it(event["data"]["object"])
    assert se.deliver(event).status_code == 400
    assert money(p.user) == (CREDITS, 0, 0) and not PaymentReversal.objects.exists()


def test_a_refund_signed_with_another_secret_changes_nothing():
    p = paid()
    response = se.deliver(se.charge_refunded(payment_intent=p.intent, charge=p.charge, amount=PRICE,
                                             amount_refunded=PRICE, created=se.T0), secret="whsec_attacker")
    assert response.status_code == 400 and money(p.user) == (CREDITS, 0, 0)


# --- what people see ----------------------------------------------------------------------------


def test_the_billing_page_tells_an_owing_customer_what_happened_and_what_to_do():
    p = paid()
    spend(p.user, 3)
    refund(p, PRICE)
    browser = Client()
    browser.force_login(p.user)

    html = browser.get(reverse("billing:index")).content.decode()

    assert 'data-testid="credits-owed">66<' in html
    assert "owes 66 credits, so renders are paused" in html and "settles what is owed first" in html
    assert "Payment refunded or disputed" in html  # the ledger entry's kind
    assert "owes 66 credits" in browser.get(reverse("console:overview")).content.decode()


def test_staff_see_owed_credits_and_open_disputes_on_the_staff_pages_and_in_the_admin():
    p = paid()
    spend(p.user, 1)
    dispute_id = se.next_id("dp")
    se.deliver(dispute(p, "charge.dispute.created", "needs_response", dispute_id=dispute_id, at=10))
    staff = User.objects.create_superuser("ops-disputes@example.com", "pw-123456789")
    browser = Client()
    browser.force_login(staff)

    usage = browser.get(reverse("console:staff-usage")).content.decode()
    assert 'data-testid="owing-accounts"' in usage and p.user.email in usage
    assert 'data-testid="open-disputes"' in usage and dispute_id in usage
    account = browser.get(reverse("console:staff-account", args=[p.user.pk])).content.decode()
    assert 'data-testid="account-owed">22<' in account and dispute_id in account
    admin_accounts = browser.get(reverse("admin:billing_creditaccount_changelist") + "?owes=yes").content.decode()
    assert p.user.email in admin_accounts
    admin_disputes = browser.get(reverse("admin:billing_paymentreversal_changelist") + "?kind=dispute")
    assert admin_disputes.status_code == 200 and dispute_id in admin_disputes.content.decode()

    se.deliver(dispute(p, "charge.dispute.closed", "won", dispute_id=dispute_id, at=30))
    assert dispute_id not in browser.get(reverse("console:staff-usage")).content.decode()


# --- concurrency (row locks and the payment lock; PostgreSQL in CI) -----------------------------


@pytest.mark.django_db(transaction=True)
def test_the_same_refund_delivered_five_times_at_once_takes_back_once():
    p = paid()
    spend(p.user, 1)
    event = se.charge_refunded(payment_intent=p.intent, charge=p.charge, amount=PRICE, amount_refunded=PRICE,
                               created=se.T0 + 10)

    outcomes = sorted(outcome(r) for r in race(5, lambda i: se.deliver(event)))

    assert outcomes == ["credits_taken_back"] + ["duplicate_event"] * 4
    assert money(p.user) == (0, 0, 22)
    assert len(written(p.user, "reversal")) == 1
    assert audit_is_clean()


@pytest.mark.django_db(transaction=True)
def test_different_events_about_one_payment_at_once_end_exactly_where_they_would_one_by_one():
    p = paid()
    refund_id, dispute_id = se.next_id("re"), se.next_id("dp")
    events = [
        refund_object_event(p, "refund.created", refund_id, 300, "succeeded", at=10),
        se.charge_refunded(payment_intent=p.intent, charge=p.charge, amount=PRICE, amount_refunded=300,
                           created=se.T0 + 10),
        dispute(p, "charge.dispute.created", "needs_response", dispute_id=dispute_id, at=20, amount=700),
        dispute(p, "charge.dispute.closed", "won", dispute_id=dispute_id, at=30, amount=700),
    ]

    responses = race(len(events), lambda i: se.deliver(events[i]))

    assert all(r.status_code == 200 for r in responses)
    assert money(p.user) == (CREDITS - 330, 0, 0)
    assert p.refresh().purchase.credits_reversed == 330
    assert audit_is_clean()


@pytest.mark.django_db(transaction=True)
def test_a_refund_racing_its_own_checkout_is_never_left_unapplied(monkeypatch):
    """The refund finds no purchase and stores itself unlinked; the checkout is paid before
    the refund commits. Without the payment lock the checkout could not see the uncommitted
    refund, nor the refund the checkout: the refund would never be applied. The refund is
    held open at exactly that point, so the test fails every time the lock is missing."""
    user = new_user()
    purchase = open_purchase(user)
    intent, charge = se.next_id("pi"), se.next_id("ch")
    stored, checkout_done = threading.Event(), threading.Event()
    store_state = ledger._store_state

    def store_then_wait(*args, **kwargs):
        store_state(*args, **kwargs)
        stored.set()
        checkout_done.wait(timeout=3)  # with the lock, the checkout is waiting for us instead

    monkeypatch.setattr(ledger, "_store_state", store_then_wait)
    refund_event = se.charge_refunded(payment_intent=intent, charge=charge, amount=PRICE, amount_refunded=PRICE,
                                      created=se.T0 + 10)

    def checkout() -> Any:
        assert stored.wait(timeout=10)
        try:
            return se.deliver(se.checkout_completed(purchase, payment_intent=intent))
        finally:
            checkout_done.set()

    def run(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=2) as pool:
        refunded = pool.submit(run, lambda: se.deliver(refund_event))
        paid_ = pool.submit(run, checkout)
        assert outcome(refunded.result(timeout=30)) == "unknown_payment"
        assert outcome(paid_.result(timeout=30)) == "credited"

    assert money(user) == (0, 0, 0), written(user)
    assert PaymentReversal.objects.get(stripe_id=charge).purchase_id == purchase.pk
    assert audit_is_clean()
