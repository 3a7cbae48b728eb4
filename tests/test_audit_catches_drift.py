"""`audit_ledger` catches what a bug in the money code would leave behind.

The world below is made through the real ledger functions (a purchase, renders that
succeeded, failed and are still running, a partial refund, an account that owes). Each
test then breaks one invariant with raw SQL, the way a bug or a hand-edit in psql
would. The most telling ones forge an entry *and* move the cached balance with it, as
a buggy ledger function would: the cached totals still balance, and only the deeper
check can see it. Triggers that make the ledger append-only are lifted inside a test
where it has to UPDATE an entry.
"""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from io import StringIO
from itertools import count

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections
from django.test import override_settings
from django.utils import timezone

from accounts.models import User
from billing import ledger
from billing.audit import find_problems
from billing.models import CreditAccount, CreditPack, LedgerEntry, Purchase, PurchaseStatus, ReversalKind
from billing.reversals import ReversalState
from imaging.models import Render
from tests.live_platform import ROOT, database_url

pytestmark = pytest.mark.django_db
_n = count()


@dataclass
class World:
    payer: User
    debtor: User
    purchase: Purchase
    refunded: Purchase
    open_purchase: Purchase
    succeeded: Render
    failed: Render
    running: Render


def _user(name: str) -> User:
    with override_settings(SIGNUP_GRANT_CREDITS=0):
        return User.objects.create_user(f"{name}{next(_n)}@example.com", "pw-123456789")


def _purchase(user: User, *, pay: bool = True) -> Purchase:
    n = next(_n)
    pack = CreditPack.objects.create(name=f"Pack {n}", credits=1100, price=1000)
    purchase = Purchase.objects.create(user=user, pack=pack, credits=1100, amount=1000, currency="usd",
                                       stripe_checkout_session_id=f"cs_audit_{n}", status=PurchaseStatus.OPEN)
    if pay:
        outcome = ledger.record_purchase_paid(ledger.CheckoutEvent(
            event_id=f"evt_paid_{n}", type="checkout.session.completed", session_id=purchase.stripe_checkout_session_id,
            client_reference_id=purchase.client_reference_id, amount_total=1000, currency="usd",
            payment_intent=f"pi_audit_{n}"))
        assert outcome == ledger.PurchaseOutcome.CREDITED
        purchase.refresh_from_db()
    return purchase


def _refund(purchase: Purchase, amount_refunded: int) -> None:
    ledger.record_reversal(ledger.ReversalEvent(
        event_id=f"evt_refund_{next(_n)}", type="charge.refunded", created=1_800_000_000,
        payment_intent=purchase.stripe_payment_intent_id,
        states=(ReversalState(kind=ReversalKind.CHARGE_REFUNDS, stripe_id=f"ch_{purchase.pk}", amount=amount_refunded,
                              status="partially_refunded", payment_intent=purchase.stripe_payment_intent_id,
                              charge=f"ch_{purchase.pk}", currency="usd"),)))
    purchase.refresh_from_db()


def _render(user: User, status: str) -> Render:
    hold = ledger.reserve(user, 22, reference=f"rnd_audit_{next(_n)}")
    charged = 0
    if status == "succeeded":
        assert ledger.capture(hold.pk)
        charged = 22
    elif status == "failed":
        assert ledger.release(hold.pk)
    return Render.objects.create(public_id=hold.reference, user=user, status=status, scene_prompt="audit",
                                 hold_id=hold.pk, credits_charged=charged,
                                 deadline_at=timezone.now() + timedelta(minutes=10))


@pytest.fixture
def world() -> World:
    payer = _user("payer")
    purchase = _purchase(payer)
    succeeded, failed, running = _render(payer, "succeeded"), _render(payer, "failed"), _render(payer, "queued")
    refunded = _purchase(payer)
    _refund(refunded, 250)  # 275 credits taken back
    debtor = _user("debtor")
    owing = _purchase(debtor)
    for _ in range(3):
        _render(debtor, "succeeded")
    _refund(owing, 1000)  # 66 already spent: owed
    assert ledger.balances(debtor).owed == 66
    return World(payer, debtor, purchase, refunded, _purchase(payer, pay=False), succeeded, failed, running)


def sql(statement: str, params: list | tuple = ()) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


