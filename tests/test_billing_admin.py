"""Admin: money records are read-only; staff change balances only through the adjust action."""

from __future__ import annotations

from itertools import count

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing import ledger
from billing.models import CreditAccount, CreditPack, EntryKind, LedgerEntry, Purchase, StripeEvent

pytestmark = pytest.mark.django_db

_emails = count()
READ_ONLY = ["creditaccount", "ledgerentry", "hold", "purchase", "stripeevent"]


def make_user(**extra):
    from accounts.models import User

    return User.objects.create_user(email=f"admin{next(_emails)}@example.com", password="pw-123456789",
                                    email_verified_at=timezone.now(), **extra)


@pytest.fixture
def admin_client() -> tuple[Client, object]:
    from accounts.models import User

    boss = User.objects.create_superuser(email=f"boss{next(_emails)}@example.com", password="pw-123456789")
    browser = Client()
    browser.force_login(boss)
    return browser, boss


def some_records():
    user = make_user()
    hold = ledger.reserve(user, 22, reference="rnd_admin")
    ledger.capture(hold.pk)
    pack = CreditPack.objects.create(name="Admin pack", credits=220, price=300)
    purchase = Purchase.objects.create(user=user, pack=pack, credits=220, amount=300, currency="usd")
    StripeEvent.objects.create(event_id="evt_admin", type="checkout.session.completed", outcome="credited", purchase=purchase)
    return user


@pytest.mark.parametrize("model", READ_ONLY)
def test_money_records_are_listed_but_cannot_be_added_changed_or_deleted(admin_client, model):
    browser, _ = admin_client
    some_records()
    changelist = reverse(f"admin:billing_{model}_changelist")
    assert browser.get(changelist).status_code == 200
    assert browser.get(reverse(f"admin:billing_{model}_add")).status_code == 403

    from django.apps import apps

    obj = apps.get_model("billing", model).objects.first()
    change = reverse(f"admin:billing_{model}_change", args=[obj.pk])
    page = browser.get(change)
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert browser.post(change, {}).status_code == 403
    assert browser.get(reverse(f"admin:billing_{model}_delete", args=[obj.pk])).status_code == 403


def test_credit_packs_are_managed_in_admin(admin_client):
    browser, _ = admin_client
    response = browser.post(
        reverse("admin:billing_creditpack_add"),
        {"name": "Huge", "credits": 44000, "price": 30000, "currency": "EUR", "stripe_price_id": "", "active": "on"},
    )
    assert response.status_code == 302
    assert CreditPack.objects.get(name="Huge").currency == "eur"


def start_adjust(browser: Client, *accounts: CreditAccount):
    return browser.post(
        reverse("admin:billing_creditaccount_changelist"),
        {"action": "adjust_credits", "_selected_action": [a.pk for a in accounts]},
    )


def apply_adjust(browser: Client, *accounts: CreditAccount, amount, reason: str, follow: bool = False):
    return browser.post(
        reverse("admin:billing_creditaccount_changelist"),
        {
            "action": "adjust_credits",
            "_selected_action": [a.pk for a in accounts],
            "apply": "1",
            "amount": amount,
            "reason": reason,
        },
        follow=follow,
    )


def test_the_adjust_action_asks_for_an_amount_and_a_reason_first(admin_client):
    browser, _ = admin_client
    account = CreditAccount.objects.get(user=make_user())
    page = start_adjust(browser, account)
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="amount"' in html and 'name="reason"' in html and "Apply adjustment" in html
    assert LedgerEntry.objects.filter(kind=EntryKind.ADJUSTMENT).count() == 0


def test_an_adjustment_writes_an_entry_with_the_reason_and_the_staff_user(admin_client):
    browser, boss = admin_client
    customer = make_user()
    account = CreditAccount.objects.get(user=customer)
    response = apply_adjust(browser, account, amount=44, reason="goodwill for ticket 812", follow=True)
    assert response.status_code == 200 and "Adjusted 1 account by +44." in response.content.decode()

    entry = LedgerEntry.objects.get(kind=EntryKind.ADJUSTMENT)
    assert (entry.amount, entry.note, entry.actor) == (44, "goodwill for ticket 812", f"staff:{boss.pk}:{boss.email}")
    assert ledger.balances(customer).balance == 264


