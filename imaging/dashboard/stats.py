"""Numbers for the overview and the staff pages, aggregated in the database.

Every function here runs a fixed, small number of queries whatever the number of
renders: counts and sums are GROUP BY queries, never a loop over rows. The one
exception is render time percentiles, which SQLite cannot compute; those read the
durations of at most ``PERCENTILE_SAMPLE`` recent renders inside the window and
compute in Python.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Sequence

import redis
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone
from rq import Queue, Worker
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from billing import ledger
from billing.models import EntryKind, LedgerEntry, Purchase, PurchaseStatus, format_money
from imaging import dispatch
from imaging.models import Render, RenderStatus

CHART_DAYS = 30
LATEST_RENDERS = 5
TOP_ACCOUNTS = 10
PERCENTILE_SAMPLE = 5000
PERCENTILES = (50, 90, 99)
QUEUES = (dispatch.GPU_QUEUE, "default")


@dataclass(frozen=True)
class DayCount:
    day: date
    succeeded: int = 0
    failed: int = 0
    open: int = 0

    @property
    def total(self) -> int:
        return self.succeeded + self.failed + self.open


@dataclass(frozen=True)
class Outcomes:
    """Counts of renders by how they ended, and the share of finished ones that succeeded."""

    total: int
    succeeded: int
    failed: int
    credits: int

    @property
    def open(self) -> int:
        return self.total - self.succeeded - self.failed

    @property
    def success_rate(self) -> float | None:
        """Percent of finished renders that succeeded; None when none has finished."""
        finished = self.succeeded + self.failed
        return None if finished == 0 else 100.0 * self.succeeded / finished


def start_of_day(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def month_start(now: datetime) -> datetime:
    local = timezone.localtime(now)
    return start_of_day(local.date().replace(day=1))


def window_start(days: int, now: datetime) -> datetime:
    """Midnight at the start of the first of the last ``days`` days (today included)."""
    return start_of_day(timezone.localdate(now) - timedelta(days=days - 1))


def outcomes(renders: QuerySet[Render]) -> Outcomes:
    """One aggregate query over ``renders``."""
    row = renders.order_by().aggregate(
        total=Count("id"),
        succeeded=Count("id", filter=Q(status=RenderStatus.SUCCEEDED)),
        failed=Count("id", filter=Q(status=RenderStatus.FAILED)),
        credits=Sum("credits_charged"),
    )
    return Outcomes(row["total"], row["succeeded"], row["failed"], row["credits"] or 0)


def renders_per_day(renders: QuerySet[Render], days: int, now: datetime) -> list[DayCount]:
    """One row per day of the last ``days`` days (oldest first), zeros included."""
    first = timezone.localdate(now) - timedelta(days=days - 1)
    rows = (
        renders.filter(created_at__gte=start_of_day(first))
        .annotate(day=TruncDate("created_at"))
        .order_by()
        .values("day")
        .annotate(
            succeeded=Count("id", filter=Q(status=RenderStatus.SUCCEEDED)),
            failed=Count("id", filter=Q(status=RenderStatus.FAILED)),
            open=Count("id", filter=Q(status__in=[RenderStatus.QUEUED, RenderStatus.RUNNING])),
        )
    )
    by_day = {row["day"]: row for row in rows}
    result = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        row = by_day.get(day)
        result.append(DayCount(day, row["succeeded"], row["failed"], row["open"]) if row else DayCount(day))
    return result


@dataclass(frozen=True)
class Overview:
    available: int
    held: int
    month: Outcomes
    month_start: datetime
    per_day: list[DayCount]
    latest: list[Render]
    # Credits a refunded or disputed payment took back beyond the balance (renders paused).
    owed: int = 0


def user_overview(user: Any, *, now: datetime | None = None) -> Overview:
    """The signed-in developer's numbers: four queries in all."""
    now = now or timezone.now()
    mine = Render.objects.filter(user_id=user.pk)
    credits = ledger.balances(user)
    start = month_start(now)
    return Overview(
        available=credits.available,
        held=credits.held,
        month=outcomes(mine.filter(created_at__gte=start)),
        month_start=start,
        per_day=renders_per_day(mine, CHART_DAYS, now),
        latest=list(mine.select_related("api_key").order_by("-created_at")[:LATEST_RENDERS]),
        owed=credits.owed,
    )


# --- staff ------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], pct: float) -> float | None:
    """Linear interpolation between closest ranks (NumPy's default); None for no data."""
    if not sorted_values:
        return None
    rank = (len(sorted_values) - 1) * pct / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


@dataclass(frozen=True)
class Durations:
    """Render time percentiles in seconds, from a bounded sample of finished renders."""

    sample: int
    end_to_end: dict[int, float | None]
    processing: dict[int, float | None]


