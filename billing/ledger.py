"""The only code that changes credit balances.

Every public function here is one atomic transaction. Locking rules, which keep money
exact under concurrency and duplicate deliveries:

* The account row is locked (``SELECT ... FOR UPDATE``) before anything that changes it
  is read, so each function sees the account exactly as the previous holder of the lock
  left it.
* Lock order is always: the payment (Stripe events only, see ``_lock_payment``), then
  the account row, then the hold, purchase or reversal rows. A function that ever needs
  several accounts must lock them in ascending primary key order (none does today:
  every operation touches one account).
* The cached ``balance``, ``held`` and ``owed`` change only together with the rows they
  summarise (ledger entries, a hold's status), in the same transaction, and the account
  row is written once per transaction step so every check constraint holds at every
  statement.

Amounts are integers of credits. A hold resolves exactly once: ``capture``, ``release``
and ``expire`` return True only for the call that resolved it; any later call returns
False and changes nothing, so a late or duplicated worker signal cannot charge twice or
undo a capture.

Owed credits. A refunded or disputed purchase takes its credits back
(``record_reversal``), but some of them may already be spent, and some may be held by
renders in flight. The database keeps two promises that a negative balance would break:
``balance >= 0`` and ``0 <= held <= balance`` (a hold is credit set aside, so it must
exist). So the account has a third cached column, ``owed``, and every ledger entry has
an ``owed_change`` next to its ``amount`` (and ``owed_after`` next to ``balance_after``):

* a reversal of N credits takes ``min(N, available)`` from the balance (``amount``) and
  records the rest as owed (``owed_change``), in one entry per Stripe event; held
  credits are never taken (the renders holding them may still succeed and pay with
  them);
* while ``owed > 0`` the account has nothing available (``balance == held``, a check
  constraint), because every credit that becomes available pays the debt first: a
  purchase, a grant, a staff adjustment, a hold released by a failed render each write
  a ``settlement`` entry (``amount == owed_change < 0``) in the same transaction;
* ``reserve`` refuses an account that owes (``CreditsOwed``, 402 ``credits_owed``);
  it starts rendering again once ``owed`` is back to 0;
* a reinstatement (a dispute won, a refund that failed) gives the credits back, paying
  what is owed first.

The true position of an account is ``balance - owed``; the ledger never hides a debt in
a negative number, and ``audit_ledger`` checks ``owed`` against its entries like
``balance``.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from billing import reversals
from billing.models import (
    CreditAccount,
    EntryKind,
    Hold,
    HoldStatus,
    LedgerEntry,
    PaymentReversal,
    Purchase,
    PurchaseStatus,
    StripeEvent,
)
from billing.reversals import ReversalState

log = logging.getLogger(__name__)

__all__ = [
    "Balances",
    "CheckoutEvent",
    "CreditsOwed",
    "InsufficientCredits",
    "PurchaseOutcome",
    "ReversalEvent",
    "ReversalState",
    "adjust",
    "balances",
    "ensure_account",
    "capture",
    "expire",
    "expire_due_holds",
    "grant",
    "record_checkout_expired",
    "record_purchase_failed",
    "record_purchase_paid",
    "record_purchase_processing",
    "record_reversal",
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


class CreditsOwed(InsufficientCredits):
    """The account owes credits after a refund or dispute: no reserve until it is settled.

    A subclass, so every caller that refuses a render on InsufficientCredits refuses it
    here too; ``billing.errors`` maps it to its own 402 ``credits_owed``.
    """

    def __init__(self, owed: int, required: int) -> None:
        super().__init__(0, required)
        self.args = (f"the account owes {owed} credits",)
        self.owed = owed


@dataclass(frozen=True)
class Balances:
    """A snapshot of one account; ``available = balance - held`` is what a reserve may take.

    ``owed`` is what refunds and disputes took back beyond the balance; while it is
    above 0, ``available`` is 0 and renders are refused.
    """

    balance: int
    held: int
    available: int
    owed: int = 0

    @classmethod
    def of(cls, balance: int, held: int, owed: int = 0) -> Balances:
        return cls(balance=balance, held=held, available=balance - held, owed=owed)


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


def _write_entry(
    account: CreditAccount,
    *,
    kind: str,
    amount: int,
    owed_change: int = 0,
    reference: str,
    actor: str,
    now: datetime,
    note: str = "",
    hold: Hold | None = None,
    purchase: Purchase | None = None,
) -> LedgerEntry:
    """Writes one entry and moves the cached balance and owed with it (in memory only)."""
    for value in (amount, owed_change):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError("ledger amounts are integers")
    if amount == 0 and owed_change == 0:
        raise ValueError("a ledger entry changes the balance or what is owed")
    new_balance = account.balance + amount
    new_owed = account.owed + owed_change
    if new_owed < 0:
        raise ValueError("an account cannot owe less than nothing")
    if new_balance < account.held:
        # Held credits are promised to renders in flight; nothing may take them away.
        raise InsufficientCredits(account.available, -amount)
    entry = LedgerEntry.objects.create(
        account=account,
        kind=kind,
        amount=amount,
        balance_after=new_balance,
        owed_change=owed_change,
        owed_after=new_owed,
        reference=reference,
        actor=actor,
        note=note,
        hold=hold,
        purchase=purchase,
        created_at=now,
    )
    account.balance = new_balance
    account.owed = new_owed
    return entry


def _settle_owed(account: CreditAccount, *, cause: str, actor: str, now: datetime) -> LedgerEntry | None:
    """Pays what the account owes from its available credits: one settlement entry, or None."""
    pay = min(account.owed, account.available)
    if pay <= 0:
        return None
    return _write_entry(
        account, kind=EntryKind.SETTLEMENT, amount=-pay, owed_change=-pay, reference=cause,
        actor=actor, now=now, note=f"{pay} owed credits settled",
    )


def _save_account(account: CreditAccount, now: datetime, also_save: tuple[str, ...] = ()) -> None:
    account.updated_at = now
    account.save(update_fields=["balance", "owed", "updated_at", *also_save])


def _append_entry(
    account: CreditAccount,
    *,
    kind: str,
    amount: int,
    owed_change: int = 0,
    reference: str,
    actor: str,
    note: str = "",
    hold: Hold | None = None,
    purchase: Purchase | None = None,
    also_save: tuple[str, ...] = (),
) -> LedgerEntry:
    """Writes one entry (and the settlement it makes possible), then the account row once.

    Caller holds the account lock. Credits coming in while the account owes pay the debt
    in the same transaction. ``also_save`` names other account fields the caller changed
    under the same lock (a capture moves ``held`` and ``balance`` together).
    """
    now = timezone.now()
    entry = _write_entry(account, kind=kind, amount=amount, owed_change=owed_change, reference=reference,
                         actor=actor, now=now, note=note, hold=hold, purchase=purchase)
    if amount > 0 and account.owed > 0:
        _settle_owed(account, cause=f"entry:{entry.pk}", actor=actor, now=now)
    _save_account(account, now, also_save)
    return entry


def balances(user: Any) -> Balances:
    """The user's balance, held and owed credits; zeros for a user who has no account yet."""
    row = (
        CreditAccount.objects.filter(user_id=_user_id(user)).values_list("balance", "held", "owed").first()
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
    Checkout Session id, a render id for a refund). If the account owes credits, the
    grant pays that first.
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
    so a retried request cannot hold twice; any other reuse is a ValueError. An account
    that owes credits raises CreditsOwed.
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
        if account.owed > 0:
            raise CreditsOwed(account.owed, amount)
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
            if account.owed > 0:
                # The released credits are available again, so they pay the debt first.
                _settle_owed(account, cause=f"hold:{hold.pk}", actor=actor, now=now)
            _save_account(account, now, ("held",))
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


