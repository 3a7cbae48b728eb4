"""The ledger under real concurrency: threads with their own connections and real commits.

Row locks are no-ops on SQLite, so these run on PostgreSQL only (CI sets DATABASE_URL).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import count
from typing import Any

import pytest
from django.conf import settings
from django.db import connections
from django.utils import timezone

from billing import ledger
from billing.audit import find_drift
from billing.models import CreditAccount, EntryKind, Hold, HoldStatus, LedgerEntry

# On PostgreSQL the row locks serialise these; on SQLite (which ignores FOR UPDATE)
# the IMMEDIATE transactions of platform_site.settings do. Both must come out exact.
pytestmark = [pytest.mark.django_db(transaction=True)]

_emails = count()


def make_user():
    from accounts.models import User

    return User.objects.create_user(email=f"racer{next(_emails)}@example.com", password="pw-123456789",
                                    email_verified_at=timezone.now())


def race(n: int, work: Callable[[int], Any]) -> list[Any]:
    """Runs work(i) in n threads released together; returns results or raised exceptions."""
    barrier = threading.Barrier(n)

    def run(i: int) -> Any:
        try:
            barrier.wait(timeout=10)
            return work(i)
        except Exception as exc:  # noqa: BLE001 - the exception is the result under test
            return exc
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n)))


@pytest.mark.parametrize("renders_covered,threads", [(3, 12), (5, 16)])
def test_only_as_many_reserves_as_the_balance_covers_succeed(settings, renders_covered, threads):
    settings.SIGNUP_GRANT_CREDITS = 0
    user = make_user()
    ledger.grant(user, renders_covered * 22, reference="exact")

    results = race(threads, lambda i: ledger.reserve(user, 22, reference=f"rnd_{i}"))

    holds = [r for r in results if isinstance(r, Hold)]
    refused = [r for r in results if isinstance(r, ledger.InsufficientCredits)]
    assert len(holds) == renders_covered, results
    assert len(refused) == threads - renders_covered, results
    assert all(r.available >= 0 for r in refused)
    assert ledger.balances(user) == ledger.Balances(renders_covered * 22, renders_covered * 22, 0)
    assert Hold.objects.filter(status=HoldStatus.PENDING).count() == renders_covered
    assert find_drift()[0] == []


def test_reserves_and_captures_interleaved_never_overdraw(settings):
    settings.SIGNUP_GRANT_CREDITS = 0
    user = make_user()
    ledger.grant(user, 4 * 22, reference="four")

    def reserve_and_capture(i: int) -> bool:
        hold = ledger.reserve(user, 22, reference=f"rnd_rc_{i}")
        return ledger.capture(hold.pk)

    results = race(10, reserve_and_capture)
    assert results.count(True) == 4
    assert sum(isinstance(r, ledger.InsufficientCredits) for r in results) == 6
    assert ledger.balances(user) == ledger.Balances(0, 0, 0)
    assert LedgerEntry.objects.filter(kind=EntryKind.USAGE).count() == 4
    assert find_drift()[0] == []


@pytest.mark.parametrize("attempt", range(3))
def test_a_concurrent_capture_and_release_resolve_a_hold_exactly_once(attempt):
    user = make_user()
    hold = ledger.reserve(user, 22, reference=f"rnd_cr_{attempt}")
    actions = [lambda: ledger.capture(hold.pk), lambda: ledger.release(hold.pk)] * 3

    results = race(len(actions), lambda i: actions[i]())

    assert results.count(True) == 1, results
    assert results.count(False) == len(actions) - 1, results
    hold.refresh_from_db()
    usage = LedgerEntry.objects.filter(kind=EntryKind.USAGE).count()
    if hold.status == HoldStatus.CAPTURED:
        assert usage == 1 and ledger.balances(user) == ledger.Balances(198, 0, 198)
    else:
        assert hold.status == HoldStatus.RELEASED
        assert usage == 0 and ledger.balances(user) == ledger.Balances(220, 0, 220)


def test_concurrent_captures_of_one_hold_charge_once():
    user = make_user()
    hold = ledger.reserve(user, 22, reference="rnd_cc")
    results = race(8, lambda i: ledger.capture(hold.pk))
    assert results.count(True) == 1, results
    assert ledger.balances(user) == ledger.Balances(198, 0, 198)


def test_concurrent_grants_with_one_reference_credit_once():
    user = make_user()
    results = race(8, lambda i: ledger.grant(user, 100, reference="bonus-once"))
    assert sum(isinstance(r, LedgerEntry) for r in results) == 1, results
    assert results.count(None) == 7, results
    assert ledger.balances(user).balance == settings.SIGNUP_GRANT_CREDITS + 100


def test_concurrent_first_uses_create_one_account(settings):
    settings.SIGNUP_GRANT_CREDITS = 0
    user = make_user()
    CreditAccount.objects.filter(user=user).delete()

    results = race(8, lambda i: ledger.grant(user, 1, reference=f"first-{i}"))

    assert all(isinstance(r, LedgerEntry) for r in results), results
    assert CreditAccount.objects.filter(user=user).count() == 1
    assert ledger.balances(user).balance == 8
    assert find_drift()[0] == []
