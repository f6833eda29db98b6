// moe_mxfp4: the expert MLPs of one MoE layer for a few tokens (decode), MXFP4 weights in the
// checkpoint's layout (kernels/MODEL.md, "Experts", "MXFP4"; reference kernels/cpu/moe_mxfp4.cc).
// One token (T = 1), two launches:
//   gate_up: act[s] = swiglu(W1[e] x[t] + b1[e])    grid (I / 32 row pairs per CTA, slot s = t * k + j)
//   down:    y = W2[e] act[s] + b2[e], then either stored per slot (the op's contract) or, fused
//            with moe_combine, out[t] (+)= sum_j w[t, j] y_j in the fixed order j = 0..k-1
//                                                   grid (H / 16 rows per CTA, token t)
// Batched decode (T >= 2), expert-major, so that each selected expert's weights come from DRAM once
// per step however the tokens are routed:
//   moe_dispatch (kernels/cuda/moe_dispatch.cu): the slots grouped by expert, cut into tiles of up
//            to kTile = 4 slots of one expert (deterministic, no atomics)
//   gate_up: grid (tile, I / 32 row pairs): the tile's CTAs stage its slots' x, decode each weight
//            once and apply it to all of them (acc[2][4] in registers); act per slot
//   down:    grid (tile + 1, H / 32 rows): the same over W2, y per slot (unweighted); the last x
//            index writes NaN rows for slots whose index lies outside [0, E)
//   combine: out[t] (+)= sum_j w[t, j] y[t * k + j], j = 0..k-1 (the fused op only)
// An expert's tiles are adjacent in x, so the CTAs reading the same rows run together and only the
// first reads DRAM. Per slot the arithmetic is the one-token path's (same staging, same products
// and sums, same combine), so a token's bits do not depend on the batch (tested).
// Layouts: blocks [E, rows, K/32, 16] (byte b of a block: element 2b low nibble, 2b+1 high nibble),
// scales [E, rows, K/32] (E8M0), rows of W1 interleave gate (even) and linear (odd).
//
// Work split. A CTA is 8 warps; a warp owns two weight rows at a time (gate_up: the gate/linear
// pair of one activation, so the SwiGLU needs no exchange; down: two output rows, for each of the
// token's k experts), 4 such pairs per warp in gate_up, 1 in the one-token down, 2 in the batched
// one. Lane l reads the 16-byte blocks l, l + 32, ... of both rows (ld.global.nc.v4, coalesced,
// every weight byte read once per launch), decodes them in registers, and the lanes' partial dot
// products meet in an xor-shuffle sum. The one-token gate_up groups its slots by expert: the CTA of
// the first slot choosing an expert runs all slots choosing it, the others exit.
//
// Decode (no table, no shared memory per weight). An E2M1 nibble s|e1 e0|m placed at f16 bits
// 15 and 11..9 is exactly its value times 2^-14 (subnormal e = 0 included): per 32-bit word of
// 8 nibbles, half2 i (i = 0..3) takes nibbles i and i + 4:
//   h_i = ((q << (9 - 4i)) & 0x0E000E00) | ((q << (12 - 4i)) & 0x80008000)
// = shift, shift, and, lop3 (3 for i = 3): 15 instructions per 8 weights. Each half2 meets the
// matching pair of activations (staged once per CTA in shared memory as f16x2 in that order,
// transposed so lanes read consecutive 16-byte words, conflict-free) in one HFMA2. The 16 HFMA2 of
// a 32-weight block accumulate in f16x2; the block sum is then converted to f32 and multiplied
// once by its E8M0 scale (folded with the 2^14 of the decode and the activation pre-scale) into an
// f32 accumulator. So per 16-byte weight load per token: 60 decode + 16 HFMA2 + 4 LDS.128 (shared
// by the two rows) + ~8 for the block scale and f32 accumulate + ~3 loop = ~88 instructions
// (2.75 per weight), against ~160 that H100 SXM can issue per warp-load at full HBM bandwidth
// (132 SMs x 4 schedulers x 1.98 GHz / (3.35 TB/s / 512 B)): memory-bound by the static roofline
// (kernels/cuda/lab.json, benchmarks/RESULTS.md; the PTX count is checked by npm run cuda:static).
//
// Precision. Activations are rounded to f16 after a per-vector power-of-two pre-scale that puts
// their largest magnitude in [2^13, 2^14) (exact; partial sums stay far below f16's 65504, and
// every element down to 2^-14 of the largest keeps full f16 precision); 16 products are summed in
// f16, everything after in f32. The tolerance this needs is derived in test/cuda/moe_mxfp4_test.cu.
// fp32 mode (MoeMxfp4Products::F32, the *_f32 kernels, same bodies): activations staged as f32, the
// decoded f16x2 widened exactly to f32 (cvt), 32 FFMA per block and vector, then the block factor:
// per 16-byte load per token ~60 decode + 32 cvt + 32 FFMA + 4 LDS.128 + ~8 = ~136 instructions,
// still under the ~160 of the memory-bound limit at one token (static roofline: a prediction).
// Per 16-byte load with n slots in a tile: ~130 decode and fixed + ~60 per slot (PTX: 210 at one,
// 389 at four), so a full tile of 4 is near the issue limit and more slots per expert are the
// grouped GEMM's (kernels/cuda/moe_mxfp4_gemm.cuh, moe_mxfp4_use_gemm).
// Limits (checked by the launchers): H, I positive multiples of 32; k <= 8; E <= 256 (the
// dispatch); 16-byte-aligned blocks and scratch; T * k < 65536; the staged activations fit the
// 48 KB of shared memory (4 x H x 2 bytes for gate_up, max(k, 4) x I x 2 bytes for down: H, I up
// to 6144 at k = 4). Weights of |w| >= 2^114 can make a block's f16 sum times its factor (the
// scale's 2^(s - 127), the decode's 2^14 and the pre-scale's up to 2^14) overflow to infinity:
// every E2M1 value is safe up to E8M0 scale 238, then the 6s at 239, the 4s and 6s at 240, and
// all from 241 (the factor itself); 255 is NaN in the OCP format and not expected. No trained
// weight comes near 2^114.
#include "kernels/cuda/moe_mxfp4.cuh"

