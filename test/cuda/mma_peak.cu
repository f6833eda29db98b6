// mma_peak: the rate at which this GPU sustains mma.sync.m16n8k16 with bf16 inputs and f32
// accumulators, the instruction every tensor-core kernel here issues. The hand models
// (test/cuda/roofline-model.mjs, PEAK_BF16_TFLOPS) take each GPU's dense bf16 peak as that rate:
// 989 TFLOP/s on an H100 SXM. Public reports say Hopper reaches that peak only with wgmma, so
// the H100 predictions are upper bounds until this has run there. Native only: built by
// test/cuda/build-native.sh and run by benchmarks/gpu.sh. It prints one line per launch shape
// and the best, in TFLOP/s, and mma per clock per SM.
//
// Each warp runs kChains independent accumulator chains from registers, so the rate is the tensor
// pipe's, not a dependency's latency: no memory traffic in the loop.
#include <cuda_runtime.h>

#include <cstdio>

#include "kernels/cuda/mma.cuh"

namespace {
constexpr int kChains = 8;

__global__ void mma_loop(float* sink, int iters) {
  const uint32_t lane = threadIdx.x & 31;
  const uint32_t a[4] = {0x3f803f80u ^ lane, 0x3f803f80u, 0x3f803f80u, 0x3f803f80u ^ (lane << 1)};
  const uint32_t b[2] = {0x3c003c00u ^ lane, 0x3c003c00u};
  float acc[kChains][4] = {};
  for (int i = 0; i < iters; ++i) {
#pragma unroll
    for (int c = 0; c < kChains; ++c) gptoss::cuda::mma_m16n8k16_bf16(acc[c], a, b, acc[c]);
  }
  float s = 0.f;
#pragma unroll
  for (int c = 0; c < kChains; ++c) s += acc[c][0] + acc[c][1] + acc[c][2] + acc[c][3];
  if (s == 1234.5f) sink[blockIdx.x] = s;  // keeps the chains live; never true for these inputs
}

bool ok(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return true;
  std::fprintf(stderr, "mma_peak: %s: %s\n", what, cudaGetErrorString(e));
  return false;
}
}  // namespace

int main() {
  int dev = 0, sms = 0, khz = 0;
  cudaDeviceProp prop{};
  if (!ok(cudaGetDevice(&dev), "cudaGetDevice") || !ok(cudaGetDeviceProperties(&prop, dev), "properties") ||
      !ok(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "SM count"))
    return 1;
  cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, dev);  // the boost clock; 0 when not reported
  std::printf("device: %s, %d SMs, clock %.2f GHz (reported)\n", prop.name, sms, khz / 1e6);
  float* sink = nullptr;
  cudaEvent_t t0, t1;
  if (!ok(cudaMalloc(&sink, size_t(sms) * 64 * sizeof(float)), "cudaMalloc") || !ok(cudaEventCreate(&t0), "event") ||
      !ok(cudaEventCreate(&t1), "event"))
    return 1;
  const int iters = 1 << 15;
  double best = 0;
  for (int warps : {4, 8, 16}) {  // warps per block; blocks: 1, 2 and 4 per SM
    for (int per_sm : {1, 2, 4}) {
      const int blocks = sms * per_sm;
      mma_loop<<<blocks, warps * 32>>>(sink, 64);  // warm-up
      cudaEventRecord(t0);
      mma_loop<<<blocks, warps * 32>>>(sink, iters);
      cudaEventRecord(t1);
      if (!ok(cudaEventSynchronize(t1), "mma_loop")) return 1;
      float ms = 0;
      cudaEventElapsedTime(&ms, t0, t1);
      const double mma = double(blocks) * warps * iters * kChains;
      const double tflops = mma * 4096 / (ms * 1e-3) / 1e12;  // 2 x 16 x 8 x 16 flops per mma
      const double per_clk = khz > 0 ? mma / (ms * 1e-3) / (double(sms) * khz * 1e3) : 0;
      std::printf("%2d warps x %d blocks per SM: %8.1f TFLOP/s, %.3f mma per clock per SM\n", warps, per_sm, tflops,
                  per_clk);
      if (tflops > best) best = tflops;
    }
  }
  std::printf("best: %.1f TFLOP/s (mma.sync.m16n8k16 bf16, f32 accumulate)\n", best);
  return 0;
}
