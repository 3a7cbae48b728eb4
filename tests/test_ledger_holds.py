"""The ledger's single-threaded rules: grants, holds resolving exactly once, append-only entries."""

from __future__ import annotations

from datetime import timedelta
from itertools import count

import pytest
from django.core.management import call_command
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from billing import ledger
from billing.errors import insufficient_credits_error
from billing.models import CreditAccount, EntryKind, Hold, HoldStatus, LedgerEntry, LedgerIsAppendOnly
from platform_site.api_errors import REGISTRY

pytestmark = pytest.mark.django_db

_emails = count()


def make_user(**extra):
    from accounts.models import User

    return User.objects.create_user(email=f"holder{next(_emails)}@example.com", password="pw-123456789",
                                    email_verified_at=timezone.now(), **extra)


def test_a_new_user_gets_the_signup_grant_as_a_ledger_entry(settings):
    settings.SIGNUP_GRANT_CREDITS = 220
    user = make_user()
    entry = LedgerEntry.objects.get(account__user=user)
    assert (entry.kind, entry.amount, entry.balance_after, entry.reference) == (
        "grant", 220, 220, f"signup:{user.pk}"
    )
    assert ledger.balances(user) == ledger.Balances(balance=220, held=0, available=220)


def test_a_zero_signup_grant_opens_an_empty_account(settings):
    settings.SIGNUP_GRANT_CREDITS = 0
    user = make_user()
    assert CreditAccount.objects.get(user=user).balance == 0
    assert not LedgerEntry.objects.filter(account__user=user).exists()


def test_saving_an_existing_user_again_grants_nothing_more():
    user = make_user()
    user.first_name = "Ada"
    user.save()
    assert ledger.balances(user).balance == 220


def test_a_grant_with_a_used_reference_returns_none_and_changes_nothing():
    user = make_user()
    first = ledger.grant(user, 50, reference="promo-1")
    second = ledger.grant(user, 50, reference="promo-1")
    assert first is not None and first.balance_after == 270
    assert second is None
    assert ledger.balances(user).balance == 270


def test_the_same_reference_under_another_kind_is_a_separate_grant():
    user = make_user()
    assert ledger.grant(user, 10, reference="r-1") is not None
    assert ledger.grant(user, 10, kind="refund", reference="r-1") is not None
    assert ledger.balances(user).balance == 240


@pytest.mark.parametrize("amount", [0, -5, 1.5, True])
def test_a_grant_must_be_a_positive_integer(amount):
    user = make_user()
    with pytest.raises(ValueError):
        ledger.grant(user, amount, reference="bad")


@pytest.mark.parametrize("kind", ["usage", "adjustment", "bonus"])
def test_grant_refuses_kinds_that_have_their_own_function(kind):
    user = make_user()
    with pytest.raises(ValueError):
        ledger.grant(user, 5, kind=kind, reference="k")


def test_a_user_without_an_account_has_zero_balances_and_gets_one_on_first_grant(settings):
    settings.SIGNUP_GRANT_CREDITS = 0
    user = make_user()
    CreditAccount.objects.filter(user=user).delete()
    assert ledger.balances(user) == ledger.Balances(0, 0, 0)
    ledger.grant(user, 44, reference="late")
    assert ledger.balances(user).available == 44


def test_reserve_moves_credits_from_available_to_held():
    user = make_user()
    hold = ledger.reserve(user, 22, reference="rnd_a")
    assert hold.status == HoldStatus.PENDING
    assert ledger.balances(user) == ledger.Balances(balance=220, held=22, available=198)


def test_a_hold_expires_after_the_configured_ttl_by_default(settings):
    settings.HOLD_TTL_SECONDS = 120
    user = make_user()
    before = timezone.now()
    hold = ledger.reserve(user, 22, reference="rnd_ttl")
    assert before + timedelta(seconds=119) < hold.expires_at <= timezone.now() + timedelta(seconds=120)


def test_reserving_more_than_available_raises_insufficient_credits_with_the_numbers():
    user = make_user()
    ledger.reserve(user, 200, reference="rnd_big")
    with pytest.raises(ledger.InsufficientCredits) as caught:
        ledger.reserve(user, 22, reference="rnd_more")
    assert (caught.value.available, caught.value.required) == (20, 22)
    assert not Hold.objects.filter(reference="rnd_more").exists()
    assert ledger.balances(user).held == 200


