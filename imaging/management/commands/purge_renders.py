"""Deletes renders' stored files after the retention period (RETENTION_DAYS)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from imaging.retention import purge, purge_webhooks


class Command(BaseCommand):
    help = ("Delete input, output and matte files of renders older than RETENTION_DAYS, and webhook "
            "events and deliveries older than WEBHOOK_RETENTION_DAYS.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=None, help="Override RETENTION_DAYS.")
        parser.add_argument("--dry-run", action="store_true", help="Only count what would go.")

    def handle(self, *args: Any, **options: Any) -> None:
        count = purge(days=options["days"], dry_run=options["dry_run"])
        verb = "would purge" if options["dry_run"] else "purged"
        self.stdout.write(f"{verb} files of {count} renders")
        # --days overrides RETENTION_DAYS only; webhook payloads keep their own period.
        events = purge_webhooks(dry_run=options["dry_run"])
        self.stdout.write(f"{verb} {events} webhook events (WEBHOOK_RETENTION_DAYS)")
