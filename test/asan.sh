#!/bin/sh
# The CPU backend's tests against an AddressSanitizer + UndefinedBehaviorSanitizer build of the
# addon (CMake option GPTOSS_SANITIZE), with LeakSanitizer on: any finding fails the run.
# vitest's thread pool keeps every test in this process, so the leak check runs at its exit.
set -e
cd "$(dirname "$0")/.."
ASAN=$(gcc -print-file-name=libasan.so)
UBSAN=$(gcc -print-file-name=libubsan.so)
if [ ! -f "$ASAN" ] || [ ! -f "$UBSAN" ]; then
  echo "test:asan: gcc's libasan/libubsan not found; install gcc's sanitizer runtimes to run it" >&2
  exit 1
fi
npx cmake-js compile --CDGPTOSS_SANITIZE=ON --CDGPTOSS_CUDA=OFF --out build-asan >/dev/null
GPTOSS_ADDON="$PWD/build-asan/Release/gptoss.node" \
LD_PRELOAD="$ASAN:$UBSAN" \
ASAN_OPTIONS=detect_leaks=1 \
LSAN_OPTIONS="suppressions=$PWD/test/lsan.supp" \
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
npx vitest run --pool=threads --testTimeout 600000 --hookTimeout 600000 \
  test/kernels test/ops.test.ts test/golden.test.ts test/session.test.ts test/native-safety.test.ts test/sampler.test.ts test/engine.test.ts
