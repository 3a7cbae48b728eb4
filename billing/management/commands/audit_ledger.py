"""`manage.py audit_ledger`: proves the cached balances still equal the ledger.

For every account: balance == sum of its entries, held == sum of its pending holds,
and the newest entry's balance_after == balance. Exits 1 naming each drifting account.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from billing.audit import find_drift


class Command(BaseCommand):
    help = "Checks balance == sum(entries) and held == sum(pending holds) for every credit account."

    def handle(self, *args: Any, **options: Any) -> None:
        drifts, checked = find_drift()
        for drift in drifts:
            self.stderr.write(str(drift))
        if drifts:
            names = ", ".join(f"#{d.account_id} ({d.email})" for d in drifts)
            raise CommandError(f"{len(drifts)} of {checked} credit accounts drift: {names}")
        self.stdout.write(f"ledger balanced: {checked} credit accounts checked")
