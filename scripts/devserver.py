"""`make run`: everything the platform needs, in the foreground, until Ctrl-C.

Starts (in this order) its own Redis, migrations, the demo account and its API key
(development only), then the web server (gunicorn), the Django-side RQ worker, the GPU
worker and the render sweeper, under the small supervisor in scripts/supervise.py: any
number of Ctrl-C / SIGTERM / SIGHUP stop each child once, children die with this
script even when it is SIGKILLed, and a crashed worker is restarted (a crash loop, or
a web server that cannot start, stops everything with a one-line reason).

It owns its services: unless REDIS_URL is set, it starts a Redis of its own under
``var/redis`` on a free loopback port, never whatever answers on 6379 (another
application's Redis, whose rq queue named ``default`` it would share). gunicorn's
control socket goes under ``var/run`` instead of the one path in the home directory
that every gunicorn on the machine shares. The terminal says which Redis and which
database this run uses. ``var/run/make-run.lock`` keeps a second `make run` in the
same folder from sharing that Redis and database; ``var/run/redis.pid`` names the
embedded Redis, so one left by an older run is reported instead of started beside.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))

from supervise import Child, StartupError, Supervisor, port_in_use, say, serving  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python")
HOST = os.environ.get("HOST", "127.0.0.1")
PORT = os.environ.get("PORT", "8000")
RUN_DIR = ROOT / "var" / "run"
LOCK_PATH = RUN_DIR / "make-run.lock"
REDIS_PIDFILE = RUN_DIR / "redis.pid"


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


def take_run_lock():
    """Holds var/run/make-run.lock for this run's life (the kernel drops it when we die)."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    handle = open(LOCK_PATH, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        raise StartupError(f"another `make run` is already running in this folder (pid {holder}); "
                           "stop it first (Ctrl-C in its terminal)") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def leftover_redis() -> int | None:
    """The pid in var/run/redis.pid when that process is still a redis-server."""
    try:
        pid = int(REDIS_PIDFILE.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    return pid if b"redis-server" in cmdline else None


def check_can_start() -> None:
    """The start-up problems a user can fix, each as one line (raised as StartupError)."""
    if not PORT.isdigit():
        raise StartupError(f"PORT={PORT!r} is not a port number")
    if port_in_use(HOST, int(PORT)):
        raise StartupError(f"port {PORT} on {HOST} is already in use; stop what listens there, "
                           f"or choose another port: PORT={int(PORT) + 1} make run")
    if not os.environ.get("REDIS_URL", "").strip():
        pid = leftover_redis()
        if pid is not None:
            raise StartupError(f"the embedded Redis of an earlier run is still running (pid {pid}, "
                               f"{REDIS_PIDFILE.relative_to(ROOT)}); stop it with `kill {pid}`, "
                               "then run again")


def start_embedded_redis(supervisor: Supervisor) -> str | None:
    """Starts this run's own redis-server under var/redis; returns its URL (None: stopped)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise StartupError("redis-server is not installed (apt install redis-server), "
                           "or set REDIS_URL to a Redis of yours")
    data_dir = ROOT / "var" / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    # Restarted on the same port and data after a crash; stopped after the workers.
    redis = supervisor.spawn(Child("redis", [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
        "--pidfile", str(REDIS_PIDFILE), "--appendonly", "yes", "--save", "",
        "--protected-mode", "yes"], stop_last=True))
    url = f"redis://127.0.0.1:{port}/0"
    if not supervisor.wait_until(lambda: redis_answers(url), redis, 10, "the embedded Redis"):
        return None
    return url


def prometheus_env() -> dict[str, str]:
    """One PROMETHEUS_MULTIPROC_DIR for every Django-side process of this run, emptied now.

    Renders settle in the web processes and in the Django-side worker alike; with one
    shared folder the web's /metrics sums all of them (the GPU worker serves its own).
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip():
        return {}
    folder = RUN_DIR / "prometheus"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return {"PROMETHEUS_MULTIPROC_DIR": str(folder)}


def process_commands(host: str = HOST, port: str = PORT) -> dict[str, list[str]]:
    """The argv of each long-running process `make run` starts, by name.

    The Procfile and docs/systemd/ run the same command lines (only the interpreter's
    path, the bind address and the control socket's path differ there);
    tests/test_deploy_files.py fails when they drift apart.
    """
    return {
        # ASGI: uvicorn workers under gunicorn; a waiting render holds no thread (imaging.render_wait).
        # The graceful timeout outlasts the 55 s sync window, so a stop lets waiting renders answer.
        "web": [str(ROOT / ".venv" / "bin" / "gunicorn"), "platform_site.asgi:application",
                "--worker-class", "platform_site.asgi_worker.Worker",
                "--bind", f"{host}:{port}", "--workers", "2",
                "--timeout", "120", "--graceful-timeout", "65", "--access-logfile", "-",
                "--control-socket", str(RUN_DIR / "gunicorn.ctl")],
        "django-worker": [PY, "manage.py", "rqworker", "default", "--worker-class", "rq.worker.SimpleWorker",
                          "--serializer", "rq.serializers.JSONSerializer"],
        "gpu-worker": [PY, "-m", "gpu_worker"],
        "sweeper": [PY, "manage.py", "sweep_renders", "--every", "30"],
    }


def setup_commands() -> dict[str, list[str]]:
    """The one-off steps before those processes start (collectstatic only when DEBUG is off)."""
    return {
        "migrate": [PY, "manage.py", "migrate", "--noinput"],
        "collectstatic": [PY, "manage.py", "collectstatic", "--noinput", "-v0"],
    }


def start_platform(supervisor: Supervisor) -> bool:
    """The start-up steps, then the long-running children; False when a stop came first."""
    redis_url = os.environ.get("REDIS_URL", "").strip()
    if redis_url:
        if not redis_answers(redis_url):
            raise StartupError(f"nothing answers at REDIS_URL={redis_url}; start that Redis, or unset "
                               "REDIS_URL and this run starts its own")
        say(f"Redis: {redis_url} (REDIS_URL, yours)")
    else:
        redis_url = start_embedded_redis(supervisor)
        if redis_url is None:
            return False
        os.environ["REDIS_URL"] = redis_url
        say(f"Redis: {redis_url} (this run's own, data in var/redis)")
    say(f"database: {describe_database()}")
    steps = setup_commands()
    supervisor.run_step("migrate", steps["migrate"])
    if os.environ.get("DEBUG", "1").lower() in {"1", "true", "yes", "on"}:
        supervisor.run_step("ensure_demo_account", [PY, "manage.py", "ensure_demo_account"])
    else:
        supervisor.run_step("collectstatic", steps["collectstatic"])
    if supervisor.stopping:
        return False
    django_env = prometheus_env()
    commands = process_commands()
    web = supervisor.spawn(Child("web", env=django_env, argv=commands["web"]))
    if not supervisor.wait_until(lambda: serving(HOST, int(PORT)), web, 60, "the web server"):
        return False
    supervisor.spawn(Child("django-worker", env=django_env, argv=commands["django-worker"]))
    supervisor.spawn(Child("gpu-worker", commands["gpu-worker"]))
    supervisor.spawn(Child("sweeper", env=django_env, argv=commands["sweeper"]))
    print(f"\nrun: dashboard at http://{HOST}:{PORT}/dashboard/  (Ctrl-C stops everything)\n", flush=True)
    return True


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "platform_site.settings")
    os.environ.setdefault("SITE_URL", f"http://{HOST}:{PORT}")
    supervisor = Supervisor(ROOT)
    supervisor.install_signal_handlers()
    try:
        lock = take_run_lock()  # noqa: F841 (held open until exit)
        check_can_start()
        if not start_platform(supervisor):
            supervisor.stop_all()
            return 0
    except StartupError as exc:
        say(str(exc), error=True)
        supervisor.stop_all()
        return 1
    return supervisor.watch()


if __name__ == "__main__":
    sys.exit(main())