def test_insufficient_credits_maps_to_a_registered_402():
    assert REGISTRY["insufficient_credits"].status == 402
    assert REGISTRY["insufficient_credits"].type == "payment_error"
    error = insufficient_credits_error(ledger.InsufficientCredits(available=20, required=22))
    assert error.status == 402 and "22" in error.message and "20" in error.message


def test_reserving_again_with_the_same_reference_returns_the_same_hold():
    user = make_user()
    first = ledger.reserve(user, 22, reference="rnd_retry")
    again = ledger.reserve(user, 22, reference="rnd_retry")
    assert again.pk == first.pk
    assert ledger.balances(user).held == 22


def test_a_hold_reference_cannot_be_reused_by_another_account():
    ledger.reserve(make_user(), 22, reference="rnd_taken")
    with pytest.raises(ValueError):
        ledger.reserve(make_user(), 22, reference="rnd_taken")


def test_capture_charges_once_with_a_usage_entry():
    user = make_user()
    hold = ledger.reserve(user, 22, reference="rnd_cap")
    assert ledger.capture(hold.pk) is True
    usage = LedgerEntry.objects.get(kind=EntryKind.USAGE, reference="rnd_cap")
    assert (usage.amount, usage.balance_after, usage.hold_id) == (-22, 198, hold.pk)
    assert ledger.balances(user) == ledger.Balances(198, 0, 198)
    hold.refresh_from_db()
    assert hold.status == HoldStatus.CAPTURED and hold.resolved_at is not None


def test_capturing_twice_charges_once_and_says_so():
    user = make_user()
    hold = ledger.reserve(user, 22, reference="rnd_twice")
    assert ledger.capture(hold.pk) is True
    assert ledger.capture(hold.pk) is False
    assert ledger.balances(user) == ledger.Balances(198, 0, 198)
    assert LedgerEntry.objects.filter(kind=EntryKind.USAGE).count() == 1


def test_a_release_after_a_capture_does_not_undo_the_charge():
    user = make_user()
    hold = ledger.reserve(user, 22, reference="rnd_cr")
    ledger.capture(hold.pk)
    assert ledger.release(hold.pk) is False
    assert ledger.expire(hold.pk) is False
    hold.refresh_from_db()
    assert hold.status == HoldStatus.CAPTURED
    assert ledger.balances(user) == ledger.Balances(198, 0, 198)


def test_a_capture_after_a_release_charges_nothing():
    user = make_user()
    hold = ledger.reserve(user, 22, reference="rnd_rc")
    assert ledger.release(hold.pk) is True
    assert ledger.capture(hold.pk) is False
    hold.refresh_from_db()
    assert hold.status == HoldStatus.RELEASED
    assert ledger.balances(user) == ledger.Balances(220, 0, 220)
    assert not LedgerEntry.objects.filter(kind=EntryKind.USAGE).exists()


def test_a_capture_after_expiry_charges_nothing():
    user = make_user()
    hold = ledger.reserve(user, 22, reference="rnd_ec")
    assert ledger.expire(hold.pk) is True
    assert ledger.capture(hold.pk) is False
    assert ledger.balances(user) == ledger.Balances(220, 0, 220)


def test_capture_can_name_the_usage_reference_and_actor():
    user = make_user()
    hold = ledger.reserve(user, 22, reference="hold-x")
    ledger.capture(hold.pk, reference="rnd_named", actor="render-finalize")
    usage = LedgerEntry.objects.get(kind=EntryKind.USAGE)
    assert (usage.reference, usage.actor) == ("rnd_named", "render-finalize")


def test_resolving_a_hold_that_does_not_exist_is_an_error():
    with pytest.raises(Hold.DoesNotExist):
        ledger.capture(987654321)


