"""Random sequences of ledger operations, checked against a plain model after every step."""

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
from billing.models import CreditAccount, CreditPack, EntryKind, Hold, HoldStatus, LedgerEntry, Purchase

_ids = count()


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

    def __init__(self) -> None:
        super().__init__()
        from accounts.models import User

        self.run = next(_ids)
        self.user = User.objects.create_user(email=f"machine{self.run}@example.com", password="pw-123456789")
        self.pack = CreditPack.objects.create(name=f"pack {self.run}", credits=110, price=500, currency="usd")
        self.balance = 220  # the signup grant
        self.model_holds: dict[int, ModelHold] = {}
        self.now = timezone.now()

    def _new_ref(self, prefix: str) -> str:
        return f"{prefix}-{self.run}-{next(_ids)}"

    @property
    def held(self) -> int:
        return sum(h.amount for h in self.model_holds.values() if h.status == HoldStatus.PENDING)

    @rule(target=references, amount=st.integers(1, 300))
    def grant(self, amount: int) -> str:
        reference = self._new_ref("grant")
        assert ledger.grant(self.user, amount, reference=reference) is not None
        self.balance += amount
        return reference

    @rule(reference=references, amount=st.integers(1, 300))
    def grant_again(self, reference: str, amount: int) -> None:
        assert ledger.grant(self.user, amount, reference=reference) is None

    @rule(target=holds, amount=st.sampled_from([22, 22, 22, 1, 50, 500]), overdue=st.booleans())
    def reserve(self, amount: int, overdue: bool):
        expires_at = self.now + (timedelta(seconds=-1) if overdue else timedelta(hours=1))
        reference = self._new_ref("rnd")
        if self.balance - self.held < amount:
            with pytest.raises(ledger.InsufficientCredits):
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
                self.balance -= model.amount

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

    @rule(deliveries=st.integers(1, 3), failed_first=st.booleans())
    def purchase(self, deliveries: int, failed_first: bool) -> None:
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
        self.balance += 110

    @invariant()
    def cached_balances_match_the_model(self) -> None:
        account = CreditAccount.objects.get(user=self.user)
        assert (account.balance, account.held) == (self.balance, self.held)
        assert account.balance >= 0 and 0 <= account.held <= account.balance

    @invariant()
    def balance_is_the_sum_of_entries_and_held_the_sum_of_pending_holds(self) -> None:
        amounts = list(LedgerEntry.objects.filter(account__user=self.user).values_list("amount", flat=True))
        assert sum(amounts) == self.balance
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