@contextmanager
def append_only_lifted():
    """Lets this test UPDATE ledger entries (its transaction is rolled back afterwards anyway)."""
    if connection.vendor == "postgresql":
        # ALTER TABLE refuses while deferred foreign-key checks of this transaction are pending.
        sql("SET CONSTRAINTS ALL IMMEDIATE")
        sql("ALTER TABLE billing_ledgerentry DISABLE TRIGGER billing_ledgerentry_append_only")
        try:
            yield
        finally:
            sql("ALTER TABLE billing_ledgerentry ENABLE TRIGGER billing_ledgerentry_append_only")
            sql("SET CONSTRAINTS ALL DEFERRED")
    else:
        sql("DROP TRIGGER billing_ledgerentry_no_update")
        try:
            yield
        finally:
            sql("CREATE TRIGGER billing_ledgerentry_no_update BEFORE UPDATE ON billing_ledgerentry "
                "BEGIN SELECT RAISE(ABORT, 'billing_ledgerentry is append-only (UPDATE refused)'); END")


def forge_entry(user: User, kind: str, amount: int, reference: str, *, owed_change: int = 0,
                hold_id: int | None = None, purchase_id: int | None = None) -> int:
    """An entry written the way a buggy ledger function would: the chain and the cache kept right."""
    account = CreditAccount.objects.get(user=user)
    balance, owed = account.balance + amount, account.owed + owed_change
    sql("INSERT INTO billing_ledgerentry (account_id, kind, amount, balance_after, owed_change, owed_after, "
        "reference, actor, note, hold_id, purchase_id, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, "
        "'bug', '', %s, %s, %s)",
        [account.pk, kind, amount, balance, owed_change, owed, reference, hold_id, purchase_id, timezone.now()])
    sql("UPDATE billing_creditaccount SET balance = %s, owed = %s WHERE id = %s", [balance, owed, account.pk])
    return LedgerEntry.objects.get(kind=kind, reference=reference).pk


def problems() -> list[str]:
    return [str(p) for p in find_problems()[0]]


def checks_failed() -> set[str]:
    return {p.check for p in find_problems()[0]}


def account_of(user: User) -> int:
    return CreditAccount.objects.get(user=user).pk


def test_the_honest_world_passes_every_check(world):
    out = StringIO()
    call_command("audit_ledger", stdout=out, stderr=StringIO())
    assert "ledger balanced: 2 credit accounts checked" in out.getvalue()
    for name in ("cached_totals", "entry_chain", "entry_shapes", "holds_charged_once", "purchases_credited_once",
                 "reversals_match", "render_charges"):
        assert name in out.getvalue()


# --- the cached totals (the checks that were there before) -----------------------------------


def test_owed_changed_behind_the_ledgers_back_is_caught(world):
    sql("UPDATE billing_creditaccount SET owed = owed + 1 WHERE user_id = %s", [world.debtor.pk])
    assert problems() == [f"account #{account_of(world.debtor)} ({world.debtor.email}): owed 67 but entries' owed "
                          "changes sum to 66; owed 67 but the newest entry says 66 [cached_totals]"]


# --- the chain -----------------------------------------------------------------------------------


def test_a_balance_after_edited_in_the_middle_of_the_chain_is_caught(world):
    entries = list(LedgerEntry.objects.filter(account__user=world.payer).order_by("id").values_list("id", flat=True))
    middle = entries[2]
    with append_only_lifted():
        sql("UPDATE billing_ledgerentry SET balance_after = balance_after + 7 WHERE id = %s", [middle])

    found = [p for p in find_problems()[0] if p.check == "entry_chain"]

    # The edited entry and the one after it no longer chain; the newest is untouched, so
    # the old newest-entry check could not see this.
    kinds = dict(LedgerEntry.objects.filter(pk__in=entries).values_list("pk", "kind"))
    assert [p.detail.split(":")[0] for p in found] == [f"entry #{middle} ({kinds[middle]})",
                                                       f"entry #{entries[3]} ({kinds[entries[3]]})"]
    assert all(p.account_id == account_of(world.payer) for p in found)
    assert checks_failed() == {"entry_chain"}


def test_an_owed_after_that_does_not_chain_is_caught(world):
    reversal = LedgerEntry.objects.get(account__user=world.debtor, kind="reversal")
    with append_only_lifted():
        sql("UPDATE billing_ledgerentry SET owed_after = owed_after + 3 WHERE id = %s", [reversal.pk])
    found = [p for p in find_problems()[0] if p.check == "entry_chain"]
    assert found and f"entry #{reversal.pk} (reversal)" in found[0].detail and "owed_after 69" in found[0].detail


def test_an_amount_edited_in_place_is_caught_by_the_chain_and_the_totals(world):
    grant = LedgerEntry.objects.filter(account__user=world.payer, kind="purchase").order_by("id").first()
    with append_only_lifted():
        sql("UPDATE billing_ledgerentry SET amount = amount + 100 WHERE id = %s", [grant.pk])
    assert {"entry_chain", "cached_totals", "purchases_credited_once"} <= checks_failed()


