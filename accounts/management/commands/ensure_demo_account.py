"""`manage.py ensure_demo_account`: the account `make run` tells you to sign in with.

Development only: a well-known password on a staff account is a hole anywhere else,
so the command refuses to run when DEBUG is off. Safe to run on every start: the user
is created once, and credits are granted under a fixed ledger reference, which the
ledger applies at most once.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from accounts.models import User

DEMO_EMAIL = "demo@example.com"
DEMO_PASSWORD = "demo-password"
DEMO_RENDERS = 100
GRANT_REFERENCE = "demo-account"
DEMO_KEY_NAME = "make run (var/demo-api-key)"


class Command(BaseCommand):
    help = "Creates the development demo account (demo@example.com) once; refuses when DEBUG is off."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError(
                "ensure_demo_account is for development only and refuses to run with DEBUG off."
            )
        with transaction.atomic():
            user = User.objects.filter(email=DEMO_EMAIL).first()
            created = user is None
            if user is None:
                # A superuser (staff with every permission) so the admin shows
                # everything in development; an existing account is left as it is.
                # Its address is known not to be real, so it counts as verified.
                user = User.objects.create_superuser(DEMO_EMAIL, DEMO_PASSWORD, email_verified_at=timezone.now())
            credits = self._grant_credits(user)
        key_note = self._ensure_key_file(user, Path(options["key_file"]))
        state = "created" if created else "already exists"
        self.stdout.write(f"demo account {state}: sign in at {settings.SITE_URL}/login/")
        self.stdout.write(f"  e-mail:   {DEMO_EMAIL}")
        self.stdout.write(f"  password: {DEMO_PASSWORD}" + ("" if created else " (unless changed)"))
        self.stdout.write(f"  credits:  {credits}")
        self.stdout.write(f"  API key:  {key_note}")

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--key-file", default=str(settings.BASE_DIR / "var" / "demo-api-key"),
                            help="where the demo account's API key is kept (mode 600)")

    def _ensure_key_file(self, user: User, path: Path) -> str:
        """Keeps a working API key of the demo account in ``path``, for the README's curl.

        Keys are stored hashed, so the plaintext exists only in this file: a key in it
        that still authenticates is kept; otherwise a new key is issued and written.
        """
        from accounts.keys import ApiKeyLimitReached, authenticate_key, issue_key

        try:
            existing = path.read_text().strip()
        except OSError:
            existing = ""
        if existing and (found := authenticate_key(existing)) is not None and found.user_id == user.pk:
            return f"in {path} (export PIXELAPI_KEY=$(cat {path.name}) from its folder)"
        try:
            _, raw = issue_key(user, DEMO_KEY_NAME)
        except ApiKeyLimitReached:
            return "none: the demo account has the most keys allowed; revoke one on the Keys page"
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(raw + "\n")
        return f"new, in {path}"

    def _grant_credits(self, user: User) -> str:
        """Grants the demo credits through billing's ledger, when there is one.

        Looked up lazily so accounts does not depend on billing; an ImportError raised
        *inside* an existing ledger module is a real bug and is not swallowed.
        """
        if importlib.util.find_spec("billing.ledger") is None:
            return "none (billing is not installed)"
        ledger = importlib.import_module("billing.ledger")
        amount = DEMO_RENDERS * settings.CREDITS_PER_RENDER
        entry = ledger.grant(
            user, amount, kind="grant", reference=GRANT_REFERENCE,
            actor="ensure_demo_account", note="development demo account",
        )
        if entry is None:
            return "demo grant already given"
        return f"granted {amount} ({DEMO_RENDERS} renders)"
