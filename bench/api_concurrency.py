"""Waiting renders per web box: the ASGI server against the threaded one, side by side.

    .venv/bin/python bench/api_concurrency.py                 # make bench-concurrency: 100, 300, 1000
    .venv/bin/python bench/api_concurrency.py --levels 100 300 --servers asgi
    .venv/bin/python bench/api_concurrency.py --delay 30 --rate 50

Starts its own stack on loopback for each server configuration: Redis, a fresh
PostgreSQL database (``BENCH_PG_URL``, default the local server; SQLite when none
answers, and then no connection counts), the web on gunicorn with 2 workers, the
Django-side rq worker, the sweeper, and ``bench/fake_gpu_worker.py``, which ends every
render ``--delay`` seconds after taking it, however many are in flight. So the web tier
is what is measured, not a GPU.

For each level N, N synchronous renders arrive at ``--rate`` a second, from 20
customers (the per-key in-flight cap is 64), each request waiting for its render on
its own connection (client timeout: the sync window plus 30 s). Throughout, one client
asks ``GET /v1/account`` and another a dashboard page (``/dashboard/``, signed in)
every 100 ms (timeout 10 s; a side request that times out counts as 10 s in its
percentiles). Printed per level: the most renders waiting at once (renders accepted and
not yet ended, each with its request waiting; with SQLite, the waiter marks in Redis), errors (any answer but 200, or none), p50/p95 of the side requests, the web's
peak RSS and mean CPU (gunicorn master and workers), and PostgreSQL's connections
(peak in all, and peak not idle). Between levels the web is restarted, so a backlog
left by one level cannot slow the next. At the end the books are read: every
succeeded render charged exactly once, the audit clean.

Configurations: ``asgi`` is what ``make run`` and production run now (uvicorn workers,
async wait, a connection pool of DB_POOL_MAX_SIZE per process); ``threaded`` is the
previous one: gthread, 2 workers x 8 threads, DB_CONN_MAX_AGE=60, no pool.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")
CUSTOMERS = 20
SIDE_INTERVAL_SECONDS = 0.1
SIDE_TIMEOUT_SECONDS = 10.0


@dataclass
class LevelResult:
    server: str
    level: int
    peak_waiting: int = 0
    errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    side_ms: list[float] = field(default_factory=list)
    side_errors: int = 0
    side_failures: dict[str, int] = field(default_factory=dict)
    rss_mb: float = 0.0
    cpu_cores: float = 0.0
    db_peak: int | None = None
    db_busy_peak: int | None = None
    seconds: float = 0.0

    def pct(self, q: float) -> float:
        """A percentile of the side requests, a failed one counted at the client's timeout."""
        ordered = sorted(self.side_ms + [SIDE_TIMEOUT_SECONDS * 1000] * self.side_errors)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def row(self) -> str:
        db = "n/a" if self.db_peak is None else f"{self.db_peak} ({self.db_busy_peak} busy)"
        p50, p95 = self.pct(0.5), self.pct(0.95)
        side = " / ".join(f"{v:.0f}" if v < SIDE_TIMEOUT_SECONDS * 1000 else f"≥{v:.0f}" for v in (p50, p95))
        if self.side_errors:
            side += f" ({self.side_errors} of {self.side_errors + len(self.side_ms)} timed out)"
        return (f"| {self.server} | {self.level} | {self.peak_waiting} | {self.errors} | {side} | "
                f"{self.rss_mb:.0f} | {self.cpu_cores:.2f} | {db} |")


# --- a small HTTP/1.1 client: one connection per request, as a pipeline's curl would be ---


async def http(port: int, method: str, path: str, headers: dict[str, str], body: bytes = b"",
               timeout: float = 30.0) -> tuple[int | None, float]:
    started = time.monotonic()
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
                    f"Content-Length: {len(body)}", *[f"{k}: {v}" for k, v in headers.items()]]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            await writer.drain()
            status_line = await reader.readline()
            await reader.read()  # to EOF (Connection: close)
            status = int(status_line.split()[1]) if status_line else None
    except (OSError, TimeoutError, ValueError, IndexError):
        status = None
    finally:
        if writer is not None:
            writer.close()
    return status, time.monotonic() - started


# --- the stack ----------------------------------------------------------------------------


