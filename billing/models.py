"""Credits: accounts, the append-only ledger, holds, credit packs, purchases, Stripe events.

Only ``billing.ledger`` changes balances. The models here enforce what the database can
enforce on its own (check constraints, unique references) so that a bug elsewhere fails
loudly instead of minting or losing credits.
"""

from __future__ import annotations

import secrets
from typing import Any, NoReturn

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone


class CreditAccount(models.Model):
    """One per user. ``balance``, ``held`` and ``owed`` are caches of the ledger and the pending holds.

    They exist so that a reserve is one locked row read instead of aggregates;
    ``manage.py audit_ledger`` proves they still equal what they cache. ``owed`` is what
    a refunded or disputed purchase took back beyond what was left (``billing.ledger``
    explains the design): the account's true position is ``balance - owed``, while
    ``balance`` itself never goes below ``held``, nor ``held`` below zero. An account
    that owes has nothing available (``balance == held``): credits that come in pay
    the debt first.
    """

    # PROTECT all the way down: money history outlives a careless delete of a user.
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="credit_account"
    )
    balance = models.BigIntegerField(default=0)
    held = models.BigIntegerField(default=0)
    owed = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(balance__gte=0), name="credit_balance_not_negative"),
            models.CheckConstraint(
                condition=Q(held__gte=0) & Q(held__lte=F("balance")),
                name="credit_held_within_balance",
            ),
            models.CheckConstraint(condition=Q(owed__gte=0), name="credit_owed_not_negative"),
            models.CheckConstraint(
                condition=Q(owed=0) | Q(balance=F("held")),
                name="credit_owed_only_with_nothing_available",
            ),
        ]
        permissions = [("adjust_creditaccount", "Can adjust credit balances")]

    def __str__(self) -> str:
        return f"credits of {self.user}"

    @property
    def available(self) -> int:
        return self.balance - self.held