def adjust(user: Any, amount: int, *, reason: str, staff_user: Any, owe_shortfall: bool = False) -> LedgerEntry:
    """A staff correction of either sign, recorded with the reason and who made it.

    A positive adjustment pays what the account owes first. A negative one may not take
    held credits or push the balance below zero (InsufficientCredits), unless
    ``owe_shortfall``: then it takes what is available and records the rest as owed (a
    refund or chargeback made outside Stripe's webhooks).
    """
    reason = reason.strip()
    if not reason:
        raise ValueError("an adjustment needs a reason")
    if staff_user is None or not getattr(staff_user, "is_staff", False):
        raise ValueError("adjustments are made by staff users")
    with transaction.atomic():
        account = _lock_account(_user_id(user))
        owed_change = 0
        if amount < 0 and owe_shortfall and -amount > account.available:
            owed_change = -amount - account.available
            amount = -account.available
        return _append_entry(
            account,
            kind=EntryKind.ADJUSTMENT,
            amount=amount,
            owed_change=owed_change,
            reference=f"adjustment:{uuid.uuid4().hex}",
            actor=f"staff:{staff_user.pk}:{staff_user.get_username()}",
            note=reason,
        )


# --- Purchases, refunds and disputes (driven by Stripe webhooks) ---------------------------


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
    payment_intent: str | None = None


