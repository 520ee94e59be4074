#!/usr/bin/env bash
# Wheels that benchmarks/gpu_check.sh installs on the GPU machine (Python 3.12, x86-64, no network):
# jraph and anndata (not in that image) and anndata's dependencies that the image lacks. The image
# already holds jax, flax, optax, orbax-checkpoint, numpy, scipy, pandas, h5py, scikit-learn,
# packaging, pyyaml, typing-extensions and tqdm (see the device README's KINDS.md).
#   bash benchmarks/fetch_gpu_wheels.sh [DEST]     # DEST defaults to .whl/ (git-ignored)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.whl}
mkdir -p "$dest"
common=(--dest "$dest" --no-deps --only-binary=:all: --python-version 3.12 --implementation cp
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64)
# pure Python
python3 -m pip download "${common[@]}" "jraph==0.0.6.dev0" "anndata==0.12.19" "array-api-compat" \
    "legacy-api-wrap==1.5" "natsort==8.4.0" "scverse-misc==0.0.3" "session-info2" "zarr==3.1.6" "donfig"
# compiled, for cp312 manylinux
python3 -m pip download "${common[@]}" "numcodecs==0.16.6" "google-crc32c==1.9.0"
ls -1 "$dest"
grep -qx '/.whl/' "$(git rev-parse --git-common-dir)/info/exclude" 2>/dev/null \
    || echo '/.whl/' >> "$(git rev-parse --git-common-dir)/info/exclude"
