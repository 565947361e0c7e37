#!/usr/bin/env bash
# The CUDA FP8 path on a GPU machine: correctness checks, then timings, with a summary printed last.
#
#   scripts/gpu-check.sh [BUILD_DIR] [--quick]
#
# With a BUILD_DIR that holds dsv3_tests (a CMake build with CUDA): runs `dsv3_tests --gtest_filter='Fp8Cuda*'`,
# then BUILD_DIR/bench_fp8_cuda. Without one: builds bench_fp8_cuda stand-alone with nvcc from the few sources it
# needs (src/cuda, src/fp8/{quantize,fp8_gemm}.cpp, src/core/{dtype,fp8_block,error}.cpp; no other library than
# cuBLASLt) into build/gpu-check, then runs `bench_fp8_cuda --check` (the same checks as the tests, PASS/FAIL per
# line) and its timings. Exit status: non-zero when a check fails.
set -u
cd "$(dirname "$0")/.."

BUILD=""
QUICK=""
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK="--quick" ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) BUILD="$arg" ;;
  esac
done

LOG=$(mktemp -d)
status=0
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader 2>/dev/null || true

if [ -n "$BUILD" ] && [ -x "$BUILD/dsv3_tests" ]; then
  echo "== dsv3_tests --gtest_filter='Fp8Cuda*' =="
  OMP_WAIT_POLICY=passive "$BUILD/dsv3_tests" --gtest_filter='Fp8Cuda*' 2>&1 | tee "$LOG/tests.txt"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  BENCH="$BUILD/bench_fp8_cuda"
  BENCH_ARGS="$QUICK"
else
  NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
  DEST=build/gpu-check
  mkdir -p "$DEST"
  echo "== building $DEST/bench_fp8_cuda with $NVCC =="
  start=$(date +%s)
  # One nvcc call: the .cu and the CPU reference sources (compiled by the host compiler, with OpenMP).
  if ! "$NVCC" -std=c++20 -O2 -arch=sm_90 -DDSV3_HAVE_CUDA=1 -Iinclude -Isrc \
      -Xcompiler -fopenmp,-march=native \
      bench/bench_fp8_cuda.cpp src/cuda/fp8_cuda.cu src/fp8/quantize.cpp src/fp8/fp8_gemm.cpp \
      src/core/dtype.cpp src/core/fp8_block.cpp src/core/error.cpp \
      -lcublasLt -lgomp -o "$DEST/bench_fp8_cuda"; then
    echo "gpu-check: build failed"
    exit 1
  fi
  echo "built in $(( $(date +%s) - start )) s"
  BENCH="$DEST/bench_fp8_cuda"
  BENCH_ARGS="--check $QUICK"
fi

echo "== $BENCH $BENCH_ARGS =="
# shellcheck disable=SC2086
OMP_WAIT_POLICY=passive "$BENCH" $BENCH_ARGS 2>&1 | tee "$LOG/bench.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo
echo "================ summary ================"
grep -m1 '^device:' "$LOG/bench.txt" || true
if [ -f "$LOG/tests.txt" ]; then
  grep -E '^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED  \]|worst' "$LOG/tests.txt" || true
fi
grep -E '^(FAIL) ' "$LOG/bench.txt" || true
grep -E '^checks:' "$LOG/bench.txt" | tail -1 || true
sed -n '/^== FP8 block-scaled/,$p' "$LOG/bench.txt" | grep -v '^checks:' || true
echo "gpu-check: $([ $status -eq 0 ] && echo OK || echo FAILED)"
rm -rf "$LOG"
exit $status
