"""Shared parts for the render tests: users with keys, tiny images, real workers.

Two kinds of worker, both real rq workers on real Redis:

* ``GpuWorker``: the GPU worker as production runs it, ``python -m gpu_worker``, in a
  subprocess (it inherits REDIS_URL and STORAGE_DIR from the test settings).
* ``run_gpu_jobs_in_process``: rq's own SimpleWorker, in this process, in burst mode,
  running ``fake_replace_background`` instead of the real pipeline. Settlement and
  sweeper tests use it to produce exact outcomes (a given failure code, a timeout)
  through rq's real result and failure bookkeeping, without a model in the loop.

Render tests use ``transactional_db``: a render must be committed before its job can
be picked up, and ``submit_render`` refuses to run inside a transaction.
"""

from __future__ import annotations

import concurrent.futures
import http.server
import io
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connections
from django.test import Client, override_settings
from PIL import Image
from rq import Queue, SimpleWorker, get_current_job
from rq.serializers import JSONSerializer
from rq.worker_registration import clean_worker_registry

from accounts.keys import issue_key
from accounts.models import User
from billing import ledger
from billing.models import CreditAccount, Hold, HoldStatus, LedgerEntry
from imaging.dispatch import GPU_QUEUE, redis_connection

ROOT = Path(__file__).resolve().parent.parent
CREDITS = 22


# --- users, keys, clients -------------------------------------------------------------


def make_user(email: str, *, credits: int = 10 * CREDITS) -> User:
    """A user whose balance is exactly ``credits`` (no signup grant)."""
    with override_settings(SIGNUP_GRANT_CREDITS=0):
        user = User.objects.create_user(email, "correct horse battery")
    if credits:
        ledger.grant(user, credits, reference=f"test:{user.pk}", note="test credits")
    return user


def api_client(user: User, name: str = "test key") -> Client:
    _, raw = issue_key(user, name)
    client = Client(headers={"Authorization": f"Bearer {raw}"})
    client.raw_key = raw  # type: ignore[attr-defined]
    return client


def account(user: User) -> CreditAccount:
    return CreditAccount.objects.get(user=user)


def usage_entries(user: User) -> int:
    return LedgerEntry.objects.filter(account__user=user, kind="usage").count()


def pending_holds(user: User) -> int:
    return Hold.objects.filter(account__user=user, status=HoldStatus.PENDING).count()


# --- images -----------------------------------------------------------------------------


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def product_png(size: int = 64) -> bytes:
    """A dark square on a white studio backdrop: what the classical engine can cut out."""
    image = Image.new("RGB", (size, size), (255, 255, 255))
    inset = size // 4
    image.paste((30, 40, 60), (inset, inset, size - inset, size - inset))
    return png_bytes(image)


def noise_png(size: int = 64) -> bytes:
    """Random pixels everywhere: no plain backdrop, so no subject can be separated."""
    return png_bytes(Image.frombytes("RGB", (size, size), os.urandom(size * size * 3)))


def post_render(client: Client, *, image: bytes | None = None, headers: dict[str, str] | None = None,
                **fields: Any) -> Any:
    """POSTs a render: multipart with ``image`` as image_file, or JSON when no image is given."""
    fields.setdefault("scene_prompt", "a sunny beach")
    if image is None:
        return client.post("/v1/image/replace-background", fields, content_type="application/json",
                           headers=headers or {})
    form = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in fields.items()}
    form["image_file"] = _named(image)
    return client.post("/v1/image/replace-background", form, headers=headers or {})


def _named(data: bytes, name: str = "input.png") -> io.BytesIO:
    handle = io.BytesIO(data)
    handle.name = name
    return handle


def fetch_url(client: Client, url: str) -> Any:
    """GETs an absolute URL from the render object through the test client."""
    path = url.split("://", 1)[1]
    path = path[path.index("/"):]
    return Client().get(path)


# --- Redis state ------------------------------------------------------------------------