@dataclass(frozen=True)
class ReversalEvent:
    """What the ledger needs from a refund or dispute event: the states of the objects it
    reports (``charge.refunded`` reports the charge and, when expanded, its refunds), all
    of one payment."""

    event_id: str
    type: str
    created: int
    payment_intent: str
    states: tuple[ReversalState, ...]
    purchase_reference: str | None = None
    api_version: str = ""
    livemode: bool = False


class PurchaseOutcome(StrEnum):
    CREDITED = "credited"
    ALREADY_PAID = "already_paid"
    MARKED_PROCESSING = "marked_processing"
    MARKED_FAILED = "marked_failed"
    MARKED_EXPIRED = "marked_expired"
    NO_CHANGE = "no_change"
    REJECTED = "rejected"
    UNKNOWN_PURCHASE = "unknown_purchase"
    DUPLICATE_EVENT = "duplicate_event"
    CREDITS_TAKEN_BACK = "credits_taken_back"
    CREDITS_REINSTATED = "credits_reinstated"
    UNKNOWN_PAYMENT = "unknown_payment"


def _lock_payment(key: str | None) -> None:
    """Serialises everything about one Stripe payment, before any row lock.

    A refund that overtakes its checkout is stored unlinked; the checkout, when paid,
    links it. Without this lock the two could commit side by side, each unable to see
    the other's uncommitted row, and the refund would stay unlinked. On PostgreSQL a
    transaction-scoped advisory lock on the payment intent id; SQLite serialises every
    writing transaction already (IMMEDIATE).
    """
    connection = transaction.get_connection()
    if not key or connection.vendor != "postgresql":
        return
    number = int.from_bytes(hashlib.sha256(f"billing.payment:{key}".encode()).digest()[:8], "big", signed=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [number])


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


def _record_event(event: CheckoutEvent | ReversalEvent, purchase: Purchase | None, outcome: str) -> bool:
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
        _lock_payment(event.payment_intent)
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
                    purchase=purchase,
                )
            purchase.status = PurchaseStatus.PAID
            purchase.paid_at = now
        elif outcome == PurchaseOutcome.MARKED_PROCESSING:
            purchase.status = PurchaseStatus.PROCESSING
        elif outcome == PurchaseOutcome.MARKED_FAILED:
            purchase.status = PurchaseStatus.FAILED
        elif outcome == PurchaseOutcome.MARKED_EXPIRED:
            purchase.status = PurchaseStatus.EXPIRED
        elif outcome != PurchaseOutcome.ALREADY_PAID or not event.payment_intent or purchase.stripe_payment_intent_id:
            # Nothing to change (an already paid purchase only learns a missing payment intent).
            return outcome
        if not purchase.stripe_checkout_session_id:
            # The process that created the session died before saving its id.
            purchase.stripe_checkout_session_id = event.session_id
        linked = _take_payment_intent(purchase, event)
        purchase.updated_at = now
        purchase.save(update_fields=["status", "paid_at", "stripe_checkout_session_id",
                                     "stripe_payment_intent_id", "updated_at"])
        if linked and purchase.status == PurchaseStatus.PAID:
            # Refunds or disputes that arrived before this payment was known to be ours.
            PaymentReversal.objects.filter(
                payment_intent=purchase.stripe_payment_intent_id, purchase__isnull=True
            ).update(purchase=purchase, updated_at=now)
            _reconcile(account, purchase, reference=event.event_id, actor=f"stripe:{event.event_id}")
        return outcome


