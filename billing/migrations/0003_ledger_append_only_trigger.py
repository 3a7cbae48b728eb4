"""Append-only ledger in the database itself, not only in the ORM.

The model already refuses save-after-insert, delete and queryset update/delete; these
triggers also stop raw SQL and other clients. Updates are refused everywhere. Deletes
are refused on PostgreSQL only: test databases on SQLite are emptied with DELETE, while
PostgreSQL's flush uses TRUNCATE, which row triggers do not see.
"""

from django.db import migrations

PG_FORWARD = ["""
CREATE OR REPLACE FUNCTION billing_ledger_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'billing_ledgerentry is append-only (% refused)', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$ LANGUAGE plpgsql
""", """
CREATE TRIGGER billing_ledgerentry_append_only
    BEFORE UPDATE OR DELETE ON billing_ledgerentry
    FOR EACH ROW EXECUTE FUNCTION billing_ledger_append_only()
"""]
PG_BACKWARD = [
    "DROP TRIGGER IF EXISTS billing_ledgerentry_append_only ON billing_ledgerentry",
    "DROP FUNCTION IF EXISTS billing_ledger_append_only()",
]
SQLITE_FORWARD = ["""
CREATE TRIGGER billing_ledgerentry_no_update BEFORE UPDATE ON billing_ledgerentry
BEGIN SELECT RAISE(ABORT, 'billing_ledgerentry is append-only (UPDATE refused)'); END
"""]
SQLITE_BACKWARD = ["DROP TRIGGER IF EXISTS billing_ledgerentry_no_update"]


def forward(apps, schema_editor):
    for statement in {"postgresql": PG_FORWARD, "sqlite": SQLITE_FORWARD}.get(schema_editor.connection.vendor, []):
        schema_editor.execute(statement, params=None)


def backward(apps, schema_editor):
    for statement in {"postgresql": PG_BACKWARD, "sqlite": SQLITE_BACKWARD}.get(schema_editor.connection.vendor, []):
        schema_editor.execute(statement, params=None)


class Migration(migrations.Migration):
    dependencies = [("billing", "0002_default_credit_packs")]

    operations = [migrations.RunPython(forward, backward)]
