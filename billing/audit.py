"""``audit_ledger``'s checks: invariants a bug in the money code would break.

Comparing the cached totals with the entries (the first check) cannot catch a bug that
writes a wrong entry *and* moves the cache with it, because every write does both. The
other checks compare the ledger with what it is about:

* ``cached_totals``: balance == sum(amount), held == sum(pending holds), owed ==
  sum(owed_change), and the newest entry's balance_after / owed_after are the cache;
* ``entry_chain``: every entry's balance_after and owed_after are the previous entry's
  plus its own change (the whole chain, not only the newest);
* ``entry_shapes``: each kind moves money the way only its ledger function can (usage
  is negative and names a hold, a settlement pays owed from the balance, a reversal
  never adds credits, ...);
* ``holds_charged_once``: each captured hold has exactly one usage entry of minus its
  amount, on its own account; released, expired and pending holds have none;
* ``purchases_credited_once``: each paid purchase has exactly one purchase entry of its
  credits, on the buyer's account; no other purchase has one, and none credits a
  purchase that is not paid;
* ``reversals_match``: a purchase's credits_reversed equals its reversal and
  reinstatement entries, and what its refunds and disputes say it should be;
* checks other apps register (``register``): imaging checks that every render's
  credits_charged agrees with its hold's usage entry.

Everything runs in one transaction (REPEATABLE READ on PostgreSQL), so renders in
flight cannot make a balanced ledger look drifted. Each problem is one line naming the
account and the ids involved.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from django.db import connection, transaction
from django.db.models import (
    BigIntegerField,
    Count,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
    Window,
)
from django.db.models.functions import Coalesce, Lag

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
)


@dataclass(frozen=True)
class Problem:
    """One broken invariant: which check, which account, and the ids involved."""

    check: str
    account_id: int | None
    email: str
    detail: str

    def __str__(self) -> str:
        return f"account #{self.account_id} ({self.email}): {self.detail} [{self.check}]"


Check = Callable[[], Iterator[Problem]]
CHECKS: list[tuple[str, Check]] = []


def register(name: str) -> Callable[[Check], Check]:
    """Adds a check (a generator of Problems); apps register theirs when they load."""

    def add(check: Check) -> Check:
        if all(existing != name for existing, _ in CHECKS):
            CHECKS.append((name, check))
        return check

    return add


def _total(queryset, field: str) -> Coalesce:
    summed = queryset.order_by().values("account").annotate(total=Sum(field)).values("total")
    return Coalesce(Subquery(summed), Value(0), output_field=BigIntegerField())


@register("cached_totals")
def cached_totals() -> Iterator[Problem]:
    entries = LedgerEntry.objects.filter(account=OuterRef("pk"))
    pending = Hold.objects.filter(account=OuterRef("pk"), status=HoldStatus.PENDING)
    newest = LedgerEntry.objects.filter(account=OuterRef("pk")).order_by("-id")
    rows = (
        CreditAccount.objects.annotate(
            entries_total=_total(entries, "amount"),
            owed_total=_total(entries, "owed_change"),
            pending_total=_total(pending, "amount"),
            last_balance_after=Coalesce(Subquery(newest.values("balance_after")[:1]), Value(0),
                                        output_field=BigIntegerField()),
            last_owed_after=Coalesce(Subquery(newest.values("owed_after")[:1]), Value(0),
                                     output_field=BigIntegerField()),
        )
        .filter(~Q(balance=F("entries_total")) | ~Q(held=F("pending_total")) | ~Q(owed=F("owed_total"))
                | ~Q(balance=F("last_balance_after")) | ~Q(owed=F("last_owed_after")))
        .order_by("pk")
        .values_list("pk", "user__email", "balance", "held", "owed", "entries_total", "pending_total",
                     "owed_total", "last_balance_after", "last_owed_after")
    )
    for pk, email, balance, held, owed, entries_total, pending_total, owed_total, last_b, last_o in rows:
        problems = []
        if balance != entries_total:
            problems.append(f"balance {balance} but entries sum to {entries_total}")
        if held != pending_total:
            problems.append(f"held {held} but pending holds sum to {pending_total}")
        if balance != last_b:
            problems.append(f"balance {balance} but the newest entry says {last_b}")
        if owed != owed_total:
            problems.append(f"owed {owed} but entries' owed changes sum to {owed_total}")
        if owed != last_o:
            problems.append(f"owed {owed} but the newest entry says {last_o}")
        yield Problem("cached_totals", pk, email, "; ".join(problems))


@register("entry_chain")
def entry_chain() -> Iterator[Problem]:
    def previous(field: str) -> Window:
        return Window(Lag(field, default=Value(0)), partition_by=[F("account_id")], order_by=F("id").asc(),
                      output_field=BigIntegerField())

    rows = (
        LedgerEntry.objects.annotate(prev_balance=previous("balance_after"), prev_owed=previous("owed_after"))
        .filter(~Q(balance_after=F("prev_balance") + F("amount")) | ~Q(owed_after=F("prev_owed") + F("owed_change")))
        .order_by("account_id", "id")
        .values_list("account_id", "account__user__email", "pk", "kind", "amount", "balance_after",
                     "prev_balance", "owed_change", "owed_after", "prev_owed")
    )
    for account_id, email, pk, kind, amount, after, before, owed_change, owed_after, owed_before in rows:
        detail = []
        if after != before + amount:
            detail.append(f"balance_after {after}, but the entry before says {before} and this one adds {amount:+d}")
        if owed_after != owed_before + owed_change:
            detail.append(f"owed_after {owed_after}, but the entry before says {owed_before} "
                          f"and this one adds {owed_change:+d}")
        yield Problem("entry_chain", account_id, email, f"entry #{pk} ({kind}): " + "; ".join(detail))


# What each kind may do: a Q that every entry of the kind must satisfy.
SHAPES: dict[str, tuple[Q, str]] = {
    EntryKind.GRANT: (Q(amount__gt=0, owed_change=0), "adds credits and owes nothing"),
    EntryKind.PURCHASE: (Q(amount__gt=0, owed_change=0, hold__isnull=True), "adds credits and owes nothing"),
    EntryKind.REFUND: (Q(amount__gt=0, owed_change=0), "adds credits and owes nothing"),
    EntryKind.USAGE: (Q(amount__lt=0, owed_change=0, hold__isnull=False), "takes credits for a hold"),
    EntryKind.ADJUSTMENT: (Q(owed_change=0) | Q(owed_change__gt=0, amount__lte=0),
                           "owes only what it could not take"),
    EntryKind.REVERSAL: (Q(amount__lte=0, owed_change__gte=0, purchase__isnull=False),
                         "takes credits back from a purchase"),
    EntryKind.REINSTATEMENT: (Q(amount__gte=0, owed_change__lte=0, purchase__isnull=False),
                              "gives a purchase's credits back"),
    EntryKind.SETTLEMENT: (Q(amount__lt=0, owed_change=F("amount")), "pays owed credits from the balance"),
}


@register("entry_shapes")
def entry_shapes() -> Iterator[Problem]:
    bad = Q(~Q(kind__in=list(SHAPES)))
    for kind, (shape, _) in SHAPES.items():
        bad |= Q(kind=kind) & ~shape
    rows = (LedgerEntry.objects.filter(bad).order_by("account_id", "id")
            .values_list("account_id", "account__user__email", "pk", "kind", "amount", "owed_change", "hold_id",
                         "purchase_id"))
    for account_id, email, pk, kind, amount, owed_change, hold_id, purchase_id in rows:
        rule = SHAPES.get(kind, (None, "is not a kind the ledger writes"))[1]
        yield Problem("entry_shapes", account_id, email,
                      f"entry #{pk} ({kind}, amount {amount:+d}, owed {owed_change:+d}, hold {hold_id}, "
                      f"purchase {purchase_id}): a {kind} entry {rule}")


@register("holds_charged_once")
def holds_charged_once() -> Iterator[Problem]:
    usage = Q(entries__kind=EntryKind.USAGE)
    rows = (
        Hold.objects.annotate(
            usage_count=Count("entries", filter=usage),
            usage_total=Coalesce(Sum("entries__amount", filter=usage), Value(0), output_field=BigIntegerField()),
            foreign=Count("entries", filter=usage & ~Q(entries__account_id=F("account_id"))),
        )
        .filter((Q(status=HoldStatus.CAPTURED) & (~Q(usage_count=1) | ~Q(usage_total=-F("amount")) | Q(foreign__gt=0)))
                | (~Q(status=HoldStatus.CAPTURED) & Q(usage_count__gt=0)))
        .order_by("account_id", "pk")
        .values_list("account_id", "account__user__email", "pk", "reference", "status", "amount", "usage_count",
                     "usage_total", "foreign")
    )
    for account_id, email, pk, reference, status, amount, n, total, foreign in rows:
        entry_ids = list(LedgerEntry.objects.filter(hold_id=pk, kind=EntryKind.USAGE)
                         .order_by("id").values_list("id", flat=True))
        if status == HoldStatus.CAPTURED:
            detail = f"captured hold #{pk} ({reference}, {amount}) has {n} usage entries {entry_ids} totalling {total}"
            if foreign:
                detail += f", {foreign} of them on another account"
        else:
            detail = f"{status} hold #{pk} ({reference}) has usage entries {entry_ids}"
        yield Problem("holds_charged_once", account_id, email, detail)
    orphans = (LedgerEntry.objects.filter(kind=EntryKind.USAGE, hold__isnull=True).order_by("account_id", "id")
               .values_list("account_id", "account__user__email", "pk", "reference"))
    for account_id, email, pk, reference in orphans:
        yield Problem("holds_charged_once", account_id, email, f"usage entry #{pk} ({reference}) names no hold")


@register("purchases_credited_once")
def purchases_credited_once() -> Iterator[Problem]:
    credits = LedgerEntry.objects.filter(kind=EntryKind.PURCHASE, reference=OuterRef("stripe_checkout_session_id"))
    rows = (
        Purchase.objects.annotate(
            entry_count=Coalesce(Subquery(credits.order_by().values("reference").annotate(n=Count("id")).values("n")),
                                 Value(0)),
            entry_total=Coalesce(Subquery(credits.order_by().values("reference").annotate(t=Sum("amount"))
                                          .values("t")), Value(0), output_field=BigIntegerField()),
            on_buyer=Exists(credits.filter(account__user_id=OuterRef("user_id"))),
        )
        .filter((Q(status=PurchaseStatus.PAID) & (~Q(entry_count=1) | ~Q(entry_total=F("credits")) | Q(on_buyer=False)))
                | (~Q(status=PurchaseStatus.PAID) & Q(entry_count__gt=0)))
        .order_by("pk")
        .values_list("user__credit_account__id", "user__email", "pk", "client_reference_id", "status", "credits",
                     "entry_count", "entry_total", "on_buyer", "stripe_checkout_session_id")
    )
    for account_id, email, pk, reference, status, credits_, n, total, on_buyer, session in rows:
        entry_ids = list(LedgerEntry.objects.filter(kind=EntryKind.PURCHASE, reference=session or "")
                         .order_by("id").values_list("id", flat=True))
        if status == PurchaseStatus.PAID:
            detail = (f"paid purchase #{pk} ({reference}, {credits_} credits) has {n} purchase entries "
                      f"{entry_ids} totalling {total}")
            if n and not on_buyer:
                detail += ", none on the buyer's account"
        else:
            detail = f"{status} purchase #{pk} ({reference}) has purchase entries {entry_ids}"
        yield Problem("purchases_credited_once", account_id, email, detail)
    paid = Purchase.objects.filter(status=PurchaseStatus.PAID, stripe_checkout_session_id=OuterRef("reference"))
    orphans = (LedgerEntry.objects.filter(kind=EntryKind.PURCHASE).filter(~Exists(paid))
               .order_by("account_id", "id").values_list("account_id", "account__user__email", "pk", "reference"))
    for account_id, email, pk, reference in orphans:
        yield Problem("purchases_credited_once", account_id, email,
                      f"purchase entry #{pk} ({reference}) credits no paid purchase")


@register("reversals_match")
def reversals_match() -> Iterator[Problem]:
    kinds = [EntryKind.REVERSAL, EntryKind.REINSTATEMENT]
    moving = LedgerEntry.objects.filter(purchase=OuterRef("pk"), kind__in=kinds)
    moved = (moving.order_by().values("purchase")
             .annotate(t=Sum(ExpressionWrapper(F("owed_change") - F("amount"), output_field=BigIntegerField())))
             .values("t"))
    candidates = (
        Purchase.objects.annotate(
            entries_reversed=Coalesce(Subquery(moved), Value(0), output_field=BigIntegerField()),
            has_rows=Exists(PaymentReversal.objects.filter(purchase=OuterRef("pk"))),
            foreign=Exists(moving.exclude(account__user_id=OuterRef("user_id"))),
        )
        .filter(Q(credits_reversed__gt=0) | Q(has_rows=True) | ~Q(entries_reversed=0) | Q(foreign=True))
        .select_related("user__credit_account")
        .prefetch_related("reversals")
        .order_by("pk")
    )
    for purchase in candidates:
        account = getattr(purchase.user, "credit_account", None)
        account_id, email = (account.pk if account else None), purchase.user.email
        rows = list(purchase.reversals.all())
        expected = reversals.credits_to_reverse(purchase, rows)
        ids = sorted(r.stripe_id for r in rows)
        problems = []
        if purchase.credits_reversed != purchase.entries_reversed:
            problems.append(f"credits_reversed {purchase.credits_reversed} but its reversal and reinstatement "
                            f"entries move {purchase.entries_reversed}")
        if purchase.credits_reversed != expected:
            problems.append(f"credits_reversed {purchase.credits_reversed} but its refunds and disputes {ids} "
                            f"say {expected}")
        if purchase.foreign:
            problems.append("some of its reversal entries are on another account")
        if problems:
            yield Problem("reversals_match", account_id, email,
                          f"purchase #{purchase.pk} ({purchase.client_reference_id}): " + "; ".join(problems))


def find_problems(*, first_only: bool = False) -> tuple[list[Problem], int]:
    """Runs every check in one snapshot; returns (problems, credit accounts checked).

    ``first_only`` stops at the first problem found (the checks run in the order above).
    """
    # Inside a transaction someone else opened (a test's), the snapshot is theirs already.
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if connection.vendor == "postgresql" and outermost:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        problems: list[Problem] = []
        for _, check in CHECKS:
            for problem in check():
                problems.append(problem)
                if first_only:
                    break
            if first_only and problems:
                break
        checked = CreditAccount.objects.count()
    return problems, checked


# The name earlier callers (tests, benches) use.
find_drift = find_problems