# --- holds and usage ------------------------------------------------------------------------------


def test_a_captured_hold_charged_twice_is_caught_even_with_the_cache_moved_along(world):
    hold_id = world.succeeded.hold_id
    entry = forge_entry(world.payer, "usage", -22, f"{world.succeeded.public_id}-again", hold_id=hold_id)

    found = [p for p in find_problems()[0] if p.check == "holds_charged_once"]

    assert len(found) == 1 and found[0].account_id == account_of(world.payer)
    assert f"captured hold #{hold_id}" in found[0].detail and "2 usage entries" in found[0].detail
    assert str(entry) in found[0].detail and "totalling -44" in found[0].detail
    assert "cached_totals" not in checks_failed() and "entry_chain" not in checks_failed()


def test_a_released_hold_that_was_charged_anyway_is_caught(world):
    forge_entry(world.payer, "usage", -22, "charged-a-failure", hold_id=world.failed.hold_id)
    found = {p.check: p for p in find_problems()[0]}
    assert f"released hold #{world.failed.hold_id}" in found["holds_charged_once"].detail
    assert world.failed.public_id in found["render_charges"].detail  # and the render says it was free


def test_a_captured_hold_without_its_usage_entry_is_caught(world):
    usage = LedgerEntry.objects.get(hold_id=world.succeeded.hold_id)
    with append_only_lifted():
        sql("UPDATE billing_ledgerentry SET kind = 'grant' WHERE id = %s", [usage.pk])
    assert {"holds_charged_once", "render_charges", "entry_shapes"} <= checks_failed()


def test_a_usage_entry_that_names_no_hold_is_caught(world):
    entry = forge_entry(world.payer, "usage", -22, "free-floating-usage")
    found = [p for p in find_problems()[0] if p.check in ("holds_charged_once", "entry_shapes")]
    assert any(f"usage entry #{entry}" in p.detail and "names no hold" in p.detail for p in found)


# --- renders -------------------------------------------------------------------------------------


def test_a_render_whose_charge_disagrees_with_the_ledger_is_caught(world):
    sql("UPDATE imaging_render SET credits_charged = 0 WHERE id = %s", [world.succeeded.pk])

    assert problems() == [
        f"account #{account_of(world.payer)} ({world.payer.email}): render {world.succeeded.public_id} (succeeded) "
        f"says credits_charged 0, the ledger charged 22 for hold #{world.succeeded.hold_id} [render_charges]"
    ]


def test_a_render_pointing_at_another_customers_hold_is_caught(world):
    other_hold = ledger.reserve(world.payer, 22, reference="rnd_someone_elses")
    sql("UPDATE imaging_render SET hold_id = %s WHERE id = %s", [other_hold.pk, world.failed.pk])
    sql("UPDATE imaging_render SET user_id = %s WHERE id = %s", [world.debtor.pk, world.failed.pk])
    found = [p for p in find_problems()[0] if p.check == "render_charges"]
    assert found and "on another account" in found[0].detail


# --- purchases ------------------------------------------------------------------------------------


def test_a_paid_purchase_without_its_purchase_entry_is_caught(world):
    sql("UPDATE billing_purchase SET status = 'paid' WHERE id = %s", [world.open_purchase.pk])
    assert problems() == [
        f"account #{account_of(world.payer)} ({world.payer.email}): paid purchase #{world.open_purchase.pk} "
        f"({world.open_purchase.client_reference_id}, 1100 credits) has 0 purchase entries [] totalling 0 "
        "[purchases_credited_once]"
    ]


def test_credits_for_a_purchase_that_was_never_paid_are_caught_even_with_the_cache_moved_along(world):
    entry = forge_entry(world.payer, "purchase", 1100, world.open_purchase.stripe_checkout_session_id)
    found = [p for p in find_problems()[0] if p.check == "purchases_credited_once"]
    assert len(found) == 2
    assert f"open purchase #{world.open_purchase.pk}" in found[0].detail and str(entry) in found[0].detail
    assert f"purchase entry #{entry}" in found[1].detail and "credits no paid purchase" in found[1].detail
    assert "cached_totals" not in checks_failed()


def test_a_purchase_entry_of_the_wrong_amount_is_caught(world):
    sql("UPDATE billing_purchase SET credits = 2200 WHERE id = %s", [world.purchase.pk])
    found = [p for p in find_problems()[0] if p.check == "purchases_credited_once"]
    assert len(found) == 1 and "2200 credits" in found[0].detail and "totalling 1100" in found[0].detail


