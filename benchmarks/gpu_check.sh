#!/usr/bin/env bash
# GPU check, run on a lent GPU machine (Python 3.12, JAX with CUDA, no jraph/anndata):
#   wheels in .whl/ (jraph, anndata and its pure deps), the golden fixture in .devdata/.
# 1) the golden parity tests on the GPU, 2) the epoch benchmark on the GPU.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
SCNICHE_PARITY_GOLDEN=$PWD/.devdata/reference_golden_n256.npz timeout 150 python3 -m pytest parity -q -p no:cacheprovider -o addopts="" 2>&1 | tail -4
timeout 330 python3 benchmarks/epoch_time.py --epochs 20 --warmup 2 --only ${CONFIGS:-1000:full:bf16 1000:full:fp32 4000:full:bf16 4000:full:fp32 16000:full:bf16 16000:16:bf16 16000:16:fp32 100000:20:bf16} 2>&1 | tee "$OUT/gpu_bench.log"
