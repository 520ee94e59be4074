#!/usr/bin/env bash
# The golden parity tests on an emulated x86-64 CPU without AVX-512 (QEMU user mode; default
# model EPYC-Rome: AVX2 + FMA). XLA_FLAGS=--xla_cpu_max_isa=AVX2 narrows only the code XLA
# generates; the matrix kernels that jaxlib picks at run time still see the host's AVX-512.
# Under emulation every CPUID query answers for the emulated CPU, as on a real AVX2 machine.
#   bash parity/emulated_cpu.sh [QEMU_CPU_MODEL] [PYTEST_ARGS...]   (default: the golden and loss tests)
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-EPYC-Rome}
shift || true
if ! command -v qemu-x86_64 >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq qemu-user) >/dev/null 2>&1 || true
fi
if ! command -v qemu-x86_64 >/dev/null 2>&1; then
  echo "qemu-x86_64 is not installed (Debian: apt-get install qemu-user): the emulated-CPU parity run is skipped" >&2
  [ "${CI:-}" = true ] && exit 1
  exit 0
fi
python=$(command -v python)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(parity/test_golden.py tests/test_losses.py -k "golden or reference or index_order or rowwise")
echo "parity tests on an emulated $model CPU (qemu-x86_64 $(qemu-x86_64 --version | head -1 | awk '{print $3}'))"
# TCG warns once per CPUID feature it cannot emulate (xsavec, xsaves): not a test result.
JAX_PLATFORMS=cpu qemu-x86_64 -cpu "$model" "$python" -m pytest -q -p no:cacheprovider \
  "${targets[@]}" 2> >(grep -v "TCG doesn't support" >&2)
