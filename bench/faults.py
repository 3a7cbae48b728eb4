"""The render path under real render times and faults, as one table.

    .venv/bin/python bench/faults.py                       # make bench-faults (SQLite, as make run)
    .venv/bin/python bench/faults.py --database postgres   # a fresh PostgreSQL database
    .venv/bin/python bench/faults.py --only race --race-requests 300

Runs the scenarios of ``tests/fault_scenarios.py`` (the suite asserts on the same
ones, in ``tests/test_render_faults.py``): each starts real gunicorn, a real Redis,
real rq workers and sweepers on loopback, sends renders that take seconds (the GPU
worker's echo engine with a delay: no weights exist here), kills something mid-render,
and reads the books afterwards. Then the default-database race: N concurrent renders
on one key with credit for fewer, through gunicorn on SQLite.

Columns: what the clients got (the POST's answer, then what polling GET ended with),
the renders' final states, credits charged (and usage entries), and the audit
(``find_drift`` clean, no render left open, no hold left pending). Exits non-zero
when any row's books are not clean.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--only", choices=("faults", "long", "race"), nargs="*", default=None)
    parser.add_argument("--race-requests", type=int, default=150)
    parser.add_argument("--race-credit-for", type=int, default=40)
    args = parser.parse_args()
    parts = set(args.only or ("long", "faults", "race"))

    workdir = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    pg_database = None
    if args.database == "postgres":
        pg_database = f"bench_faults_{os.getpid()}_{secrets.token_hex(3)}"
        subprocess.run(["psql", f"{PG_ADMIN_URL}/postgres", "-qAtc", f"CREATE DATABASE {pg_database}"], check=True)
        os.environ["DATABASE_URL"] = f"{PG_ADMIN_URL}/{pg_database}"
    else:
        os.environ["DATABASE_URL"] = f"sqlite:///{workdir / 'bench.sqlite3'}"
    os.environ["DJANGO_SETTINGS_MODULE"] = "platform_site.settings"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    from tests import fault_scenarios as scenarios

    call_command("migrate", verbosity=0)
    print(f"bench: database {args.database}, scratch {workdir}", flush=True)
    reports = []
    selected = [*(scenarios.LONG_RENDERS if "long" in parts else ()), *(scenarios.FAULTS if "faults" in parts else ())]
    try:
        for index, scenario in enumerate(selected):
            started = time.monotonic()
            report = scenario(workdir / f"s{index}", os.environ["DATABASE_URL"])
            print(f"  {report.scenario}: {'; '.join(report.clients)} ({time.monotonic() - started:.0f} s)",
                  flush=True)
            reports.append(report)
        if "race" in parts:
            started = time.monotonic()
            report = scenarios.sqlite_race(workdir / "race", requests=args.race_requests,
                                           credit_for=args.race_credit_for)
            print(f"  {report.scenario}: {'; '.join(report.clients)} ({time.monotonic() - started:.0f} s); "
                  f"5xx or no answer {report.facts['server_errors']}, "
                  f"402 while credit remained {report.facts['false_402s']}, "
                  f"credits left {report.facts['available']}", flush=True)
            reports.append(report)
        print()
        print(scenarios.main_table(reports))
    finally:
        if pg_database:
            from django.db import connections

            connections.close_all()
            subprocess.run(["psql", f"{PG_ADMIN_URL}/postgres", "-qAtc",
                            f"DROP DATABASE IF EXISTS {pg_database} WITH (FORCE)"], check=False)
    bad = [r for r in reports if not (r.audit_clean and r.open_renders == 0 and r.pending_holds == 0)]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
