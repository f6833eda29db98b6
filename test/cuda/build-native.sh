#!/bin/sh
# Builds the kernel lab's tests for a real GPU (sm_80 and sm_90a, static CUDA runtime) into
# build-cuda-native/cuda_tests, here, where nvcc is: the GPU machine builds nothing
# (benchmarks/gpu.sh runs what this made). Same test sources as the emulated build, minus the
# emulator-only tests (planted bugs, cp.async poisoning).
set -e
cd "$(dirname "$0")/../.."
command -v nvcc >/dev/null 2>&1 || { echo "build-native: nvcc not found" >&2; exit 1; }
OUT=build-cuda-native
mkdir -p $OUT/obj
CXX=${CXX:-g++}
FLAGS="-std=c++17 -O2 -I."
# Every CPU op the tests compare with (the lab's Makefile links the same set).
for f in $(ls kernels/cpu/*.cc | grep -v 'simd_avx'); do
  $CXX $FLAGS -c $f -o $OUT/obj/$(basename $f .cc).o &
done
$CXX $FLAGS -mavx2 -mfma -mf16c -c kernels/cpu/simd_avx2.cc -o $OUT/obj/simd_avx2.o &
$CXX $FLAGS -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma -mf16c -c kernels/cpu/simd_avx512.cc -o $OUT/obj/simd_avx512.o &
$CXX $FLAGS -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512bf16 -mavx2 -mfma -c kernels/cpu/simd_avx512bf16.cc -o $OUT/obj/simd_avx512bf16.o &
wait
nvcc $FLAGS -lineinfo -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90a,code=sm_90a \
  kernels/cuda/*.cu test/cuda/*_test.cu test/cuda/main.cu $OUT/obj/*.o -o $OUT/cuda_tests -lpthread
# The mma.sync and wgmma rate and L2 feed probe (test/cuda/mma_peak.cu): the tensor-core models' peak and feed, measured by gpu.sh.
nvcc $FLAGS -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90a,code=sm_90a test/cuda/mma_peak.cu \
  -o $OUT/mma_peak
echo "build-native: $OUT/cuda_tests, $OUT/mma_peak (sm_80, sm_90a)"
