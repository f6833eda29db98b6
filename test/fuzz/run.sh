#!/bin/sh
# npm run fuzz [SECONDS]: builds the sampler's libFuzzer harness with AddressSanitizer and
# UndefinedBehaviorSanitizer (clang from Debian's clang and libclang-rt-14-dev packages), seeds it
# from the golden fixtures and runs it for SECONDS (default 60). Any crash, leak, sanitizer report
# or broken invariant fails the run and leaves the input in build-fuzz/. Without clang it says so
# and exits 0 under FUZZ_OPTIONAL=1 (npm test), 1 otherwise.
set -e
cd "$(dirname "$0")/../.."
SECONDS_TO_RUN=${1:-60}
CXX=$(command -v clang++ || command -v clang++-14 || true)
if [ -z "$CXX" ] || ! echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' |
    "$CXX" -x c++ -fsanitize=fuzzer - -o /dev/null 2>/dev/null; then
  echo "fuzz: clang with libFuzzer not found (Debian: apt-get install clang libclang-rt-14-dev); skipped" >&2
  [ "${FUZZ_OPTIONAL:-0}" = 1 ] && exit 0
    exit 1
fi
OUT=build-fuzz
mkdir -p "$OUT/corpus" "$OUT/objs"
FLAGS="-std=c++17 -O1 -g -I. -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all"
"$CXX" $FLAGS -c kernels/cpu/sample.cc -o "$OUT/objs/sample.o"
"$CXX" $FLAGS -c kernels/cpu/simd_dispatch.cc -o "$OUT/objs/simd_dispatch.o"
"$CXX" $FLAGS -c kernels/cpu/simd_generic.cc -o "$OUT/objs/simd_generic.o"
"$CXX" $FLAGS -mavx2 -mfma -mf16c -c kernels/cpu/simd_avx2.cc -o "$OUT/objs/simd_avx2.o"
"$CXX" $FLAGS -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma -mf16c -c kernels/cpu/simd_avx512.cc -o "$OUT/objs/simd_avx512.o"
"$CXX" $FLAGS -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512bf16 -mavx2 -mfma -c kernels/cpu/simd_avx512bf16.cc -o "$OUT/objs/simd_avx512bf16.o"
"$CXX" $FLAGS -fsanitize=fuzzer test/fuzz/sample_fuzz.cc "$OUT"/objs/*.o -o "$OUT/sample_fuzz"
node test/fuzz/seeds.mjs "$OUT/seeds" test/fixtures >/dev/null
# Every SIMD variant the CPU has runs its share of the time.
SIMDS=generic
grep -q ' avx2 ' /proc/cpuinfo 2>/dev/null && SIMDS="$SIMDS avx2"
grep -q ' avx512bw ' /proc/cpuinfo 2>/dev/null && SIMDS="$SIMDS avx512"
SHARE=$((SECONDS_TO_RUN / $(echo $SIMDS | wc -w) + 1))
# Earlier findings stay as inputs: a finding not yet fixed fails the next run at once.
mkdir -p "$OUT/findings"
for f in "$OUT"/crash-* "$OUT"/leak-* "$OUT"/timeout-* "$OUT"/oom-*; do [ -e "$f" ] && mv "$f" "$OUT/findings/"; done
for simd in $SIMDS; do
  echo "fuzz: sample, $simd variant, ${SHARE}s"
  rc=0
  GPTOSS_SIMD=$simd "$OUT/sample_fuzz" -max_total_time=$SHARE -max_len=8192 -timeout=10 \
    -artifact_prefix="$OUT/" -print_final_stats=1 "$OUT/corpus" "$OUT/seeds" "$OUT/findings" >"$OUT/$simd.log" 2>&1 || rc=$?
  grep -E "^(stat::number_of_executed_units|stat::new_units_added|==|SUMMARY|sample_fuzz:)" "$OUT/$simd.log" || true
  # libFuzzer exits non-zero on any finding (crash, leak, timeout, sanitizer report) and leaves
  # the input as crash-*, leak-*, timeout-* or oom-*; either fails the run.
  found=0
  for f in "$OUT"/crash-* "$OUT"/leak-* "$OUT"/timeout-* "$OUT"/oom-*; do [ -e "$f" ] && found=1; done
  if [ "$rc" -ne 0 ] || [ "$found" = 1 ]; then
    echo "fuzz: findings (exit $rc) in $OUT/ (log: $OUT/$simd.log; reproduce: $OUT/sample_fuzz FILE)" >&2
    exit 1
  fi
done
