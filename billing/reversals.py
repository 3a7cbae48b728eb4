"""From what Stripe said about refunds and disputes to the credits a purchase gives back.

Pure functions over ``PaymentReversal`` rows; ``billing.ledger`` applies the result.

The policy:

* A refund takes back the purchase's credits in proportion to the money returned,
  rounded down (a refund of half the price takes half the credits; a full refund all
  of them). Refunds count from when Stripe reports them (``pending`` or
  ``succeeded``); one that later fails or is canceled gives its credits back.
* A dispute takes back its share of the credits as soon as it is opened (inquiries
  included), and gives them back if it is won, or if an inquiry closes without
  becoming a chargeback; a lost dispute keeps them.
* Refunds and disputes together never take back more than the purchase gave.

How overlapping reports reconcile. ``charge.refunded`` carries the charge's cumulative
``amount_refunded``; ``refund.*`` events carry single refunds. Both describe the same
money, so the refunded amount is the larger of the two views, never their sum. A refund
that failed after a charge snapshot was taken is subtracted from that snapshot (its
``as_of`` is the failure's event time). Out-of-order delivery: a state overwrites the
stored one only if its event is not older; a final state (a refund failed or canceled, a
dispute won, lost or closed) is never overwritten. Every event can thus be applied in
any order, any number of times, and the stored state ends the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from billing.models import PaymentReversal, Purchase, PurchaseStatus, ReversalKind, format_money

REFUND_ENDED = frozenset({"failed", "canceled"})
DISPUTE_FINAL = frozenset({"won", "lost", "warning_closed", "prevented"})
# Closed in our favour (or never a chargeback): the credits come back.
DISPUTE_RELEASED = frozenset({"won", "warning_closed", "prevented"})


@dataclass(frozen=True)
class ReversalState:
    """One object's state as an event reports it."""

    kind: str
    stripe_id: str
    amount: int
    status: str
    payment_intent: str = ""
    charge: str = ""
    currency: str = ""
    reason: str = ""


def _final(kind: str, status: str) -> bool:
    if kind == ReversalKind.REFUND:
        return status in REFUND_ENDED
    if kind == ReversalKind.DISPUTE:
        return status in DISPUTE_FINAL
    return False


def supersedes(row: PaymentReversal, state: ReversalState, as_of: int) -> bool:
    """Whether ``state`` (from an event created at ``as_of``) replaces what ``row`` holds."""
    if _final(row.kind, row.status):
        return False
    if _final(state.kind, state.status):
        return True
    if as_of != row.as_of:
        return as_of > row.as_of
    if row.kind == ReversalKind.CHARGE_REFUNDS:
        # Same second: the refunded total only grows between failures.
        return state.amount >= row.amount
    return True


def takes_back(row: Any) -> bool:
    """Whether this refund or dispute currently takes money back (charge totals: always)."""
    if row.kind == ReversalKind.REFUND:
        return row.status not in REFUND_ENDED
    if row.kind == ReversalKind.DISPUTE:
        return row.status not in DISPUTE_RELEASED
    return True


def refunded_amount(rows: Iterable[Any]) -> int:
    rows = list(rows)
    refunds = [r for r in rows if r.kind == ReversalKind.REFUND]
    views = [sum(r.amount for r in refunds if takes_back(r))]
    for snapshot in (r for r in rows if r.kind == ReversalKind.CHARGE_REFUNDS):
        failed_since = sum(r.amount for r in refunds if not takes_back(r)
                           and r.charge == snapshot.stripe_id and r.as_of >= snapshot.as_of)
        views.append(max(0, snapshot.amount - failed_since))
    return max(views)


def disputed_amount(rows: Iterable[Any]) -> int:
    return sum(r.amount for r in rows if r.kind == ReversalKind.DISPUTE and takes_back(r))


def reversed_amount(purchase_amount: int, rows: Iterable[Any]) -> int:
    """Money taken back from a payment of ``purchase_amount`` (minor units)."""
    rows = list(rows)
    return min(purchase_amount, refunded_amount(rows) + disputed_amount(rows))


def credits_to_reverse(purchase: Purchase, rows: Iterable[Any]) -> int:
    """The credits a purchase should have taken back now: 0 until it has been paid."""
    if purchase.status != PurchaseStatus.PAID or purchase.amount <= 0:
        return 0
    return purchase.credits * reversed_amount(purchase.amount, rows) // purchase.amount


def describe(purchase: Purchase, rows: Iterable[Any]) -> str:
    """One line for the ledger entry's note: what was refunded and disputed."""
    rows = list(rows)
    parts = []
    refunded, disputed = refunded_amount(rows), disputed_amount(rows)
    if refunded:
        parts.append(f"refunded {format_money(refunded, purchase.currency)}")
    open_disputes = [r for r in rows if r.kind == ReversalKind.DISPUTE]
    for dispute in open_disputes:
        parts.append(f"dispute {dispute.stripe_id} {dispute.status}")
    if not parts:
        parts.append("nothing refunded or disputed")
    return (f"{purchase.client_reference_id} ({format_money(purchase.amount, purchase.currency)}): "
            + ", ".join(parts) + (f"; {format_money(disputed, purchase.currency)} in dispute" if disputed else ""))