def pg_available() -> bool:
    try:
        return subprocess.run(["psql", f"{PG_ADMIN_URL}/postgres", "-qAtc", "select 1"], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


SERVERS: dict[str, dict[str, str]] = {
    "asgi": {},
    "threaded": {"DB_POOL_MAX_SIZE": "0", "DB_CONN_MAX_AGE": "60"},
}

_SETUP = """
import json
from django.test import Client, override_settings
from accounts.keys import issue_key
from accounts.models import User
from billing import ledger
out = {"keys": []}
with override_settings(SIGNUP_GRANT_CREDITS=0):
    for i in range(%(customers)d):
        user = User.objects.create_user(f"bench{i}@example.com", "correct horse battery")
        ledger.grant(user, %(credits)d, reference=f"bench{i}", note="bench credits")
        out["keys"].append(issue_key(user, "bench")[1])
client = Client()
client.force_login(User.objects.get(email="bench0@example.com"))
out["session"] = client.cookies["sessionid"].value
print(json.dumps(out))
"""

_BOOKS = """
import json
from billing.audit import find_drift
from billing.models import LedgerEntry
from imaging.models import Render
usage = LedgerEntry.objects.filter(kind="usage")
print(json.dumps({
    "succeeded": Render.objects.filter(status="succeeded").count(),
    "charged_renders": Render.objects.filter(status="succeeded", credits_charged__gt=0).count(),
    "usage_entries": usage.count(),
    "usage_references": usage.values("reference").distinct().count(),
    "open": Render.objects.filter(status__in=["queued", "running"]).count(),
    "drift": [str(d) for d in find_drift()[0]],
}))
"""


def manage(env: dict[str, str], *args: str, code: str | None = None) -> str:
    argv = [sys.executable, "manage.py", *args] + (["-c", code] if code else [])
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=True, timeout=600)
    return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""


class Sampler:
    """Polls waiting renders, the web's RSS and CPU, and database connections."""

    def __init__(self, platform: Any, database: str | None) -> None:
        import psutil
        import redis

        self.platform = platform
        self.redis = redis.Redis.from_url(platform.redis_url)
        self.database = database
        self.master = psutil.Process(platform.web_proc.pid)
        self.peak_waiting = 0
        self.peak_rss = 0
        self.db_peak = 0
        self.db_busy_peak = 0
        self.pg = None
        self.since = datetime.now(timezone.utc)
        if database:
            import psycopg

            self.pg = psycopg.connect(f"{PG_ADMIN_URL}/{database}", autocommit=True)

    def cpu_seconds(self) -> float:
        total = 0.0
        for process in [self.master, *self.master.children(recursive=True)]:
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except Exception:
                pass
        return total

    def waiting(self) -> int:
        """This level's renders accepted and not yet ended: each has a request waiting on it.

        Renders of an earlier level (a threaded server's backlog, accepted just before the
        restart) are not counted.
        """
        if self.pg is not None:
            return self.pg.execute("select count(*) from imaging_render where status in ('queued', 'running') "
                                   "and created_at >= %s", (self.since,)).fetchone()[0]
        return sum(1 for _ in self.redis.scan_iter("imaging:waiter:*", count=2000))

    def sample(self) -> None:
        waiting = self.waiting()
        self.peak_waiting = max(self.peak_waiting, waiting)
        rss = 0
        for process in [self.master, *self.master.children(recursive=True)]:
            try:
                rss += process.memory_info().rss
            except Exception:
                pass
        self.peak_rss = max(self.peak_rss, rss)
        if self.pg is not None:
            total, busy = self.pg.execute(
                "select count(*), count(*) filter (where state <> 'idle') from pg_stat_activity "
                "where datname = current_database() and pid <> pg_backend_pid()").fetchone()
            self.db_peak = max(self.db_peak, total)
            self.db_busy_peak = max(self.db_busy_peak, busy)

    def close(self) -> None:
        if self.pg is not None:
            self.pg.close()


async def run_level(platform: Any, server: str, level: int, keys: list[str], session: str, database: str | None,
                    rate: float, client_timeout: float) -> LevelResult:
    from tests.fault_scenarios import product_png
    from tests.live_platform import multipart

    result = LevelResult(server, level)
    body, content_type = multipart({"scene_prompt": "pure white background"}, "image_file", product_png())
    sampler = Sampler(platform, database)
    cpu_before, started = sampler.cpu_seconds(), time.monotonic()
    port = platform.web_port
    done = asyncio.Event()

    async def render(i: int) -> int | None:
        await asyncio.sleep(i / rate)
        headers = {"Authorization": f"Bearer {keys[i % len(keys)]}", "Content-Type": content_type}
        status, _ = await http(port, "POST", "/v1/image/replace-background", headers, body, client_timeout)
        return status

    async def side(path: str, headers: dict[str, str]) -> None:
        while not done.is_set():
            status, seconds = await http(port, "GET", path, headers, timeout=SIDE_TIMEOUT_SECONDS)
            if status == 200:
                result.side_ms.append(seconds * 1000)
            else:
                result.side_errors += 1
                name = f"{path} {status}"
                result.side_failures[name] = result.side_failures.get(name, 0) + 1
            await asyncio.sleep(SIDE_INTERVAL_SECONDS)

    async def sample() -> None:
        while not done.is_set():
            await asyncio.to_thread(sampler.sample)
            await asyncio.sleep(0.25)

    helpers = [asyncio.create_task(side("/v1/account", {"Authorization": f"Bearer {keys[0]}"})),
               asyncio.create_task(side("/dashboard/", {"Cookie": f"sessionid={session}"})),
               asyncio.create_task(sample())]
    statuses = await asyncio.gather(*(render(i) for i in range(level)))
    done.set()
    await asyncio.gather(*helpers)
    result.seconds = time.monotonic() - started
    result.cpu_cores = (sampler.cpu_seconds() - cpu_before) / result.seconds
    sampler.close()
    for status in statuses:
        name = str(status) if status is not None else "no answer"
        result.statuses[name] = result.statuses.get(name, 0) + 1
    result.errors = sum(n for s, n in result.statuses.items() if s != "200")
    result.peak_waiting = sampler.peak_waiting
    result.rss_mb = sampler.peak_rss / 2**20
    if database:
        result.db_peak, result.db_busy_peak = sampler.db_peak, sampler.db_busy_peak
    return result


