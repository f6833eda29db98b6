// mma_peak: the rate at which this GPU sustains mma.sync.m16n8k16 with bf16 inputs and f32
// accumulators, the instruction most tensor-core kernels here issue, and on an sm_90 also wgmma
// (the grouped MoE GEMM's 128-row tile: kernels/cuda/mma.cuh, wgmma_m128n_k32_rs; the bf16 GEMM's
// wide tile: wgmma_m64n256_k32_rs), and the L2 -> SM feed the operands come through. The hand
// models (test/cuda/roofline-model.mjs, PEAK_BF16_TFLOPS) take each GPU's dense bf16 peak, 989
// TFLOP/s on an H100 SXM, as wgmma's rate and as mma.sync's at most (the prefill predictions also
// at an assumed 2/3 for mma.sync there). Native only: built by test/cuda/build-native.sh and run by
// benchmarks/gpu.sh. It prints one line per launch shape and the best of each, in TFLOP/s.
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

// wgmma: each warpgroup issues 128 x 128 x 32 steps (4 wgmma m64n128k16) on its own accumulators,
// A from registers, B (128 columns x 32 k, 8 KB) from shared memory, one group in flight.
__global__ void __launch_bounds__(256) wgmma_loop(float* sink, int iters) {
  __shared__ __align__(128) uint16_t b[128 * 32];
  for (int i = threadIdx.x; i < 128 * 32; i += blockDim.x) b[i] = 0x3c00;
  gptoss::cuda::fence_proxy_async();  // the stores, before wgmma reads them (the async proxy)
  __syncthreads();
  uint32_t a[2][2][4];
  for (auto& c : a)
    for (auto& t : c)
      for (uint32_t& v : t) v = 0x3c003c00u ^ (threadIdx.x & 7);
  float acc[2][64] = {};
  const uint64_t d0 = gptoss::cuda::wgmma_desc(b, 128, 512);
  const uint64_t desc[2] = {d0, d0 + 16};
  for (int i = 0; i < iters; ++i) {
    gptoss::cuda::wgmma_fence();
    gptoss::cuda::wgmma_m128n_k32_rs(acc, a, desc, 128);
    gptoss::cuda::wgmma_commit();
    gptoss::cuda::wgmma_wait<1>();
  }
  gptoss::cuda::wgmma_wait<0>();
  gptoss::cuda::wgmma_keep(acc);
  float s = 0.f;
  for (auto& t : acc)
    for (float v : t) s += v;
  if (s == 1234.5f) sink[blockIdx.x] = s;
}

// The dense bf16 GEMM's step (kernels/cuda/matmul_bf16.cu, kWg): per warpgroup 64 x 256 x 32 (2
// wgmma m64n256k16), B (256 rows x 32 k, 16 KB) from shared memory, one group in flight.
__global__ void __launch_bounds__(256) wgmma256_loop(float* sink, int iters) {
  extern __shared__ __align__(128) uint16_t b256[];
  for (int i = threadIdx.x; i < 256 * 32; i += blockDim.x) b256[i] = 0x3c00;
  gptoss::cuda::fence_proxy_async();
  __syncthreads();
  uint32_t a[2][4];
  for (auto& c : a)
    for (uint32_t& v : c) v = 0x3c003c00u ^ (threadIdx.x & 7);
  float acc[128] = {};
  const uint64_t d0 = gptoss::cuda::wgmma_desc(b256, 128, 512);
  const uint64_t desc[2] = {d0, d0 + 16};
  for (int i = 0; i < iters; ++i) {
    gptoss::cuda::wgmma_fence();
    gptoss::cuda::wgmma_m64n256_k32_rs(acc, a, desc);
    gptoss::cuda::wgmma_commit();
    gptoss::cuda::wgmma_wait<1>();
  }
  gptoss::cuda::wgmma_wait<0>();
  gptoss::cuda::wgmma_keep(acc);
  float s = 0.f;
  for (float v : acc) s += v;
  if (s == 1234.5f) sink[blockIdx.x] = s;
}