def render_durations(since: datetime, *, limit: int = PERCENTILE_SAMPLE) -> Durations:
    """End to end (created → finished) and processing (started → finished) of successes."""
    rows = list(
        Render.objects.filter(status=RenderStatus.SUCCEEDED, finished_at__gte=since)
        .order_by("-finished_at")
        .values_list("created_at", "started_at", "finished_at")[:limit]
    )
    total = sorted((finished - created).total_seconds() for created, _, finished in rows)
    processing = sorted((finished - started).total_seconds() for _, started, finished in rows if started)
    return Durations(
        sample=len(rows),
        end_to_end={p: percentile(total, p) for p in PERCENTILES},
        processing={p: percentile(processing, p) for p in PERCENTILES},
    )


@dataclass(frozen=True)
class Sales:
    currency: str
    purchases: int
    credits: int
    revenue: int

    @property
    def revenue_display(self) -> str:
        return format_money(self.revenue, self.currency)


@dataclass(frozen=True)
class WorkerSeen:
    name: str
    hostname: str
    state: str
    last_heartbeat: datetime | None
    successful_jobs: int
    failed_jobs: int


@dataclass(frozen=True)
class QueueStats:
    name: str
    queued: int
    started: int
    failed: int
    oldest_queued_at: datetime | None
    workers: list[WorkerSeen] = field(default_factory=list)


@dataclass(frozen=True)
class QueueReport:
    queues: list[QueueStats]
    error: str = ""


def queue_report() -> QueueReport:
    """Depth, running and failed jobs, and the registered workers of each render queue.

    Read from RQ's own registries (the same numbers django-rq's stats page shows), with
    the JSON serializer the queues use. A Redis outage is reported, not raised: the
    page is most needed when something is down.
    """
    connection = dispatch.redis_connection()
    try:
        return QueueReport([_queue_stats(Queue(name, connection=connection, serializer=JSONSerializer))
                            for name in QUEUES])
    except redis.RedisError as exc:
        return QueueReport([], f"Redis is unreachable: {exc.__class__.__name__}")


def _queue_stats(queue: Queue) -> QueueStats:
    oldest = None
    oldest_id = queue.connection.lindex(queue.key, 0)
    if oldest_id:
        job = queue.fetch_job(oldest_id.decode())
        oldest = job.enqueued_at if job is not None else None
    workers = [
        WorkerSeen(
            name=worker.name,
            hostname=worker.hostname or "",
            state=str(worker.get_state()),
            last_heartbeat=worker.last_heartbeat,
            successful_jobs=worker.successful_job_count,
            failed_jobs=worker.failed_job_count,
        )
        for worker in sorted(Worker.all(queue=queue), key=lambda w: w.name)
    ]
    return QueueStats(
        name=queue.name,
        queued=queue.count,
        # cleanup=False: looking at the page must not change what it reports.
        started=StartedJobRegistry(queue=queue).get_job_count(cleanup=False),
        failed=FailedJobRegistry(queue=queue).get_job_count(cleanup=False),
        oldest_queued_at=oldest,
        workers=workers,
    )


@dataclass(frozen=True)
class StaffUsage:
    days: int
    since: datetime
    outcomes: Outcomes
    per_day: list[DayCount]
    failures_by_code: list[dict[str, Any]]
    credits_charged: int
    sales: list[Sales]
    top_accounts: list[dict[str, Any]]
    durations: Durations


def staff_usage(days: int, *, now: datetime | None = None) -> StaffUsage:
    """Usage across all accounts over the last ``days`` days: eight queries in all."""
    now = now or timezone.now()
    since = window_start(days, now)
    recent = Render.objects.filter(created_at__gte=since)
    failures = list(
        recent.filter(status=RenderStatus.FAILED).order_by().values("error_code")
        .annotate(count=Count("id")).order_by("-count", "error_code")
    )
    usage = LedgerEntry.objects.filter(kind=EntryKind.USAGE, created_at__gte=since).order_by()
    charged = -(usage.aggregate(total=Sum("amount"))["total"] or 0)
    sales = [
        Sales(row["currency"], row["purchases"], row["credits"] or 0, row["revenue"] or 0)
        for row in Purchase.objects.filter(status=PurchaseStatus.PAID, paid_at__gte=since)
        .order_by().values("currency")
        .annotate(purchases=Count("id"), credits=Sum("credits"), revenue=Sum("amount"))
        .order_by("currency")
    ]
    top = list(
        recent.order_by().values("user_id", "user__email")
        .annotate(
            renders=Count("id"),
            succeeded=Count("id", filter=Q(status=RenderStatus.SUCCEEDED)),
            failed=Count("id", filter=Q(status=RenderStatus.FAILED)),
            credits=Sum("credits_charged"),
        )
        .order_by("-credits", "-renders", "user_id")[:TOP_ACCOUNTS]
    )
    return StaffUsage(
        days=days,
        since=since,
        outcomes=outcomes(recent),
        per_day=renders_per_day(Render.objects.all(), days, now),
        failures_by_code=failures,
        credits_charged=charged,
        sales=sales,
        top_accounts=top,
        durations=render_durations(since),
    )