def run_server(server: str, levels: list[int], args: argparse.Namespace, workdir: Path) -> tuple[list[LevelResult], dict]:
    from tests.live_platform import Platform

    database = None
    if args.use_pg:
        database = f"bench_conc_{server}_{os.getpid()}_{secrets.token_hex(3)}"
        subprocess.run(["psql", f"{PG_ADMIN_URL}/postgres", "-qAtc", f"CREATE DATABASE {database}"], check=True)
        url = f"{PG_ADMIN_URL}/{database}"
    else:
        url = f"sqlite:///{workdir / f'{server}.sqlite3'}"
    env = {"API_RATE_LIMIT_PER_MINUTE": "1000000", "RENDER_SYNC_WINDOW_SECONDS": str(args.window),
           "RENDER_DEADLINE_SECONDS": "600", "LOG_LEVEL": "WARNING", **SERVERS[server]}
    platform = Platform(workdir / server, url, **env)
    try:
        manage(platform.env, "migrate", "--noinput", "-v0")
        manage(platform.env, "collectstatic", "--noinput", "-v0")  # DEBUG is off, as in production
        setup = json.loads(manage(platform.env, "shell", code=_SETUP % {
            "customers": CUSTOMERS, "credits": 22 * (sum(levels) // CUSTOMERS + 10)}))
        platform.start_redis()
        platform.start_django_worker()
        platform.start_sweeper(every=30)
        platform.start_fake_gpu_worker(delay=args.delay)
        results = []
        for level in levels:
            platform.start_web(workers=2, threads=8, server=server)
            print(f"bench: {server}, {level} renders arriving at {args.rate:g}/s ...", flush=True)
            result = asyncio.run(run_level(platform, server, level, setup["keys"], setup["session"], database,
                                           args.rate, args.window + 30))
            print("  " + result.row() + f" {result.seconds:.0f} s, answers {result.statuses}"
                  + (f", side failures {result.side_failures}" if result.side_failures else ""), flush=True)
            results.append(result)
            platform.web_proc.stop()
            platform.children.remove(platform.web_proc)
        time.sleep(args.delay + 5)  # renders a dropped backlog created still end
        books = json.loads(manage(platform.env, "shell", code=_BOOKS))
        return results, books
    finally:
        platform.stop()
        if database:
            subprocess.run(["psql", f"{PG_ADMIN_URL}/postgres", "-qAtc",
                            f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"], check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--servers", nargs="+", choices=sorted(SERVERS), default=["asgi", "threaded"])
    parser.add_argument("--delay", type=float, default=30.0, help="seconds each fake render takes")
    parser.add_argument("--rate", type=float, default=50.0, help="renders arriving per second")
    parser.add_argument("--window", type=float, default=55.0, help="RENDER_SYNC_WINDOW_SECONDS")
    parser.add_argument("--out", type=Path, default=None, help="also write the table (markdown) here")
    args = parser.parse_args()
    args.use_pg = pg_available()
    workdir = Path(tempfile.mkdtemp(prefix="bench-concurrency-"))
    print(f"bench: database {'PostgreSQL' if args.use_pg else 'SQLite (no connection counts)'}, "
          f"fake render {args.delay:g} s, window {args.window:g} s, scratch {workdir}", flush=True)
    rows, verdicts = [], []
    for server in args.servers:
        results, books = run_server(server, args.levels, args, workdir)
        rows.extend(results)
        clean = (not books["drift"] and books["usage_entries"] == books["succeeded"] == books["charged_renders"]
                 and books["usage_references"] == books["usage_entries"])
        verdicts.append(f"{server}: {books['succeeded']} renders succeeded, {books['usage_entries']} usage entries "
                        f"({books['usage_references']} distinct renders), {books['open']} still open, audit "
                        f"{'clean' if not books['drift'] else books['drift']}: "
                        f"{'charged once each' if clean else 'NOT charged once each'}")
    header = ("| server | renders | most waiting at once | errors | side requests p50 / p95 ms | "
              "web RSS MB | web CPU (cores) | DB connections peak |\n|---|---:|---:|---:|---|---:|---:|---|")
    table = "\n".join([header, *(r.row() for r in rows)])
    print()
    print(table)
    print()
    print("\n".join(verdicts))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n\n" + "\n".join(verdicts) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