#include <algorithm>
#include <string>

#include "kernels/cuda/moe_dispatch.cuh"
#include "kernels/op.h"

namespace gptoss {
namespace cuda {
namespace {
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// Row pairs a warp handles per CTA: gate_up 4 (90 CTAs per slot at I = 2880), down 1 (180 CTAs
// per token at H = 2880, so that one decode token still fills 132 SMs).
constexpr int kPairsPerWarpUp = 4, kPairsPerCtaUp = kWarps * kPairsPerWarpUp;
constexpr int kPairsPerWarpDown = 1, kPairsPerCtaDown = kWarps * kPairsPerWarpDown;
// Batched decode: slots per dispatch tile (one staging and one pass over the weights per CTA), and
// row pairs per warp in the down pass (32 rows per CTA: the staging of the tile's 4 activation
// vectors is repaid over more rows than the one-token pass's 16).
constexpr int kTile = 4;
constexpr int kPairsPerWarpDownG = 2, kPairsPerCtaDownG = kWarps * kPairsPerWarpDownG;
constexpr int kMaxVec = 8;                        // activation vectors one CTA stages
constexpr int kMaxK = kMaxVec;                    // experts per token (down pass)
constexpr size_t kMaxSmem = 48 * 1024;

// ---- f16x2 arithmetic: one PTX instruction each under nvcc; exact emulation on the CPU ----
#if defined(GPTOSS_CUDA_EMU)
inline float emu_h2f(uint32_t h) {
  h &= 0xffffu;
  const uint32_t s = (h & 0x8000u) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  if (e == 0) return s ? -std::ldexp(float(m), -24) : std::ldexp(float(m), -24);
  if (e == 31) return __uint_as_float(s | 0x7f800000u | (m << 13));
  return __uint_as_float(s | ((e + 112) << 23) | (m << 13));
}
// Round to nearest even, once, from a double (exact for a product of two f16 plus an f16 whose
// exponents are within 53 bits of each other, which covers every sum the kernel forms).
inline uint32_t emu_d2h(double v) {
  uint64_t u;
  std::memcpy(&u, &v, 8);
  const uint32_t s = uint32_t(u >> 48) & 0x8000u;
  const double a = std::fabs(v);
  if (std::isnan(v)) return s | 0x7e00u;
  if (a >= 65520.0) return s | 0x7c00u;
  if (a < 0x1p-14) return s | uint32_t(std::nearbyint(a * 0x1p24));
  const int e = int((u >> 52) & 0x7ff) - 1023;
  const uint64_t m = u & ((uint64_t(1) << 52) - 1), rem = m & ((uint64_t(1) << 42) - 1), half = uint64_t(1) << 41;
  uint32_t r = (uint32_t(e + 15) << 10) | uint32_t(m >> 42);
  if (rem > half || (rem == half && (r & 1))) ++r;  // a carry into the exponent is right
  return s | r;
}
#endif

// d = a * b + c on two f16 lanes, rounded once (fma.rn.f16x2).
__device__ __forceinline__ uint32_t hfma2(uint32_t a, uint32_t b, uint32_t c) {
#if defined(GPTOSS_CUDA_EMU)
  uint32_t r = 0;
  for (int i = 0; i < 32; i += 16)
    r |= emu_d2h(double(emu_h2f(a >> i)) * double(emu_h2f(b >> i)) + double(emu_h2f(c >> i))) << i;
  return r;
#else
  uint32_t d;
  asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
#endif
}
// lo + hi of an f16x2, in f32 (both conversions exact).
__device__ __forceinline__ float half2_sum(uint32_t h) {
#if defined(GPTOSS_CUDA_EMU)
  return emu_h2f(h) + emu_h2f(h >> 16);
#else
  float lo, hi;
  asm("{.reg .b16 l, h;\n\tmov.b32 {l, h}, %2;\n\tcvt.f32.f16 %0, l;\n\tcvt.f32.f16 %1, h;\n\t}"
      : "=f"(lo), "=f"(hi)
      : "r"(h));
  return lo + hi;
#endif
}
// An f16x2 as two exact f32 (the f32-products path).
__device__ __forceinline__ void half2_to_f32(uint32_t h, float& lo, float& hi) {
#if defined(GPTOSS_CUDA_EMU)
  lo = emu_h2f(h);
  hi = emu_h2f(h >> 16);
#else
  asm("{.reg .b16 l, h;\n\tmov.b32 {l, h}, %2;\n\tcvt.f32.f16 %0, l;\n\tcvt.f32.f16 %1, h;\n\t}"
      : "=f"(lo), "=f"(hi)
      : "r"(h));
#endif
}
// {lo, hi} rounded to f16 (nearest even), packed as f16x2.
__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
#if defined(GPTOSS_CUDA_EMU)
  return emu_d2h(lo) | (emu_d2h(hi) << 16);
#else
  uint32_t d;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(d) : "f"(hi), "f"(lo));
  return d;
#endif
}
// (a & m) | b in one LOP3.
__device__ __forceinline__ uint32_t and_or(uint32_t a, uint32_t m, uint32_t b) {
#if defined(GPTOSS_CUDA_EMU)
  return (a & m) | b;
#else
  uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(d) : "r"(a), "r"(m), "r"(b));
  return d;
#endif
}

// 8 E2M1 nibbles (element n of the word in bits 4n..4n+3) to 4 f16x2 = value * 2^-14:
// h[i] = {element i, element i + 4}.
__device__ __forceinline__ void decode8(uint32_t q, uint32_t h[4]) {
  constexpr uint32_t kEm = 0x0E000E00u, kSign = 0x80008000u;
  h[0] = and_or(q << 9, kEm, (q << 12) & kSign);
  h[1] = and_or(q << 5, kEm, (q << 8) & kSign);
  h[2] = and_or(q << 1, kEm, (q << 4) & kSign);
  h[3] = and_or(q >> 3, kEm, q & kSign);
}

