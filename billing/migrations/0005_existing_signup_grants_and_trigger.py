"""Two follow-ups to 0004.

* SQLite rebuilds a table to add columns with defaults or constraints, and the rebuild
  drops its triggers; the append-only trigger of 0003 is put back (PostgreSQL alters
  tables in place and keeps it, so there this is a no-op).
* Accounts created before e-mail verification already hold their sign-up grant (ledger
  reference ``signup:<user id>``). Each gets its SignupGrant row, so an alias of their
  address signing up now gets no second grant; where two old accounts share a canonical
  address, the older grant claims it.
"""

from django.db import migrations

SQLITE_TRIGGER = """
CREATE TRIGGER IF NOT EXISTS billing_ledgerentry_no_update BEFORE UPDATE ON billing_ledgerentry
BEGIN SELECT RAISE(ABORT, 'billing_ledgerentry is append-only (UPDATE refused)'); END
"""


def reinstall_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute(SQLITE_TRIGGER, params=None)


def record_existing_grants(apps, schema_editor):
    from accounts.email_identity import canonical_email

    LedgerEntry = apps.get_model("billing", "LedgerEntry")
    SignupGrant = apps.get_model("billing", "SignupGrant")
    User = apps.get_model("accounts", "User")
    claimed = set(SignupGrant.objects.values_list("address", flat=True))
    grants = (LedgerEntry.objects.filter(kind="grant", reference__startswith="signup:")
              .order_by("id").values_list("reference", "amount", "created_at"))
    for reference, amount, created_at in grants:
        user_id = reference.split(":", 1)[1]
        if not user_id.isdigit():
            continue
        user = User.objects.filter(pk=int(user_id)).first()
        if user is None or SignupGrant.objects.filter(user_id=user.pk).exists():
            continue
        address = canonical_email(user.email)
        if address in claimed:
            continue
        SignupGrant.objects.create(user_id=user.pk, address=address, credits=amount, created_at=created_at)
        claimed.add(address)


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0004_owed_credits_reversals_signup_grants"),
        ("accounts", "0002_email_verified_at"),
    ]

    operations = [
        migrations.RunPython(reinstall_trigger, migrations.RunPython.noop),
        migrations.RunPython(record_existing_grants, migrations.RunPython.noop),
    ]
