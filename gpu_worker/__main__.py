"""``python -m gpu_worker``: the GPU worker process (see gpu_worker.worker).

    python -m gpu_worker                  take renders from the "gpu" queue until stopped
    python -m gpu_worker --burst          take what is queued, then exit (tests)
    python -m gpu_worker --max-jobs 500   exit after 500 renders (a supervisor restarts it)
    python -m gpu_worker fetch-models     download the configured weights into MODEL_DIR
    python -m gpu_worker check-models     list missing weights; exit 1 if any
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from gpu_worker.config import WorkerConfig


def _setup_logging() -> None:
    from gpu_worker.logs import configure

    configure(os.environ.get("LOG_LEVEL", "INFO"))


def capabilities(report: dict) -> dict:
    """What the web side may tell customers about this worker: which scene engines work."""
    # gpu_worker.models.scene_capabilities fills these; a worker that could not load its
    # models (or runs the echo engine) has no scene stage and paints neither kind.
    scene = report.get("scene") if isinstance(report.get("scene"), dict) else {}
    return {"engine": report.get("engine", "full"), "studio": bool(scene.get("studio")),
            "diffusion": bool(scene.get("diffusion"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpu_worker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="work",
                        choices=("work", "fetch-models", "check-models"))
    parser.add_argument("--burst", action="store_true",
                        help="exit when the queue is empty")
    parser.add_argument("--max-jobs", type=int, default=None,
                        help="exit after this many jobs (recycling)")
    parser.add_argument("--name", default=None, help="worker name shown by rq info")
    args = parser.parse_args(argv)
    _setup_logging()
    log = logging.getLogger("gpu_worker")
    config = WorkerConfig.from_env()

    if args.command == "fetch-models":
        from gpu_worker.models import fetch_models

        try:
            paths = fetch_models(config)
        except Exception as exc:  # offline, bad revision, disk full: say so, exit non-zero
            log.error("fetching weights failed: %s: %s", type(exc).__name__, exc)
            return 1
        for path in paths:
            log.info("fetched %s", path)
        return 0
    if args.command == "check-models":
        from gpu_worker.models import missing_weights, resolve_device

        _, dtype = resolve_device(config.device)
        missing = missing_weights(config, dtype)
        for line in missing:
            print(f"missing: {line}")
        if not missing:
            print("all configured weights are installed")
        return 1 if missing else 0

    from gpu_worker import tasks
    from gpu_worker.worker import run_worker

    started = time.perf_counter()
    log.info("starting: queue %s, engine %s, matting %s, model dir %s", config.queue,
             config.worker_engine, config.matting_engine, config.model_dir)
    from gpu_worker import telemetry

    telemetry.serve()
    runtime = tasks.build_runtime(config)
    tasks.install(runtime)
    telemetry.MODEL_LOAD_SECONDS.set(time.perf_counter() - started)
    log.info("models ready in %d ms: %s", (time.perf_counter() - started) * 1000,
             runtime.report)
    run_worker(config.redis_url, config.queue, burst=args.burst, max_jobs=args.max_jobs,
               name=args.name, connect_timeout=config.redis_connect_timeout,
               socket_timeout=config.redis_socket_timeout, heartbeat_ttl=config.heartbeat_ttl,
               capabilities=capabilities(runtime.report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
