"""`manage.py audit_ledger`: checks the ledger against its caches and against what it is about.

The checks are listed in ``billing.audit`` (cached totals, the balance_after/owed_after
chain, entry shapes, one usage entry per captured hold, one purchase entry per paid
purchase, reversals against refunds and disputes, and render charges from imaging).
Prints one line per problem on stderr, naming the account and the ids involved, and
exits 1 if there is even one; exit 0 means every check passed. ``--first`` stops at the
first problem (a quick yes/no on a large ledger).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from billing.audit import CHECKS, find_problems


class Command(BaseCommand):
    help = "Checks every ledger invariant (see billing.audit); exits 1 naming each problem."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--first", action="store_true",
                            help="Stop at the first problem instead of listing them all.")

    def handle(self, *args: Any, **options: Any) -> None:
        problems, checked = find_problems(first_only=options["first"])
        for problem in problems:
            self.stderr.write(str(problem))
        if problems:
            accounts = sorted({(p.account_id or 0, p.email) for p in problems})
            names = ", ".join(f"#{pk} ({email})" for pk, email in accounts)
            raise CommandError(
                f"{len(problems)} problem{'s' if len(problems) != 1 else ''}; "
                f"{len(accounts)} of {checked} credit accounts drift: {names}"
            )
        self.stdout.write(f"ledger balanced: {checked} credit accounts checked, "
                          f"{len(CHECKS)} checks passed ({', '.join(name for name, _ in CHECKS)})")