def test_minted_purchase_credits_that_name_no_purchase_are_caught(world):
    entry = forge_entry(world.payer, "purchase", 5000, "cs_never_sold")
    found = [str(p) for p in find_problems()[0]]
    assert any(f"purchase entry #{entry} (cs_never_sold) credits no paid purchase" in line for line in found)


# --- reversals ------------------------------------------------------------------------------------


def test_credits_given_back_without_a_reason_are_caught_even_with_the_cache_moved_along(world):
    forge_entry(world.payer, "reinstatement", 275, "evt_forged_reinstatement", purchase_id=world.refunded.pk)
    found = [p for p in find_problems()[0] if p.check == "reversals_match"]
    assert len(found) == 1
    assert f"purchase #{world.refunded.pk}" in found[0].detail
    assert "credits_reversed 275 but its reversal and reinstatement entries move 0" in found[0].detail
    assert "cached_totals" not in checks_failed()


def test_a_reversal_that_disagrees_with_the_refunds_it_came_from_is_caught(world):
    sql("UPDATE billing_paymentreversal SET amount = 500 WHERE purchase_id = %s", [world.refunded.pk])
    found = [p for p in find_problems()[0] if p.check == "reversals_match"]
    assert len(found) == 1 and f"ch_{world.refunded.pk}" in found[0].detail and "say 550" in found[0].detail


def test_a_reversal_entry_that_adds_credits_is_caught(world):
    entry = forge_entry(world.payer, "reversal", 50, "evt_backwards", purchase_id=world.refunded.pk)
    assert any(f"entry #{entry} (reversal" in line and "takes credits back" in line for line in problems())


def test_a_settlement_that_does_not_pay_what_is_owed_is_caught(world):
    entry = forge_entry(world.debtor, "settlement", 0, "settles-nothing", owed_change=-66)
    found = [p for p in find_problems()[0] if p.check == "entry_shapes"]
    assert len(found) == 1 and f"entry #{entry} (settlement" in found[0].detail
    assert found[0].account_id == account_of(world.debtor)


# --- the command ------------------------------------------------------------------------------------


def test_the_command_prints_one_line_per_problem_and_exits_1(world):
    sql("UPDATE imaging_render SET credits_charged = 0 WHERE id = %s", [world.succeeded.pk])
    sql("UPDATE billing_creditaccount SET owed = owed + 1 WHERE user_id = %s", [world.debtor.pk])
    err = StringIO()

    with pytest.raises(CommandError) as failure:
        call_command("audit_ledger", stdout=StringIO(), stderr=err)

    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"account #{account_of(world.debtor)} ({world.debtor.email}): owed 67")
    assert lines[1].startswith(f"account #{account_of(world.payer)} ({world.payer.email}): render ")
    assert failure.value.returncode == 1
    assert "2 problems; 2 of 2 credit accounts drift" in str(failure.value)


def test_with_first_the_command_stops_at_the_first_problem(world):
    sql("UPDATE imaging_render SET credits_charged = 0 WHERE id = %s", [world.succeeded.pk])
    sql("UPDATE billing_creditaccount SET owed = owed + 1 WHERE user_id = %s", [world.debtor.pk])
    err = StringIO()
    with pytest.raises(CommandError, match="1 problem;"):
        call_command("audit_ledger", "--first", stdout=StringIO(), stderr=err)
    assert err.getvalue().count("\n") == 1 and "owed 67" in err.getvalue()


@pytest.mark.django_db(transaction=True)
def test_manage_py_audit_ledger_exits_non_zero_as_a_process(world):
    clean = subprocess.run([sys.executable, "manage.py", "audit_ledger"], cwd=ROOT, capture_output=True, text=True,
                           env=_child_env())
    assert clean.returncode == 0, clean.stderr
    sql("UPDATE imaging_render SET credits_charged = 0 WHERE id = %s", [world.succeeded.pk])

    broken = subprocess.run([sys.executable, "manage.py", "audit_ledger"], cwd=ROOT, capture_output=True, text=True,
                            env=_child_env())

    assert broken.returncode == 1
    assert f"render {world.succeeded.public_id} (succeeded) says credits_charged 0" in broken.stderr


def _child_env() -> dict[str, str]:
    import os

    return {**os.environ, "DJANGO_SETTINGS_MODULE": "platform_site.settings",
            "DATABASE_URL": database_url(connections["default"].settings_dict), "DB_CONN_MAX_AGE": "0"}
