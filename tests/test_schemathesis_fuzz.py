"""An external fuzzer finds no 5xx and no lie in the schema, against the real platform.

Schemathesis's own CLI, with the repository's ``schemathesis.toml``, against real
gunicorn, a real Redis, the GPU worker's echo engine and the Django-side rq worker on
loopback (``tests/fuzz_stack.py``), for about 60 s in all including start-up: the
coverage and fuzzing phases with the checks the issue names. ``make bench-fuzz`` runs
the same with the stateful phase for ten minutes.

Fuzzed image URLs never leave the machine: the stack sets ``FETCH_ALLOWED_HOSTS`` to a
``.invalid`` name, and gunicorn serves through ``tests.guarded_asgi``, so an attempt to
reach beyond loopback would be a 500 that ``not_a_server_error`` reports.
"""

from __future__ import annotations

import time

import pytest
from django.db import connection

from tests import fuzz_stack
from tests.live_platform import database_url

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# The whole test, start-up included.
BUDGET_SECONDS = 60
# What schemathesis needs after its last case to shrink nothing, print and exit.
MARGIN_SECONDS = 5
MIN_FUZZ_SECONDS = 30


def test_schemathesis_finds_no_server_error_and_no_schema_violation_in_coverage_and_fuzzing(tmp_path):
    started = time.monotonic()
    platform, key = fuzz_stack.start_stack(tmp_path, database_url(connection.settings_dict))
    try:
        budget = max(MIN_FUZZ_SECONDS, int(BUDGET_SECONDS - (time.monotonic() - started) - MARGIN_SECONDS))
        run = fuzz_stack.run_schemathesis(f"http://127.0.0.1:{platform.web_port}", key, tmp_path / "report",
                                          phases="coverage,fuzzing", max_time=budget)
    finally:
        platform.stop()
    print(run.summary)
    print(f"schemathesis: {run.generated_cases} cases generated, {run.failures} failures, "
          f"{run.seconds:.0f} s of a {budget} s budget, {time.monotonic() - started:.0f} s in all")
    assert run.generated_cases, run.output[-4000:]
    assert run.returncode == 0, f"{run.summary}\n--- platform logs ---\n{platform.logs()}"