def clear_limits() -> None:
    """Forgets rate-limit and in-flight counters (ids can repeat across test databases)."""
    connection = redis_connection()
    for key in connection.scan_iter("imaging:*"):
        connection.delete(key)


def stored_inputs() -> set[str]:
    folder = Path(settings.STORAGE_DIR) / "inputs"
    return set(os.listdir(folder)) if folder.exists() else set()


def allow_loopback_fetches(settings: Any, url: str) -> None:
    """Lets imaging.fetch reach the loopback test server (development-only switches)."""
    settings.FETCH_ALLOW_PRIVATE_ADDRESSES = True
    settings.FETCH_ALLOWED_PORTS = [int(url.rsplit(":", 1)[1].split("/", 1)[0])]


def empty_gpu_queue() -> None:
    Queue(GPU_QUEUE, connection=redis_connection(), serializer=JSONSerializer).empty()


# --- the real GPU worker, as a subprocess ---------------------------------------------


class GpuWorker:
    """``python -m gpu_worker`` with the given engine (None: its default); stop() or kill() it."""

    def __init__(self, engine: str | None = "echo", **env: str) -> None:
        self.env = {**os.environ, **env}
        self.env.pop("WORKER_ENGINE", None)
        if engine is not None:
            self.env["WORKER_ENGINE"] = engine
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(settings.STORAGE_DIR) / f"gpu-worker-{engine}-{time.monotonic_ns()}.log"

    def start(self, timeout: float = 120.0) -> GpuWorker:
        connection = redis_connection()
        clean_worker_registry(Queue(GPU_QUEUE, connection=connection))
        before = set(_worker_names())
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "gpu_worker"], cwd=ROOT, env=self.env,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        # Test setup may poll: it waits for a process to register, not for a render.
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gpu worker exited with {self.proc.returncode}:\n{self.log()}")
            if set(_worker_names()) - before:
                return self
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"gpu worker did not register within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close()

    def kill(self) -> None:
        """SIGKILL, as a crashed machine would: no cleanup, the job is left 'started'."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._close()

    def _close(self) -> None:
        log = getattr(self, "_log", None)
        if log is not None and not log.closed:
            log.close()


class WorkerSlot:
    """At most one GPU worker at a time, restarted only when a test wants another engine.

    Workers of different engines would compete for the same "gpu" queue, so a test
    that needs, say, a slow echo worker must not find the default engine still running.
    """

    def __init__(self) -> None:
        self.worker: GpuWorker | None = None
        self.config: tuple | None = None

    def use(self, engine: str | None, **env: str) -> GpuWorker:
        config = (engine, tuple(sorted(env.items())))
        alive = self.worker is not None and self.worker.proc is not None and self.worker.proc.poll() is None
        if not alive or config != self.config:
            self.stop()
            self.worker = GpuWorker(engine, **env).start()
            self.config = config
        return self.worker

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        self.worker = None
        self.config = None


def _worker_names() -> list[str]:
    from rq import Worker

    return [w.name for w in Worker.all(queue=Queue(GPU_QUEUE, connection=redis_connection()))]


@contextmanager
def gpu_worker(engine: str | None = "echo", **env: str) -> Iterator[GpuWorker]:
    worker = GpuWorker(engine, **env).start()
    try:
        yield worker
    finally:
        worker.stop()


# --- rq's worker in this process, running a fake pipeline ----------------------------


def fake_replace_background(payload: dict[str, Any]) -> dict[str, Any]:
    """A stand-in GPU task driven by the scene prompt, for exact outcomes in tests.

    ``fail:<code>`` fails the job with that code in job.meta (as the real worker
    does); ``crash`` raises without a code; ``slow:<seconds>`` sleeps, then succeeds;
    anything else copies the input to the output and writes a full matte.
    """
    prompt = payload["scene_prompt"]
    job = get_current_job()
    if prompt.startswith("fail:"):
        job.meta["error"] = {"code": prompt[5:], "message": f"fake failure {prompt[5:]}"}
        job.save_meta()
        raise RuntimeError(prompt)
    if prompt == "crash":
        raise RuntimeError("unexpected crash")
    if prompt.startswith("slow:"):
        time.sleep(float(prompt[5:]))
    with default_storage.open(payload["input_key"], "rb") as handle:
        data = handle.read()
    image = Image.open(io.BytesIO(data))
    default_storage.save(payload["output_key"], io.BytesIO(data))
    default_storage.save(payload["matte_key"], io.BytesIO(png_bytes(Image.new("L", image.size, 255))))
    return {
        "output_key": payload["output_key"], "matte_key": payload["matte_key"],
        "width": image.width, "height": image.height, "format": payload["output_format"],
        "seed": payload["seed"] if payload["seed"] is not None else 1234, "scene_generated": False,
        "timings_ms": {"total": 1.0}, "subject": {"light_direction": [0.0, -1.0, 0.5]},
        "engine": {"name": "fake"},
    }


FAKE_TASK = "tests.helpers_render.fake_replace_background"


def worker_connection() -> redis.Redis:
    """A client of its own for an in-process rq worker, as a worker process has.

    rq raises the socket timeout of a worker's connection pool above its dequeue block;
    on the web side's pool that would hide a blocking read with too short a timeout.
    """
    return redis.Redis.from_url(settings.REDIS_URL)


def run_gpu_jobs_in_process() -> None:
    """Runs every queued gpu job to its end, here, with rq's SimpleWorker (burst)."""
    connection = worker_connection()
    queue = Queue(GPU_QUEUE, connection=connection, serializer=JSONSerializer)
    SimpleWorker([queue], connection=connection, serializer=JSONSerializer).work(
        burst=True, logging_level="WARNING", with_scheduler=False)