// 2^(s - 127) * 2^14 (the decode's factor) as an f32; s > 240 saturates to infinity.
__device__ __forceinline__ float block_factor(uint32_t s) { return __uint_as_float(min(s + 14u, 255u) << 23); }

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

// The staged activations: vector v, 16-byte word m (elements 8m..8m+7 of each 32-block) of block
// c lives at xs[(v * 4 + m) * nb + c] as {x0|x4, x1|x5, x2|x6, x3|x7} (f16x2, pre-scaled).
struct Staged {
  uint4* xs;
  float* inv;  // [kMaxVec] 2^-pre-scale per vector, to undo after the dot product
};

// Stages nv vectors of K floats (src(v) gives vector v) into shared memory. Every thread of the
// CTA calls it; it ends with a barrier.
template <class Src>
__device__ void stage_vectors(int nv, const Src& src, int K, const Staged& st) {
  __shared__ uint32_t red[kWarps][kMaxVec];
  __shared__ float scale[kMaxVec];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  // Largest |x| per vector, compared as bits (non-negative floats order as integers; a NaN or
  // unwritten value is the largest, so it cannot pass unnoticed).
  for (int v = 0; v < nv; ++v) {
    const float* x = src(v);
    uint32_t m = 0;
    for (int i = tid; i < K; i += kThreads) m = max(m, __float_as_uint(x[i]) & 0x7fffffffu);
    m = __reduce_max_sync(kFullMask, m);
    if (lane == 0) red[warp][v] = m;
  }
  __syncthreads();
  if (tid < nv) {
    uint32_t m = 0;
    for (int w = 0; w < kWarps; ++w) m = max(m, red[w][tid]);
    // Pre-scale 2^p puts the largest magnitude in [2^13, 2^14).
    const int e = m ? int(m >> 23) - 127 : 0;
    const int p = min(max(m ? 13 - e : 0, -126), 126);
    scale[tid] = __uint_as_float(uint32_t(127 + p) << 23);
    st.inv[tid] = __uint_as_float(uint32_t(127 - p) << 23);
  }
  __syncthreads();
  const int nb = K / 32, groups = K / 8;
  for (int v = 0; v < nv; ++v) {
    const float* x = src(v);
    const float sc = scale[v];
    for (int g = tid; g < groups; g += kThreads) {
      const float* p = x + 8 * g;
      uint4 o;
      o.x = pack_half2(p[0] * sc, p[4] * sc);
      o.y = pack_half2(p[1] * sc, p[5] * sc);
      o.z = pack_half2(p[2] * sc, p[6] * sc);
      o.w = pack_half2(p[3] * sc, p[7] * sc);
      st.xs[(v * 4 + (g & 3)) * nb + (g >> 2)] = o;
    }
  }
  __syncthreads();
}

// Block c of two consecutive weight rows (blocks w, scales s; nb blocks each): its 32 E2M1 values
// per row as 16 half2 (decode8) and its E8M0 scale as a factor. Both dot_rows2 variants read it.
__device__ __forceinline__ void decode_rows2(const uint4* __restrict__ w, const uint8_t* __restrict__ s, int nb, int c,
                                             uint32_t h[2][16], float f[2]) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const uint4 q = __ldg(w + size_t(r) * nb + c);
    f[r] = block_factor(__ldg(s + size_t(r) * nb + c));
    decode8(q.x, h[r] + 0);
    decode8(q.y, h[r] + 4);
    decode8(q.z, h[r] + 8);
    decode8(q.w, h[r] + 12);
  }
}

// Two consecutive weight rows (blocks w, scales s; nb blocks each) against kN staged vectors
// (xs, vector stride 4 * nb words), n <= kN of them used. acc[r][v]: lane partial sums (f32,
// scaled by 2^pre-scale), to be warp-summed.
template <int kN>
__device__ __forceinline__ void dot_rows2(const uint4* __restrict__ w, const uint8_t* __restrict__ s, int nb,
                                          const uint4* xs, int n, float acc[2][kN]) {
  for (int c = threadIdx.x & 31; c < nb; c += 32) {
    uint32_t h[2][16];
    float f[2];
    decode_rows2(w, s, nb, c, h, f);
#pragma unroll
    for (int v = 0; v < kN; ++v) {
      if (v < n) {
        uint32_t p[2] = {0, 0};
#pragma unroll
        for (int m = 0; m < 4; ++m) {
          const uint4 xv = xs[(v * 4 + m) * nb + c];
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            p[r] = hfma2(h[r][4 * m + 0], xv.x, p[r]);
            p[r] = hfma2(h[r][4 * m + 1], xv.y, p[r]);
            p[r] = hfma2(h[r][4 * m + 2], xv.z, p[r]);
            p[r] = hfma2(h[r][4 * m + 3], xv.w, p[r]);
          }
        }
#pragma unroll
        for (int r = 0; r < 2; ++r) acc[r][v] = fmaf(half2_sum(p[r]), f[r], acc[r][v]);
      }
    }
  }
}

// The f32-products path (fp32 mode). Staged activations stay f32, unscaled: vector v, word m of
// block c is two float4 at xs[((v * 4 + m) * 2 + q) * nb + c], q = 0: {x0, x4, x1, x5},
// q = 1: {x2, x6, x3, x7} (the order of decode8's halves). Every thread calls it; ends with a barrier.
template <class Src>
__device__ void stage_vectors_f32(int nv, const Src& src, int K, const Staged& st) {
  const int tid = threadIdx.x, nb = K / 32, groups = K / 8;
  float4* xs = reinterpret_cast<float4*>(st.xs);
  if (tid < nv) st.inv[tid] = 1.f;
  for (int v = 0; v < nv; ++v) {
    const float* x = src(v);
    for (int g = tid; g < groups; g += kThreads) {
      const float* p = x + 8 * g;
      float4* o = xs + size_t((v * 4 + (g & 3)) * 2) * nb + (g >> 2);
      o[0] = make_float4(p[0], p[4], p[1], p[5]);
      o[nb] = make_float4(p[2], p[6], p[3], p[7]);
    }
  }
  __syncthreads();
}

