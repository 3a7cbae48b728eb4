#!/usr/bin/env bash
# Downloads the wheels bench/gpu_check.sh installs on a CUDA machine that has PyTorch but
# not this project's other packages (it cannot reach PyPI itself). Run here, once:
#   bench/gpu_wheels.sh            # -> .whl/ (git-ignored; about 5 MB)
# then carry .whl with the working tree (the device tool's `carry`, or scp/rsync).
# PYTHON_VERSION picks the machine's Python (default 3.12); the wheels are pure Python
# except where a platform tag is needed, hence the manylinux list.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
version=${PYTHON_VERSION:-3.12}
grep -v '^#' bench/gpu_wheels.txt | grep -v '^$' | while read -r pin; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$version" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .whl "$pin"
done
ls -la .whl
