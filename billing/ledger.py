"""The only code that changes credit balances.

Every public function here is one atomic transaction. Locking rules, which keep money
exact under concurrency and duplicate deliveries:

* The account row is locked (``SELECT ... FOR UPDATE``) before anything that changes it
  is read, so each function sees the account exactly as the previous holder of the lock
  left it.
* Lock order is always account row first, then the hold or purchase row. A function that
  ever needs several accounts must lock them in ascending primary key order (none does
  today: every operation touches one account).
* The cached ``balance`` and ``held`` change only together with the rows they summarise
  (a ledger entry, a hold's status), in the same transaction.

Amounts are integers of credits. A hold resolves exactly once: ``capture``, ``release``
and ``expire`` return True only for the call that resolved it; any later call returns
False and changes nothing, so a late or duplicated worker signal cannot charge twice or
undo a capture.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.models import (
    CreditAccount,
    EntryKind,
    Hold,
    HoldStatus,
    LedgerEntry,
    Purchase,
    PurchaseStatus,
    StripeEvent,
)

log = logging.getLogger(__name__)

__all__ = [
    "Balances",
    "CheckoutEvent",
    "InsufficientCredits",
    "PurchaseOutcome",
    "adjust",
    "balances",
    "ensure_account",
    "capture",
    "expire",
    "expire_due_holds",
    "grant",
    "record_purchase_failed",
    "record_purchase_paid",
    "record_purchase_processing",
    "release",
    "reserve",
]

# Kinds that grant() may write; usage comes only from capture(), adjustments only from adjust().
GRANTABLE_KINDS = frozenset({EntryKind.GRANT, EntryKind.PURCHASE, EntryKind.REFUND})


class InsufficientCredits(Exception):
    """Too few available credits. The API maps this to 402 ``insufficient_credits``."""

    def __init__(self, available: int, required: int) -> None:
        super().__init__(f"{required} credits required, {available} available")
        self.available = available
        self.required = required


@dataclass(frozen=True)
class Balances:
    """A snapshot of one account; ``available = balance - held`` is what a reserve may take."""

    balance: int
    held: int
    available: int

    @classmethod
    def of(cls, balance: int, held: int) -> Balances:
        return cls(balance=balance, held=held, available=balance - held)


def _user_id(user: Any) -> int:
    return user if isinstance(user, int) else user.pk


def _lock_account(user_id: int) -> CreditAccount:
    """Locks the user's account row, creating it on first use.

    ON CONFLICT DO NOTHING (ignore_conflicts) makes concurrent first uses safe: the
    loser waits for the winner's insert, skips its own, then locks the winner's row.
    """
    try:
        return CreditAccount.objects.select_for_update().get(user_id=user_id)
    except CreditAccount.DoesNotExist:
        CreditAccount.objects.bulk_create([CreditAccount(user_id=user_id)], ignore_conflicts=True)
        return CreditAccount.objects.select_for_update().get(user_id=user_id)


def _append_entry(
    account: CreditAccount,
    *,
    kind: str,
    amount: int,
    reference: str,
    actor: str,
    note: str = "",
    hold: Hold | None = None,
    also_save: tuple[str, ...] = (),
) -> LedgerEntry:
    """Writes one entry and moves the cached balance with it. Caller holds the account lock.

    ``also_save`` names other account fields the caller changed under the same lock, so
    the account row is written once (a capture moves ``held`` and ``balance`` together).
    """
    if not isinstance(amount, int) or isinstance(amount, bool) or amount == 0:
        raise ValueError("a ledger amount is a non-zero integer")
    new_balance = account.balance + amount
    if new_balance < account.held:
        # Held credits are promised to renders in flight; nothing may take them away.
        raise InsufficientCredits(account.available, -amount)
    now = timezone.now()
    entry = LedgerEntry.objects.create(
        account=account,
        kind=kind,
        amount=amount,
        balance_after=new_balance,
        reference=reference,
        actor=actor,
        note=note,
        hold=hold,
        created_at=now,
    )
    account.balance = new_balance
    account.updated_at = now
    account.save(update_fields=["balance", "updated_at", *also_save])
    return entry


def balances(user: Any) -> Balances:
    """The user's balance and held credits; zeros for a user who has no account yet."""
    row = (
        CreditAccount.objects.filter(user_id=_user_id(user)).values_list("balance", "held").first()
    )
    return Balances.of(*row) if row else Balances.of(0, 0)


