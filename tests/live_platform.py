"""The platform as real processes: redis-server, gunicorn, GPU workers, the Django-side
rq worker and sweepers, each in its own process group, all on loopback.

For tests and benches that need what a fast fake hides: renders that take seconds,
many clients at once, and processes killed mid-render. Nothing here is mocked; the
only stand-in is the GPU worker's ``echo`` engine (a render that returns its input
after ``WORKER_ECHO_DELAY_MS``), because no model weights exist on these machines.

The caller provides the database (a URL every child uses) and a scratch directory;
the platform starts its own Redis, so a test can kill and restart it without touching
anyone else's. Setup may poll (for a port, a worker registration); the product never
does.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import redis

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def database_url(settings_dict: dict[str, Any]) -> str:
    """A DATABASE_URL naming the database ``settings_dict`` describes (for child processes)."""
    engine = settings_dict["ENGINE"]
    if engine.endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    if engine.endswith("postgresql"):
        user = settings_dict.get("USER") or ""
        password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
        auth = f"{user}{password}@" if user else ""
        host = settings_dict.get("HOST") or "127.0.0.1"
        port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
        return f"postgres://{auth}{host}{port}/{settings_dict['NAME']}"
    raise ValueError(f"no URL form for {engine}")


class Child:
    """One process in its own process group, its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = logdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Child:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL to the whole group, as a crash or the OOM killer would: no clean-up."""
        if self.alive():
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> None:
        if self.alive():
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def children(self) -> list[int]:
        """Direct child pids (gunicorn's workers under its master)."""
        try:
            text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in text.split()]

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""


@dataclass
class Answer:
    """What a client got: a status and JSON body, or the connection error instead."""

    status: int | None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    error: str = ""
    seconds: float = 0.0

    def describe(self) -> str:
        if self.status is None:
            return self.error
        code = (self.body.get("error") or {}).get("code") if isinstance(self.body, dict) else None
        return f"{self.status} {code}" if code else str(self.status)

    @property
    def render_id(self) -> str | None:
        if not isinstance(self.body, dict):
            return None
        return self.body.get("id") or (self.body.get("render") or {}).get("id")


