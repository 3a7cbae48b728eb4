"""Schemathesis against a live platform: the stack, the command, and its figures.

Shared by ``tests/test_schemathesis_fuzz.py`` (the coverage and fuzzing phases, about
a minute, in ``make test``) and ``bench/fuzz_api.py`` (every phase including stateful,
``make bench-fuzz``), so both fuzz exactly what an operator would with the command
``schemathesis_command`` prints.

The stack is ``tests.live_platform``'s: real redis-server, gunicorn, the GPU worker's
echo engine and the Django-side rq worker, all on loopback. Fuzzed ``image_url`` values
name arbitrary hosts; ``FETCH_ALLOWED_HOSTS`` names one host under ``.invalid`` (a TLD
that never resolves, RFC 6761), so the fetcher refuses every fuzzed URL with 422
``image_url_forbidden`` before any DNS lookup or connection, and gunicorn runs under
``tests.guarded_asgi``, which makes any attempt to leave loopback a 500 that
``not_a_server_error`` reports.

The caller provides Django set up on the database whose URL it passes (the children
use the same one), as for ``tests.fault_scenarios``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.live_platform import ROOT, Platform

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
CONFIG = ROOT / "schemathesis.toml"
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance", "negative_data_rejection",
          "positive_data_acceptance")
# A host no fuzzed URL names; under .invalid, which never resolves.
ALLOWED_FETCH_HOST = "images.fuzz.invalid"
FUZZ_ENV = {
    # As `make run` serves (the setting): with DEBUG on, Django answers what no view
    # handles with its HTML debug pages, which the API must never show.
    "DEBUG": "1",
    # Echo renders finish at once, so a fuzzed POST that gets through costs milliseconds.
    "WORKER_ECHO_DELAY_MS": "0",
    "RENDER_SYNC_WINDOW_SECONDS": "20",
    "FETCH_ALLOWED_HOSTS": ALLOWED_FETCH_HOST,
    "FETCH_TIMEOUT_SECONDS": "2",
    # The fuzzer is one client sending as fast as it can; limits are tested elsewhere.
    "API_RATE_LIMIT_PER_MINUTE": "10000000",
    "API_MAX_RENDERS_IN_FLIGHT_PER_KEY": "10000",
    "API_UNKNOWN_KEYS_PER_MINUTE_PER_IP": "10000000",
    "LOG_LEVEL": "WARNING",
}
FUZZ_CREDITS_IN_RENDERS = 1_000_000


@dataclass
class FuzzRun:
    """One schemathesis run: its exit status, output, and the figures of its report."""

    command: list[str]
    returncode: int
    output: str
    seconds: float
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        """The part of the output after the last phase: failures and the totals."""
        marker = self.output.rfind("SUMMARY")
        return self.output[marker:] if marker >= 0 else self.output[-4000:]

    @property
    def generated_cases(self) -> int | None:
        """Test cases generated, as the summary's "Test cases:" line counts them."""
        found = re.search(r"Test cases:\s*\n?\s*(\d[\d,]*) generated", self.output)
        return int(found.group(1).replace(",", "")) if found else None

    @property
    def failures(self) -> int:
        """Unique failures reported (0 when the run passed)."""
        found = re.search(r"(\d[\d,]*) unique failures?", self.output)
        return int(found.group(1).replace(",", "")) if found else 0


def start_stack(workdir: Path, database_url: str) -> tuple[Platform, str]:
    """The live platform for fuzzing and an API key (raw) whose account can pay for a million renders."""
    from tests.fault_scenarios import customer

    platform = Platform(workdir, database_url, **FUZZ_ENV)
    try:
        platform.start_redis()
        platform.start_web(workers=2, threads=4, app="tests.guarded_asgi:application")
        platform.start_gpu_worker()
        platform.start_django_worker()
    except BaseException:
        platform.stop()
        raise
    _, key = customer(f"fuzz-{time.monotonic_ns()}@example.com", renders=FUZZ_CREDITS_IN_RENDERS)
    return platform, key


def schemathesis_command(base_url: str, *, phases: str, max_time: int, report_dir: Path,
                         max_examples: int | None = None, seed: int | None = None) -> list[str]:
    """The CLI call; the key comes from ``PIXELAPI_KEY`` (``schemathesis.toml``'s ``[auth]``)."""
    command = [
        SCHEMATHESIS, "--config-file", str(CONFIG), "run", f"{base_url}/v1/schema/?format=json",
        "--url", base_url, "--checks", ",".join(CHECKS), "--phases", phases,
        # One worker: with two, Hypothesis parses lambdas' source in two threads at once, and
        # CPython 3.11's ast module then fails at random ("AST constructor recursion depth
        # mismatch", python/cpython#106905), which schemathesis reports as an error.
        "--max-time", str(max_time), "--workers", "1",
        "--report", "json", "--report-dir", str(report_dir), "--no-color",
    ]
    if max_examples is not None:
        command += ["--max-examples", str(max_examples)]
    if seed is not None:
        command += ["--seed", str(seed)]
    return command


def run_schemathesis(base_url: str, key: str, report_dir: Path, *, phases: str, max_time: int,
                     max_examples: int | None = None, seed: int | None = None,
                     echo: bool = False) -> FuzzRun:
    """Runs the CLI against ``base_url`` and collects its output and JSON report."""
    import os

    command = schemathesis_command(base_url, phases=phases, max_time=max_time, report_dir=report_dir,
                                   max_examples=max_examples, seed=seed)
    started = time.monotonic()
    env = {**os.environ, "PIXELAPI_KEY": key, "NO_COLOR": "1", "COLUMNS": "120"}
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if echo:
            print(line, end="", flush=True)
    returncode = proc.wait()
    run = FuzzRun(command, returncode, "".join(lines), time.monotonic() - started)
    reports = sorted(report_dir.glob("*.json"), key=lambda p: p.stat().st_mtime)
    if reports:
        try:
            run.report = json.loads(reports[-1].read_text())
        except ValueError:
            pass
    return run
