#!/usr/bin/env bash
# The day a GPU is lent: kernel tests on CUDA, bench/kernels.py, and d12 runs with each kernel set,
# twice for bitwise determinism; ~8 minutes on one H100, offline. Results: OUT_DIR/gpu_check.json
# and a log per part. Without CUDA it checks that everything it would run is in place and exits 0.
#
#   bash bench/gpu_check.sh [OUT_DIR]     # default: $OUT (the device tool's), else /tmp/gpt2train-gpu-check
#
# What each part does and measures: bench/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-/tmp/gpt2train-gpu-check}}"
python="${PYTHON:-python3}"
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 exec "$python" bench/gpu_check.py --out "$out"