// dot_rows2 with f32 products: the exact f16 decode (value * 2^-14) widened to f32, 32 FFMA per
// block and vector into two partial sums, then one FFMA by the block factor. Against the CPU op
// (kernels/cpu/moe_mxfp4.cc, f32 throughout) only the summation order differs.
template <int kN>
__device__ __forceinline__ void dot_rows2_f32(const uint4* __restrict__ w, const uint8_t* __restrict__ s, int nb,
                                              const float4* xs, int n, float acc[2][kN]) {
  for (int c = threadIdx.x & 31; c < nb; c += 32) {
    uint32_t h[2][16];
    float f[2];
    decode_rows2(w, s, nb, c, h, f);
#pragma unroll
    for (int v = 0; v < kN; ++v) {
      if (v < n) {
        float p[2][2] = {{0.f, 0.f}, {0.f, 0.f}};
#pragma unroll
        for (int m = 0; m < 4; ++m) {
          const float4 xa = xs[size_t((v * 4 + m) * 2) * nb + c], xb = xs[size_t((v * 4 + m) * 2 + 1) * nb + c];
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            float lo, hi;
            float& acc_m = p[r][m & 1];
            half2_to_f32(h[r][4 * m + 0], lo, hi);
            acc_m = fmaf(lo, xa.x, acc_m);
            acc_m = fmaf(hi, xa.y, acc_m);
            half2_to_f32(h[r][4 * m + 1], lo, hi);
            acc_m = fmaf(lo, xa.z, acc_m);
            acc_m = fmaf(hi, xa.w, acc_m);
            half2_to_f32(h[r][4 * m + 2], lo, hi);
            acc_m = fmaf(lo, xb.x, acc_m);
            acc_m = fmaf(hi, xb.y, acc_m);
            half2_to_f32(h[r][4 * m + 3], lo, hi);
            acc_m = fmaf(lo, xb.z, acc_m);
            acc_m = fmaf(hi, xb.w, acc_m);
          }
        }
#pragma unroll
        for (int r = 0; r < 2; ++r) acc[r][v] = fmaf(p[r][0] + p[r][1], f[r], acc[r][v]);
      }
    }
  }
}

// One of the two paths by kF32 (the kernels below are written once for both).
template <bool kF32, class Src>
__device__ __forceinline__ void stage(int nv, const Src& src, int K, const Staged& st) {
  if (kF32) stage_vectors_f32(nv, src, K, st);
  else stage_vectors(nv, src, K, st);
}
template <bool kF32, int kN>
__device__ __forceinline__ void dot2(const uint4* __restrict__ w, const uint8_t* __restrict__ s, int nb,
                                     const uint4* xs, int n, float acc[2][kN]) {
  if (kF32) dot_rows2_f32<kN>(w, s, nb, reinterpret_cast<const float4*>(xs), n, acc);
  else dot_rows2<kN>(w, s, nb, xs, n, acc);
}
// Words of staged vector v (uint4 units) from the first: f16 4 * nb, f32 8 * nb.
template <bool kF32>
__device__ __forceinline__ size_t staged_stride(int nb) { return size_t(kF32 ? 8 : 4) * nb; }

// The v-th slot (v = 0, 1, ...) at or after `from` that chose expert e; S if none.
__device__ __forceinline__ int nth_slot(const int32_t* idx, int S, int e, int from, int v) {
  for (int s = from; s < S; ++s)
    if (idx[s] == e && v-- == 0) return s;
  return S;
}

// One pass of gate_up over the CTA's row pairs (pair0 ...) of expert e for the n <= kTok staged
// vectors; slot_of(v) is the slot (row of act) of staged vector v.
template <int kTok, bool kF32, class SlotOf>
__device__ __forceinline__ void gate_up_pass(const Staged& st, int n, const SlotOf& slot_of, int e, int pair0,
                                             const uint8_t* __restrict__ w1b, const uint8_t* __restrict__ w1s,
                                             const uint16_t* __restrict__ b1, float* __restrict__ act, int H, int I,
                                             float limit, float alpha) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nb = H / 32;
  const uint4* wbase = reinterpret_cast<const uint4*>(w1b + size_t(e) * 2 * I * nb * 16);
  const uint8_t* sbase = w1s + size_t(e) * 2 * I * nb;
  const uint16_t* bias = b1 + size_t(e) * 2 * I;
  for (int pp = 0; pp < kPairsPerWarpUp; ++pp) {
    const int pair = pair0 + pp * kWarps + warp;
    if (pair >= I) break;
    float acc[2][kTok] = {};
    dot2<kF32, kTok>(wbase + size_t(2 * pair) * nb, sbase + size_t(2 * pair) * nb, nb, st.xs, n, acc);
#pragma unroll
    for (int v = 0; v < kTok; ++v) {
      if (v < n) {
        const float gs = warp_sum(acc[0][v]), ls = warp_sum(acc[1][v]);
        if (lane == 0) {
          // Clamp after the bias, in f32 (kernels/MODEL.md, "Experts"), as the CPU op.
          float g = gs * st.inv[v] + bf16_bits_to_f32(bias[2 * pair]);
          float l = ls * st.inv[v] + bf16_bits_to_f32(bias[2 * pair + 1]);
          g = fminf(g, limit);
          l = fminf(fmaxf(l, -limit), limit);
          const float glu = g / (1.f + expf(-alpha * g));
          act[size_t(slot_of(v)) * I + pair] = glu * (l + 1.f);
        }
      }
    }
  }
}

