#!/usr/bin/env bash
# One GPU check in about 8 minutes: golden parity tests, the epoch benchmark, and scale.py at
# 1M and 10M cells (5,000 cells per batch), each phase timed, device peak memory reported,
# everything written to $OUT (4 files: gpu_check.log, epoch_time.jsonl, scale_<cells>.json).
#
# On the lent GPU machine (Python 3.12, JAX with CUDA, no jraph/anndata): first, here,
#   bash benchmarks/fetch_gpu_wheels.sh        # -> .whl/ (git-ignored), ~10 MB
# then run with the device tool:  carry [".whl"], command "bash benchmarks/gpu_check.sh",
# timeout_s 590. The wheels go to /tmp/site (--no-deps); the image supplies the rest.
#
# Knobs (environment): CELLS (default "1000000 10000000"), CONFIGS (epoch_time configs),
# BUDGET_S (whole run, default 470), OUT. Sizes of 5M cells and more use scale.py --fast-data
# (view matrices drawn directly, no CPU preprocessing). Test the logic on a CPU with e.g.
#   CELLS="20000" CONFIGS="1000:full:bf16" BUDGET_S=400 OUT=/tmp/gc bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/scniche_gpu_check}
BUDGET_S=${BUDGET_S:-470}
CELLS=${CELLS:-"1000000 10000000"}
CONFIGS=${CONFIGS:-"1000:full:bf16 4000:full:bf16 4000:full:fp32 16000:full:bf16 16000:16:bf16 100000:20:bf16"}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: > "$LOG"
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }
left() { echo $(( BUDGET_S - $(elapsed) )); }
say() { echo "== [$(elapsed) s] $*" | tee -a "$LOG"; }

if ! $PY -c "import jraph, anndata" 2>/dev/null; then
    if ls .whl/*.whl >/dev/null 2>&1; then
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
            || { say "wheel install failed"; exit 1; }
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    else
        say "jraph/anndata missing and no .whl/: run benchmarks/fetch_gpu_wheels.sh first"; exit 1
    fi
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1
# Both CPU traps of STACK.md: scikit-learn's OpenMP spinning and an unknown XLA flag.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}

say "machine"
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || echo "no nvidia-smi") | tee -a "$LOG"
$PY -c "import jax, flax, optax, os; print('python', __import__('sys').version.split()[0], 'jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices(), 'cpus', os.cpu_count())" 2>&1 | tee -a "$LOG"

say "golden parity tests (parity/test_golden.py)"
timeout 120 $PY -m pytest parity/test_golden.py -q -p no:cacheprovider -o addopts="" 2>&1 | tail -6 | tee -a "$LOG"
say "parity done"

say "epoch benchmark: $CONFIGS"
t=$(( $(left) * 25 / 100 )); [ "$t" -gt 150 ] && t=150
timeout "$t" $PY benchmarks/epoch_time.py --epochs 10 --warmup 2 --only $CONFIGS 2>&1 \
    | tee -a "$LOG" | grep '^{' > "$OUT/epoch_time.jsonl"
say "epoch benchmark done ($(wc -l < "$OUT/epoch_time.jsonl") configs)"

set -- $CELLS
while [ $# -gt 0 ]; do
    cells=$1; shift
    remaining=$(left)
    # the last size gets what is left; earlier ones at most 40 % of it
    if [ $# -gt 0 ]; then t=$(( remaining * 40 / 100 )); else t=$(( remaining - 5 )); fi
    if [ "$t" -lt 30 ]; then say "no time left for $cells cells"; continue; fi
    fast=""; [ "$cells" -ge 5000000 ] && fast="--fast-data"
    say "scale.py $cells cells $fast (timeout $t s)"
    timeout "$t" $PY benchmarks/scale.py --cells "$cells" --cells-per-batch 5000 $fast --epochs 3 --warmup 1 \
        --out "$OUT/scale_$cells.json" 2>&1 | tr '\r' '\n' | grep -vE '^graphs: +[0-9]*[1-9]%' | tee -a "$LOG"
    say "scale.py $cells cells ended (rc ${PIPESTATUS[0]}; 124 = timed out, the JSON holds the phases done)"
done
say "all done"