class LedgerIsAppendOnly(Exception):
    """Raised on any attempt to change or remove a ledger entry."""


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs: Any) -> NoReturn:
        raise LedgerIsAppendOnly("ledger entries cannot be updated")

    def bulk_update(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise LedgerIsAppendOnly("ledger entries cannot be updated")

    def delete(self) -> NoReturn:
        raise LedgerIsAppendOnly("ledger entries cannot be deleted")


class EntryKind(models.TextChoices):
    GRANT = "grant", "Grant"
    PURCHASE = "purchase", "Purchase"
    USAGE = "usage", "Usage"
    REFUND = "refund", "Refund"
    ADJUSTMENT = "adjustment", "Adjustment"
    # A refunded or disputed payment takes its credits back: from the balance what is
    # there, the rest as owed (amount <= 0, owed_change >= 0).
    REVERSAL = "reversal", "Payment refunded or disputed"
    # A dispute won (or a refund that failed) gives them back: owed first (amount >= 0,
    # owed_change <= 0).
    REINSTATEMENT = "reinstatement", "Payment reinstated"
    # Incoming credits paying what is owed (amount == owed_change < 0).
    SETTLEMENT = "settlement", "Owed credits settled"


class HoldStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    CAPTURED = "captured", "Captured"
    RELEASED = "released", "Released"
    EXPIRED = "expired", "Expired"


class Hold(models.Model):
    """Credits set aside for one render; resolves exactly once."""

    account = models.ForeignKey(CreditAccount, on_delete=models.PROTECT, related_name="holds")
    amount = models.BigIntegerField()
    reference = models.CharField(max_length=255, unique=True)
    status = models.CharField(
        max_length=16, choices=HoldStatus.choices, default=HoldStatus.PENDING
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.CharField(max_length=255, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="hold_amount_positive"),
            models.CheckConstraint(
                condition=(Q(status="pending") & Q(resolved_at__isnull=True))
                | (~Q(status="pending") & Q(resolved_at__isnull=False)),
                name="hold_resolved_at_matches_status",
            ),
        ]
        indexes = [
            # The sweeper's query: pending holds past their deadline.
            models.Index(
                fields=["expires_at"], condition=Q(status="pending"), name="pending_holds_by_expiry"
            ),
            models.Index(fields=["account", "status"], name="holds_by_account_status"),
        ]

    def __str__(self) -> str:
        return f"hold {self.reference} ({self.amount}, {self.status})"

    @property
    def is_pending(self) -> bool:
        return self.status == HoldStatus.PENDING


class LedgerEntry(models.Model):
    """One change of balance or of what is owed. Never updated, never deleted: corrections
    are new entries. ``balance_after`` and ``owed_after`` chain every entry to the one
    before it on the same account."""

    account = models.ForeignKey(CreditAccount, on_delete=models.PROTECT, related_name="entries")
    kind = models.CharField(max_length=16, choices=EntryKind.choices)
    amount = models.BigIntegerField()
    balance_after = models.BigIntegerField()
    owed_change = models.BigIntegerField(default=0)
    owed_after = models.BigIntegerField(default=0)
    # The purchase a purchase, reversal or reinstatement entry belongs to.
    purchase = models.ForeignKey(
        "Purchase", on_delete=models.PROTECT, null=True, blank=True, related_name="entries"
    )
    reference = models.CharField(max_length=255)
    actor = models.CharField(max_length=255, default="system")
    note = models.TextField(blank=True)
    hold = models.ForeignKey(
        Hold, on_delete=models.PROTECT, null=True, blank=True, related_name="entries"
    )
    created_at = models.DateTimeField(default=timezone.now)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "ledger entries"
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "reference"], name="ledger_reference_unique_per_kind"),
            models.CheckConstraint(condition=~Q(amount=0) | ~Q(owed_change=0), name="ledger_entry_changes_something"),
            models.CheckConstraint(condition=Q(balance_after__gte=0), name="ledger_balance_after_not_negative"),
            models.CheckConstraint(condition=Q(owed_after__gte=0), name="ledger_owed_after_not_negative"),
        ]
        indexes = [models.Index(fields=["account", "-id"], name="ledger_by_account_newest")]

    def __str__(self) -> str:
        owed = f", owed {self.owed_change:+d}" if self.owed_change else ""
        return f"{self.kind} {self.amount:+d}{owed} ({self.reference})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise LedgerIsAppendOnly("ledger entries cannot be updated")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise LedgerIsAppendOnly("ledger entries cannot be deleted")