// One token (T = 1): grid (I / 32 row pairs, slot); the CTA of the first slot choosing an expert
// runs every slot choosing it (a router's k experts are distinct, so normally one each).
template <int kTok, bool kF32>
__device__ __forceinline__ void gate_up_body(const float* __restrict__ x, int64_t ldx, const int32_t* __restrict__ idx,
                      const uint8_t* __restrict__ w1b, const uint8_t* __restrict__ w1s,
                      const uint16_t* __restrict__ b1, float* __restrict__ act, int S, int k, int E, int H, int I,
                      float limit, float alpha) {
  __shared__ float inv[kMaxVec];
  const int slot = blockIdx.y;
  const int e = idx[slot];
  const int pair0 = blockIdx.x * kPairsPerCtaUp;
  if (e < 0 || e >= E) {  // the CPU op throws; here the slot's activations become NaN
    for (int i = threadIdx.x; i < kPairsPerCtaUp && pair0 + i < I; i += kThreads) act[size_t(slot) * I + pair0 + i] = NAN;
    return;
  }
  for (int s = 0; s < slot; ++s)
    if (idx[s] == e) return;  // an earlier slot's CTA runs this expert
  const Staged st{dynamic_shared<uint4>(), inv};
  for (int first = slot; first < S;) {
    int n = 0, next = S;
    for (int s = first; s < S; ++s)
      if (idx[s] == e) {
        if (n == kTok) { next = s; break; }
        ++n;
      }
    stage<kF32>(n, [&](int v) { return x + int64_t(nth_slot(idx, S, e, first, v) / k) * ldx; }, H, st);
    gate_up_pass<kTok, kF32>(st, n, [&](int v) { return nth_slot(idx, S, e, first, v); }, e, pair0, w1b, w1s, b1, act,
                             H, I, limit, alpha);
    first = next;
  }
}

// Batched decode (T >= 2), expert-major: grid (dispatch tile, I / 32 row pairs). Tile blockIdx.x
// of the dispatch plan is up to kTile slots of one expert (sorted rows row0 ...); its CTAs apply
// their row pairs to those slots in one pass, so each weight is decoded once per tile. The tiles
// of one expert are adjacent in x, so the CTAs reading the same rows run together and the rows
// come from DRAM once (later tiles from L2). CTAs past the plan's ntiles exit.
template <bool kF32>
__device__ __forceinline__ void gate_up_grouped_body(const float* __restrict__ x, int64_t ldx, const MoeDispatchPlan& g,
                                                     const uint8_t* __restrict__ w1b, const uint8_t* __restrict__ w1s,
                                                     const uint16_t* __restrict__ b1, float* __restrict__ act, int k,
                                                     int H, int I, float limit, float alpha) {
  __shared__ float inv[kMaxVec];
  const int tile = blockIdx.x;
  if (tile >= *g.ntiles) return;
  const int e = g.tile_expert[tile], row0 = g.tile_row0[tile];
  const int n = min(kTile, g.offsets[e + 1] - row0);
  const int32_t* rows = g.order + row0;
  const Staged st{dynamic_shared<uint4>(), inv};
  stage<kF32>(n, [&](int v) { return x + int64_t(rows[v] / k) * ldx; }, H, st);
  gate_up_pass<kTile, kF32>(st, n, [&](int v) { return rows[v]; }, e, int(blockIdx.y) * kPairsPerCtaUp, w1b, w1s, b1,
                            act, H, I, limit, alpha);
}

template <bool kFused, bool kF32>
__device__ __forceinline__ void down_body(const float* __restrict__ act, const int32_t* __restrict__ idx, const float* __restrict__ route_w,
                   const uint8_t* __restrict__ w2b, const uint8_t* __restrict__ w2s,
                   const uint16_t* __restrict__ b2, float* __restrict__ y, int64_t ldy, int k, int E, int H, int I,
                   bool accumulate) {
  __shared__ float inv[kMaxVec];
  const int t = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int nb = I / 32;
  const Staged st{dynamic_shared<uint4>(), inv};
  stage<kF32>(k, [&](int v) { return act + size_t(t * k + v) * I; }, I, st);
  const int npairs = H / 2;
  for (int pp = 0; pp < kPairsPerWarpDown; ++pp) {
    const int pair = blockIdx.x * kPairsPerCtaDown + pp * kWarps + warp;
    if (pair >= npairs) break;
    const int r0 = 2 * pair;
    float out0 = 0.f, out1 = 0.f;
    for (int j = 0; j < k; ++j) {
      const int e = idx[t * k + j];
      float y0 = NAN, y1 = NAN;
      if (e >= 0 && e < E) {
        float acc[2][1] = {{0.f}, {0.f}};
        dot2<kF32, 1>(reinterpret_cast<const uint4*>(w2b + (size_t(e) * H + r0) * nb * 16),
                      w2s + (size_t(e) * H + r0) * nb, nb, st.xs + size_t(j) * staged_stride<kF32>(nb), 1, acc);
        const float s0 = warp_sum(acc[0][0]), s1 = warp_sum(acc[1][0]);
        y0 = s0 * st.inv[j] + bf16_bits_to_f32(b2[size_t(e) * H + r0]);
        y1 = s1 * st.inv[j] + bf16_bits_to_f32(b2[size_t(e) * H + r0 + 1]);
      }
      if (kFused) {
        const float wj = route_w[t * k + j];
        out0 = fmaf(wj, y0, out0);
        out1 = fmaf(wj, y1, out1);
      } else if (lane == 0) {
        y[size_t(t * k + j) * ldy + r0] = y0;
        y[size_t(t * k + j) * ldy + r0 + 1] = y1;
      }
    }
    if (kFused && lane == 0) {
      float* o = y + size_t(t) * ldy + r0;
      o[0] = accumulate ? o[0] + out0 : out0;
      o[1] = accumulate ? o[1] + out1 : out1;
    }
  }
}