def ensure_account(user: Any) -> CreditAccount:
    """The user's account, created if missing. Changes no balance."""
    with transaction.atomic():
        return _lock_account(_user_id(user))


def grant(
    user: Any,
    amount: int,
    *,
    kind: str = EntryKind.GRANT,
    reference: str,
    actor: str = "system",
    note: str = "",
) -> LedgerEntry | None:
    """Adds credits. Idempotent per (kind, reference): a repeat returns None and changes nothing.

    That makes it safe to call from anything that may run twice (a signal, a webhook, a
    retried job) as long as the reference names the cause (``signup:<user id>``, a
    Checkout Session id, a render id for a refund).
    """
    if kind not in GRANTABLE_KINDS:
        raise ValueError(f"grant() writes {sorted(GRANTABLE_KINDS)} entries, not {kind!r}")
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise ValueError("a grant is a positive integer of credits")
    if not reference:
        raise ValueError("a grant needs a reference")
    with transaction.atomic():
        account = _lock_account(_user_id(user))
        if LedgerEntry.objects.filter(kind=kind, reference=reference).exists():
            return None
        try:
            # A savepoint, so that losing a race against another account's grant with the
            # same reference (which the unique constraint catches) leaves our transaction usable.
            with transaction.atomic():
                return _append_entry(
                    account, kind=kind, amount=amount, reference=reference, actor=actor, note=note
                )
        except IntegrityError:
            if LedgerEntry.objects.filter(kind=kind, reference=reference).exists():
                return None
            raise


def reserve(
    user: Any, amount: int, *, reference: str, expires_at: datetime | None = None
) -> Hold:
    """Sets ``amount`` credits aside in a pending hold, or raises InsufficientCredits.

    ``reference`` (a render's public id) is unique. Reserving again with a reference that
    already has a hold on the same account for the same amount returns that hold unchanged,
    so a retried request cannot hold twice; any other reuse is a ValueError.
    """
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise ValueError("a hold is a positive integer of credits")
    if not reference:
        raise ValueError("a hold needs a reference")
    with transaction.atomic():
        account = _lock_account(_user_id(user))
        existing = Hold.objects.filter(reference=reference).first()
        if existing is not None:
            if existing.account_id == account.pk and existing.amount == amount:
                return existing
            raise ValueError(f"hold reference {reference!r} is already used")
        if account.available < amount:
            raise InsufficientCredits(account.available, amount)
        now = timezone.now()
        hold = Hold.objects.create(
            account=account,
            amount=amount,
            reference=reference,
            created_at=now,
            expires_at=expires_at or now + timedelta(seconds=settings.HOLD_TTL_SECONDS),
        )
        account.held += amount
        account.updated_at = now
        account.save(update_fields=["held", "updated_at"])
        return hold


def _resolve(hold_id: int, status: HoldStatus, *, actor: str, reference: str | None = None) -> bool:
    with transaction.atomic():
        account_id = Hold.objects.filter(pk=hold_id).values_list("account_id", flat=True).first()
        if account_id is None:
            raise Hold.DoesNotExist(f"no hold with id {hold_id}")
        account = CreditAccount.objects.select_for_update().get(pk=account_id)
        # Read under the account lock: whoever resolved it before us has committed by now.
        hold = Hold.objects.select_for_update().get(pk=hold_id)
        if hold.status != HoldStatus.PENDING:
            log.info("hold %s already %s; %s is a no-op", hold.reference, hold.status, status)
            return False
        now = timezone.now()
        hold.status = status
        hold.resolved_at = now
        hold.resolved_by = actor
        hold.save(update_fields=["status", "resolved_at", "resolved_by"])
        account.held -= hold.amount
        if status == HoldStatus.CAPTURED:
            _append_entry(
                account,
                kind=EntryKind.USAGE,
                amount=-hold.amount,
                reference=reference or hold.reference,
                actor=actor,
                hold=hold,
                also_save=("held",),
            )
        else:
            account.updated_at = now
            account.save(update_fields=["held", "updated_at"])
        return True


