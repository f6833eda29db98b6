// Included once per instruction set by simd_avx512.cc, simd_avx2.cc and simd_generic.cc, each
// compiled with its own target flags. Only <immintrin.h> and C headers here: an inline std::
// template instantiated under -mavx512f could be picked by the linker for generic code.
// Every function is static so the three copies never meet.
#include <cstddef>
#include <cstdint>
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif
#include "kernels/cpu/simd.h"

namespace {

using gptoss::cpu::kE8m0Half;

// The doubled E2M1 values (exact small integers, so the nibble lookup can be a byte shuffle);
// the 0.5 is folded into the block scale. kernels/MODEL.md, "MXFP4".
constexpr int8_t kFp4x2[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

#if defined(__AVX512F__)
constexpr int W = 16;
using V = __m512;
inline V vzero() { return _mm512_setzero_ps(); }
inline V vload(const float* p) { return _mm512_loadu_ps(p); }
inline void vstore(float* p, V v) { _mm512_storeu_ps(p, v); }
inline V vset1(float a) { return _mm512_set1_ps(a); }
inline V vfma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
inline V vmul(V a, V b) { return _mm512_mul_ps(a, b); }
inline V vadd(V a, V b) { return _mm512_add_ps(a, b); }
inline float vsum(V v) { return _mm512_reduce_add_ps(v); }
// out[j] = the sum of a[j]'s lanes, j < 16, as one tree over all 16 (45 shuffles and adds, where 16
// reductions take 16 x 8).
inline void vsums(const V* a, float* out) {
  V b[8], c[4];
  for (int p = 0; p < 8; ++p)  // per 128-bit lane: [a0 a1 a0 a1] pairs of partials
    b[p] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * p], a[2 * p + 1]), _mm512_unpackhi_ps(a[2 * p], a[2 * p + 1]));
  for (int p = 0; p < 4; ++p)  // per 128-bit lane: [a0 a1 a2 a3]
    c[p] = _mm512_add_ps(_mm512_shuffle_ps(b[2 * p], b[2 * p + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(b[2 * p], b[2 * p + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  const V d = _mm512_add_ps(_mm512_shuffle_f32x4(c[0], c[1], _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_f32x4(c[0], c[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const V e = _mm512_add_ps(_mm512_shuffle_f32x4(c[2], c[3], _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_f32x4(c[2], c[3], _MM_SHUFFLE(3, 1, 3, 1)));
  _mm512_storeu_ps(out, _mm512_add_ps(_mm512_shuffle_f32x4(d, e, _MM_SHUFFLE(2, 0, 2, 0)),
                                      _mm512_shuffle_f32x4(d, e, _MM_SHUFFLE(3, 1, 3, 1))));
}
inline V vload_bf16(const uint16_t* p) {
  __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
// 16 packed bytes -> (even elements, odd elements) as doubled FP4 values in f32: each byte
// widened to a 32-bit lane, then a 16-entry float table indexed by its low bits (vpermps reads
// only bits 0-3 of each index, so the high nibble needs no mask): 3 shuffles per 32 values.
alignas(64) constexpr float kFp4x2f[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
inline void vdecode_fp4(const uint8_t* b, V& lo, V& hi) {
  const V lut = _mm512_load_ps(kFp4x2f);
  __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b)));
  lo = _mm512_permutexvar_ps(q, lut);
  hi = _mm512_permutexvar_ps(_mm512_srli_epi32(q, 4), lut);
}
#elif defined(__AVX2__)
constexpr int W = 8;
using V = __m256;
inline V vzero() { return _mm256_setzero_ps(); }
inline V vload(const float* p) { return _mm256_loadu_ps(p); }
inline void vstore(float* p, V v) { _mm256_storeu_ps(p, v); }
inline V vset1(float a) { return _mm256_set1_ps(a); }
inline V vfma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
inline V vmul(V a, V b) { return _mm256_mul_ps(a, b); }
inline V vadd(V a, V b) { return _mm256_add_ps(a, b); }
inline float vsum(V v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
// out[j] = the sum of a[j]'s lanes, j < 8, as one tree over all 8.
inline void vsums(const V* a, float* out) {
  V b[4], c[2];
  for (int p = 0; p < 4; ++p)
    b[p] = _mm256_add_ps(_mm256_unpacklo_ps(a[2 * p], a[2 * p + 1]), _mm256_unpackhi_ps(a[2 * p], a[2 * p + 1]));
  for (int p = 0; p < 2; ++p)
    c[p] = _mm256_add_ps(_mm256_shuffle_ps(b[2 * p], b[2 * p + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm256_shuffle_ps(b[2 * p], b[2 * p + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  _mm256_storeu_ps(out, _mm256_add_ps(_mm256_permute2f128_ps(c[0], c[1], 0x20), _mm256_permute2f128_ps(c[0], c[1], 0x31)));
}
inline V vload_bf16(const uint16_t* p) {
  __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
#else
// Portable: plain loops over 8 lanes that the compiler may vectorise for the baseline ISA.
constexpr int W = 8;
struct V { float v[8]; };
inline V vzero() { return V{}; }
inline V vload(const float* p) { V r; for (int i = 0; i < 8; ++i) r.v[i] = p[i]; return r; }
inline void vstore(float* p, V a) { for (int i = 0; i < 8; ++i) p[i] = a.v[i]; }
inline V vset1(float a) { V r; for (int i = 0; i < 8; ++i) r.v[i] = a; return r; }
inline V vfma(V a, V b, V c) { for (int i = 0; i < 8; ++i) c.v[i] += a.v[i] * b.v[i]; return c; }
inline V vmul(V a, V b) { for (int i = 0; i < 8; ++i) a.v[i] *= b.v[i]; return a; }
inline V vadd(V a, V b) { for (int i = 0; i < 8; ++i) a.v[i] += b.v[i]; return a; }
inline float vsum(V a) { float s = 0; for (int i = 0; i < 8; ++i) s += a.v[i]; return s; }
inline void vsums(const V* a, float* out) { for (int j = 0; j < 8; ++j) out[j] = vsum(a[j]); }
inline V vload_bf16(const uint16_t* p) {
  V r;
  for (int i = 0; i < 8; ++i) r.v[i] = gptoss::cpu::bf16_to_f32(p[i]);
  return r;
}
#endif

#if !defined(__AVX512F__)
// 16 packed bytes -> even / odd elements, W lanes at a time (two calls' worth for W = 8).
inline void vdecode_fp4_8(const uint8_t* b, V& lo, V& hi) {  // 8 bytes -> 8 even + 8 odd
#if defined(__AVX2__)
  const __m128i lut = _mm_loadu_si128(reinterpret_cast<const __m128i*>(kFp4x2));
  const __m128i m = _mm_set1_epi8(0x0f);
  __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b));
  __m128i l = _mm_shuffle_epi8(lut, _mm_and_si128(q, m));
  __m128i h = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(q, 4), m));
  lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(l));
  hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(h));
#else
  for (int i = 0; i < 8; ++i) {
    lo.v[i] = kFp4x2[b[i] & 15];
    hi.v[i] = kFp4x2[b[i] >> 4];
  }
#endif
}
#endif

inline float scalar_dot(const float* a, const float* b, int n) {
  float s = 0;
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// bf16 pairs in one 32-bit lane: the odd element is the high half (so masking the low half off
// gives it as f32) and the even one the low half (shifting left by 16 gives it). Two cheap integer
// ops instead of a widening shuffle per vector; x is pre-split to match (split_pairs).
#if defined(__AVX512F__)
inline void vload_bf16_pairs(const uint16_t* p, V& even, V& odd) {
  __m512i v = _mm512_loadu_si512(p);
  even = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
  odd = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(int(0xffff0000u))));
}
#elif defined(__AVX2__)
inline void vload_bf16_pairs(const uint16_t* p, V& even, V& odd) {
  __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  even = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
  odd = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(int(0xffff0000u))));
}
#else
inline void vload_bf16_pairs(const uint16_t* p, V& even, V& odd) {
  for (int i = 0; i < 8; ++i) {
    even.v[i] = gptoss::cpu::bf16_to_f32(p[2 * i]);
    odd.v[i] = gptoss::cpu::bf16_to_f32(p[2 * i + 1]);
  }
}
#endif

// x[K] -> per 2W-chunk: the W even elements, then the W odd ones; the tail stays in order.
void split_pairs(const float* x, float* out, int K) {
  const int Kv = K - K % (2 * W);
  for (int c = 0; c < Kv; c += 2 * W)
    for (int j = 0; j < W; ++j) {
      out[c + j] = x[c + 2 * j];
      out[c + W + j] = x[c + 2 * j + 1];
    }
  for (int k = Kv; k < K; ++k) out[k] = x[k];
}

// R rows against one token, each row's chain as in gemv_bf16. `ahead`: the next group's rows (or
// null), fetched a line a row per step as these are read.
template <int R>
inline void gemv_rows(const uint16_t* w, size_t ldw, const float* xs, int K, float* y, const uint16_t* ahead) {
  const int Kv = K - K % (2 * W);
  V a[R];
  for (int i = 0; i < R; ++i) a[i] = vzero();
  for (int k = 0; k < Kv; k += 2 * W) {
    if (ahead)
      for (int i = 0; i < R; ++i) __builtin_prefetch(ahead + i * ldw + k);
    const V xe = vload(xs + k), xo = vload(xs + k + W);
    for (int i = 0; i < R; ++i) {
      V e, o;
      vload_bf16_pairs(w + i * ldw + k, e, o);
      a[i] = vfma(o, xo, vfma(e, xe, a[i]));
    }
  }
  for (int i = 0; i < R; ++i) {
    float s = vsum(a[i]);
    for (int k = Kv; k < K; ++k) s += gptoss::cpu::bf16_to_f32(w[i * ldw + k]) * xs[k];
    y[i] = s;
  }
}

void gemv_bf16(const uint16_t* Wt, size_t ldw, int rows, const float* xs, int K, float* y) {
  // Eight rows at a time share every load of x, and the next eight are fetched as these are read:
  // interleaved streams are more than the hardware prefetchers keep ahead of (the 1.16 GB
  // unembedding ran 15-20% faster with the fetch, four rows, two threads, this VM, alternating
  // calls), and eight rows keep twice the lines of four in flight (the unembedding at 48.9-54.3
  // GB/s against 45.0-49.9 with four, faster in each of five alternating rounds).
  constexpr int R = 8;
  int r = 0;
  for (; r + R <= rows; r += R)
    gemv_rows<R>(Wt + size_t(r) * ldw, ldw, xs, K, y + r, r + 2 * R <= rows ? Wt + size_t(r + R) * ldw : nullptr);
  for (; r < rows; ++r) gemv_rows<1>(Wt + size_t(r) * ldw, ldw, xs, K, y + r, nullptr);
}

// n tokens against the same bf16 rows (x[t] = xs + t * ldx, each split_pairs'd): four rows by NT
// tokens per pass over K, so each weight vector is loaded and widened once for NT tokens instead of
// once per token (prefill's QKV and output projections were bound by that). Each (row, token) is
// exactly gemv_bf16's arithmetic, so a token's result does not depend on what shares the call.
#if defined(__AVX512F__)
constexpr int kBf16Tokens = 4;  // 16 accumulators + 8 widened weight vectors of 32 registers
#else
constexpr int kBf16Tokens = 2;  // 16 registers
#endif
void gemm_bf16(const uint16_t* Wt, size_t ldw, int rows, const float* xs, int64_t ldx, int n, int K, float* y,
               int64_t ldy) {
  constexpr int NT = kBf16Tokens;
  const int Kv = K - K % (2 * W);
  int t = 0;
  for (; t + NT <= n; t += NT) {
    int r = 0;
    for (; r + 4 <= rows; r += 4) {
      const uint16_t* w[4];
      for (int i = 0; i < 4; ++i) w[i] = Wt + size_t(r + i) * ldw;
      V a[4][NT];
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < NT; ++j) a[i][j] = vzero();
      for (int k = 0; k < Kv; k += 2 * W) {
        V e[4], o[4];
        for (int i = 0; i < 4; ++i) vload_bf16_pairs(w[i] + k, e[i], o[i]);
        for (int j = 0; j < NT; ++j) {
          const V xe = vload(xs + (t + j) * ldx + k), xo = vload(xs + (t + j) * ldx + k + W);
          for (int i = 0; i < 4; ++i) a[i][j] = vfma(o[i], xo, vfma(e[i], xe, a[i][j]));
        }
      }
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < NT; ++j) {
          const float* x = xs + (t + j) * ldx;
          float s = vsum(a[i][j]);
          for (int k = Kv; k < K; ++k) s += gptoss::cpu::bf16_to_f32(w[i][k]) * x[k];
          y[(t + j) * ldy + r + i] = s;
        }
    }
    if (r < rows)
      for (int j = 0; j < NT; ++j)
        gemv_bf16(Wt + size_t(r) * ldw, ldw, rows - r, xs + (t + j) * ldx, K, y + (t + j) * ldy + r);
  }
  for (; t < n; ++t) gemv_bf16(Wt, ldw, rows, xs + t * ldx, K, y + t * ldy);
}

// NT tokens against the same MXFP4 rows: each block is decoded once and used for every token,
// and each token's arithmetic is exactly that of a lone token (same operations, same order), so
// the result does not depend on how many tokens share the call.
template <int NT>
inline void mxfp4_rows(const uint8_t* blocks, const uint8_t* scales, int rows, int nblocks, const float* xs, int64_t ldx,
                       float* y, int64_t ldy) {
  for (int r = 0; r < rows; ++r) {
    const uint8_t* b = blocks + size_t(r) * nblocks * 16;
    const uint8_t* s = scales + size_t(r) * nblocks;
    V acc0[NT], acc1[NT];
    for (int t = 0; t < NT; ++t) acc0[t] = acc1[t] = vzero();
    for (int g = 0; g < nblocks; ++g) {
      const V sc = vset1(kE8m0Half[s[g]]);
#if defined(__AVX512F__)
      V lo, hi;
      vdecode_fp4(b + g * 16, lo, hi);
#else
      V lo0, hi0, lo1, hi1;
      vdecode_fp4_8(b + g * 16, lo0, hi0);
      vdecode_fp4_8(b + g * 16 + 8, lo1, hi1);
#endif
#pragma GCC unroll 8
      for (int t = 0; t < NT; ++t) {
        const float* x = xs + t * ldx + g * 32;
#if defined(__AVX512F__)
        const V blk = vfma(lo, vload(x), vmul(hi, vload(x + 16)));
#else
        const V blk = vfma(lo0, vload(x), vfma(lo1, vload(x + 8), vfma(hi0, vload(x + 16), vmul(hi1, vload(x + 24)))));
#endif
        if (g & 1) acc1[t] = vfma(blk, sc, acc1[t]);
        else acc0[t] = vfma(blk, sc, acc0[t]);
      }
    }
    for (int t = 0; t < NT; ++t) y[t * ldy + r] = vsum(vadd(acc0[t], acc1[t]));
  }
}

void gemv_mxfp4(const uint8_t* blocks, const uint8_t* scales, int rows, int nblocks, const float* xs, float* y) {
  mxfp4_rows<1>(blocks, scales, rows, nblocks, xs, 0, y, 0);
}

// y[t * ldy + r] = dot(Wmxfp4[r], xs[t]) for n tokens, four at a time.
void gemm_mxfp4(const uint8_t* blocks, const uint8_t* scales, int rows, int nblocks, const float* xs, int64_t ldx, int n,
                float* y, int64_t ldy) {
  int t = 0;
  for (; t + 4 <= n; t += 4) mxfp4_rows<4>(blocks, scales, rows, nblocks, xs + t * ldx, ldx, y + t * ldy, ldy);
  for (; t < n; ++t) mxfp4_rows<1>(blocks, scales, rows, nblocks, xs + t * ldx, ldx, y + t * ldy, ldy);
}

void bf16_to_f32_row(const uint16_t* src, float* dst, size_t n) {
  size_t i = 0;
  for (; i + W <= n; i += W) vstore(dst + i, vload_bf16(src + i));
  for (; i < n; ++i) dst[i] = gptoss::cpu::bf16_to_f32(src[i]);
}

float dot_f32(const float* a, const float* b, int n) {
  V acc = vzero();
  int i = 0;
  for (; i + W <= n; i += W) acc = vfma(vload(a + i), vload(b + i), acc);
  return vsum(acc) + scalar_dot(a + i, b + i, n - i);
}

void axpy_f32(float* y, float a, const float* x, int n) {
  V av = vset1(a);
  int i = 0;
  for (; i + W <= n; i += W) vstore(y + i, vfma(av, vload(x + i), vload(y + i)));
  for (; i < n; ++i) y[i] += a * x[i];
}

// Many queries against many keys: out[h * ldo + j] = dot(q + h * ldq, k[j] + koff) for h < nq, j < nk.
// Two heads against W/2 keys at a time fill W accumulators (each key's load serves both heads, and
// W independent FMA chains hide the latency); their W sums are then reduced together as one tree
// (vsums), where a reduction per (head, key) had cost more than the FMAs. Which path a (head, key)
// takes depends only on h and j, so a key's score does not depend on what else is in the call.
void dots_f32(const float* q, int64_t ldq, int nq, const float* const* k, int64_t koff, int nk, int n, float* out,
              int64_t ldo) {
  constexpr int KB = W / 2;
  const int nv = n - n % W;
  int h = 0;
  for (; h + 2 <= nq; h += 2) {
    const float *q0 = q + h * ldq, *q1 = q0 + ldq;
    float *o0 = out + h * ldo, *o1 = o0 + ldo;
    int j = 0;
    for (; j + KB <= nk; j += KB) {
      V a[W];  // a[b]: head h, key j + b; a[KB + b]: head h + 1
      for (int c = 0; c < W; ++c) a[c] = vzero();
      for (int i = 0; i < nv; i += W) {
        const V x0 = vload(q0 + i), x1 = vload(q1 + i);
#pragma GCC unroll 8
        for (int b = 0; b < KB; ++b) {
          const V kv = vload(k[j + b] + koff + i);
          a[b] = vfma(x0, kv, a[b]);
          a[KB + b] = vfma(x1, kv, a[KB + b]);
        }
      }
      alignas(64) float s[W];
      vsums(a, s);
      for (int b = 0; b < KB; ++b) {
        const float* kj = k[j + b] + koff;
        o0[j + b] = s[b] + scalar_dot(q0 + nv, kj + nv, n - nv);
        o1[j + b] = s[KB + b] + scalar_dot(q1 + nv, kj + nv, n - nv);
      }
    }
    for (; j < nk; ++j) {
      o0[j] = dot_f32(q0, k[j] + koff, n);
      o1[j] = dot_f32(q1, k[j] + koff, n);
    }
  }
  for (; h < nq; ++h)
    for (int j = 0; j < nk; ++j) out[h * ldo + j] = dot_f32(q + h * ldq, k[j] + koff, n);
}

// Value rows into a group of accumulators: y[h * ldy + i] += a[h * lda + j] * x[j][xoff + i] for
// h < ny, j < nx (in that order, one FMA each), i < n. A pass keeps two vectors of each of G heads
// in registers over all the rows, where a row at a time loaded and stored them for every row
// (decode attention's values at long context were bound by that).
template <int G>
inline void axpys_heads(float* y, int64_t ldy, const float* a, int64_t lda, const float* const* x, int64_t xoff, int nx,
                        int n) {
  int i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    V acc[G][2];
#pragma GCC unroll 8
    for (int h = 0; h < G; ++h) {
      acc[h][0] = vload(y + h * ldy + i);
      acc[h][1] = vload(y + h * ldy + i + W);
    }
    for (int j = 0; j < nx; ++j) {
      const V x0 = vload(x[j] + xoff + i), x1 = vload(x[j] + xoff + i + W);
#pragma GCC unroll 8
      for (int h = 0; h < G; ++h) {
        const V s = vset1(a[h * lda + j]);
        acc[h][0] = vfma(s, x0, acc[h][0]);
        acc[h][1] = vfma(s, x1, acc[h][1]);
      }
    }
#pragma GCC unroll 8
    for (int h = 0; h < G; ++h) {
      vstore(y + h * ldy + i, acc[h][0]);
      vstore(y + h * ldy + i + W, acc[h][1]);
    }
  }
  for (; i + W <= n; i += W)
    for (int h = 0; h < G; ++h) {
      V acc = vload(y + h * ldy + i);
      for (int j = 0; j < nx; ++j) acc = vfma(vset1(a[h * lda + j]), vload(x[j] + xoff + i), acc);
      vstore(y + h * ldy + i, acc);
    }
  for (; i < n; ++i)
    for (int h = 0; h < G; ++h)
      for (int j = 0; j < nx; ++j) y[h * ldy + i] += a[h * lda + j] * x[j][xoff + i];
}
void axpys_f32(float* y, int64_t ldy, int ny, const float* a, int64_t lda, const float* const* x, int64_t xoff, int nx,
               int n) {
  constexpr int G = W >= 16 ? 8 : 4;  // 2G accumulators: 16 of AVX-512's 32 registers, 8 of AVX2's 16
  int h = 0;
  for (; h + G <= ny; h += G) axpys_heads<G>(y + h * ldy, ldy, a + h * lda, lda, x, xoff, nx, n);
  for (; h < ny; ++h) axpys_heads<1>(y + h * ldy, ldy, a + h * lda, lda, x, xoff, nx, n);
}

// exp(x) for x <= 0 by range reduction x = k ln2 + r, |r| <= ln2/2, and a degree-6 polynomial
// for e^r (Cephes' coefficients), then scaling by 2^k through the exponent bits.
inline float exp_scalar(float x) {
  if (!(x >= -87.f)) return 0.f;  // NaN too, as the vector lanes do
  const float k = __builtin_floorf(x * 1.44269504f + 0.5f);
  const float r = x - k * 0.693359375f + k * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  int32_t bits;
  __builtin_memcpy(&bits, &p, 4);
  bits += int32_t(uint32_t(int32_t(k)) << 23);  // k < 0 is common: shift as unsigned
  __builtin_memcpy(&p, &bits, 4);
  return p;
}

#if defined(__AVX512F__) || defined(__AVX2__)
// e^r on the reduced range, the same polynomial as exp_scalar.
inline V vexp_poly(V r) {
  V p = vset1(1.9875691500e-4f);
  p = vfma(p, r, vset1(1.3981999507e-3f));
  p = vfma(p, r, vset1(8.3334519073e-3f));
  p = vfma(p, r, vset1(4.1665795894e-2f));
  p = vfma(p, r, vset1(1.6666665459e-1f));
  p = vfma(p, r, vset1(5.0000001201e-1f));
  return vfma(vmul(p, r), r, vadd(r, vset1(1.f)));
}
#if defined(__AVX512F__)
inline V vexp(V x) {
  const __mmask16 live = _mm512_cmp_ps_mask(x, vset1(-87.f), _CMP_GE_OQ);
  x = _mm512_max_ps(x, vset1(-87.f));
  V k = _mm512_roundscale_ps(_mm512_fmadd_ps(x, vset1(1.44269504f), vset1(0.5f)), _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  V r = _mm512_fnmadd_ps(k, vset1(-2.12194440e-4f), _mm512_fnmadd_ps(k, vset1(0.693359375f), x));
  __m512i e = _mm512_slli_epi32(_mm512_cvtps_epi32(k), 23);
  return _mm512_maskz_mov_ps(live, _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(vexp_poly(r)), e)));
}
#else
inline V vexp(V x) {
  const V live = _mm256_cmp_ps(x, vset1(-87.f), _CMP_GE_OQ);
  x = _mm256_max_ps(x, vset1(-87.f));
  V k = _mm256_floor_ps(_mm256_fmadd_ps(x, vset1(1.44269504f), vset1(0.5f)));
  V r = _mm256_fnmadd_ps(k, vset1(-2.12194440e-4f), _mm256_fnmadd_ps(k, vset1(0.693359375f), x));
  __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(k), 23);
  return _mm256_and_ps(live, _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(vexp_poly(r)), e)));
}
#endif
#else
inline V vexp(V x) {
  for (int i = 0; i < 8; ++i) x.v[i] = exp_scalar(x.v[i]);
  return x;
}
#endif