// Batched decode (T >= 2), expert-major as gate_up_grouped_body: grid (dispatch tile + 1,
// H / 2 / kPairsPerCtaDownG row pairs); y[slot] = W2[e] act[slot] + b2[e] for the tile's slots
// (unweighted: the combine applies the routing weights in the fixed order j = 0..k-1). The last x
// index writes NaN rows for the slots whose index lies outside [0, E) (in no tile).
template <bool kF32>
__device__ __forceinline__ void down_grouped_body(const float* __restrict__ act, const int32_t* __restrict__ idx,
                                                  const MoeDispatchPlan& g, const uint8_t* __restrict__ w2b,
                                                  const uint8_t* __restrict__ w2s, const uint16_t* __restrict__ b2,
                                                  float* __restrict__ y, int64_t ldy, int S, int E, int H, int I) {
  __shared__ float inv[kMaxVec];
  const int tile = blockIdx.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int pair0 = int(blockIdx.y) * kPairsPerCtaDownG;
  if (tile >= *g.ntiles) {
    if (tile == int(gridDim.x) - 1) {
      const int r0 = 2 * pair0, r1 = min(H, 2 * (pair0 + kPairsPerCtaDownG));
      for (int s = 0; s < S; ++s)
        if (idx[s] < 0 || idx[s] >= E)
          for (int r = r0 + int(threadIdx.x); r < r1; r += kThreads) y[size_t(s) * ldy + r] = NAN;
    }
    return;
  }
  const int e = g.tile_expert[tile], row0 = g.tile_row0[tile];
  const int n = min(kTile, g.offsets[e + 1] - row0);
  const int32_t* rows = g.order + row0;
  const int nb = I / 32;
  const Staged st{dynamic_shared<uint4>(), inv};
  stage<kF32>(n, [&](int v) { return act + size_t(rows[v]) * I; }, I, st);
  for (int pp = 0; pp < kPairsPerWarpDownG; ++pp) {
    const int pair = pair0 + pp * kWarps + warp;
    if (pair >= H / 2) break;
    const int r0 = 2 * pair;
    float acc[2][kTile] = {};
    dot2<kF32, kTile>(reinterpret_cast<const uint4*>(w2b + (size_t(e) * H + r0) * nb * 16), w2s + (size_t(e) * H + r0) * nb,
                      nb, st.xs, n, acc);
    const float bias0 = bf16_bits_to_f32(b2[size_t(e) * H + r0]), bias1 = bf16_bits_to_f32(b2[size_t(e) * H + r0 + 1]);
#pragma unroll
    for (int v = 0; v < kTile; ++v) {
      if (v < n) {
        const float s0 = warp_sum(acc[0][v]), s1 = warp_sum(acc[1][v]);
        if (lane == 0) {
          float* o = y + size_t(rows[v]) * ldy + r0;
          o[0] = s0 * st.inv[v] + bias0;
          o[1] = s1 * st.inv[v] + bias1;
        }
      }
    }
  }
}

// The combine of the batched path: out[t] (+)= sum_j route_w[t, j] * y[t * k + j], j = 0..k-1 in
// this order, one thread per element: the arithmetic of the fused T = 1 down pass and of the
// moe_combine op (kernels/cuda/moe_combine.cu), so a token's bits do not depend on the batch.
__device__ __forceinline__ void combine_body(const float* __restrict__ y, const float* __restrict__ route_w, int k, int H,
                                             float* __restrict__ out, int64_t ldo, bool accumulate) {
  const int i = blockIdx.x * kThreads + threadIdx.x;
  if (i >= H) return;
  const int t = blockIdx.y;
  float sum = 0.f;
  for (int j = 0; j < k; ++j) sum = fmaf(route_w[t * k + j], y[(size_t(t) * k + j) * H + i], sum);
  float* o = out + size_t(t) * ldo + i;
  *o = accumulate ? *o + sum : sum;
}

// The kernels: f16 products (the default) and f32 products (fp32 mode), one body each.
#define GPTOSS_MOE_GATE_UP_PARAMS                                                                              \
  const float *__restrict__ x, int64_t ldx, const int32_t *__restrict__ idx, const uint8_t *__restrict__ w1b,  \
      const uint8_t *__restrict__ w1s, const uint16_t *__restrict__ b1, float *__restrict__ act, int S, int k, \
      int E, int H, int I, float limit, float alpha
#define GPTOSS_MOE_DOWN_PARAMS                                                                                 \
  const float *__restrict__ act, const int32_t *__restrict__ idx, const float *__restrict__ route_w,          \
      const uint8_t *__restrict__ w2b, const uint8_t *__restrict__ w2s, const uint16_t *__restrict__ b2,      \
      float *__restrict__ y, int64_t ldy, int k, int E, int H, int I, bool accumulate
template <int kTok>
__global__ void __launch_bounds__(kThreads) moe_mxfp4_gate_up(GPTOSS_MOE_GATE_UP_PARAMS) {
  gate_up_body<kTok, false>(x, ldx, idx, w1b, w1s, b1, act, S, k, E, H, I, limit, alpha);
}
template <int kTok>
__global__ void __launch_bounds__(kThreads) moe_mxfp4_gate_up_f32(GPTOSS_MOE_GATE_UP_PARAMS) {
  gate_up_body<kTok, true>(x, ldx, idx, w1b, w1s, b1, act, S, k, E, H, I, limit, alpha);
}
template <bool kFused>
__global__ void __launch_bounds__(kThreads) moe_mxfp4_down(GPTOSS_MOE_DOWN_PARAMS) {
  down_body<kFused, false>(act, idx, route_w, w2b, w2s, b2, y, ldy, k, E, H, I, accumulate);
}
template <bool kFused>
__global__ void __launch_bounds__(kThreads) moe_mxfp4_down_f32(GPTOSS_MOE_DOWN_PARAMS) {
  down_body<kFused, true>(act, idx, route_w, w2b, w2s, b2, y, ldy, k, E, H, I, accumulate);
}
#define GPTOSS_MOE_GATE_UP_G_PARAMS                                                                          \
  const float *__restrict__ x, int64_t ldx, MoeDispatchPlan g, const uint8_t *__restrict__ w1b,              \
      const uint8_t *__restrict__ w1s, const uint16_t *__restrict__ b1, float *__restrict__ act, int k, int H, \
      int I, float limit, float alpha
#define GPTOSS_MOE_DOWN_G_PARAMS                                                                             \
  const float *__restrict__ act, const int32_t *__restrict__ idx, MoeDispatchPlan g,                         \
      const uint8_t *__restrict__ w2b, const uint8_t *__restrict__ w2s, const uint16_t *__restrict__ b2,     \
      float *__restrict__ y, int64_t ldy, int S, int E, int H, int I