def run_default_jobs_in_process() -> None:
    """Runs the Django-side queue ("default": settle_render jobs) here, in burst mode."""
    connection = worker_connection()
    queue = Queue("default", connection=connection, serializer=JSONSerializer)
    SimpleWorker([queue], connection=connection, serializer=JSONSerializer).work(
        burst=True, logging_level="WARNING", with_scheduler=False)


# --- requests in threads, as concurrent clients -----------------------------------------

_pool = concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="client")


def in_thread(fn: Any, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
    """Runs ``fn`` in another thread (its own database connection, closed afterwards)."""

    def run() -> Any:
        try:
            return fn(*args, **kwargs)
        finally:
            connections.close_all()

    return _pool.submit(run)


def wait_until(predicate: Any, timeout: float = 15.0, what: str = "condition") -> None:
    """Test-side polling for setup steps (the product itself never sleep-polls)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def queued_gpu_jobs() -> int:
    return Queue(GPU_QUEUE, connection=redis_connection(), serializer=JSONSerializer).count


# --- a loopback HTTP server for image_url -----------------------------------------------


@contextmanager
def serving(body: bytes, content_type: str = "image/png", status: int = 200,
            requests: list[str] | None = None) -> Iterator[str]:
    """Serves ``body`` (with ``status``) at http://127.0.0.1:<port>/image.png until the block ends.

    Each request's path is appended to ``requests`` when a list is given.
    """

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if requests is not None:
                requests.append(self.path)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/image.png"
    finally:
        server.shutdown()
        server.server_close()


# --- fixtures (import them into a test module to use them) ---------------------------


@pytest.fixture
def render_env(transactional_db: Any, settings: Any) -> Any:
    """Committed database, empty queues and limits, a short sync window."""
    clear_limits()
    empty_gpu_queue()
    Queue("default", connection=redis_connection(), serializer=JSONSerializer).empty()
    settings.RENDER_SYNC_WINDOW_SECONDS = 0
    return settings


@pytest.fixture
def fake_gpu(render_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Routes renders to ``fake_replace_background``, run by ``run_gpu_jobs_in_process``."""
    import imaging.dispatch

    monkeypatch.setattr(imaging.dispatch, "GPU_TASK", FAKE_TASK)