def multipart(fields: dict[str, str], file_field: str, data: bytes) -> tuple[bytes, str]:
    boundary = "live" + secrets.token_hex(8)
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; '
                 f'filename="input.png"\r\nContent-Type: image/png\r\n\r\n'.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class Platform:
    """A whole platform on loopback; ``env`` overrides settings for every child."""

    def __init__(self, workdir: Path, database_url: str, *, redis_aof: bool = False, **env: str) -> None:
        self.workdir = workdir
        self.logdir = workdir / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.redis_port = free_port()
        self.web_port = free_port()
        self.redis_aof = redis_aof
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.children: list[Child] = []
        self.redis: Child | None = None
        self.web_proc: Child | None = None
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "platform_site.settings",
            "DEBUG": "0",
            "SECRET_KEY": "live-platform-" + secrets.token_hex(16),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SECURE_SSL_REDIRECT": "0",
            "SESSION_COOKIE_SECURE": "0",
            "CSRF_COOKIE_SECURE": "0",
            "DATABASE_URL": database_url,
            # Children hold no idle connections, so the test database can be dropped.
            "DB_CONN_MAX_AGE": "0",
            "REDIS_URL": self.redis_url,
            "STORAGE_DIR": str(workdir / "storage"),
            "SITE_URL": f"http://127.0.0.1:{self.web_port}",
            "WORKER_ENGINE": "echo",
            "LOG_LEVEL": "INFO",
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
            "HF_HUB_OFFLINE": "1",
            **env,
        }
        # The test process's own Redis must not leak into the children.
        self.env.pop("TEST_REDIS_URL", None)

    # --- processes ---------------------------------------------------------------------

    def _start(self, name: str, argv: list[str], **env: str) -> Child:
        child = Child(name, argv, {**self.env, **env}, self.logdir).start()
        self.children.append(child)
        return child

    def start_redis(self) -> Child:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        data = self.workdir / "redis"
        data.mkdir(exist_ok=True)
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.redis_aof else [
            "--appendonly", "no"]
        self.redis = self._start("redis", [binary, "--port", str(self.redis_port), "--bind", "127.0.0.1",
                                           "--save", "", "--dir", str(data), *persistence])
        wait_for(self._redis_answers, 10, "redis-server")
        return self.redis

    def _redis_answers(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.redis_url, socket_timeout=0.5,
                                             socket_connect_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def restart_redis(self) -> None:
        """Starts Redis again on the same port and data directory (after a kill)."""
        assert self.redis is not None and not self.redis.alive()
        self.redis.start()
        wait_for(self._redis_answers, 10, "redis-server to come back")

    def connection(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, socket_timeout=5, socket_connect_timeout=2)

    def start_web(self, workers: int = 2, threads: int = 8, app: str | None = None, *,
                  server: str = "asgi", **env: str) -> Child:
        """gunicorn serving the site on loopback, as ``make run`` does.

        ``server="asgi"`` (the default, what ``make run`` and production run): uvicorn
        workers and ``platform_site.asgi``; ``server="threaded"``: the gthread
        configuration with ``threads`` per worker and ``platform_site.wsgi``. ``app``
        overrides the module (``module:callable``).
        """
        if server == "asgi":
            argv = [GUNICORN, app or "platform_site.asgi:application", "--worker-class",
                    "platform_site.asgi_worker.Worker"]
        else:
            argv = [GUNICORN, app or "platform_site.wsgi", "--worker-class", "gthread", "--threads", str(threads)]
        self.web_proc = self._start("web", [*argv, "--bind", f"127.0.0.1:{self.web_port}",
                                            "--workers", str(workers), "--timeout", "120",
                                            "--graceful-timeout", "5", "--log-level", "warning"], **env)
        wait_for(lambda: self.request("GET", "/v1/account", timeout=2).status == 401, 60, "gunicorn")
        return self.web_proc

    def start_gpu_worker(self, name: str = "gpu-1", **env: str) -> Child:
        before = set(self.worker_names("gpu"))
        child = self._start(name, [PY, "-m", "gpu_worker", "--name", f"{name}-{secrets.token_hex(3)}"], **env)
        wait_for(lambda: set(self.worker_names("gpu")) - before or not child.alive(), 120, f"{name} to register")
        if not child.alive():
            raise RuntimeError(f"{name} exited:\n{child.log()}")
        return child

    def start_fake_gpu_worker(self, delay: float, name: str = "fake-gpu", **env: str) -> Child:
        """``bench/fake_gpu_worker.py``: every job ends ``delay`` s after it is taken, all in parallel."""
        before = set(self.worker_names("gpu"))
        child = self._start(name, [PY, str(ROOT / "bench" / "fake_gpu_worker.py"), "--delay", str(delay),
                                   "--name", f"{name}-{secrets.token_hex(3)}"], **env)
        wait_for(lambda: set(self.worker_names("gpu")) - before or not child.alive(), 60, f"{name} to register")
        if not child.alive():
            raise RuntimeError(f"{name} exited:\n{child.log()}")
        return child

    def start_django_worker(self, **env: str) -> Child:
        before = set(self.worker_names("default"))
        child = self._start("django-worker", [PY, "manage.py", "rqworker", "default", "--worker-class",
                                              "rq.worker.SimpleWorker", "--serializer",
                                              "rq.serializers.JSONSerializer"], **env)
        wait_for(lambda: set(self.worker_names("default")) - before or not child.alive(), 60,
                 "the Django-side worker to register")
        if not child.alive():
            raise RuntimeError(f"django worker exited:\n{child.log()}")
        return child

    def start_sweeper(self, every: float = 0.5, name: str = "sweeper", **env: str) -> Child:
        return self._start(name, [PY, "manage.py", "sweep_renders", "--every", str(every)], **env)

    def worker_names(self, queue: str) -> list[str]:
        from rq import Queue, Worker

        try:
            return [w.name for w in Worker.all(queue=Queue(queue, connection=self.connection()))]
        except redis.RedisError:
            return []

    def job_worker(self, job_id: str) -> str | None:
        """The name of the GPU worker that is running ``job_id``, once one is."""
        from rq.job import Job, JobStatus
        from rq.serializers import JSONSerializer

        try:
            job = Job.fetch(job_id, connection=self.connection(), serializer=JSONSerializer)
        except Exception:
            return None
        return job.worker_name if job.get_status() == JobStatus.STARTED else None

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {c.name} ---\n{c.log(2500)}" for c in self.children)

    # --- HTTP ------------------------------------------------------------------------------

    def request(self, method: str, path: str, *, body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 90.0) -> Answer:
        started = time.monotonic()
        connection = http.client.HTTPConnection("127.0.0.1", self.web_port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            raw = response.read()
            headers_out = {k.lower(): v for k, v in response.getheaders()}
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                parsed = raw.decode(errors="replace")[:500]
            return Answer(response.status, parsed, headers_out, seconds=time.monotonic() - started)
        except (OSError, http.client.HTTPException) as exc:
            return Answer(None, error=type(exc).__name__, seconds=time.monotonic() - started)
        finally:
            connection.close()

    def post_render(self, key: str, image: bytes, *, idempotency_key: str | None = None,
                    timeout: float = 90.0, headers: dict[str, str] | None = None, **fields: str) -> Answer:
        fields.setdefault("scene_prompt", "a marble plinth in soft light")
        body, content_type = multipart(fields, "image_file", image)
        headers = {"Authorization": f"Bearer {key}", "Content-Type": content_type, **(headers or {})}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return self.request("POST", "/v1/image/replace-background", body=body, headers=headers, timeout=timeout)

    def get_render(self, key: str, render_id: str) -> Answer:
        return self.request("GET", f"/v1/renders/{render_id}", headers={"Authorization": f"Bearer {key}"},
                            timeout=30)

    def wait_until_terminal(self, key: str, render_id: str, timeout: float = 60.0) -> Answer:
        """Polls GET /v1/renders/{id} as a client would, until the render has ended."""
        answers: list[Answer] = []

        def ended() -> bool:
            answer = self.get_render(key, render_id)
            answers.append(answer)
            return answer.status == 200 and answer.body.get("status") in ("succeeded", "failed")

        wait_for(ended, timeout, f"render {render_id} to end", interval=0.25)
        return answers[-1]
