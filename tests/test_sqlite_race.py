"""The default database under a customer's fan-out: 150 concurrent renders through gunicorn
on SQLite (the settings `make run` uses), one key, credit for 40.

Runs on its own SQLite file whichever database the rest of the suite uses, because this
is the claim about SQLite: WAL, IMMEDIATE transactions and a busy timeout let it hold
one machine's load with the money exact.
"""

from __future__ import annotations

import pytest

from tests import fault_scenarios as scenarios

pytestmark = pytest.mark.slow


def test_a_150_way_race_on_sqlite_charges_exactly_the_40_renders_paid_for_with_no_5xx(tmp_path):
    report = scenarios.sqlite_race(tmp_path, requests=150, credit_for=40)

    statuses = [answer.status for answer in report.facts["answers"]]
    assert report.facts["server_errors"] == 0, report.clients
    assert statuses.count(200) == 40 and statuses.count(402) == 110, report.clients
    assert report.facts["false_402s"] == 0  # no 402 while credit remained
    assert report.usage_entries == 40 and report.facts["available"] == 0
    assert report.final_states == ["succeeded ×40", "failed ×0"]
    assert report.audit_clean and report.open_renders == 0 and report.pending_holds == 0
