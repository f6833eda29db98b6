// Device helpers shared by the kernels that read or write a layer's paged KV cache (attention,
// kv_append, rope's fused append): the pool row of a position (kernels/kv_pages.h) and the cache
// element conversions.
#pragma once
#include "kernels/cuda/common.cuh"
#include "kernels/kv_pages.h"

namespace gptoss::cuda {
// Row of the pool holding position pos of sequence s. Positions are int32 (the step's positions
// array): 32-bit division, not the 64-bit division subroutine (whose call spilled registers).
__device__ __forceinline__ int64_t page_row(const KvPages& pg, int32_t s, int32_t pos) {
  return int64_t(pg.table[int64_t(s) * pg.ring + (pos / pg.page_size) % pg.ring]) * pg.page_size + pos % pg.page_size;
}
// f32 to bf16 bits, round to nearest even, NaN kept quiet: bit for bit the CPU's cpu::f32_to_bf16.
__device__ __forceinline__ uint16_t f32_to_bf16_bits(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
// Two f32 as bf16x2, round to nearest even; x in the low half (the lower column of an mma fragment).
__device__ __forceinline__ uint32_t pack_bf16x2(float x, float y) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(y), "f"(x));
  return r;
#else
  return uint32_t(f32_to_bf16_bits(x)) | uint32_t(f32_to_bf16_bits(y)) << 16;
#endif
}
__device__ __forceinline__ void store_cache(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_cache(uint16_t* p, float v) { *p = f32_to_bf16_bits(v); }
}  // namespace gptoss::cuda
