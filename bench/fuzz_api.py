"""Schemathesis against a live platform, every phase, for a time budget.

    .venv/bin/python bench/fuzz_api.py                  # make bench-fuzz: 10 minutes, all phases
    .venv/bin/python bench/fuzz_api.py --minutes 3
    .venv/bin/python bench/fuzz_api.py --phases coverage,fuzzing --seed 7

Starts its own stack (``tests/fuzz_stack.py``: real redis-server, gunicorn, the GPU
worker's echo engine and the Django-side rq worker on loopback, a fresh SQLite
database, an API key with credit for a million renders), then runs the schemathesis
CLI with the repository's ``schemathesis.toml`` and the checks the suite runs, over the
examples, coverage, fuzzing and stateful phases. The suite runs the same command for
about a minute without the stateful phase (``tests/test_schemathesis_fuzz.py``).

Prints schemathesis's own output, then the figures: cases generated, failures found,
seconds. Exits with schemathesis's exit status (0: no failure). The JSON report lands
in ``--report-dir`` (default: the scratch directory, printed at the start).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="schemathesis's time budget")
    parser.add_argument("--phases", default="examples,coverage,fuzzing,stateful")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--report-dir", type=Path, default=None)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-fuzz-"))
    os.environ["DATABASE_URL"] = f"sqlite:///{workdir / 'bench.sqlite3'}"
    os.environ["DJANGO_SETTINGS_MODULE"] = "platform_site.settings"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    from tests import fuzz_stack

    call_command("migrate", verbosity=0)
    report_dir = args.report_dir or workdir / "report"
    print(f"bench-fuzz: scratch {workdir}, phases {args.phases}, {args.minutes:g} min", flush=True)
    platform, key = fuzz_stack.start_stack(workdir, os.environ["DATABASE_URL"])
    try:
        base_url = f"http://127.0.0.1:{platform.web_port}"
        command = fuzz_stack.schemathesis_command(base_url, phases=args.phases,
                                                  max_time=max(1, int(args.minutes * 60)),
                                                  report_dir=report_dir, seed=args.seed)
        print("bench-fuzz: PIXELAPI_KEY=<key> " + " ".join(command), flush=True)
        run = fuzz_stack.run_schemathesis(base_url, key, report_dir, phases=args.phases,
                                          max_time=max(1, int(args.minutes * 60)), seed=args.seed, echo=True)
    finally:
        platform.stop()
    print()
    print(f"bench-fuzz: {run.generated_cases} cases generated, {run.failures} failures, "
          f"{run.seconds:.0f} s, exit {run.returncode}; logs in {platform.logdir}")
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
