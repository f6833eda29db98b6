#!/bin/sh
# The one script for a GPU machine. It builds nothing there: run `npm install` (which compiles
# dist/ and the addon) and `npm run build:cuda-native` where nvcc is, carry the tree over, then
#   sh benchmarks/gpu.sh [results-folder]
# Steps (each recorded, none stops the others; what is missing is skipped with a line saying so):
#   1. the kernel-lab tests natively (build-cuda-native/cuda_tests: kernels vs the CPU ops,
#      tensor-core layouts on real tensor cores)
#   2. compute-sanitizer memcheck, racecheck and synccheck over those tests, with LAB_QUICK=1 (the
#      tests' real-shape cases skipped: their small-shape siblings run the same code paths), to keep
#      racecheck within a 15-minute device budget (not yet measured on a GPU)
#   2b. the SASS: cuobjdump -sass of the test binary (every kernel, sm_80 and sm_90) into sass.txt and
#      per-kernel counts of LDG.E.128, HMMA, LDL and STL into sass-counts.md (test/cuda/sass-counts.mjs),
#      where cuobjdump exists (nvcc 13 on the build machine ships none)
#   2c. the mma.sync rate (build-cuda-native/mma_peak: bf16 m16n8k16, f32 accumulate, from
#      registers), on an sm_90 the wgmma rates (m64n128k16, the MoE GEMM's; m64n256k16, the bf16
#      GEMM's), and the L2 -> SM feed: what test/cuda/roofline-model.mjs takes as PEAK_BF16_TFLOPS
#      (wgmma's), mma.sync's share of it (setMmaSyncShare) and the L2 feed (setL2Feed)
#   3. gptoss check --device cuda (parity with the reference's logits on the fixtures)
#   4. gptoss bench suite --device cuda --synthetic 20b and 120b
# Everything lands in one folder (default gpu-results/<date>-<commit>/) with summary.txt.
set -u
cd "$(dirname "$0")/.."
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
OUT=${1:-gpu-results/$(date +%Y%m%d-%H%M%S)-$commit}
mkdir -p "$OUT"
summary="$OUT/summary.txt"
: >"$summary"
say() { echo "$*" | tee -a "$summary"; }
step() {  # step <name> <log file> <command...>
  name=$1; log=$2; shift 2
  start=$(date +%s)
  "$@" >"$OUT/$log" 2>&1
  rc=$?
  say "$( [ $rc = 0 ] && echo PASS || echo "FAIL (exit $rc)" )  $name  ($(( $(date +%s) - start )) s, $log)"
}

say "gpu.sh at commit $commit, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
  say "device: $(nvidia-smi -L | head -1)"
else
  say "SKIP  everything: no GPU visible (nvidia-smi -L fails)"
  exit 1
fi

TESTS=build-cuda-native/cuda_tests
if [ -x "$TESTS" ]; then
  step "kernel-lab tests, native" kernel-tests.txt "$TESTS"
  if command -v compute-sanitizer >/dev/null 2>&1; then
    for tool in memcheck racecheck synccheck; do
      step "compute-sanitizer --tool $tool (LAB_QUICK=1)" "sanitizer-$tool.txt" \
        env LAB_QUICK=1 compute-sanitizer --tool $tool --error-exitcode 1 "$TESTS"
    done
  else
    say "SKIP  compute-sanitizer: not installed on this machine"
  fi
  if command -v cuobjdump >/dev/null 2>&1; then
    step "cuobjdump -sass" sass.txt cuobjdump -sass "$TESTS"
    step "SASS counts per kernel (LDG.E.128, HMMA, LDL, STL)" sass-counts.md node test/cuda/sass-counts.mjs "$OUT/sass.txt"
  else
    say "SKIP  SASS: cuobjdump not found on this machine"
  fi
else
  say "SKIP  kernel-lab tests, compute-sanitizer and SASS: $TESTS missing (run npm run build:cuda-native where nvcc is)"
fi

if [ -x build-cuda-native/mma_peak ]; then
  step "mma.sync and wgmma rates, L2 feed (the tensor-core models' peak and feed)" mma-peak.txt build-cuda-native/mma_peak
  grep '^best' "$OUT/mma-peak.txt" | sed 's/^/      /' | tee -a "$summary" >/dev/null
else
  say "SKIP  mma.sync and wgmma rates: build-cuda-native/mma_peak missing (run npm run build:cuda-native where nvcc is)"
fi

if [ -f dist/cli/main.js ]; then
  if node dist/cli/main.js check --help 2>/dev/null | grep -q -- '--device'; then
    step "gptoss check --device cuda" check-cuda.txt node dist/cli/main.js check --device cuda
  else
    say "SKIP  gptoss check --device cuda: this build's CLI has no --device option"
  fi
  for preset in 20b 120b; do
    step "gptoss bench suite --device cuda --synthetic $preset" "bench-suite-$preset.txt" \
      node dist/cli/main.js bench suite --device cuda --synthetic "$preset" --out "$OUT/bench-suite-$preset.json"
  done
else
  say "SKIP  gptoss check and bench suite: dist/cli/main.js missing (run npm install where the tree was built)"
fi
say "results in $OUT"
