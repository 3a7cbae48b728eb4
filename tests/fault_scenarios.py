"""Renders through a live platform, at real render times, with one fault each.

Each scenario starts the processes it needs (``tests.live_platform``), sends real
HTTP requests, does one unkind thing mid-render (kills a GPU worker, Redis, a
gunicorn worker, a request; loses a job), lets the platform recover on its own, and
reports what the clients got and what the books say afterwards. The suite
(``tests/test_render_faults.py``) asserts on the reports; ``bench/faults.py`` prints
them as one table.

Scenarios use the Django ORM of the calling process for setup and for reading the
books, so the caller must have Django set up on the database whose URL it passes
(the children use the same one).
"""

from __future__ import annotations

import collections
import concurrent.futures
import io
import json
import os
import re
import signal
import subprocess
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from tests.live_platform import PY, ROOT, Answer, Platform, wait_for

CREDITS = 22
# Real render times: an echo render that takes as long as a GPU render at production
# size, and a sync window long enough to hold it (longer than redis-py's 5 s socket
# timeout, which is what broke every such render).
RENDER_MS = 6000
BASE_ENV = {
    "WORKER_ECHO_DELAY_MS": str(RENDER_MS),
    "RENDER_SYNC_WINDOW_SECONDS": "30",
    "RENDER_DEADLINE_SECONDS": "180",
    "RQ_JOB_TIMEOUT": "120",
    "RENDER_REQUEUE_AFTER_SECONDS": "1",
    "WORKER_HEARTBEAT_TTL_SECONDS": "3",
    "API_RATE_LIMIT_PER_MINUTE": "100000",
}


@dataclass
class Report:
    """One scenario's outcome, in the terms the fault table prints."""

    scenario: str
    clients: list[str] = field(default_factory=list)
    final_states: list[str] = field(default_factory=list)
    credits_charged: int = 0
    usage_entries: int = 0
    renders: int = 0
    open_renders: int = 0
    pending_holds: int = 0
    audit: str = ""
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def audit_clean(self) -> bool:
        return self.audit == "clean"


