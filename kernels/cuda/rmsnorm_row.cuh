// RMSNorm of one row inside another kernel (device code, for .cu files only): the reduction of
// kernels/cuda/rmsnorm.cu written once, so a kernel that normalises its own input (the GEMV and the
// router with the norm folded in front: one launch, one CUDA graph node fewer per norm) computes
// bit for bit what rmsnorm_cuda would have written. The sum order is fixed at 256 partial sums
// (partial p: elements p, p + 256, ... as float4 groups when kVec), an xor-shuffle tree per 32,
// then a tree over the 8; a block of kThreads < 256 threads plays 256 / kThreads of them each.
#pragma once
#include "kernels/cuda/common.cuh"

namespace gptoss::cuda::norm {
constexpr int kParts = 256;  // partial sums of squares, whatever the block size
constexpr int kRedFloats = kParts / 32 + 1;  // a caller's __shared__ scratch: 8 warp sums + 1/rms

__device__ __forceinline__ float sq4(float s, float4 v) {
  s = __fmaf_rn(v.x, v.x, s);
  s = __fmaf_rn(v.y, v.y, s);
  s = __fmaf_rn(v.z, v.z, s);
  return __fmaf_rn(v.w, v.w, s);
}

// 1 / sqrt(mean(x^2) + eps) of xr[0, H), returned to every thread of the block; every thread calls
// it (two __syncthreads inside). kVec: H % 4 == 0 and xr 16-byte aligned. red: kRedFloats of
// __shared__ memory, reused by the next call (the 1/rms slot is written only after its barrier).
template <int kThreads, bool kVec>
__device__ __forceinline__ float inv_rms(const float* xr, int H, float eps, float* red) {
  static_assert(kThreads % 32 == 0 && kParts % kThreads == 0, "a block plays whole warps of the 256 partials");
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int v = 0; v < kParts / kThreads; ++v) {
    const int p = threadIdx.x + v * kThreads;
    float ss = 0.f;
    if (kVec) {
      for (int i = p; i < H / 4; i += kParts) ss = sq4(ss, reinterpret_cast<const float4*>(xr)[i]);
    } else {
      for (int i = p; i < H; i += kParts) ss = __fmaf_rn(xr[i], xr[i], ss);
    }
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(kFullMask, ss, o);
    if (lane == 0) red[p >> 5] = ss;
  }
  __syncthreads();
  if (threadIdx.x < 32) {
    float s = lane < kParts / 32 ? red[lane] : 0.f;
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(kFullMask, s, o);
    // IEEE sqrt and division (nvcc's defaults), as the CPU op computes 1 / sqrt in one rounding.
    if (lane == 0) red[kParts / 32] = 1.f / sqrtf(s / float(H) + eps);
  }
  __syncthreads();
  return red[kParts / 32];
}

// One element of the normalised row: (x * inv) * gain, two roundings, as rmsnorm.cu stores it.
__device__ __forceinline__ float scale(float x, float inv, uint16_t gain_bits) {
  return __fmul_rn(__fmul_rn(x, inv), bf16_bits_to_f32(gain_bits));
}
// Four of them: x[4 i, 4 i + 4) with the gains of two 32-bit words (g01: elements 0 and 1).
__device__ __forceinline__ float4 scale4(float4 v, float inv, uint32_t g01, uint32_t g23) {
  return make_float4(scale(v.x, inv, g01 & 0xffffu), scale(v.y, inv, g01 >> 16), scale(v.z, inv, g23 & 0xffffu),
                     scale(v.w, inv, g23 >> 16));
}
}  // namespace gptoss::cuda::norm
