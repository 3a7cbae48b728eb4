"""Admin: money records are read-only; the one way staff change a balance is the adjust action.

The action goes through ``ledger.adjust``, so even staff corrections are ledger entries
with a reason and a name, and ``audit_ledger`` keeps balancing.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from billing import ledger
from billing.models import (
    CreditAccount,
    CreditPack,
    Hold,
    LedgerEntry,
    PaymentReversal,
    Purchase,
    SignupGrant,
    StripeEvent,
)
from platform_site.admin_base import ReadOnlyAdmin

MAX_ADJUSTMENT = 10_000_000


class AdjustmentForm(forms.Form):
    amount = forms.IntegerField(
        min_value=-MAX_ADJUSTMENT,
        max_value=MAX_ADJUSTMENT,
        help_text="Credits to add (positive) or remove (negative) on each selected account.",
    )
    reason = forms.CharField(
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Recorded on the ledger entry; the customer sees it on their Billing page.",
    )
    owe_shortfall = forms.BooleanField(
        required=False,
        label="Record what cannot be taken as owed",
        help_text="For a removal larger than the available credits (a refund or chargeback made outside "
                  "Stripe's webhooks): take what is available and record the rest as owed, which pauses "
                  "the account's renders until it is settled. A positive adjustment always settles owed "
                  "credits first.",
    )

    def clean_amount(self) -> int:
        amount = self.cleaned_data["amount"]
        if amount == 0:
            raise forms.ValidationError("An adjustment of 0 changes nothing.")
        return amount

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("Say why.")
        return reason


class OwesFilter(admin.SimpleListFilter):
    title = "owes credits"
    parameter_name = "owes"

    def lookups(self, request: HttpRequest, model_admin: object) -> list[tuple[str, str]]:
        return [("yes", "Owes credits"), ("no", "Owes nothing")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[CreditAccount]) -> QuerySet[CreditAccount]:
        if self.value() == "yes":
            return queryset.filter(owed__gt=0)
        if self.value() == "no":
            return queryset.filter(owed=0)
        return queryset


@admin.register(CreditAccount)
class CreditAccountAdmin(ReadOnlyAdmin):
    list_display = ("user", "balance", "held", "available", "owed", "updated_at")
    list_filter = (OwesFilter,)
    search_fields = ("user__email",)
    readonly_fields = ("user", "balance", "held", "available", "owed", "created_at", "updated_at")
    list_select_related = ("user",)
    actions = ["adjust_credits"]

    @admin.display(description="available")
    def available(self, obj: CreditAccount) -> int:
        return obj.available

    def has_adjust_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("billing.adjust_creditaccount")

    @admin.action(description="Adjust credits…", permissions=["adjust"])
    def adjust_credits(self, request: HttpRequest, queryset: QuerySet[CreditAccount]) -> HttpResponse | None:
        """Shows the amount-and-reason form, then writes one adjustment entry per account."""
        form = AdjustmentForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            amount, reason = form.cleaned_data["amount"], form.cleaned_data["reason"]
            owe = form.cleaned_data["owe_shortfall"]
            done = 0
            for account in queryset.select_related("user"):
                try:
                    ledger.adjust(account.user, amount, reason=reason, staff_user=request.user, owe_shortfall=owe)
                    done += 1
                except ledger.InsufficientCredits as exc:
                    self.message_user(
                        request,
                        f"{account.user}: not adjusted, only {exc.available} credits are available.",
                        messages.ERROR,
                    )
            if done:
                self.message_user(request, f"Adjusted {done} account{'s' if done != 1 else ''} by {amount:+d}.")
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Adjust credits",
            "opts": self.model._meta,
            "form": form,
            "accounts": queryset.select_related("user"),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "billing/admin/adjust.html", context)


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ("id", "created_at", "account", "kind", "amount", "balance_after", "owed_change", "owed_after",
                    "reference", "actor")
    list_filter = ("kind",)
    search_fields = ("reference", "account__user__email", "actor")
    list_select_related = ("account__user",)
    date_hierarchy = "created_at"


@admin.register(Hold)
class HoldAdmin(ReadOnlyAdmin):
    list_display = ("reference", "account", "amount", "status", "created_at", "expires_at", "resolved_at")
    list_filter = ("status",)
    search_fields = ("reference", "account__user__email")
    list_select_related = ("account__user",)


@admin.register(Purchase)
class PurchaseAdmin(ReadOnlyAdmin):
    list_display = ("client_reference_id", "user", "pack", "credits", "amount", "currency", "status",
                    "credits_reversed", "created_at", "paid_at")
    list_filter = ("status",)
    search_fields = ("client_reference_id", "stripe_checkout_session_id", "stripe_payment_intent_id", "user__email")
    list_select_related = ("user", "pack")


@admin.register(PaymentReversal)
class PaymentReversalAdmin(ReadOnlyAdmin):
    """Refunds and disputes as Stripe last reported them; the ledger entries show what they did."""

    list_display = ("stripe_id", "kind", "status", "amount_display", "reason", "purchase", "payment_intent", "updated_at")
    list_filter = ("kind", "status")
    search_fields = ("stripe_id", "payment_intent", "charge", "purchase__client_reference_id", "purchase__user__email")
    list_select_related = ("purchase__user",)

    @admin.display(description="amount")
    def amount_display(self, obj: PaymentReversal) -> str:
        return obj.amount_display


@admin.register(SignupGrant)
class SignupGrantAdmin(ReadOnlyAdmin):
    list_display = ("address", "user", "credits", "created_at")
    search_fields = ("address", "user__email")
    list_select_related = ("user",)


@admin.register(StripeEvent)
class StripeEventAdmin(ReadOnlyAdmin):
    list_display = ("event_id", "type", "outcome", "api_version", "livemode", "purchase", "received_at")
    list_filter = ("type", "outcome")
    search_fields = ("event_id",)


@admin.register(CreditPack)
class CreditPackAdmin(admin.ModelAdmin):
    list_display = ("name", "credits", "price", "currency", "stripe_price_id", "active")
    list_editable = ("active",)