def product_png(size: int = 64) -> bytes:
    """A dark square on a white studio backdrop."""
    image = Image.new("RGB", (size, size), (255, 255, 255))
    image.paste((30, 40, 60), (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def customer(email: str, renders: int = 10) -> tuple[Any, str]:
    """A user with credit for ``renders`` renders and one API key (raw key returned)."""
    from django.test import override_settings

    from accounts.keys import issue_key
    from accounts.models import User
    from billing import ledger

    with override_settings(SIGNUP_GRANT_CREDITS=0):
        user = User.objects.create_user(email, "correct horse battery")
    ledger.grant(user, renders * CREDITS, reference=f"scenario:{email}", note="scenario credits")
    return user, issue_key(user, "scenario")[1]


def books(report: Report, user: Any) -> Report:
    """Fills in the final states and the money for ``user``, and audits every account."""
    from billing.audit import find_drift
    from billing.models import Hold, HoldStatus, LedgerEntry
    from imaging.models import OPEN_STATUSES, Render

    renders = list(Render.objects.filter(user=user).order_by("created_at"))
    report.renders = len(renders)
    report.final_states = [
        f"{r.status}" + (f" {r.error_code}" if r.error_code else "") + (f" (attempt {r.attempt})" if r.attempt > 1 else "")
        for r in renders
    ]
    entries = LedgerEntry.objects.filter(account__user=user, kind="usage")
    report.usage_entries = entries.count()
    report.credits_charged = -sum(entries.values_list("amount", flat=True))
    report.open_renders = Render.objects.filter(status__in=OPEN_STATUSES).count()
    report.pending_holds = Hold.objects.filter(status=HoldStatus.PENDING).count()
    drifts, _ = find_drift()
    report.audit = "clean" if not drifts else "; ".join(map(str, drifts))
    charged = {r.public_id: r.credits_charged for r in renders}
    if sum(charged.values()) != report.credits_charged:
        report.audit += f"; renders say {sum(charged.values())} charged, the ledger {report.credits_charged}"
    return report


def _render_of(user: Any) -> Any:
    from imaging.models import Render

    return Render.objects.filter(user=user).order_by("-created_at").first()


def _final_answer(platform: Platform, key: str, answer: Answer, render_id: str | None) -> Answer:
    """What a client ends up with: the POST's answer, or its polling after a 202 or a reset."""
    if answer.status == 200 or render_id is None:
        return answer
    return platform.wait_until_terminal(key, render_id, timeout=90)


def _describe(first: Answer, last: Answer) -> str:
    if last is first:
        return first.describe()
    status = last.body.get("status") if isinstance(last.body, dict) else last.describe()
    return f"{first.describe()} → GET {status}"


def _base_platform(workdir: Path, database_url: str, *, redis_aof: bool = False, **env: str) -> Platform:
    platform = Platform(workdir, database_url, redis_aof=redis_aof, **{**BASE_ENV, **env})
    platform.start_redis()
    platform.start_web()
    platform.start_django_worker()
    platform.start_sweeper()
    return platform


def _in_background(fn: Any, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(fn, *args, **kwargs)
    pool.shutdown(wait=False)
    return future


def _post_until_running(platform: Platform, user: Any, key: str) -> tuple[concurrent.futures.Future, Any, str]:
    """Sends a render from another thread and returns once a GPU worker is running it:
    the pending answer, the render row, and the name of the worker running it."""
    pending = _in_background(platform.post_render, key, product_png())
    render = wait_for(lambda: _render_of(user), 30, "the render row")
    running_on = wait_for(lambda: platform.job_worker(render.job_id), 30, "a worker to start the render")
    return pending, render, running_on


# --- renders that take as long as real ones ------------------------------------------


def long_render_inside_the_window(workdir: Path, database_url: str) -> Report:
    """An 8 s render and a 30 s sync window: one request, 200 with the output."""
    report = Report("8 s render, 30 s sync window")
    platform = _base_platform(workdir, database_url, WORKER_ECHO_DELAY_MS="8000")
    try:
        platform.start_gpu_worker()
        user, key = customer("long@example.com")
        answer = platform.post_render(key, product_png())
        report.clients.append(answer.describe())
        report.facts.update(answer=answer, seconds=answer.seconds, key=key, platform_port=platform.web_port)
        if answer.status == 200:
            output = platform.request("GET", answer.body["output_url"].split(str(platform.web_port), 1)[1])
            report.facts["output_status"] = output.status
        return books(report, user)
    finally:
        platform.stop()


def render_longer_than_the_window(workdir: Path, database_url: str) -> Report:
    """An 8 s render and a 2 s sync window: 202 with the id, then GET ends succeeded."""
    report = Report("8 s render, 2 s sync window")
    platform = _base_platform(workdir, database_url, WORKER_ECHO_DELAY_MS="8000", RENDER_SYNC_WINDOW_SECONDS="2")
    try:
        platform.start_gpu_worker()
        user, key = customer("longer@example.com")
        first = platform.post_render(key, product_png())
        last = _final_answer(platform, key, first, first.render_id)
        report.clients.append(_describe(first, last))
        report.facts.update(first=first, last=last)
        return books(report, user)
    finally:
        platform.stop()


# --- faults ----------------------------------------------------------------------------


def gpu_worker_killed_mid_render(workdir: Path, database_url: str) -> Report:
    """kill -9 the GPU worker running the render while a second worker is up."""
    report = Report("GPU worker kill -9 mid-render, a second worker up")
    platform = _base_platform(workdir, database_url)
    try:
        workers = {name: platform.start_gpu_worker(name) for name in ("gpu-a", "gpu-b")}
        user, key = customer("killed-worker@example.com")
        pending, render, running_on = _post_until_running(platform, user, key)
        victim = next(name for name in workers if running_on.startswith(f"{name}-"))
        time.sleep(1.0)  # mid-render, not at its first instant
        workers[victim].kill()
        first = pending.result(timeout=90)
        last = _final_answer(platform, key, first, first.render_id or render.public_id)
        report.clients.append(_describe(first, last))
        report.facts.update(first=first, last=last, killed=victim)
        return books(report, user)
    finally:
        platform.stop()


def redis_restarted_mid_render(workdir: Path, database_url: str) -> Report:
    """kill -9 Redis (append-only file on) mid-render and start it again a second later."""
    report = Report("Redis kill -9 and restart mid-render (AOF)")
    # Heartbeats must outlast the outage, or the render would also count as lost.
    platform = _base_platform(workdir, database_url, redis_aof=True, WORKER_HEARTBEAT_TTL_SECONDS="20")
    try:
        platform.start_gpu_worker()
        user, key = customer("redis-restart@example.com")
        pending, render, _ = _post_until_running(platform, user, key)
        time.sleep(1.0)
        platform.redis.kill()
        time.sleep(1.0)
        platform.restart_redis()
        first = pending.result(timeout=90)
        last = _final_answer(platform, key, first, first.render_id)
        report.clients.append(_describe(first, last))
        report.facts.update(first=first, last=last)
        return books(report, user)
    finally:
        platform.stop()


def gunicorn_worker_killed_mid_wait(workdir: Path, database_url: str) -> Report:
    """kill -9 the gunicorn worker whose request is waiting on the render."""
    report = Report("gunicorn worker kill -9 mid-wait")
    platform = Platform(workdir, database_url, **BASE_ENV)
    try:
        platform.start_redis()
        web = platform.start_web(workers=1)
        platform.start_django_worker()
        platform.start_sweeper()
        platform.start_gpu_worker()
        user, key = customer("killed-web@example.com")
        pending, render, _ = _post_until_running(platform, user, key)
        [worker_pid] = web.children()
        os.kill(worker_pid, signal.SIGKILL)
        first = pending.result(timeout=90)
        # The client got no answer (its connection was reset), so it never learnt the id;
        # the render is followed by the id the database has, as support would.
        wait_for(lambda: platform.request("GET", "/v1/account", timeout=2).status == 401, 60, "a new worker")
        last = platform.wait_until_terminal(key, render.public_id, timeout=90)
        report.clients.append(_describe(first, last))
        report.facts.update(first=first, last=last)
        return books(report, user)
    finally:
        platform.stop()


def two_sweepers_and_a_lost_job(workdir: Path, database_url: str) -> Report:
    """Redis loses a queued job; two sweepers notice at once; then a worker starts."""
    from rq import Queue
    from rq.job import Job
    from rq.registry import FailedJobRegistry, FinishedJobRegistry
    from rq.serializers import JSONSerializer

    from imaging.models import Render

    report = Report("job lost from Redis, two sweepers at once")
    platform = Platform(workdir, database_url, **{**BASE_ENV, "RENDER_SYNC_WINDOW_SECONDS": "1"})
    try:
        platform.start_redis()
        platform.start_web()
        platform.start_django_worker()
        user, key = customer("lost-job@example.com")
        first = platform.post_render(key, product_png())
        render = Render.objects.get(public_id=first.render_id)
        connection = platform.connection()
        Job.fetch(render.job_id, connection=connection, serializer=JSONSerializer).delete()
        sweepers = [platform.start_sweeper(every=0.2, name=f"sweeper-{i}") for i in (1, 2)]
        wait_for(lambda: Render.objects.get(pk=render.pk).attempt > 1, 30, "a sweeper to re-enqueue")
        time.sleep(2.0)  # several more passes of both sweepers
        queue = Queue("gpu", connection=connection, serializer=JSONSerializer)
        report.facts["queued_jobs"] = queue.count
        platform.start_gpu_worker()
        last = platform.wait_until_terminal(key, render.public_id, timeout=60)
        report.clients.append(_describe(first, last))
        report.facts["first"] = first
        report.facts["runs"] = (FinishedJobRegistry("gpu", connection=connection).count
                                + FailedJobRegistry("gpu", connection=connection).count)
        report.facts["sweepers_alive"] = all(s.alive() for s in sweepers)
        return books(report, user)
    finally:
        platform.stop()


_KILLED_AFTER_RESERVE = textwrap.dedent("""
    import os, sys
    import django
    django.setup()
    from django.test import Client
    from imaging import dispatch
    # The process dies the instant the key, the hold and the render have committed,
    # before the job is queued or anyone is told.
    dispatch.enqueue_render = lambda render: os._exit(137)
    with open(sys.argv[2], "rb") as handle:
        image = handle.read()
    import io
    upload = io.BytesIO(image)
    upload.name = "input.png"
    Client(HTTP_HOST="127.0.0.1").post(
        "/v1/image/replace-background", {"scene_prompt": "a marble plinth in soft light", "image_file": upload},
        headers={"Authorization": "Bearer " + sys.argv[1], "Idempotency-Key": "order-42"})
    sys.exit(0)
""")


def request_killed_after_the_reserve(workdir: Path, database_url: str) -> Report:
    """A request dies right after its reserve commits; the client retries with its key."""
    from imaging.models import Render

    report = Report("request killed after the reserve, retried with its key")
    platform = _base_platform(workdir, database_url)
    try:
        platform.start_gpu_worker()
        user, key = customer("killed-request@example.com")
        image_path = workdir / "input.png"
        image_path.write_bytes(product_png())
        died = subprocess.run([PY, "-c", _KILLED_AFTER_RESERVE, key, str(image_path)], cwd=ROOT,
                              env=platform.env, capture_output=True, text=True, timeout=120)
        report.facts["killed_exit"] = died.returncode
        report.facts["renders_after_kill"] = Render.objects.filter(user=user).count()
        retry = platform.post_render(key, product_png(), idempotency_key="order-42")
        last = _final_answer(platform, key, retry, retry.render_id)
        again = platform.post_render(key, product_png(), idempotency_key="order-42")
        report.clients.append(f"killed (exit {died.returncode}); retry {_describe(retry, last)}; "
                              f"again {again.describe()}")
        report.facts.update(retry=retry, last=last, again=again, stderr=died.stderr[-2000:])
        return books(report, user)
    finally:
        platform.stop()


FAULTS = (
    gpu_worker_killed_mid_render,
    redis_restarted_mid_render,
    gunicorn_worker_killed_mid_wait,
    two_sweepers_and_a_lost_job,
    request_killed_after_the_reserve,
)
LONG_RENDERS = (long_render_inside_the_window, render_longer_than_the_window)


# --- the default database under a customer's fan-out ----------------------------------

_SETUP_RACE = """
from django.test import override_settings
from accounts.keys import issue_key
from accounts.models import User
from billing import ledger
with override_settings(SIGNUP_GRANT_CREDITS=0):
    user = User.objects.create_user("race@example.com", "correct horse battery")
ledger.grant(user, {credits}, reference="race", note="race credits")
print(issue_key(user, "race")[1])
"""

_RACE_BOOKS = """
import json
from billing.audit import find_drift
from billing.models import CreditAccount, Hold, LedgerEntry
from imaging.models import Render
account = CreditAccount.objects.get(user__email="race@example.com")
print(json.dumps({
    "usage_entries": LedgerEntry.objects.filter(account=account, kind="usage").count(),
    "succeeded": Render.objects.filter(status="succeeded").count(),
    "failed": Render.objects.filter(status="failed").count(),
    "open": Render.objects.filter(status__in=["queued", "running"]).count(),
    "pending_holds": Hold.objects.filter(status="pending").count(),
    "available": account.balance - account.held,
    "drift": [str(d) for d in find_drift()[0]],
}))
"""


_SHORTFALL = re.compile(r"needs (\d+) credits; (-?\d+) are available")


def false_402(answer: Answer) -> bool:
    """A 402 whose own message says enough credits were available: refused while credit remained."""
    if answer.status != 402:
        return False
    match = _SHORTFALL.search(str((answer.body or {}).get("error", {}).get("message", "")))
    return match is None or int(match.group(2)) >= int(match.group(1))


def _shell(platform: Platform, code: str) -> str:
    result = subprocess.run([PY, "manage.py", "shell", "-c", code], cwd=ROOT, env=platform.env,
                            capture_output=True, text=True, check=True, timeout=120)
    return result.stdout.strip().splitlines()[-1]


def sqlite_race(workdir: Path, *, requests: int = 150, credit_for: int = 40) -> Report:
    """``requests`` concurrent renders on one key with credit for ``credit_for``, on the
    default database: SQLite, with the settings ``make run`` uses."""
    report = Report(f"{requests}-way race on SQLite, credit for {credit_for}")
    database = workdir / "race.sqlite3"
    # Under the ASGI server all of them are in flight at once; the per-key in-flight
    # cap (64) would answer the rest 429 before they reach the ledger this race is about.
    platform = Platform(workdir, f"sqlite:///{database}", **{**BASE_ENV, "WORKER_ECHO_DELAY_MS": "100",
                                                              "API_MAX_RENDERS_IN_FLIGHT_PER_KEY": str(requests)})
    try:
        subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=platform.env, check=True,
                       timeout=300)
        key = _shell(platform, _SETUP_RACE.format(credits=credit_for * CREDITS))
        platform.start_redis()
        platform.start_web(workers=2, threads=8)
        platform.start_django_worker()
        platform.start_sweeper()
        platform.start_gpu_worker()
        image = product_png()
        barrier = threading.Barrier(requests)

        def client() -> Answer:
            barrier.wait()
            return platform.post_render(key, image, timeout=120)

        with concurrent.futures.ThreadPoolExecutor(max_workers=requests) as pool:
            answers = list(pool.map(lambda _: client(), range(requests)))
        time.sleep(1.0)  # the settle jobs of the last renders
        facts = json.loads(_shell(platform, _RACE_BOOKS))
        counts = collections.Counter(answer.describe() for answer in answers)
        report.clients = [f"{what} ×{n}" for what, n in sorted(counts.items())]
        report.final_states = [f"succeeded ×{facts['succeeded']}", f"failed ×{facts['failed']}"]
        report.usage_entries = facts["usage_entries"]
        report.credits_charged = CREDITS * facts["usage_entries"]
        report.renders = facts["succeeded"] + facts["failed"] + facts["open"]
        report.open_renders = facts["open"]
        report.pending_holds = facts["pending_holds"]
        report.audit = "clean" if not facts["drift"] else "; ".join(facts["drift"])
        report.facts.update(answers=answers, available=facts["available"],
                            server_errors=sum(1 for a in answers if a.status is None or a.status >= 500),
                            false_402s=sum(1 for a in answers if false_402(a)))
        return report
    finally:
        platform.stop()


def main_table(reports: list[Report]) -> str:
    """The fault table: scenario, what the clients got, final states, credits, audit."""
    rows = [("scenario", "clients got", "final states", "charged", "audit")]
    for r in reports:
        books_ok = r.audit_clean and r.open_renders == 0 and r.pending_holds == 0
        rows.append((r.scenario, "; ".join(r.clients), ", ".join(r.final_states),
                     f"{r.credits_charged} ({r.usage_entries}×)",
                     ("clean" if books_ok else f"{r.audit}; open {r.open_renders}; held {r.pending_holds}")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)

