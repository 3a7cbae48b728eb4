"""`python -m gpu_worker` as a real process, taking real jobs from a real Redis.

Jobs are enqueued exactly as the web side does: on a queue by dotted path, with RQ's
JSON serializer and one dict payload. The worker subprocess inherits REDIS_URL and
STORAGE_DIR from the test settings; each test uses its own queue (GPU_QUEUE).
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from gpu_worker import synthetic
from gpu_worker.storage import LocalStorage, MissingKey

ROOT = Path(__file__).resolve().parent.parent
TASK = "gpu_worker.tasks.replace_background"


@pytest.fixture(scope="module")
def redis() -> Redis:
    return Redis.from_url(os.environ["REDIS_URL"])


@pytest.fixture(scope="module")
def storage() -> LocalStorage:
    return LocalStorage(Path(os.environ["STORAGE_DIR"]))


def worker_env(queue: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ, GPU_QUEUE=queue, WORKER_DEVICE="cpu", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def run_burst(queue: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gpu_worker", "--burst"], cwd=ROOT,
                          env=worker_env(queue, **extra), capture_output=True, text=True,
                          timeout=180)


def store_input(storage: LocalStorage, image: np.ndarray) -> str:
    key = f"inputs/{uuid.uuid4().hex}.png"
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    storage.write(key, buffer.getvalue(), "image/png")
    return key


def enqueue(redis: Redis, queue: str, input_key: str, output_format: str = "png") -> Job:
    render_id = f"rnd_{uuid.uuid4().hex[:12]}"
    payload = {"render_id": render_id, "input_key": input_key,
               "output_key": f"outputs/{render_id}.{output_format}",
               "matte_key": f"mattes/{render_id}.png", "output_format": output_format,
               "scene_prompt": "marble kitchen counter, morning light",
               "preserve_shadow": True, "seed": 1234}
    return Queue(queue, connection=redis, serializer=JSONSerializer).enqueue(
        TASK, payload, job_timeout=120)


def reload(redis: Redis, job: Job) -> Job:
    return Job.fetch(job.id, connection=redis, serializer=JSONSerializer)


def settlements(redis: Redis) -> list[list]:
    jobs = Queue("default", connection=redis, serializer=JSONSerializer).jobs
    return [j.args for j in jobs if j.func_name == "imaging.tasks.settle_render"]


def decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as picture:
        return np.asarray(picture)


@pytest.fixture(scope="module")
def classical_run(redis, storage):
    """One burst worker (classical engine) over a good, a missing and a busy input."""
    queue = f"gpu-{uuid.uuid4().hex[:8]}"
    product = synthetic.make_case("product", "white", width=201, height=151, supersample=2)
    jobs = {
        "ok": enqueue(redis, queue, store_input(storage, product.image)),
        "missing": enqueue(redis, queue, "inputs/never-stored.png"),
        "busy": enqueue(redis, queue,
                        store_input(storage, synthetic.checkerboard_scene(120, 160))),
    }
    process = run_burst(queue, MATTING_ENGINE="classical")
    return process, {name: reload(redis, job) for name, job in jobs.items()}, product


def test_the_worker_renders_a_job_end_to_end(classical_run, storage, redis):
    process, jobs, product = classical_run
    assert process.returncode == 0, process.stderr
    job = jobs["ok"]
    assert job.get_status() == JobStatus.FINISHED
    result = job.return_value()
    payload = job.args[0]
    assert set(result) == {"output_key", "matte_key", "width", "height", "format", "seed",
                           "scene_generated", "timings_ms", "subject", "scene", "exactness",
                           "shadow", "light", "engine", "diagnostics"}
    assert set(result["subject"]) == {"bbox", "coverage"}
    assert result["scene"]["engine"] == "tiny-demo:sdxl" and result["scene"]["seed"] == 1234
    assert set(result["timings_ms"]) <= {"read", "decode", "matting", "scene", "compose", "encode",
                                         "verify", "write", "total"}
    assert result["diagnostics"]["timings_ms"], "finer timings go to the diagnostics"
    assert (result["width"], result["height"], result["format"]) == (201, 151, "png")
    # tests/settings.py points the worker at the tiny demo scene models.
    assert result["seed"] == 1234 and result["scene_generated"] is True
    assert result["engine"] == {"matting": "classical", "scene": "tiny-demo:sdxl"}
    assert all(isinstance(v, int) for v in result["timings_ms"].values())
    assert result["timings_ms"]["total"] >= result["timings_ms"]["matting"]
    assert 0 < result["subject"]["coverage"] < 1

    output = decode(storage.read(payload["output_key"]))
    matte = decode(storage.read(payload["matte_key"]))
    assert output.shape == (151, 201, 3) and matte.shape == (151, 201)
    assert matte.dtype == np.uint8
    opaque = matte == 255
    assert opaque.sum() > 2000
    assert np.array_equal(output[opaque], product.image[opaque])
    assert result["exactness"] == {"opaque_pixels": int(opaque.sum()), "exact_pixels": int(opaque.sum()),
                                   "share": 1.0}


def test_the_worker_reports_its_stage_for_the_dashboard(classical_run):
    _, jobs, _ = classical_run
    meta = jobs["ok"].meta
    assert meta["stage"] == "composing"
    assert datetime.fromisoformat(meta["stage_started_at"]).tzinfo is not None


def test_every_finished_or_failed_render_is_sent_to_settlement(classical_run, redis):
    _, jobs, _ = classical_run
    settled = settlements(redis)
    for job in jobs.values():
        assert [job.args[0]["render_id"], job.id] in settled


def test_a_missing_input_fails_with_invalid_image_in_the_job_meta(classical_run):
    _, jobs, _ = classical_run
    job = jobs["missing"]
    assert job.get_status() == JobStatus.FAILED
    assert job.meta["error"]["code"] == "invalid_image"


def test_a_busy_backdrop_is_refused_by_the_classical_engine(classical_run):
    _, jobs, _ = classical_run
    job = jobs["busy"]
    assert job.get_status() == JobStatus.FAILED
    assert job.meta["error"]["code"] == "backdrop_not_plain"
    assert job.meta["error"]["message"]


def test_missing_weights_fail_renders_with_model_unavailable(redis, storage, tmp_path):
    queue = f"gpu-{uuid.uuid4().hex[:8]}"
    image = synthetic.make_case("product", "grey", width=64, height=48, supersample=1).image
    job = enqueue(redis, queue, store_input(storage, image))
    process = run_burst(queue, MATTING_ENGINE="learned", MODEL_DIR=str(tmp_path))
    assert process.returncode == 0
    assert "missing weights" in process.stderr and "fetch-models" in process.stderr
    job = reload(redis, job)
    assert job.get_status() == JobStatus.FAILED
    assert job.meta["error"]["code"] == "model_unavailable"
    assert [job.args[0]["render_id"], job.id] in settlements(redis)


def test_the_echo_engine_returns_the_input_re_encoded_at_once(redis, storage):
    queue = f"gpu-{uuid.uuid4().hex[:8]}"
    image = synthetic.make_case("hair", "coloured", width=97, height=61, supersample=1).image
    job = enqueue(redis, queue, store_input(storage, image), output_format="webp")
    process = run_burst(queue, WORKER_ENGINE="echo")
    assert process.returncode == 0, process.stderr
    job = reload(redis, job)
    result = job.return_value()
    assert result["engine"] == {"matting": "echo", "scene": "echo"}
    assert result["format"] == "webp" and (result["width"], result["height"]) == (97, 61)
    with Image.open(io.BytesIO(storage.read(result["output_key"]))) as picture:
        assert picture.format == "WEBP" and picture.size == (97, 61)
        assert np.array_equal(np.asarray(picture), image)  # lossless: the subject stays exact
    assert (decode(storage.read(result["matte_key"])) == 255).all()


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_sigterm_lets_the_current_render_finish_before_the_worker_exits(redis, storage):
    queue = f"gpu-{uuid.uuid4().hex[:8]}"
    image = np.zeros((8, 8, 3), np.uint8)
    job = enqueue(redis, queue, store_input(storage, image))
    process = subprocess.Popen([sys.executable, "-m", "gpu_worker"], cwd=ROOT,
                               env=worker_env(queue, WORKER_ENGINE="echo",
                                              WORKER_ECHO_DELAY_MS="1500"),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: reload(redis, job).get_status() == JobStatus.STARTED)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    assert reload(redis, job).get_status() == JobStatus.FINISHED


def test_max_jobs_recycles_the_process_after_that_many_renders(redis, storage):
    queue = f"gpu-{uuid.uuid4().hex[:8]}"
    key = store_input(storage, np.zeros((8, 8, 3), np.uint8))
    first, second = enqueue(redis, queue, key), enqueue(redis, queue, key)
    process = subprocess.run([sys.executable, "-m", "gpu_worker", "--max-jobs", "1"], cwd=ROOT,
                             env=worker_env(queue, WORKER_ENGINE="echo"), capture_output=True,
                             text=True, timeout=120)
    assert process.returncode == 0, process.stderr
    assert reload(redis, first).get_status() == JobStatus.FINISHED
    assert reload(redis, second).get_status() == JobStatus.QUEUED


def test_the_worker_package_never_imports_django():
    # The worker runs on GPU machines without database credentials: importing every
    # gpu_worker module must not pull in Django or the web apps.
    code = (
        "import importlib, pkgutil, sys, gpu_worker\n"
        "for m in pkgutil.walk_packages(gpu_worker.__path__, 'gpu_worker.'):\n"
        "    if m.name != 'gpu_worker.__main__':\n"
        "        importlib.import_module(m.name)\n"
        "bad = [n for n in sys.modules if n.split('.')[0] in\n"
        "       ('django', 'accounts', 'billing', 'imaging', 'platform_site', 'rest_framework')]\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_job_of_a_render_the_web_side_has_already_ended_is_skipped(redis, storage):
    queue = f"gpu-{uuid.uuid4().hex[:8]}"
    job = enqueue(redis, queue, store_input(storage, synthetic.checkerboard_scene(40, 40)))
    render_id = job.args[0]["render_id"]
    # What imaging.dispatch.mark_settled writes when a render ends (a timeout, say).
    redis.set(f"imaging:render-job:{render_id}", "settled", ex=60)

    process = run_burst(queue, WORKER_ENGINE="echo")

    assert process.returncode == 0, process.stderr
    job = reload(redis, job)
    assert job.return_value() == {"skipped": "the render has already ended"}
    with pytest.raises(MissingKey):
        storage.read(job.args[0]["output_key"])  # no GPU time spent, nothing written
