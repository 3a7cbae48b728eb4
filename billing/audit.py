"""Compares every account's cached balance and held with what they summarise."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import BigIntegerField, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from billing.models import CreditAccount, Hold, HoldStatus, LedgerEntry


@dataclass(frozen=True)
class Drift:
    account_id: int
    email: str
    balance: int
    held: int
    entries_total: int
    pending_total: int
    last_balance_after: int

    def __str__(self) -> str:
        problems = []
        if self.balance != self.entries_total:
            problems.append(f"balance {self.balance} but entries sum to {self.entries_total}")
        if self.held != self.pending_total:
            problems.append(f"held {self.held} but pending holds sum to {self.pending_total}")
        if self.balance != self.last_balance_after:
            problems.append(f"balance {self.balance} but the newest entry says {self.last_balance_after}")
        return f"account #{self.account_id} ({self.email}): " + "; ".join(problems)


def _total(queryset, field: str) -> Coalesce:
    summed = queryset.order_by().values("account").annotate(total=Sum(field)).values("total")
    return Coalesce(Subquery(summed), Value(0), output_field=BigIntegerField())


def find_drift() -> tuple[list[Drift], int]:
    """Returns (drifting accounts, accounts checked).

    One SQL statement computes everything, so on PostgreSQL it reads one snapshot and
    renders in flight cannot make a balanced account look drifted.
    """
    entries = LedgerEntry.objects.filter(account=OuterRef("pk"))
    pending = Hold.objects.filter(account=OuterRef("pk"), status=HoldStatus.PENDING)
    newest = LedgerEntry.objects.filter(account=OuterRef("pk")).order_by("-id").values("balance_after")[:1]
    rows = (
        CreditAccount.objects.annotate(
            entries_total=_total(entries, "amount"),
            pending_total=_total(pending, "amount"),
            last_balance_after=Coalesce(Subquery(newest), Value(0), output_field=BigIntegerField()),
        )
        .order_by("pk")
        .values_list(
            "pk", "user__email", "balance", "held", "entries_total", "pending_total", "last_balance_after"
        )
    )
    drifts: list[Drift] = []
    checked = 0
    for row in rows.iterator(chunk_size=2000):
        checked += 1
        drift = Drift(*row)
        if (drift.balance, drift.held, drift.balance) != (
            drift.entries_total, drift.pending_total, drift.last_balance_after
        ):
            drifts.append(drift)
    return drifts, checked