double exp_sum(const float* l, float m, float scale, float* e, int n) {
  // The order simd.h states: short f32 chains (kExpSumBlock / W adds) a GPU sums in parallel.
  static_assert(gptoss::cpu::kExpSumBlock % W == 0, "a block is whole vectors");
  const V vm = vset1(m), vs = vset1(scale);
  const int body = n - n % W;
  double lanes[W] = {};
  for (int b = 0; b < body; b += gptoss::cpu::kExpSumBlock) {
    const int end = b + gptoss::cpu::kExpSumBlock < body ? b + gptoss::cpu::kExpSumBlock : body;
    V acc = vzero();
    for (int i = b; i < end; i += W) {
      // (l - m) * scale; arguments below -87 (-inf logits included) give exactly 0.
      V x = vmul(vadd(vload(l + i), vmul(vm, vset1(-1.f))), vs);
      V y = vexp(x);
      vstore(e + i, y);
      acc = vadd(acc, y);
    }
    alignas(64) float a[W];
    vstore(a, acc);
    for (int j = 0; j < W; ++j) lanes[j] += a[j];
  }
  double s = 0;
  for (int j = 0; j < W; ++j) s += lanes[j];
  for (int i = body; i < n; ++i) s += e[i] = exp_scalar((l[i] - m) * scale);
  return s;
}

double sum_f32(const float* x, size_t n) {
  V a0 = vzero(), a1 = vzero(), a2 = vzero(), a3 = vzero();
  size_t i = 0;
  for (; i + 4 * W <= n; i += 4 * W) {
    a0 = vadd(a0, vload(x + i));
    a1 = vadd(a1, vload(x + i + W));
    a2 = vadd(a2, vload(x + i + 2 * W));
    a3 = vadd(a3, vload(x + i + 3 * W));
  }
  double s = vsum(vadd(vadd(a0, a1), vadd(a2, a3)));
  for (; i < n; ++i) s += x[i];
  return s;
}

}  // namespace