class CreditPack(models.Model):
    """What a customer can buy. ``stripe_price_id`` is optional: without it, checkout
    sends the price inline, so the defaults work before anyone creates Stripe prices."""

    name = models.CharField(max_length=100)
    credits = models.PositiveIntegerField()
    price = models.PositiveIntegerField(help_text="In the currency's minor unit (cents).")
    currency = models.CharField(max_length=3, default="usd")
    stripe_price_id = models.CharField(max_length=255, blank=True)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["credits", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(credits__gt=0), name="pack_credits_positive"),
            models.CheckConstraint(condition=Q(price__gt=0), name="pack_price_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.credits} credits)"

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Stripe wants lowercase ISO codes; normalising here keeps comparisons with events exact.
        self.currency = self.currency.lower()
        super().save(*args, **kwargs)

    @property
    def price_display(self) -> str:
        return format_money(self.price, self.currency)

    @property
    def renders(self) -> int:
        return self.credits // settings.CREDITS_PER_RENDER


def format_money(minor_units: int, currency: str) -> str:
    return f"{minor_units / 100:,.2f} {currency.upper()}"


def new_client_reference() -> str:
    return "pur_" + secrets.token_hex(12)


class PurchaseStatus(models.TextChoices):
    CREATED = "created", "Created"
    OPEN = "open", "Waiting for checkout"
    PROCESSING = "processing", "Payment processing"
    PAID = "paid", "Paid"
    FAILED = "failed", "Failed"
    EXPIRED = "expired", "Checkout expired"


class Purchase(models.Model):
    """One attempt to buy a pack. Created before the Checkout Session so Stripe can echo
    ``client_reference_id`` back in the webhook and we never depend on the redirect."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="purchases")
    pack = models.ForeignKey(CreditPack, on_delete=models.PROTECT, related_name="purchases")
    # Copied from the pack: what was offered at the time, even if the pack changes later.
    credits = models.PositiveIntegerField()
    amount = models.PositiveIntegerField()
    currency = models.CharField(max_length=3)
    client_reference_id = models.CharField(max_length=64, unique=True, default=new_client_reference)
    stripe_checkout_session_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    # From the paid Checkout Session: what refunds and disputes name the payment by.
    stripe_payment_intent_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    status = models.CharField(max_length=16, choices=PurchaseStatus.choices, default=PurchaseStatus.CREATED)
    # Credits currently taken back by refunds and disputes (a cache of its reversal and
    # reinstatement entries, checked by audit_ledger).
    credits_reversed = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    paid_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(credits_reversed__lte=F("credits")),
                                   name="purchase_reversed_within_credits"),
        ]

    def __str__(self) -> str:
        return f"{self.client_reference_id} ({self.status})"

    @property
    def amount_display(self) -> str:
        return format_money(self.amount, self.currency)


class StripeEvent(models.Model):
    """A webhook event we acted on. Its unique id, written in the same transaction as
    the credit, is what makes redelivery harmless."""

    event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100)
    api_version = models.CharField(max_length=64, blank=True)
    livemode = models.BooleanField(default=False)
    purchase = models.ForeignKey(
        Purchase, on_delete=models.PROTECT, null=True, blank=True, related_name="stripe_events"
    )
    outcome = models.CharField(max_length=32)
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-received_at", "-id"]

    def __str__(self) -> str:
        return f"{self.event_id} {self.type} ({self.outcome})"


class ReversalKind(models.TextChoices):
    REFUND = "refund", "Refund"
    CHARGE_REFUNDS = "charge_refunds", "Refunded total of a charge"
    DISPUTE = "dispute", "Dispute"


class PaymentReversal(models.Model):
    """What Stripe last told us about one object that takes a payment back.

    A Refund (``re_…``), a Dispute (``dp_…``), or a Charge's refunded total
    (``ch_…``, from ``charge.refunded``). Kept as state, not as a log of deltas, so that
    duplicate, overlapping (``charge.refunded`` and ``refund.created`` describe the same
    refund) and out-of-order events all land on the same answer; ``billing.reversals``
    turns a purchase's rows into the credits to take back. ``purchase`` is empty while
    no purchase we know has this payment (an event that overtook its checkout): the
    row is linked, and applied, when the checkout is paid.
    """

    stripe_id = models.CharField(max_length=255, unique=True)
    kind = models.CharField(max_length=16, choices=ReversalKind.choices)
    payment_intent = models.CharField(max_length=255, blank=True, db_index=True)
    charge = models.CharField(max_length=255, blank=True)
    purchase = models.ForeignKey(
        Purchase, on_delete=models.PROTECT, null=True, blank=True, related_name="reversals"
    )
    amount = models.BigIntegerField(help_text="In the currency's minor unit.")
    currency = models.CharField(max_length=3, blank=True)
    status = models.CharField(max_length=32)
    reason = models.CharField(max_length=64, blank=True)
    # Stripe's event.created of the state we keep (seconds); later states win.
    as_of = models.BigIntegerField()
    last_event_id = models.CharField(max_length=255)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-updated_at", "-id"]
        verbose_name = "refund or dispute"
        verbose_name_plural = "refunds and disputes"
        constraints = [models.CheckConstraint(condition=Q(amount__gte=0), name="reversal_amount_not_negative")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.stripe_id} ({self.status})"

    @property
    def amount_display(self) -> str:
        return format_money(self.amount, self.currency or "usd")


class SignupGrant(models.Model):
    """The sign-up credits, given once per verified canonical address (and once per user).

    Both uniques are the guard: two accounts verifying aliases of one address at the
    same moment cannot both insert a row.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="signup_grant")
    address = models.CharField(max_length=254, unique=True, help_text="The canonical e-mail address.")
    credits = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"sign-up grant for {self.address}"
