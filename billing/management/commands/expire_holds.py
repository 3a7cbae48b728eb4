"""`manage.py expire_holds`: releases pending holds past their deadline (the sweeper's job)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from billing import ledger


class Command(BaseCommand):
    help = "Expires pending credit holds whose deadline has passed."

    def handle(self, *args: Any, **options: Any) -> None:
        count = ledger.expire_due_holds()
        self.stdout.write(f"expired {count} hold{'s' if count != 1 else ''}")
