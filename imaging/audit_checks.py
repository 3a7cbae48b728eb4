"""imaging's check for ``audit_ledger``: what a render says it cost is what the ledger charged.

Billing does not know about images, so the check lives here and registers itself with
``billing.audit`` when imaging loads. A render's ``credits_charged`` must equal minus
the usage entries of its hold (22 for a captured hold, 0 otherwise), and the hold must
be on the render owner's account; a render without a hold charged nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import BigIntegerField, F, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from billing.audit import Problem, register
from billing.models import EntryKind, Hold, LedgerEntry
from imaging.models import Render


@register("render_charges")
def render_charges() -> Iterator[Problem]:
    usage = (LedgerEntry.objects.filter(hold_id=OuterRef("hold_id"), kind=EntryKind.USAGE).order_by()
             .values("hold_id").annotate(t=Sum("amount")).values("t"))
    hold_owner = Hold.objects.filter(pk=OuterRef("hold_id")).values("account__user_id")[:1]
    rows = (
        Render.objects.annotate(
            charged_by_ledger=Coalesce(-Subquery(usage), Value(0), output_field=BigIntegerField()),
            hold_owner=Subquery(hold_owner),
        )
        .filter(~Q(credits_charged=F("charged_by_ledger"))
                | (Q(hold_id__isnull=False) & (Q(hold_owner__isnull=True) | ~Q(hold_owner=F("user_id")))))
        .order_by("user_id", "pk")
        .values_list("user__credit_account__id", "user__email", "public_id", "status", "hold_id",
                     "credits_charged", "charged_by_ledger", "hold_owner", "user_id")
    )
    for account_id, email, public_id, status, hold_id, charged, ledger_charged, owner, user_id in rows:
        detail = (f"render {public_id} ({status}) says credits_charged {charged}, "
                  f"the ledger charged {ledger_charged} for hold #{hold_id}")
        if hold_id is not None and owner != user_id:
            detail += "; the hold is missing or on another account"
        yield Problem("render_charges", account_id, email, detail)
