#!/bin/sh
# The CUDA backend (native/cuda) end to end without a GPU: the emulated build (npm run
# build:cuda-emu, made beside the default addon as test/asan.sh makes its build) runs device
# 'cuda' on the CPU under the kernel lab's emulator. Runs the backend's own tests (runtime layer,
# graph capture and replay, typed errors), every op test's cuda half for the kernels that have
# landed, and, once every op has its kernel, `gptoss check --device cuda` and the engine's
# batched-versus-solo tests (test/cuda-backend.test.ts decides, from the addon's deviceOps).
set -e
cd "$(dirname "$0")/.."
start=$(date +%s)
npx cmake-js compile --CDGPTOSS_CUDA_EMULATE=ON --CDGPTOSS_CUDA=OFF --out build-cuda-emu-addon >/dev/null
GPTOSS_CUDA=emulate npx vitest run --testTimeout 600000 --hookTimeout 600000 -t '\(cuda\)' test/cuda-backend.test.ts test/cuda-sampling.test.ts test/kernels
echo "test:cuda-emu: done in $(( $(date +%s) - start )) s"
