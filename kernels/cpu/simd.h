// Hot inner loops of the CPU ops, compiled three times (AVX-512, AVX2+FMA, portable) from
// simd_impl.h and chosen once at run time from what the CPU reports. The ops in kernels/cpu/*.cc
// call these through simd(); nothing here allocates or touches shared state.
//
// Layouts:
//   bf16 rows: uint16_t, row-major [rows, K], K a multiple of 32 for the vector paths.
//   MXFP4 rows: `blocks` [rows, K/32, 16] bytes (low nibble = even element), `scales` [rows, K/32]
//   E8M0 bytes (kernels/MODEL.md, "MXFP4"). Activations that meet MXFP4 weights are "block-split":
//   within each 32-wide block, the 16 even elements come first, then the 16 odd ones, so that
//   low and high nibbles each meet a contiguous run of x (see split_blocks).
#pragma once
#include <cstddef>
#include <cstdint>

namespace gptoss::cpu {

// ids per block of exp_sum's order (a multiple of every vector width).
constexpr int kExpSumBlock = 1024;

struct SimdKernels {
  const char* name;
  // y[r] = dot(W[r, :K], x) for r < rows (bf16 weights, f32 x given as split_pairs(x)).
  void (*gemv_bf16)(const uint16_t* W, size_t ldw, int rows, const float* x_pairs, int K, float* y);
  // y[t * ldy + r] = dot(W[r, :K], x[t]) for r < rows, t < n, x[t] = xs + t * ldx split_pairs'd: each
  // (row, token) exactly gemv_bf16's result, several tokens per pass over the rows.
  void (*gemm_bf16)(const uint16_t* W, size_t ldw, int rows, const float* xs, int64_t ldx, int n, int K, float* y,
                    int64_t ldy);
  // The layout gemv_bf16 reads x in (even/odd elements per vector-sized chunk; this variant's own).
  void (*split_pairs)(const float* x, float* out, int K);
  // y[r] = dot(Wmxfp4[r], x_split) for r < rows; x_split is block-split, K = nblocks * 32.
  void (*gemv_mxfp4)(const uint8_t* blocks, const uint8_t* scales, int rows, int nblocks,
                     const float* x_split, float* y);
  // The same for n tokens: y[t * ldy + r] = dot(Wmxfp4[r], x_split[t * ldx]); each block decoded
  // once for all of them, each token's result bit-identical to gemv_mxfp4's.
  void (*gemm_mxfp4)(const uint8_t* blocks, const uint8_t* scales, int rows, int nblocks, const float* x_split,
                     int64_t ldx, int n, float* y, int64_t ldy);
  void (*bf16_to_f32)(const uint16_t* src, float* dst, size_t n);
  float (*dot_f32)(const float* a, const float* b, int n);
  // y += a * x
  void (*axpy_f32)(float* y, float a, const float* x, int n);
  // out[h * ldo + j] = dot(q + h * ldq, k[j] + koff, n) for h < nq, j < nk (keys against a group of
  // query heads)
  void (*dots_f32)(const float* q, int64_t ldq, int nq, const float* const* k, int64_t koff, int nk, int n, float* out,
                   int64_t ldo);
  // y[h * ldy + i] += a[h * lda + j] * x[j][xoff + i] for h < ny, then j < nx in order, i < n
  // (value rows into a group of accumulators, one FMA per term)
  void (*axpys_f32)(float* y, int64_t ldy, int ny, const float* a, int64_t lda, const float* const* x, int64_t xoff,
                    int nx, int n);
  // e[i] = exp((l[i] - m) * scale) for i < n, returning the sum. Accurate to a few ulp for the
  // arguments <= 0 that softmax gives; arguments below -87 give 0. The sum's order is fixed, so
  // that the device sampler (kernels/cuda/sample.cu) reproduces it in parallel: the body (the
  // largest multiple of the vector width W) in blocks of kExpSumBlock ids, each block's W f32 lanes
  // (lane j: ids j, j + W, ... of the block, in order) added into W double lanes (block order), the
  // double lanes summed 0..W-1, then the tail ids one at a time in double.
  double (*exp_sum)(const float* l, float m, float scale, float* e, int n);
  // Sum of all floats (reads every byte once; used to measure memory read bandwidth).
  double (*sum_f32)(const float* x, size_t n);
};

// MXFP4 products on AVX-512 BF16 for precision 'default' (kernels/cpu/simd_avx512bf16.cc): x is
// split into hi = bf16(x) and lo = bf16(x - hi), and each E2M1 value (exact in bf16) meets both.
struct Bf16Kernels {
  // x[K] (K a multiple of 32) -> out[2K]: per 128 elements (four blocks), for n = 0..3 the hi of
  // the 32 elements 4j + n, then their lo; what is left (K % 128) per 64, hi of the 32 even
  // elements, hi of the 32 odd ones, lo of the even, lo of the odd; a last lone block of 32 the
  // same with 16 of each.
  void (*split_hilo)(const float* x, uint16_t* out, int K);
  // y[t * ldy + r] = dot(Wmxfp4[r], x[t]) for r < rows, t < n, x[t] = xs + t * ldx in split_hilo's
  // layout; each (row, token) computed the same way whatever rows and n are.
  void (*gemm_mxfp4)(const uint8_t* blocks, const uint8_t* scales, int rows, int nblocks, const uint16_t* xs,
                     int64_t ldx, int n, float* y, int64_t ldy);
};
extern const Bf16Kernels kBf16Avx512;
// The BF16 kernels when the avx512 variant is in use and the CPU has avx512_bf16 (GPTOSS_BF16=0
// turns them off, for comparisons); otherwise null.
const Bf16Kernels* simd_bf16();

// The best variant this CPU supports (AVX-512 > AVX2+FMA > portable), or the one named by
// the GPTOSS_SIMD environment variable ("avx512", "avx2", "generic") when that is supported.
const SimdKernels& simd();

extern const SimdKernels kSimdGeneric;
extern const SimdKernels kSimdAvx2;
extern const SimdKernels kSimdAvx512;

// E8M0 byte s -> half its scale, 2^(s-128): the f32 kernels' FP4 table (and the bf16 kernel's for
// a last one or two blocks) holds doubled values (small integers), and the half folds in here so a
// block's scale is one broadcast load. s = 255 is reserved (NaN in OCP); the checkpoints never use
// it, and it gives inf, not a silent finite value.
extern const float kE8m0Half[256];

// Reorders x[K] into block-split order (see the header comment). K must be a multiple of 32.
inline void split_blocks(const float* x, float* out, int K) {
  for (int g = 0; g < K; g += 32)
    for (int j = 0; j < 16; ++j) {
      out[g + j] = x[g + 2 * j];
      out[g + 16 + j] = x[g + 2 * j + 1];
    }
}

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even, NaN kept quiet.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

}  // namespace gptoss::cpu