def _take_payment_intent(purchase: Purchase, event: CheckoutEvent) -> bool:
    """Stores the session's payment intent on the purchase (once); True if it has one now."""
    intent = event.payment_intent
    if intent and not purchase.stripe_payment_intent_id:
        if Purchase.objects.filter(stripe_payment_intent_id=intent).exclude(pk=purchase.pk).exists():
            log.error("payment intent %s of purchase %s already belongs to another purchase",
                      intent, purchase.client_reference_id)
        else:
            purchase.stripe_payment_intent_id = intent
    return bool(purchase.stripe_payment_intent_id)


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
    if target == PurchaseStatus.EXPIRED:
        if purchase.status in (PurchaseStatus.CREATED, PurchaseStatus.OPEN):
            return PurchaseOutcome.MARKED_EXPIRED
        return PurchaseOutcome.NO_CHANGE
    raise ValueError(f"unknown purchase target {target!r}")


def record_purchase_paid(event: CheckoutEvent) -> PurchaseOutcome:
    """Credits the purchase's pack once, however many events say it was paid.

    Three guards, any one of which suffices: the event id is recorded under a unique
    constraint in this transaction, a paid purchase is never credited again, and the
    purchase entry's reference (the Checkout Session id) is unique. If the account owes
    credits, the pack pays that first. Refunds or disputes of this payment that arrived
    first are applied now.
    """
    return _apply_checkout_event(event, PurchaseStatus.PAID)


def record_purchase_processing(event: CheckoutEvent) -> PurchaseOutcome:
    """Checkout finished but the payment method settles later (bank debits): no credit yet."""
    return _apply_checkout_event(event, PurchaseStatus.PROCESSING)


def record_purchase_failed(event: CheckoutEvent) -> PurchaseOutcome:
    """A delayed payment failed. A purchase that was already paid stays paid."""
    return _apply_checkout_event(event, PurchaseStatus.FAILED)


def record_checkout_expired(event: CheckoutEvent) -> PurchaseOutcome:
    """The buyer abandoned the Checkout Session; an open purchase is closed, nothing is credited."""
    return _apply_checkout_event(event, PurchaseStatus.EXPIRED)


def _find_purchase_for_payment(event: ReversalEvent) -> int | None:
    if event.payment_intent:
        pk = (Purchase.objects.filter(stripe_payment_intent_id=event.payment_intent)
              .values_list("pk", flat=True).first())
        if pk is not None:
            return pk
    if event.purchase_reference:
        # Our checkout puts the purchase reference in the payment's metadata.
        return (Purchase.objects.filter(client_reference_id=event.purchase_reference)
                .filter(Q(stripe_payment_intent_id__isnull=True)
                        | Q(stripe_payment_intent_id=event.payment_intent or ""))
                .values_list("pk", flat=True).first())
    return None


def _store_state(state: ReversalState, event: ReversalEvent, purchase: Purchase | None, now: datetime) -> None:
    row = PaymentReversal.objects.select_for_update().filter(stripe_id=state.stripe_id).first()
    intent = state.payment_intent or event.payment_intent
    if row is None:
        PaymentReversal.objects.create(
            stripe_id=state.stripe_id, kind=state.kind, payment_intent=intent, charge=state.charge,
            purchase=purchase, amount=state.amount, currency=state.currency, status=state.status,
            reason=state.reason, as_of=event.created, last_event_id=event.event_id,
            created_at=now, updated_at=now,
        )
        return
    if purchase is not None and row.purchase_id is None:
        row.purchase = purchase
    elif purchase is not None and row.purchase_id != purchase.pk:
        log.error("stripe event %s: %s belongs to purchase #%s, not #%s; left as it was",
                  event.event_id, state.stripe_id, row.purchase_id, purchase.pk)
    if reversals.supersedes(row, state, event.created):
        row.amount, row.status, row.as_of = state.amount, state.status, event.created
        row.currency = state.currency or row.currency
        row.reason = state.reason or row.reason
        row.charge = state.charge or row.charge
        row.payment_intent = intent or row.payment_intent
    row.last_event_id = event.event_id
    row.updated_at = now
    row.save()