def test_expire_due_holds_expires_only_pending_holds_past_their_deadline():
    user = make_user()
    now = timezone.now()
    due = ledger.reserve(user, 22, reference="rnd_due", expires_at=now - timedelta(seconds=1))
    later = ledger.reserve(user, 22, reference="rnd_later", expires_at=now + timedelta(minutes=5))
    captured = ledger.reserve(user, 22, reference="rnd_done", expires_at=now - timedelta(seconds=1))
    ledger.capture(captured.pk)
    assert ledger.expire_due_holds(now) == 1
    assert Hold.objects.get(pk=due.pk).status == HoldStatus.EXPIRED
    assert Hold.objects.get(pk=later.pk).status == HoldStatus.PENDING
    assert Hold.objects.get(pk=captured.pk).status == HoldStatus.CAPTURED
    assert ledger.balances(user) == ledger.Balances(198, 22, 176)
    assert ledger.expire_due_holds(now) == 0


def test_the_expire_holds_command_expires_due_holds_and_reports_the_count(capsys):
    user = make_user()
    ledger.reserve(user, 22, reference="rnd_cmd", expires_at=timezone.now() - timedelta(seconds=5))
    call_command("expire_holds")
    assert "expired 1 hold" in capsys.readouterr().out
    assert ledger.balances(user).held == 0


def test_a_staff_adjustment_records_the_reason_and_the_staff_user():
    user = make_user()
    staff = make_user(is_staff=True)
    entry = ledger.adjust(user, -20, reason="duplicate signup", staff_user=staff)
    assert (entry.kind, entry.amount, entry.balance_after, entry.note) == ("adjustment", -20, 200, "duplicate signup")
    assert entry.actor == f"staff:{staff.pk}:{staff.email}"
    assert entry.reference.startswith("adjustment:")


def test_an_adjustment_cannot_take_held_credits():
    user = make_user()
    staff = make_user(is_staff=True)
    ledger.reserve(user, 210, reference="rnd_held")
    with pytest.raises(ledger.InsufficientCredits):
        ledger.adjust(user, -20, reason="too much", staff_user=staff)
    assert ledger.balances(user) == ledger.Balances(220, 210, 10)


def test_an_adjustment_needs_a_reason_and_a_staff_user():
    user = make_user()
    with pytest.raises(ValueError):
        ledger.adjust(user, 5, reason="  ", staff_user=make_user(is_staff=True))
    with pytest.raises(ValueError):
        ledger.adjust(user, 5, reason="gift", staff_user=make_user())


def test_ledger_entries_refuse_to_be_updated_or_deleted():
    user = make_user()
    entry = LedgerEntry.objects.get(account__user=user)
    entry.amount = 1_000_000
    with pytest.raises(LedgerIsAppendOnly):
        entry.save()
    with pytest.raises(LedgerIsAppendOnly):
        entry.delete()
    with pytest.raises(LedgerIsAppendOnly):
        LedgerEntry.objects.filter(pk=entry.pk).update(amount=5)
    with pytest.raises(LedgerIsAppendOnly):
        LedgerEntry.objects.filter(pk=entry.pk).delete()
    with pytest.raises(LedgerIsAppendOnly):
        LedgerEntry.objects.bulk_update([entry], ["amount"])
    assert LedgerEntry.objects.get(pk=entry.pk).amount == 220


def test_the_database_refuses_raw_sql_that_rewrites_the_ledger():
    user = make_user()
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE billing_ledgerentry SET amount = 1000000")
    assert LedgerEntry.objects.get(account__user=user).amount == 220


@pytest.mark.skipif(connection.vendor == "sqlite", reason="SQLite test databases are emptied with DELETE")
def test_the_database_refuses_raw_sql_that_deletes_ledger_entries():
    user = make_user()
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM billing_ledgerentry")
    assert LedgerEntry.objects.filter(account__user=user).exists()


def test_an_account_with_a_ledger_cannot_be_deleted():
    from django.db.models import ProtectedError

    account = CreditAccount.objects.get(user=make_user())
    with pytest.raises(ProtectedError):
        account.delete()


@pytest.mark.parametrize(
    "balance,held",
    [(-1, 0), (10, 11), (10, -1)],
    ids=["negative balance", "held above balance", "negative held"],
)
def test_the_database_refuses_impossible_account_states(balance, held):
    user = make_user()
    with pytest.raises(IntegrityError), transaction.atomic():
        CreditAccount.objects.filter(user=user).update(balance=balance, held=held)
