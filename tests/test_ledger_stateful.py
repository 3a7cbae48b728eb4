"""Random sequences of ledger operations, checked against a plain model after every step.

The model is the account's true position P (grants + purchases - captures - credits taken
back by refunds and disputes) and what is held. Because credits that come in always pay
what is owed first, the cached columns follow from those two alone: balance = max(P, held)
and owed = max(held - P, 0). Refunds and disputes arrive in random order and amounts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from itertools import count

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, settings as hypothesis_settings, strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from billing import ledger
from billing.audit import find_drift
from billing.models import CreditAccount, CreditPack, EntryKind, Hold, HoldStatus, LedgerEntry, Purchase, ReversalKind
from billing.reversals import ReversalState

_ids = count()


@dataclass
class ModelPayment:
    purchase_pk: int
    intent: str
    refunded: int = 0          # the largest amount_refunded Stripe reported (cents of 500)
    disputed: int = 0          # the open or lost dispute's amount
    dispute_final: bool = False

    @property
    def reversed_credits(self) -> int:
        return 110 * min(500, self.refunded + self.disputed) // 500


@dataclass
class ModelHold:
    pk: int
    amount: int
    status: str
    expires_at: object


class LedgerMachine(RuleBasedStateMachine):
    """The model is three numbers and a dict; the real thing is rows, locks and caches."""

    holds = Bundle("holds")
    references = Bundle("references")
    payments = Bundle("payments")

    def __init__(self) -> None:
        super().__init__()
        from accounts.models import User

        self.run = next(_ids)
        self.user = User.objects.create_user(email=f"machine{self.run}@example.com", password="pw-123456789",
                                             email_verified_at=timezone.now())
        self.pack = CreditPack.objects.create(name=f"pack {self.run}", credits=110, price=500, currency="usd")
        self.position = 220  # the signup grant
        self.model_holds: dict[int, ModelHold] = {}
        self.now = timezone.now()
        self.clock = 1_800_000_000  # Stripe event times

    @property
    def balance(self) -> int:
        return max(self.position, self.held)

    @property
    def owed(self) -> int:
        return max(self.held - self.position, 0)

    def _new_ref(self, prefix: str) -> str:
        return f"{prefix}-{self.run}-{next(_ids)}"

    @property
    def held(self) -> int:
        return sum(h.amount for h in self.model_holds.values() if h.status == HoldStatus.PENDING)

    @rule(target=references, amount=st.integers(1, 300))
    def grant(self, amount: int) -> str:
        reference = self._new_ref("grant")
        assert ledger.grant(self.user, amount, reference=reference) is not None
        self.position += amount
        return reference

    @rule(reference=references, amount=st.integers(1, 300))
    def grant_again(self, reference: str, amount: int) -> None:
        assert ledger.grant(self.user, amount, reference=reference) is None

    @rule(target=holds, amount=st.sampled_from([22, 22, 22, 1, 50, 500]), overdue=st.booleans())
    def reserve(self, amount: int, overdue: bool):
        expires_at = self.now + (timedelta(seconds=-1) if overdue else timedelta(hours=1))
        reference = self._new_ref("rnd")
        if self.balance - self.held < amount:
            expected = ledger.CreditsOwed if self.owed else ledger.InsufficientCredits
            with pytest.raises(expected):
                ledger.reserve(self.user, amount, reference=reference, expires_at=expires_at)
            assert not Hold.objects.filter(reference=reference).exists()
            return None
        hold = ledger.reserve(self.user, amount, reference=reference, expires_at=expires_at)
        self.model_holds[hold.pk] = ModelHold(hold.pk, amount, HoldStatus.PENDING, expires_at)
        return hold.pk

    def _resolve(self, hold_id: int | None, to: str, action) -> None:
        if hold_id is None:
            return
        model = self.model_holds[hold_id]
        resolved = action(hold_id)
        assert resolved is (model.status == HoldStatus.PENDING)
        if resolved:
            model.status = to
            if to == HoldStatus.CAPTURED:
                self.position -= model.amount

    @rule(hold_id=holds)
    def capture(self, hold_id: int | None) -> None:
        self._resolve(hold_id, HoldStatus.CAPTURED, ledger.capture)

    @rule(hold_id=holds)
    def release(self, hold_id: int | None) -> None:
        self._resolve(hold_id, HoldStatus.RELEASED, ledger.release)

    @rule(hold_id=holds)
    def expire(self, hold_id: int | None) -> None:
        self._resolve(hold_id, HoldStatus.EXPIRED, ledger.expire)

    @rule()
    def expire_due_holds(self) -> None:
        due = [h for h in self.model_holds.values() if h.status == HoldStatus.PENDING and h.expires_at <= self.now]
        assert ledger.expire_due_holds(self.now) == len(due)
        for h in due:
            h.status = HoldStatus.EXPIRED

    @rule(target=payments, deliveries=st.integers(1, 3), failed_first=st.booleans())
    def purchase(self, deliveries: int, failed_first: bool) -> ModelPayment:
        purchase = Purchase.objects.create(
            user=self.user, pack=self.pack, credits=110, amount=500, currency="usd",
            stripe_checkout_session_id=self._new_ref("cs"),
        )
        event = ledger.CheckoutEvent(
            event_id=self._new_ref("evt"),
            type="checkout.session.completed",
            session_id=purchase.stripe_checkout_session_id,
            client_reference_id=purchase.client_reference_id,
            amount_total=500,
            currency="usd",
            payment_intent=self._new_ref("pi"),
        )
        if failed_first:
            failed = ledger.CheckoutEvent(**{**event.__dict__, "event_id": self._new_ref("evt")})
            assert ledger.record_purchase_failed(failed) == ledger.PurchaseOutcome.MARKED_FAILED
        outcomes = [ledger.record_purchase_paid(event) for _ in range(deliveries)]
        other = ledger.CheckoutEvent(**{**event.__dict__, "event_id": self._new_ref("evt")})
        outcomes.append(ledger.record_purchase_paid(other))
        assert outcomes[0] == ledger.PurchaseOutcome.CREDITED
        assert set(outcomes[1:-1]) <= {ledger.PurchaseOutcome.DUPLICATE_EVENT}
        assert outcomes[-1] == ledger.PurchaseOutcome.ALREADY_PAID
        self.position += 110
        return ModelPayment(purchase.pk, event.payment_intent)

    def _reversal(self, payment: ModelPayment, state: ReversalState, deliveries: int) -> None:
        before = payment.reversed_credits
        self.clock += 1
        event = ledger.ReversalEvent(event_id=self._new_ref("evt"), type="charge.refunded", created=self.clock,
                                     payment_intent=payment.intent, states=(state,))
        outcomes = [ledger.record_reversal(event) for _ in range(deliveries)]
        assert set(outcomes[1:]) <= {ledger.PurchaseOutcome.DUPLICATE_EVENT}
        return before

    @rule(payment=payments, amount_refunded=st.integers(0, 500), deliveries=st.integers(1, 2))
    def refund(self, payment: ModelPayment, amount_refunded: int, deliveries: int) -> None:
        state = ReversalState(kind=ReversalKind.CHARGE_REFUNDS, stripe_id=f"ch_{payment.intent}",
                              amount=amount_refunded, status="refunded", payment_intent=payment.intent)
        before = self._reversal(payment, state, deliveries)
        payment.refunded = amount_refunded  # the latest report wins
        self.position -= payment.reversed_credits - before

    @rule(payment=payments, status=st.sampled_from(["needs_response", "under_review", "won", "lost"]),
          amount=st.integers(1, 500))
    def dispute(self, payment: ModelPayment, status: str, amount: int) -> None:
        state = ReversalState(kind=ReversalKind.DISPUTE, stripe_id=f"dp_{payment.intent}", amount=amount,
                              status=status, payment_intent=payment.intent)
        before = self._reversal(payment, state, 1)
        if not payment.dispute_final:
            payment.disputed = 0 if status == "won" else amount
            payment.dispute_final = status in ("won", "lost")
        self.position -= payment.reversed_credits - before

    @invariant()
    def cached_balances_match_the_model(self) -> None:
        account = CreditAccount.objects.get(user=self.user)
        assert (account.balance, account.held, account.owed) == (self.balance, self.held, self.owed)
        assert account.balance >= 0 and 0 <= account.held <= account.balance
        assert account.owed == 0 or account.balance == account.held

    @invariant()
    def balance_is_the_sum_of_entries_and_held_the_sum_of_pending_holds(self) -> None:
        rows = list(LedgerEntry.objects.filter(account__user=self.user).values_list("amount", "owed_change"))
        assert sum(a for a, _ in rows) == self.balance
        assert sum(o for _, o in rows) == self.owed
        pending = Hold.objects.filter(account__user=self.user, status=HoldStatus.PENDING)
        assert sum(pending.values_list("amount", flat=True)) == self.held

    @invariant()
    def every_hold_resolved_at_most_once(self) -> None:
        stored = dict(Hold.objects.filter(account__user=self.user).values_list("pk", "status"))
        assert stored == {pk: h.status for pk, h in self.model_holds.items()}
        usage = list(
            LedgerEntry.objects.filter(account__user=self.user, kind=EntryKind.USAGE).values_list("hold_id", flat=True)
        )
        captured = [pk for pk, h in self.model_holds.items() if h.status == HoldStatus.CAPTURED]
        assert sorted(usage) == sorted(captured)

    def teardown(self) -> None:
        # Leave nothing pending, so the next run's expire_due_holds counts only its own holds.
        for hold_id in Hold.objects.filter(status=HoldStatus.PENDING).values_list("pk", flat=True):
            ledger.release(hold_id)


@pytest.mark.django_db
def test_random_ledger_histories_keep_every_invariant():
    run_state_machine_as_test(
        LedgerMachine,
        settings=hypothesis_settings(
            max_examples=30,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
    assert find_drift()[0] == []