def _reconcile(account: CreditAccount, purchase: Purchase, *, reference: str, actor: str) -> PurchaseOutcome:
    """Brings the purchase's taken-back credits to what its refunds and disputes say.

    Caller holds the account and purchase locks. One entry at most: a reversal (from
    the balance what is available, the rest owed) or a reinstatement (owed first).
    """
    rows = list(purchase.reversals.all())
    target = reversals.credits_to_reverse(purchase, rows)
    delta = target - purchase.credits_reversed
    if delta == 0:
        return PurchaseOutcome.NO_CHANGE
    note = reversals.describe(purchase, rows)
    if delta > 0:
        taken = min(delta, account.available)
        _append_entry(account, kind=EntryKind.REVERSAL, amount=-taken, owed_change=delta - taken,
                      reference=reference, actor=actor, note=note, purchase=purchase)
        outcome = PurchaseOutcome.CREDITS_TAKEN_BACK
        log.warning("purchase %s: %s credits taken back (%s from the balance, %s owed): %s",
                    purchase.client_reference_id, delta, taken, delta - taken, note)
    else:
        back = -delta
        pays_debt = min(account.owed, back)
        _append_entry(account, kind=EntryKind.REINSTATEMENT, amount=back - pays_debt, owed_change=-pays_debt,
                      reference=reference, actor=actor, note=note, purchase=purchase)
        outcome = PurchaseOutcome.CREDITS_REINSTATED
    purchase.credits_reversed = target
    purchase.updated_at = timezone.now()
    purchase.save(update_fields=["credits_reversed", "updated_at"])
    return outcome


def record_reversal(event: ReversalEvent) -> PurchaseOutcome:
    """Applies a refund or dispute event: stores what it says, then moves the credits.

    Idempotent per event id (recorded under a unique constraint in this transaction),
    and order-independent: the stored states decide (``billing.reversals``), not the
    order the events came in, and the purchase's ``credits_reversed`` only ever moves
    to what they say, so no event is applied twice. An event for a payment we cannot
    match to a purchase yet is stored and answered ``unknown_payment``; it is applied
    when that checkout is paid.
    """
    if not event.states:
        raise ValueError("a reversal event reports at least one refund, charge or dispute")
    lock_key = event.payment_intent or event.states[0].charge or event.states[0].stripe_id
    with transaction.atomic():
        if StripeEvent.objects.filter(event_id=event.event_id).exists():
            return PurchaseOutcome.DUPLICATE_EVENT
        _lock_payment(lock_key)
        purchase_id = _find_purchase_for_payment(event)
        account = purchase = None
        if purchase_id is not None:
            user_id = Purchase.objects.values_list("user_id", flat=True).get(pk=purchase_id)
            account = _lock_account(user_id)
            purchase = Purchase.objects.select_for_update().get(pk=purchase_id)
        if not _record_event(event, purchase, PurchaseOutcome.NO_CHANGE):
            return PurchaseOutcome.DUPLICATE_EVENT
        now = timezone.now()
        for state in event.states:
            _store_state(state, event, purchase, now)
        if purchase is None or account is None:
            log.warning("stripe event %s (%s): payment %s matches no purchase yet; stored for when it does",
                        event.event_id, event.type, event.payment_intent or lock_key)
            outcome = PurchaseOutcome.UNKNOWN_PAYMENT
        else:
            if event.payment_intent and not purchase.stripe_payment_intent_id:
                purchase.stripe_payment_intent_id = event.payment_intent
                purchase.save(update_fields=["stripe_payment_intent_id"])
            outcome = _reconcile(account, purchase, reference=event.event_id, actor=f"stripe:{event.event_id}")
        StripeEvent.objects.filter(event_id=event.event_id).update(outcome=outcome)
        return outcome
