"""What the render API costs on top of a bare authenticated request.

    .venv/bin/python bench/api_overhead.py            # make bench-api
    .venv/bin/python bench/api_overhead.py --renders 2000 --concurrency 16

Starts everything it needs on loopback and stops it again: a throwaway redis-server,
a fresh PostgreSQL database (created, migrated, dropped), gunicorn on a free port,
GPU workers on the ``echo`` engine (a render that returns at once, so what is
measured is the API, the queue and the money, not the pipeline), and the Django-side
RQ worker that runs settle jobs. Then, in the same run, it drives:

* ``GET /v1/account``: a bare authenticated DRF endpoint (key lookup, one query);
* ``POST /v1/image/replace-background``: the full path (multipart upload of a small
  PNG, validation, image checks, rate limit and in-flight slot, reserve, store, commit,
  enqueue, wait on the result stream, settle with a capture, signed URLs).

Each is measured twice: one client at a time (latency, so p50 overhead is the API's
own cost) and N concurrent clients (sustained throughput). It reports throughput,
p50 and p99 for both, their ratios, checks that every 200 was charged exactly once
(``audit_ledger`` and a count of usage entries), and exits non-zero on any error.
Targets on the 2-core development machine: >= 50 renders/s sustained with zero
errors, and p50 overhead of the full path within 30 ms.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python")
GUNICORN = str(ROOT / ".venv" / "bin" / "gunicorn")
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Processes:
    """Children in their own process groups; stop() signals each group, nothing else."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.children: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.logdir / f"{name}.log", "wb")
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.children.append((name, proc))
        return proc

    def check_alive(self) -> None:
        for name, proc in self.children:
            if proc.poll() is not None:
                tail = (self.logdir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        for _, proc in reversed(self.children):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 15
        for _, proc in reversed(self.children):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds() -> dict[int, tuple[int, float]]:
    """pid -> (process group, user+system CPU seconds) for every process we can read."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                raw = handle.read().decode(errors="replace")
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()
        # after "pid (comm) ": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
        table[int(entry)] = (int(fields[2]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
    return table


class CpuMeter:
    """CPU seconds spent by each part of the system (process groups, PostgreSQL backends).

    The development machine is shared, so wall-clock throughput depends on what else
    runs; CPU per request does not, and it bounds what two dedicated cores can do.
    """

    def __init__(self, groups: dict[str, int], pg_backends: Callable[[], list[int]]) -> None:
        self.groups = groups
        self.pg_backends = pg_backends

    def snapshot(self) -> dict[str, float]:
        table = process_cpu_seconds()
        totals = {name: 0.0 for name in [*self.groups, "postgresql"]}
        by_group = {pgid: name for name, pgid in self.groups.items()}
        for pid, (pgid, seconds) in table.items():
            if pgid in by_group:
                totals[by_group[pgid]] += seconds
        for pid in self.pg_backends():
            totals["postgresql"] += table.get(pid, (0, 0.0))[1]
        return totals


def psql_query(sql: str) -> list[str]:
    result = subprocess.run(["psql", f"{PG_ADMIN_URL}/postgres", "-qAtc", sql], check=True,
                            capture_output=True, text=True)
    return result.stdout.split()


def psql(sql: str) -> None:
    subprocess.run(["psql", f"{PG_ADMIN_URL}/postgres", "-qAtc", sql], check=True,
                   stdout=subprocess.DEVNULL)


def small_png(size: int) -> bytes:
    from PIL import Image

    image = Image.new("RGB", (size, size), (255, 255, 255))
    image.paste((30, 40, 60), (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def multipart(fields: dict[str, str], file_field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = "bench" + secrets.token_hex(8)
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; '
                 f'filename="{filename}"\r\nContent-Type: image/png\r\n\r\n'.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


@dataclass
class Phase:
    name: str
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 200) + len(self.errors)

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]

    @property
    def throughput(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


def drive(name: str, port: int, count: int, concurrency: int, make_request: Callable[[], tuple],
          time_limit: float, meter: CpuMeter | None = None) -> Phase:
    """Closed loop: ``concurrency`` keep-alive clients share ``count`` requests."""
    phase = Phase(name)
    lock = threading.Lock()
    remaining = [count]
    stop_at = time.monotonic() + time_limit

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                if remaining[0] <= 0 or time.monotonic() > stop_at:
                    break
                remaining[0] -= 1
            method, path, body, headers = make_request()
            started = time.perf_counter()
            try:
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                with lock:
                    phase.errors.append(repr(exc))
                continue
            elapsed = (time.perf_counter() - started) * 1000
            with lock:
                phase.statuses[status] = phase.statuses.get(status, 0) + 1
                if status == 200:
                    phase.latencies_ms.append(elapsed)
                elif len(phase.errors) < 5:
                    phase.errors.append(f"{status}: {payload[:300]!r}")
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    before = meter.snapshot() if meter else {}
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    phase.seconds = time.monotonic() - started
    if meter:
        time.sleep(0.5)  # the settle jobs of the last requests
        after = meter.snapshot()
        phase.cpu = {name: after[name] - before.get(name, 0.0) for name in after}
    return phase


def django_shell(env: dict[str, str], code: str) -> str:
    result = subprocess.run([PY, "manage.py", "shell", "-c", code], cwd=ROOT, env=env, check=True,
                            capture_output=True, text=True)
    return result.stdout.strip()


SETUP_USER = """
from accounts.models import User
from accounts.keys import issue_key
from billing import ledger
user = User.objects.create_user("bench@example.com", "bench-password-123")
ledger.grant(user, {credits}, reference="bench", note="benchmark credits")
print(issue_key(user, "bench")[1])
"""

VERIFY = """
import json
from billing.models import CreditAccount, LedgerEntry
from imaging.models import Render
account = CreditAccount.objects.get(user__email="bench@example.com")
print(json.dumps({
    "usage_entries": LedgerEntry.objects.filter(account=account, kind="usage").count(),
    "succeeded": Render.objects.filter(status="succeeded").count(),
    "open": Render.objects.filter(status__in=["queued", "running"]).count(),
    "failed": Render.objects.filter(status="failed").count(),
    "held": account.held,
}))
"""


def report(phases: list[Phase]) -> None:
    print(f"\n{'phase':<36}{'ok':>6}{'err':>5}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'CPU ms/req':>11}")
    for phase in phases:
        cpu_ms = sum(phase.cpu.values()) * 1000 / phase.ok if phase.ok else float("nan")
        print(f"{phase.name:<36}{phase.ok:>6}{phase.failed:>5}{phase.throughput:>8.1f}"
              f"{phase.percentile(50):>8.1f}{phase.percentile(99):>8.1f}{cpu_ms:>11.2f}")
    print("\nCPU ms per request, by process (all cores, this run's processes only):")
    names = list(phases[0].cpu)
    print(f"{'phase':<36}" + "".join(f"{name[:13]:>14}" for name in names))
    for phase in phases:
        if phase.ok:
            print(f"{phase.name:<36}" + "".join(
                f"{phase.cpu.get(name, 0.0) * 1000 / phase.ok:>14.2f}" for name in names))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--renders", type=int, default=1000, help="renders in the throughput phase")
    parser.add_argument("--latency-samples", type=int, default=150, help="requests per one-client phase")
    parser.add_argument("--concurrency", type=int, default=12)
    parser.add_argument("--gunicorn-workers", type=int, default=2)
    parser.add_argument("--gunicorn-threads", type=int, default=16, help="threaded server only")
    parser.add_argument("--server", choices=("asgi", "threaded"), default="asgi",
                        help="asgi: what make run serves (uvicorn workers); threaded: gthread")
    # One echo worker keeps up with the web tier here; a second one only competes with
    # gunicorn and PostgreSQL for the same two cores (measured: 47 vs 56 renders/s).
    parser.add_argument("--gpu-workers", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--time-limit", type=float, default=240.0, help="seconds per phase, at most")
    parser.add_argument("--gpu-worker-command", default=f"{PY} -m gpu_worker",
                        help="how to start one GPU worker (WORKER_ENGINE=echo is set)")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-api-"))
    processes = Processes(workdir)
    database = f"bench_api_{os.getpid()}_{secrets.token_hex(3)}"
    redis_port, web_port = free_port(), free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "platform_site.settings",
        "DEBUG": "0",  # DEBUG keeps every SQL query in memory: not what production pays
        "SECRET_KEY": "bench-" + secrets.token_hex(32),
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "0",
        "SESSION_COOKIE_SECURE": "0",
        "CSRF_COOKIE_SECURE": "0",
        "DATABASE_URL": f"{PG_ADMIN_URL}/{database}",
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "STORAGE_DIR": str(workdir / "storage"),
        "SITE_URL": f"http://127.0.0.1:{web_port}",
        "WORKER_ENGINE": "echo",
        "LOG_LEVEL": "WARNING",
        # The limits stay in the path (their Redis calls are part of the cost) but
        # must not be what stops one benchmark key.
        "API_RATE_LIMIT_PER_MINUTE": "10000000",
        "API_MAX_RENDERS_IN_FLIGHT_PER_KEY": str(max(64, 2 * args.concurrency)),
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    created_db = False
    exit_code = 1
    with ExitStack() as cleanup:
        cleanup.callback(lambda: None if args.keep_logs else shutil.rmtree(workdir, ignore_errors=True))
        cleanup.callback(processes.stop)
        try:
            redis_bin = shutil.which("redis-server")
            if redis_bin is None:
                raise RuntimeError("redis-server is not installed")
            redis = processes.start("redis", [redis_bin, "--port", str(redis_port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", str(workdir)], env)
            wait_for(lambda: port_answers(redis_port), 10, "redis")

            psql(f"CREATE DATABASE {database}")
            created_db = True
            print(f"bench: database {database}, redis :{redis_port}, web :{web_port}, logs {workdir}")
            subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
            total_renders = args.renders + 2 * args.latency_samples + 100
            key = django_shell(env, SETUP_USER.format(credits=22 * total_renders)).splitlines()[-1]

            server = (["platform_site.asgi:application", "--worker-class", "platform_site.asgi_worker.Worker"]
                      if args.server == "asgi" else
                      ["platform_site.wsgi", "--worker-class", "gthread", "--threads", str(args.gunicorn_threads)])
            web = processes.start("web", [GUNICORN, *server, "--bind", f"127.0.0.1:{web_port}",
                                    "--workers", str(args.gunicorn_workers), "--keep-alive", "30",
                                    "--timeout", "120", "--log-level", "warning"], env)
            gpu = [processes.start(f"gpu-worker-{index}", shlex.split(args.gpu_worker_command), env)
                   for index in range(args.gpu_workers)]
            django_worker = processes.start("django-worker", [PY, "manage.py", "rqworker", "default", "--worker-class",
                                              "rq.worker.SimpleWorker", "--serializer",
                                              "rq.serializers.JSONSerializer", "-v0"], env)
            wait_for(lambda: port_answers(web_port), 60, "gunicorn")
            time.sleep(3)  # let the workers finish importing and register
            processes.check_alive()

            groups = {"bench client": os.getpgrp(), "gunicorn": web.pid, "django rq": django_worker.pid,
                      "redis": redis.pid, **{f"gpu worker {i}": proc.pid for i, proc in enumerate(gpu)}}
            meter = CpuMeter(groups, lambda: [int(pid) for pid in psql_query(
                f"SELECT pid FROM pg_stat_activity WHERE datname = '{database}'")])
            auth = {"Authorization": f"Bearer {key}"}
            body, content_type = multipart({"scene_prompt": "a marble plinth in soft light"},
                                           "image_file", "product.png", small_png(args.image_size))

            def bare() -> tuple:
                return "GET", "/v1/account", None, auth

            def render() -> tuple:
                return "POST", "/v1/image/replace-background", body, {**auth, "Content-Type": content_type}

            drive("warm-up", web_port, 60, 4, render, args.time_limit)
            drive("warm-up", web_port, 200, 4, bare, args.time_limit)
            phases = [
                drive("bare GET /v1/account, 1 client", web_port, args.latency_samples, 1, bare,
                      args.time_limit, meter),
                drive("render POST, 1 client", web_port, args.latency_samples, 1, render, args.time_limit, meter),
                drive(f"bare GET /v1/account, {args.concurrency} clients", web_port,
                      args.renders, args.concurrency, bare, args.time_limit, meter),
                drive(f"render POST, {args.concurrency} clients", web_port,
                      args.renders, args.concurrency, render, args.time_limit, meter),
            ]
            processes.check_alive()
            report(phases)
            bare1, render1, bare_n, render_n = phases
            overhead = render1.percentile(50) - bare1.percentile(50)
            print(f"\np50 overhead of the full path (1 client): {overhead:.1f} ms "
                  f"(p99 {render1.percentile(99) - bare1.percentile(99):.1f} ms); "
                  f"latency ratio p50 {render1.percentile(50) / bare1.percentile(50):.2f}x")
            cpu_per_render = sum(render_n.cpu.values()) / render_n.ok if render_n.ok else float("inf")
            server_cpu = sum(v for k, v in render_n.cpu.items() if k != "bench client") / max(render_n.ok, 1)
            print(f"machine load during the run (1-minute average): {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
            print(f"CPU per render, all processes: {cpu_per_render * 1000:.1f} ms "
                  f"({server_cpu * 1000:.1f} ms without the load generator): two dedicated cores "
                  f"would sustain about {2 / server_cpu:.0f} renders/s")
            print(f"sustained renders/s at {args.concurrency} clients: {render_n.throughput:.1f} "
                  f"({render_n.throughput / bare_n.throughput:.2f}x the bare endpoint's "
                  f"{bare_n.throughput:.1f} req/s); p50 {render_n.percentile(50):.1f} ms, "
                  f"p99 {render_n.percentile(99):.1f} ms")

            time.sleep(2)  # the settle jobs of the last renders
            facts = json.loads(django_shell(env, VERIFY).splitlines()[-1])
            audit = subprocess.run([PY, "manage.py", "audit_ledger"], cwd=ROOT, env=env,
                                   capture_output=True, text=True)
            renders_ok = sum(p.ok for p in phases if p.name.startswith("render")) + 60
            print(f"ledger: {facts}; 200s seen: {renders_ok}; audit_ledger exit {audit.returncode}")
            errors = [e for p in phases for e in p.errors]
            for error in errors[:5]:
                print("error:", error)
            checks = {
                "zero errors": all(p.failed == 0 for p in phases),
                "every 200 charged once": facts["usage_entries"] == facts["succeeded"] == renders_ok,
                "nothing left held": facts["held"] == 0 and facts["open"] == 0,
                "audit_ledger clean": audit.returncode == 0,
                ">= 50 renders/s": render_n.throughput >= 50,
                "p50 overhead <= 30 ms": overhead <= 30,
            }
            for name, passed in checks.items():
                print(f"  [{'x' if passed else ' '}] {name}")
            exit_code = 0 if all(checks.values()) else 1
        finally:
            processes.stop()
            if created_db:
                psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