def capture(hold_id: int, *, reference: str | None = None, actor: str = "system") -> bool:
    """Charges a pending hold: a usage entry of -amount; balance and held both drop.

    Returns True only if this call captured it; a hold that is already captured,
    released or expired is left alone and False comes back.
    """
    return _resolve(hold_id, HoldStatus.CAPTURED, actor=actor, reference=reference)


def release(hold_id: int, *, actor: str = "system") -> bool:
    """Gives a pending hold back without charge. False if it was already resolved."""
    return _resolve(hold_id, HoldStatus.RELEASED, actor=actor)


def expire(hold_id: int) -> bool:
    """The sweeper's release of a hold past its deadline. False if it was already resolved."""
    return _resolve(hold_id, HoldStatus.EXPIRED, actor="system:expire")


def expire_due_holds(now: datetime | None = None) -> int:
    """Expires every pending hold whose deadline has passed; returns how many it expired.

    One transaction per hold keeps each account lock short while renders keep reserving.
    """
    now = now or timezone.now()
    due = (
        Hold.objects.filter(status=HoldStatus.PENDING, expires_at__lte=now)
        .order_by("expires_at", "pk")
        .values_list("pk", flat=True)
    )
    return sum(1 for hold_id in list(due) if expire(hold_id))


def adjust(user: Any, amount: int, *, reason: str, staff_user: Any) -> LedgerEntry:
    """A staff correction of either sign, recorded with the reason and who made it.

    It may not take away credits that are held or push the balance below zero
    (InsufficientCredits).
    """
    reason = reason.strip()
    if not reason:
        raise ValueError("an adjustment needs a reason")
    if staff_user is None or not getattr(staff_user, "is_staff", False):
        raise ValueError("adjustments are made by staff users")
    with transaction.atomic():
        account = _lock_account(_user_id(user))
        return _append_entry(
            account,
            kind=EntryKind.ADJUSTMENT,
            amount=amount,
            reference=f"adjustment:{uuid.uuid4().hex}",
            actor=f"staff:{staff_user.pk}:{staff_user.get_username()}",
            note=reason,
        )


# --- Purchases (driven by Stripe webhooks) ------------------------------------------------


@dataclass(frozen=True)
class CheckoutEvent:
    """What the ledger needs from a Stripe ``checkout.session.*`` event."""

    event_id: str
    type: str
    session_id: str
    client_reference_id: str | None
    api_version: str = ""
    livemode: bool = False
    amount_total: int | None = None
    currency: str | None = None


class PurchaseOutcome(StrEnum):
    CREDITED = "credited"
    ALREADY_PAID = "already_paid"
    MARKED_PROCESSING = "marked_processing"
    MARKED_FAILED = "marked_failed"
    NO_CHANGE = "no_change"
    REJECTED = "rejected"
    UNKNOWN_PURCHASE = "unknown_purchase"
    DUPLICATE_EVENT = "duplicate_event"


def _find_purchase_id(event: CheckoutEvent) -> int | None:
    if event.client_reference_id:
        pk = (
            Purchase.objects.filter(client_reference_id=event.client_reference_id)
            .values_list("pk", flat=True)
            .first()
        )
        if pk is not None:
            return pk
    return (
        Purchase.objects.filter(stripe_checkout_session_id=event.session_id)
        .values_list("pk", flat=True)
        .first()
    )


def _record_event(event: CheckoutEvent, purchase: Purchase | None, outcome: str) -> bool:
    """Inserts the event row; False if this event id was recorded before (a redelivery)."""
    try:
        with transaction.atomic():
            StripeEvent.objects.create(
                event_id=event.event_id,
                type=event.type,
                api_version=event.api_version,
                livemode=event.livemode,
                purchase=purchase,
                outcome=outcome,
            )
        return True
    except IntegrityError:
        if StripeEvent.objects.filter(event_id=event.event_id).exists():
            return False
        raise


