"""`make run`: everything the platform needs, in the foreground, until Ctrl-C.

Starts (in this order) an embedded Redis when none answers at REDIS_URL, migrations,
the demo account (development only), then the web server (gunicorn), the Django-side
RQ worker, the GPU worker and the render sweeper. Ctrl-C (or SIGTERM) stops every
process this script started, and nothing else: each child runs in its own process
group, which is what gets signalled.
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
    redis_url = os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    os.environ.setdefault("SITE_URL", f"http://{HOST}:{PORT}")
    children: list[tuple[str, subprocess.Popen]] = []

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        if not redis_answers(redis_url):
            parsed = urlparse(redis_url)
            data_dir = ROOT / "var" / "redis"
            data_dir.mkdir(parents=True, exist_ok=True)
            binary = shutil.which("redis-server")
            if binary is None:
                print("run: no Redis at REDIS_URL and no redis-server installed", file=sys.stderr)
                return 1
            start("redis", [binary, "--port", str(parsed.port or 6379), "--bind", "127.0.0.1",
                            "--dir", str(data_dir), "--appendonly", "yes", "--save", ""], children)
            for _ in range(50):
                if redis_answers(redis_url):
                    break
                time.sleep(0.1)
        subprocess.run([PY, "manage.py", "migrate", "--noinput"], cwd=ROOT, check=True)
        if os.environ.get("DEBUG", "1").lower() in {"1", "true", "yes", "on"}:
            subprocess.run([PY, "manage.py", "ensure_demo_account"], cwd=ROOT, check=True)
        else:
            subprocess.run([PY, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, check=True)
        start("web", [str(ROOT / ".venv" / "bin" / "gunicorn"), "platform_site.wsgi",
                      "--bind", f"{HOST}:{PORT}", "--workers", "2", "--threads", "8",
                      "--timeout", "120", "--access-logfile", "-"], children)
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
