"""`manage.py audit_ledger` passes a balanced ledger and names every account that drifts."""

from __future__ import annotations

from io import StringIO
from itertools import count

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from billing import ledger
from billing.models import CreditAccount

pytestmark = pytest.mark.django_db

_emails = count()


def make_user(**extra):
    from accounts.models import User

    return User.objects.create_user(email=f"audited{next(_emails)}@example.com", password="pw-123456789",
                                    email_verified_at=timezone.now(), **extra)


def audit() -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("audit_ledger", stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def busy_account():
    user = make_user()
    ledger.grant(user, 100, reference=f"gift-{user.pk}")
    captured = ledger.reserve(user, 22, reference=f"rnd_a{user.pk}")
    ledger.capture(captured.pk)
    ledger.release(ledger.reserve(user, 22, reference=f"rnd_b{user.pk}").pk)
    ledger.reserve(user, 22, reference=f"rnd_c{user.pk}")
    return user


def raw_update(sql: str, params: list) -> None:
    # Straight to the table, as a bug or a hand-edit in psql would.
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def test_a_balanced_ledger_passes():
    busy_account()
    busy_account()
    out, err = audit()
    assert "ledger balanced: 2 credit accounts checked" in out and err == ""


def test_a_balance_changed_behind_the_ledgers_back_is_named():
    honest, tampered = busy_account(), busy_account()
    account = CreditAccount.objects.get(user=tampered)
    raw_update("UPDATE billing_creditaccount SET balance = balance + 50 WHERE id = %s", [account.pk])

    with pytest.raises(CommandError) as failure:
        audit()

    message = str(failure.value)
    assert f"#{account.pk} ({tampered.email})" in message and "1 of 2" in message
    assert honest.email not in message


def test_a_held_amount_that_disagrees_with_pending_holds_is_named():
    user = busy_account()
    account = CreditAccount.objects.get(user=user)
    raw_update("UPDATE billing_creditaccount SET held = 0 WHERE id = %s", [account.pk])
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError, match=user.email):
        call_command("audit_ledger", stdout=out, stderr=err)
    assert "held 0 but pending holds sum to 22" in err.getvalue()


def test_a_drift_makes_the_command_exit_non_zero():
    user = busy_account()
    raw_update("UPDATE billing_creditaccount SET balance = balance - 1 WHERE user_id = %s", [user.pk])
    with pytest.raises(CommandError) as failure:
        audit()
    # manage.py turns a CommandError into sys.exit(returncode).
    assert failure.value.returncode == 1