__global__ void __launch_bounds__(kThreads) moe_mxfp4_gate_up_grouped(GPTOSS_MOE_GATE_UP_G_PARAMS) {
  gate_up_grouped_body<false>(x, ldx, g, w1b, w1s, b1, act, k, H, I, limit, alpha);
}
__global__ void __launch_bounds__(kThreads) moe_mxfp4_gate_up_grouped_f32(GPTOSS_MOE_GATE_UP_G_PARAMS) {
  gate_up_grouped_body<true>(x, ldx, g, w1b, w1s, b1, act, k, H, I, limit, alpha);
}
__global__ void __launch_bounds__(kThreads) moe_mxfp4_down_grouped(GPTOSS_MOE_DOWN_G_PARAMS) {
  down_grouped_body<false>(act, idx, g, w2b, w2s, b2, y, ldy, S, E, H, I);
}
__global__ void __launch_bounds__(kThreads) moe_mxfp4_down_grouped_f32(GPTOSS_MOE_DOWN_G_PARAMS) {
  down_grouped_body<true>(act, idx, g, w2b, w2s, b2, y, ldy, S, E, H, I);
}
__global__ void __launch_bounds__(kThreads) moe_mxfp4_combine_slots(const float* __restrict__ y,
                                                                     const float* __restrict__ route_w, int k, int H,
                                                                     float* __restrict__ out, int64_t ldo, bool accumulate) {
  combine_body(y, route_w, k, H, out, ldo, accumulate);
}
#undef GPTOSS_MOE_GATE_UP_PARAMS
#undef GPTOSS_MOE_DOWN_PARAMS
#undef GPTOSS_MOE_GATE_UP_G_PARAMS
#undef GPTOSS_MOE_DOWN_G_PARAMS

// Staged bytes per activation element: f16 2, f32 4.
inline size_t staged_bytes(MoeMxfp4Products p) { return p == MoeMxfp4Products::F32 ? 4 : 2; }

// The scratch: the dispatch plan (batched path), the SwiGLU activations [T * k, I] and the per-slot
// down outputs [T * k, H] (batched combined path), each 64-byte aligned.
struct Scratch {
  MoeDispatchPlan plan;
  uint8_t* plan_base;
  size_t plan_bytes;
  float* act;
  float* yslot;
  size_t bytes;
};
Scratch carve_scratch(uint8_t* base, int T, int k, int E, int H, int I) {
  ScratchCarver c{base, 0, SIZE_MAX};
  Scratch s;
  s.plan_bytes = moe_dispatch_scratch_cuda(T, k, E, kTile);
  s.plan_base = c.take<uint8_t>(s.plan_bytes);
  s.act = c.take<float>(size_t(T) * k * I);
  s.yslot = c.take<float>(size_t(T) * k * H);
  s.bytes = c.used;
  s.plan = base ? moe_dispatch_carve(s.plan_base, T, k, E, kTile) : MoeDispatchPlan{};
  return s;
}

void check_args(const MoeMxfp4Args& a, const char* op, MoeMxfp4Products products) {
  const std::string p = std::string(op) + ": ";
  if (a.T < 0 || a.k < 1 || a.k > kMaxK || a.E < 1 || a.E > 256 || a.H < 32 || a.H % 32 || a.I < 32 || a.I % 32)
    throw invalid_argument(p + "need T >= 0, 1 <= k <= 8, 1 <= E <= 256, H and I positive multiples of 32");
  if (int64_t(a.T) * a.k > 65535) throw invalid_argument(p + "T * k must be below 65536");
  if (a.ldx < a.H) throw invalid_argument(p + "ldx must be >= H");
  if (!a.x || !a.idx || !a.w1_blocks || !a.w1_scales || !a.b1 || !a.w2_blocks || !a.w2_scales || !a.b2)
    throw invalid_argument(p + "null pointer");
  if (!aligned(a.w1_blocks, 16) || !aligned(a.w2_blocks, 16))
    throw invalid_argument(p + "the MXFP4 blocks must be 16-byte aligned (read with 16-byte loads)");
  const size_t eb = staged_bytes(products);
  if (size_t(4) * a.H * eb > kMaxSmem || size_t(std::max(a.k, kTile)) * a.I * eb > kMaxSmem)
    throw invalid_argument(p + (eb == 2 ? "4 * H * 2 and max(k, 4) * I * 2" : "4 * H * 4 and max(k, 4) * I * 4 (f32 products)") +
                           " bytes of staged activations must fit 48 KB of shared memory");
  if (a.T > 0 && (!a.scratch || !aligned(a.scratch, 16) ||
                  a.scratch_bytes < moe_mxfp4_scratch_cuda(a.T, a.k, a.E, a.H, a.I)))
    throw invalid_argument(p + "scratch must be 16-byte aligned and hold moe_mxfp4_scratch_cuda(T, k, E, H, I) bytes");
}

// One token: the first-slot grouping of gate_up_body, one pass of up to kTok = 1 vector.
void launch_gate_up(const MoeMxfp4Args& a, float* act, MoeMxfp4Products products, cudaStream_t stream) {
  const int S = a.T * a.k;
  const dim3 grid(unsigned((a.I + kPairsPerCtaUp - 1) / kPairsPerCtaUp), unsigned(S));
  const size_t smem = size_t(1) * a.H * staged_bytes(products);
  if (products == MoeMxfp4Products::F32)
    GPTOSS_LAUNCH(moe_mxfp4_gate_up_f32<1>, grid, dim3(kThreads), smem, stream, a.x, a.ldx, a.idx, a.w1_blocks,
                  a.w1_scales, a.b1, act, S, a.k, a.E, a.H, a.I, a.limit, a.alpha);
  else
    GPTOSS_LAUNCH(moe_mxfp4_gate_up<1>, grid, dim3(kThreads), smem, stream, a.x, a.ldx, a.idx, a.w1_blocks,
                  a.w1_scales, a.b1, act, S, a.k, a.E, a.H, a.I, a.limit, a.alpha);
  check_launch("moe_mxfp4 (gate_up)");
}