// The L2 -> SM feed (test/cuda/roofline-model.mjs setL2Feed; the prefill's "L2-fed" column assumes
// A100's documented 5120 B/clk on an H100): every block streams a buffer that fits the L2 with
// 16-byte loads that bypass L1 (ld.global.cg), each block from its own offset.
__global__ void l2_loop(const uint4* __restrict__ buf, unsigned n, int passes, unsigned* sink) {
  unsigned x = 0;
  const unsigned stride = gridDim.x * blockDim.x, count = n / stride;
  for (int p = 0; p < passes; ++p) {
    unsigned i = unsigned((size_t(blockIdx.x) * 977 * blockDim.x + threadIdx.x + size_t(p) * 4096) % n);
#pragma unroll 4
    for (unsigned c = 0; c < count; ++c) {
      const uint4 v = __ldcg(buf + i);
      x ^= v.x ^ v.y ^ v.z ^ v.w;
      i += stride;
      if (i >= n) i -= n;
    }
  }
  if (x == 0x12345678u) sink[blockIdx.x] = x;
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
  if (prop.major == 9 && prop.minor == 0) {  // the build's sm_90 code is sm_90a
    double wbest = 0;
    for (int per_sm : {1, 2}) {
      const int blocks = sms * per_sm, witers = 1 << 13;
      wgmma_loop<<<blocks, 256>>>(sink, 16);
      cudaEventRecord(t0);
      wgmma_loop<<<blocks, 256>>>(sink, witers);
      cudaEventRecord(t1);
      if (!ok(cudaEventSynchronize(t1), "wgmma_loop")) return 1;
      float ms = 0;
      cudaEventElapsedTime(&ms, t0, t1);
      const double tflops = double(blocks) * 2 * witers * (2.0 * 128 * 128 * 32) / (ms * 1e-3) / 1e12;
      std::printf("wgmma, 2 warpgroups x %d blocks per SM: %8.1f TFLOP/s\n", per_sm, tflops);
      if (tflops > wbest) wbest = tflops;
    }
    std::printf("best wgmma: %.1f TFLOP/s (m64n128k16 bf16, f32 accumulate, A from registers)\n", wbest);
    const int smem256 = 256 * 32 * 2, witers = 1 << 13;
    wgmma256_loop<<<sms, 256, smem256>>>(sink, 16);
    cudaEventRecord(t0);
    wgmma256_loop<<<sms, 256, smem256>>>(sink, witers);
    cudaEventRecord(t1);
    if (!ok(cudaEventSynchronize(t1), "wgmma256_loop")) return 1;
    float ms = 0;
    cudaEventElapsedTime(&ms, t0, t1);
    std::printf("wgmma m64n256k16 (the bf16 GEMM's), 2 warpgroups x 1 block per SM: %8.1f TFLOP/s\n",
                double(sms) * 2 * witers * (2.0 * 64 * 256 * 32) / (ms * 1e-3) / 1e12);
  }
  // L2 feed: 24 MB (under an H100's 50 MB and an A100's 40 MB of L2), 4 blocks of 512 an SM.
  const unsigned n = (24u << 20) / 16;
  uint4* buf = nullptr;
  if (!ok(cudaMalloc(&buf, size_t(n) * 16), "cudaMalloc (L2 buffer)")) return 1;
  cudaMemset(buf, 1, size_t(n) * 16);
  const int blocks = sms * 4, threads = 512, passes = 16;
  l2_loop<<<blocks, threads>>>(buf, n, 1, reinterpret_cast<unsigned*>(sink));  // warm: into L2
  cudaEventRecord(t0);
  l2_loop<<<blocks, threads>>>(buf, n, passes, reinterpret_cast<unsigned*>(sink));
  cudaEventRecord(t1);
  if (!ok(cudaEventSynchronize(t1), "l2_loop")) return 1;
  float ms = 0;
  cudaEventElapsedTime(&ms, t0, t1);
  const unsigned stride = unsigned(blocks) * threads;
  const double bytes = double(passes) * double(n / stride) * stride * 16;
  std::printf("L2 feed: %.2f TB/s, %.0f bytes per clock (at the reported clock), %.1f per SM\n", bytes / (ms * 1e-3) / 1e12,
              khz > 0 ? bytes / (ms * 1e-3) / (khz * 1e3) : 0.0, khz > 0 ? bytes / (ms * 1e-3) / (khz * 1e3) / sms : 0.0);
  cudaFree(buf);
  return 0;
}
