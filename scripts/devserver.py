"""`make run`: everything the platform needs, in the foreground, until Ctrl-C.

Starts (in this order) its own Redis, migrations, the demo account and its API key
(development only), then the web server (gunicorn), the Django-side RQ worker, the GPU
worker and the render sweeper. Ctrl-C (or SIGTERM) stops every process this script
started, and nothing else: each child runs in its own process group, which is what
gets signalled.

It owns its services: unless REDIS_URL is set, it starts a Redis of its own under
``var/redis`` on a free loopback port, never whatever answers on 6379 (another
application's Redis, whose rq queue named ``default`` it would share). gunicorn's
control socket goes under ``var/run`` instead of the one path in the home directory
that every gunicorn on the machine shares. The terminal says which Redis and which
database this run uses.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python")
HOST = os.environ.get("HOST", "127.0.0.1")
PORT = os.environ.get("PORT", "8000")


def redis_answers(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), 1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def free_port() -> int:
    """A loopback port nobody listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def describe_database() -> str:
    url = os.environ.get("DATABASE_URL", "").strip()
    if not url:
        return f"SQLite at {ROOT / 'var' / 'db.sqlite3'} (set DATABASE_URL for PostgreSQL)"
    parsed = urlparse(url)
    where = f"{parsed.hostname or 'localhost'}:{parsed.port or 5432}{parsed.path}"
    return f"{parsed.scheme} at {where} (DATABASE_URL)"


def start_embedded_redis(children: list[tuple[str, subprocess.Popen]]) -> str | None:
    """Starts this run's own redis-server under var/redis; returns its URL (None: cannot)."""
    binary = shutil.which("redis-server")
    if binary is None:
        print("run: redis-server is not installed (apt install redis-server), "
              "or set REDIS_URL to a Redis of yours", file=sys.stderr)
        return None
    data_dir = ROOT / "var" / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    start("redis", [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
                    "--appendonly", "yes", "--save", "", "--protected-mode", "yes"], children)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        if redis_answers(url):
            return url
        time.sleep(0.1)
    print(f"run: the embedded Redis did not answer on port {port}", file=sys.stderr)
    return None


def start(name: str, argv: list[str], children: list[tuple[str, subprocess.Popen]]) -> None:
    print(f"run: starting {name}: {' '.join(argv)}", flush=True)
    proc = subprocess.Popen(argv, cwd=ROOT, start_new_session=True)
    children.append((name, proc))


def stop_all(children: list[tuple[str, subprocess.Popen]]) -> None:
    for name, proc in reversed(children):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 15
    for name, proc in reversed(children):
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        print(f"run: stopped {name}", flush=True)


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "platform_site.settings")
    os.environ.setdefault("SITE_URL", f"http://{HOST}:{PORT}")
    (ROOT / "var" / "run").mkdir(parents=True, exist_ok=True)
    children: list[tuple[str, subprocess.Popen]] = []

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        redis_url = os.environ.get("REDIS_URL", "").strip()
        if redis_url:
            if not redis_answers(redis_url):
                print(f"run: nothing answers at REDIS_URL={redis_url}; start that Redis, or unset "
                      "REDIS_URL and this run starts its own", file=sys.stderr)
                return 1
            print(f"run: Redis: {redis_url} (REDIS_URL, yours)", flush=True)
        else:
            redis_url = start_embedded_redis(children)
            if redis_url is None:
                return 1
            os.environ["REDIS_URL"] = redis_url
            print(f"run: Redis: {redis_url} (this run's own, data in var/redis)", flush=True)
        print(f"run: database: {describe_database()}", flush=True)
        subprocess.run([PY, "manage.py", "migrate", "--noinput"], cwd=ROOT, check=True)
        if os.environ.get("DEBUG", "1").lower() in {"1", "true", "yes", "on"}:
            subprocess.run([PY, "manage.py", "ensure_demo_account"], cwd=ROOT, check=True)
        else:
            subprocess.run([PY, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, check=True)
        start("web", [str(ROOT / ".venv" / "bin" / "gunicorn"), "platform_site.wsgi",
                      "--bind", f"{HOST}:{PORT}", "--workers", "2", "--threads", "8",
                      "--timeout", "120", "--access-logfile", "-",
                      "--control-socket", str(ROOT / "var" / "run" / "gunicorn.ctl")], children)
        start("django-worker", [PY, "manage.py", "rqworker", "default",
                                "--worker-class", "rq.worker.SimpleWorker",
                                "--serializer", "rq.serializers.JSONSerializer"], children)
        start("gpu-worker", [PY, "-m", "gpu_worker"], children)
        start("sweeper", [PY, "manage.py", "sweep_renders", "--every", "30"], children)
        print(f"\nrun: dashboard at http://{HOST}:{PORT}/dashboard/  (Ctrl-C stops everything)\n",
              flush=True)
        while True:
            for name, proc in children:
                if proc.poll() is not None:
                    print(f"run: {name} exited with {proc.returncode}; stopping", file=sys.stderr)
                    return 1
            time.sleep(0.5)
    except (KeyboardInterrupt, subprocess.CalledProcessError) as exc:
        if isinstance(exc, subprocess.CalledProcessError):
            print(f"run: {exc}", file=sys.stderr)
            return 1
        return 0
    finally:
        stop_all(children)


if __name__ == "__main__":
    sys.exit(main())