// One token's down pass, per slot (kFused false: out = y, ldo = H) or combined.
template <bool kFused>
void launch_down(const MoeMxfp4Args& a, const float* act, const float* route_w, float* out, int64_t ldo, bool accumulate,
                 MoeMxfp4Products products, cudaStream_t stream) {
  const dim3 grid(unsigned((a.H / 2 + kPairsPerCtaDown - 1) / kPairsPerCtaDown), unsigned(a.T));
  const size_t smem = size_t(a.k) * a.I * staged_bytes(products);
  if (products == MoeMxfp4Products::F32)
    GPTOSS_LAUNCH(moe_mxfp4_down_f32<kFused>, grid, dim3(kThreads), smem, stream, act, a.idx, route_w, a.w2_blocks,
                  a.w2_scales, a.b2, out, ldo, a.k, a.E, a.H, a.I, accumulate);
  else
    GPTOSS_LAUNCH(moe_mxfp4_down<kFused>, grid, dim3(kThreads), smem, stream, act, a.idx, route_w, a.w2_blocks,
                  a.w2_scales, a.b2, out, ldo, a.k, a.E, a.H, a.I, accumulate);
  check_launch(kFused ? "moe_mxfp4 (down, combined)" : "moe_mxfp4 (down)");
}

// Batched decode: the dispatch, then gate_up and down expert-major over its tiles; y gets the
// per-slot outputs (ldy).
void launch_grouped(const MoeMxfp4Args& a, const Scratch& sc, float* y, int64_t ldy, MoeMxfp4Products products,
                    cudaStream_t stream) {
  const int S = a.T * a.k;
  moe_dispatch_cuda(a.idx, a.T, a.k, a.E, kTile, sc.plan_base, sc.plan_bytes, stream);
  const unsigned tiles = unsigned(moe_dispatch_max_tiles(S, a.E, kTile));
  const size_t eb = staged_bytes(products);
  const bool f32 = products == MoeMxfp4Products::F32;
  const dim3 gu(tiles, unsigned((a.I + kPairsPerCtaUp - 1) / kPairsPerCtaUp));
  if (f32)
    GPTOSS_LAUNCH(moe_mxfp4_gate_up_grouped_f32, gu, dim3(kThreads), size_t(kTile) * a.H * eb, stream, a.x, a.ldx,
                  sc.plan, a.w1_blocks, a.w1_scales, a.b1, sc.act, a.k, a.H, a.I, a.limit, a.alpha);
  else
    GPTOSS_LAUNCH(moe_mxfp4_gate_up_grouped, gu, dim3(kThreads), size_t(kTile) * a.H * eb, stream, a.x, a.ldx, sc.plan,
                  a.w1_blocks, a.w1_scales, a.b1, sc.act, a.k, a.H, a.I, a.limit, a.alpha);
  check_launch("moe_mxfp4 (gate_up, grouped)");
  const dim3 dn(tiles + 1, unsigned((a.H / 2 + kPairsPerCtaDownG - 1) / kPairsPerCtaDownG));
  if (f32)
    GPTOSS_LAUNCH(moe_mxfp4_down_grouped_f32, dn, dim3(kThreads), size_t(kTile) * a.I * eb, stream, sc.act, a.idx,
                  sc.plan, a.w2_blocks, a.w2_scales, a.b2, y, ldy, S, a.E, a.H, a.I);
  else
    GPTOSS_LAUNCH(moe_mxfp4_down_grouped, dn, dim3(kThreads), size_t(kTile) * a.I * eb, stream, sc.act, a.idx, sc.plan,
                  a.w2_blocks, a.w2_scales, a.b2, y, ldy, S, a.E, a.H, a.I);
  check_launch("moe_mxfp4 (down, grouped)");
}
}  // namespace
}  // namespace cuda

size_t moe_mxfp4_scratch_cuda(int T, int k, int E, int H, int I) {
  return cuda::carve_scratch(nullptr, T, k, E, H, I).bytes;
}

void moe_mxfp4_cuda(const MoeMxfp4Args& a, cudaStream_t stream, MoeMxfp4Products products) {
  using namespace cuda;
  check_args(a, "moe_mxfp4", products);
  if (!a.y) throw invalid_argument("moe_mxfp4: null pointer y");
  if (a.T == 0) return;
  const Scratch sc = carve_scratch(a.scratch, a.T, a.k, a.E, a.H, a.I);
  if (a.T >= 2) return launch_grouped(a, sc, a.y, int64_t(a.H), products, stream);
  launch_gate_up(a, sc.act, products, stream);
  launch_down<false>(a, sc.act, nullptr, a.y, int64_t(a.H), false, products, stream);
}

void moe_mxfp4_combine_cuda(const MoeMxfp4Args& a, const MoeCombineFused& f, cudaStream_t stream,
                            MoeMxfp4Products products) {
  using namespace cuda;
  check_args(a, "moe_mxfp4", products);
  if (!f.route_w || !f.out || f.ldo < a.H) throw invalid_argument("moe_mxfp4: need route_w, out and ldo >= H");
  if (a.T == 0) return;
  const Scratch sc = carve_scratch(a.scratch, a.T, a.k, a.E, a.H, a.I);
  if (a.T >= 2) {
    launch_grouped(a, sc, sc.yslot, int64_t(a.H), products, stream);
    GPTOSS_LAUNCH(moe_mxfp4_combine_slots, dim3(unsigned((a.H + kThreads - 1) / kThreads), unsigned(a.T)),
                  dim3(kThreads), 0, stream, sc.yslot, f.route_w, a.k, a.H, f.out, f.ldo, f.accumulate);
    check_launch("moe_mxfp4 (combine)");
    return;
  }
  launch_gate_up(a, sc.act, products, stream);
  launch_down<true>(a, sc.act, f.route_w, f.out, f.ldo, f.accumulate, products, stream);
}
}  // namespace gptoss
