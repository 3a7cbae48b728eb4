#!/usr/bin/env bash
# The GPU cost check, one command for a lent CUDA machine (PyTorch there, nothing else of
# this project's): about 4-6 minutes on an H100/H200, inside an 8-minute budget.
#
#   bench/gpu_wheels.sh                 # here, once: the missing packages into .whl/
#   bench/gpu_check.sh                  # there, with .whl carried: tables into $OUT
#
# Installs the wheels in .whl/ (if any) into /tmp/site, then runs bench/gpu_cost.py at
# full size (1 MP) for SDXL inpainting with every sampling setting (default steps, LCM
# 4-step, TCD 4-step) and every option on and off, and SD 1.5 inpainting without the
# option table. Each run has its own time limit, so one slow compile cannot take the rest.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-var/bench/gpu}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_check: installing .whl/ failed" >&2; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MATTING_ENGINE=${MATTING_ENGINE:-auto}
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('gpu_check:', torch.cuda.get_device_name(0), torch.__version__)" \
  || exit 1
status=0
timeout "${SDXL_LIMIT_S:-330}" "$PY" bench/gpu_cost.py --preset sdxl-inpainting --device cuda \
  --gpu-price "${GPU_PRICE:-2.50}" --out "$OUT" 2>&1 | tee "$OUT/sdxl.log" || status=1
timeout "${SD15_LIMIT_S:-120}" "$PY" bench/gpu_cost.py --preset sd15-inpainting --device cuda --options "" \
  --gpu-price "${GPU_PRICE:-2.50}" --out "$OUT" 2>&1 | tee "$OUT/sd15.log" || status=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.csv" 2>/dev/null || true
exit $status
