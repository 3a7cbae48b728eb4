# The two commands a new user needs: `make run` and `make test`. Both are idempotent.
.PHONY: run test setup bench-matting bench-studio bench-pipeline bench-scene bench-api bench-concurrency bench-faults bench-decode bench-fuzz bench-gpu clean

run: setup
	.venv/bin/python scripts/devserver.py

test: setup
	scripts/test.sh

setup:
	scripts/setup.sh

bench-matting: setup
	.venv/bin/python bench/matting_quality.py

bench-studio: setup
	.venv/bin/python bench/studio_eval.py

bench-pipeline: setup
	.venv/bin/python bench/pipeline.py

bench-scene: setup
	.venv/bin/python bench/scene_generation.py

bench-api: setup
	.venv/bin/python bench/api_overhead.py

# Waiting renders per web box, ASGI against threaded (bench/api_concurrency.py; ~8 min).
bench-concurrency: setup
	.venv/bin/python bench/api_concurrency.py --out var/bench/concurrency.md $${ARGS:-}

bench-faults: setup
	.venv/bin/python bench/faults.py

bench-decode: setup
	.venv/bin/python bench/decode_memory.py

# GPU cost per render with full-size random-weight networks (CUDA; see bench/gpu_cost.py).
bench-gpu: setup
	.venv/bin/python bench/gpu_cost.py --out var/bench/gpu $${ARGS:-}

# Schemathesis, every phase, against its own live stack: MINUTES=3 make bench-fuzz for less.
bench-fuzz: setup
	.venv/bin/python bench/fuzz_api.py --minutes $${MINUTES:-10}

clean:
	rm -rf .venv var staticfiles