def _apply_checkout_event(event: CheckoutEvent, target: str) -> PurchaseOutcome:
    """Records the event and moves the purchase toward ``target`` in one transaction."""
    with transaction.atomic():
        if StripeEvent.objects.filter(event_id=event.event_id).exists():
            return PurchaseOutcome.DUPLICATE_EVENT
        purchase_id = _find_purchase_id(event)
        if purchase_id is None:
            log.error("stripe event %s names no purchase we know (session %s, reference %s)",
                      event.event_id, event.session_id, event.client_reference_id)
            outcome = PurchaseOutcome.UNKNOWN_PURCHASE
            return outcome if _record_event(event, None, outcome) else PurchaseOutcome.DUPLICATE_EVENT

        user_id = Purchase.objects.values_list("user_id", flat=True).get(pk=purchase_id)
        account = _lock_account(user_id)
        purchase = Purchase.objects.select_for_update().get(pk=purchase_id)

        outcome = _decide(purchase, event, target)
        if not _record_event(event, purchase, outcome):
            return PurchaseOutcome.DUPLICATE_EVENT

        now = timezone.now()
        if outcome == PurchaseOutcome.CREDITED:
            already = LedgerEntry.objects.filter(
                kind=EntryKind.PURCHASE, reference=event.session_id
            ).exists()
            if not already:
                _append_entry(
                    account,
                    kind=EntryKind.PURCHASE,
                    amount=purchase.credits,
                    reference=event.session_id,
                    actor=f"stripe:{event.event_id}",
                    note=f"{purchase.pack.name}: {purchase.amount_display}",
                )
            purchase.status = PurchaseStatus.PAID
            purchase.paid_at = now
        elif outcome == PurchaseOutcome.MARKED_PROCESSING:
            purchase.status = PurchaseStatus.PROCESSING
        elif outcome == PurchaseOutcome.MARKED_FAILED:
            purchase.status = PurchaseStatus.FAILED
        else:
            return outcome
        if not purchase.stripe_checkout_session_id:
            # The process that created the session died before saving its id.
            purchase.stripe_checkout_session_id = event.session_id
        purchase.updated_at = now
        purchase.save(update_fields=["status", "paid_at", "stripe_checkout_session_id", "updated_at"])
        return outcome


def _decide(purchase: Purchase, event: CheckoutEvent, target: str) -> PurchaseOutcome:
    if purchase.stripe_checkout_session_id and purchase.stripe_checkout_session_id != event.session_id:
        log.error("stripe event %s: session %s does not belong to purchase %s (session %s)",
                  event.event_id, event.session_id, purchase.client_reference_id,
                  purchase.stripe_checkout_session_id)
        return PurchaseOutcome.REJECTED
    if purchase.status == PurchaseStatus.PAID:
        return PurchaseOutcome.ALREADY_PAID
    if target == PurchaseStatus.PAID:
        if event.amount_total is not None and (
            event.amount_total != purchase.amount
            or (event.currency or "").lower() != purchase.currency
        ):
            # The customer paid; crediting what they bought beats holding it hostage to
            # a price misconfigured in Stripe. Loud, so staff can reconcile.
            log.warning("purchase %s paid %s %s, expected %s %s",
                        purchase.client_reference_id, event.amount_total, event.currency,
                        purchase.amount, purchase.currency)
        return PurchaseOutcome.CREDITED
    if target == PurchaseStatus.PROCESSING:
        if purchase.status in (PurchaseStatus.CREATED, PurchaseStatus.OPEN):
            return PurchaseOutcome.MARKED_PROCESSING
        return PurchaseOutcome.NO_CHANGE
    if target == PurchaseStatus.FAILED:
        if purchase.status != PurchaseStatus.FAILED:
            return PurchaseOutcome.MARKED_FAILED
        return PurchaseOutcome.NO_CHANGE
    raise ValueError(f"unknown purchase target {target!r}")


def record_purchase_paid(event: CheckoutEvent) -> PurchaseOutcome:
    """Credits the purchase's pack once, however many events say it was paid.

    Three guards, any one of which suffices: the event id is recorded under a unique
    constraint in this transaction, a paid purchase is never credited again, and the
    purchase entry's reference (the Checkout Session id) is unique.
    """
    return _apply_checkout_event(event, PurchaseStatus.PAID)


def record_purchase_processing(event: CheckoutEvent) -> PurchaseOutcome:
    """Checkout finished but the payment method settles later (bank debits): no credit yet."""
    return _apply_checkout_event(event, PurchaseStatus.PROCESSING)


def record_purchase_failed(event: CheckoutEvent) -> PurchaseOutcome:
    """A delayed payment failed. A purchase that was already paid stays paid."""
    return _apply_checkout_event(event, PurchaseStatus.FAILED)