def test_an_adjustment_without_a_reason_or_of_zero_is_refused(admin_client):
    browser, _ = admin_client
    account = CreditAccount.objects.get(user=make_user())
    for amount, reason in [(10, "   "), (0, "nothing"), ("ten", "typo")]:
        page = apply_adjust(browser, account, amount=amount, reason=reason)
        assert page.status_code == 200 and "errorlist" in page.content.decode()
    assert not LedgerEntry.objects.filter(kind=EntryKind.ADJUSTMENT).exists()


def test_an_adjustment_cannot_remove_held_credits(admin_client):
    browser, _ = admin_client
    customer = make_user()
    ledger.reserve(customer, 210, reference="rnd_busy")
    account = CreditAccount.objects.get(user=customer)
    response = apply_adjust(browser, account, amount=-50, reason="chargeback", follow=True)
    assert "not adjusted, only 10 credits are available" in response.content.decode()
    assert not LedgerEntry.objects.filter(kind=EntryKind.ADJUSTMENT).exists()


def test_staff_without_the_adjust_permission_cannot_adjust():
    clerk = make_user(is_staff=True)
    clerk.user_permissions.add(Permission.objects.get(codename="view_creditaccount"))
    browser = Client()
    browser.force_login(clerk)
    account = CreditAccount.objects.get(user=make_user())
    assert "Adjust credits" not in browser.get(reverse("admin:billing_creditaccount_changelist")).content.decode()
    apply_adjust(browser, account, amount=1000, reason="for me")
    assert not LedgerEntry.objects.filter(kind=EntryKind.ADJUSTMENT).exists()


def test_staff_with_the_adjust_permission_can_adjust():
    clerk = make_user(is_staff=True)
    clerk.user_permissions.add(
        Permission.objects.get(codename="view_creditaccount"),
        Permission.objects.get(codename="adjust_creditaccount"),
    )
    browser = Client()
    browser.force_login(clerk)
    account = CreditAccount.objects.get(user=make_user())
    apply_adjust(browser, account, amount=22, reason="refund render rnd_x")
    assert LedgerEntry.objects.get(kind=EntryKind.ADJUSTMENT).amount == 22


def test_staff_can_record_a_refund_made_outside_stripe_as_owed(admin_client):
    browser, _ = admin_client
    customer = make_user()
    ledger.reserve(customer, 22, reference="rnd_still_running")
    account = CreditAccount.objects.get(user=customer)
    response = browser.post(
        reverse("admin:billing_creditaccount_changelist"),
        {"action": "adjust_credits", "_selected_action": [account.pk], "apply": "1", "amount": -500,
         "reason": "refunded by bank transfer, ticket 913", "owe_shortfall": "on"},
        follow=True,
    )
    assert "Adjusted 1 account by -500." in response.content.decode()
    entry = LedgerEntry.objects.get(kind=EntryKind.ADJUSTMENT)
    # 220 - 22 held = 198 could be taken; the other 302 are owed, and the running render keeps its 22.
    assert (entry.amount, entry.owed_change) == (-198, 302)
    assert ledger.balances(customer) == ledger.Balances(22, 22, 0, 302)
    page = browser.get(reverse("admin:billing_creditaccount_changelist") + "?owes=yes").content.decode()
    assert customer.email in page


def test_without_the_owed_box_a_removal_larger_than_what_is_available_is_still_refused(admin_client):
    browser, _ = admin_client
    customer = make_user()
    account = CreditAccount.objects.get(user=customer)
    response = apply_adjust(browser, account, amount=-500, reason="typo", follow=True)
    assert "not adjusted, only 220 credits are available" in response.content.decode()
    assert ledger.balances(customer).owed == 0
