#!/bin/sh
# npm run test:cuda: every CUDA kernel test of the kernel lab.
#   1. Under the emulator (test/cuda/emu), built with ASan+UBSan into build-cuda-emu/asan: the
#      kernels in kernels/cuda/ against the CPU ops under five schedules, the tensor-core layouts,
#      and the planted bugs, each of which must be caught by name.
#   2. Natively too when a GPU is present and build-cuda-native/cuda_tests exists
#      (test/cuda/build-native.sh builds it wherever nvcc is).
#   3. The mutants (test/cuda/mutate.mjs): every __syncthreads() deleted and every shuffle offset
#      changed in kernels/cuda/, one at a time: each must make the emulated tests fail.
#   4. The static checks of the real nvcc build (test/cuda/static.mjs --check): resource budgets
#      per kernel and architecture fail this stage; skipped with one line where nvcc is missing.
set -e
cd "$(dirname "$0")/../.."
start=$(date +%s)
if command -v clang++ >/dev/null 2>&1; then
  CXX=clang++
else
  # GCC 12 ignores the section attribute on statics inside template functions (native/DESIGN.md,
  # "CUDA emulator facts"), so static __shared__ in template kernels would not be NaN-poisoned; the
  # rest still holds.
  CXX=g++
  echo "test:cuda: clang++ not found, building the emulator with g++: static __shared__ in template kernels is not NaN-poisoned, and blocks never interleave (the tickets schedule cannot catch a ticket race)" >&2
fi
JOBS=$(nproc 2>/dev/null || echo 2)
make -s -j"$JOBS" -f test/cuda/Makefile LAB_CXX=$CXX OUT=build-cuda-emu/asan
echo "test:cuda: emulated kernel tests ($CXX, ASan+UBSan)"
# ASan warns once that it does not fully support swapcontext; no false report was seen with fibers.
set +e
ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  ./build-cuda-emu/asan/cuda_tests >build-cuda-emu/asan/log.txt 2>&1
status=$?
set -e
grep -v "ASan doesn't fully support makecontext/swapcontext" build-cuda-emu/asan/log.txt || true
[ "$status" = 0 ] || { echo "test:cuda: emulated kernel tests failed (exit $status)" >&2; exit 1; }

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  if [ -x build-cuda-native/cuda_tests ]; then
    echo "test:cuda: native kernel tests on $(nvidia-smi -L | head -1)"
    ./build-cuda-native/cuda_tests
  else
    echo "test:cuda: GPU present but build-cuda-native missing: run npm run build:cuda-native"
  fi
else
  echo "test:cuda: no GPU here: native kernel tests not run"
fi

# Each __syncthreads() deleted and each shuffle offset changed, one at a time, must fail the tests.
node test/cuda/mutate.mjs

# The static roofline's PTX parsing (global bytes with cp.async, hot loops, bounds) on PTX written by hand.
node test/cuda/ptx-test.mjs

if command -v nvcc >/dev/null 2>&1; then
  node test/cuda/static.mjs --check
  # The predicted batch-1 decode speed from those figures (a prediction; printed, never a gate).
  node test/cuda/decode-roofline.mjs
  # The predicted prefill speed (a prediction; printed, never a gate).
  node test/cuda/prefill-roofline.mjs
else
  echo "test:cuda: nvcc not found: static checks of the CUDA build skipped"
fi
echo "test:cuda: done in $(( $(date +%s) - start )) s"
