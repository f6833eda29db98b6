// MXFP4 products on AVX-512 BF16 (vdpbf16ps), for precision 'default' (simd.h, Bf16Kernels). The
// build compiles this file with -mavx512bf16; it runs only where the CPU reports avx512_bf16.
//
// Why it is still within 1e-5 of f32: every E2M1 value (0..6, or doubled 0..12) is exact in bf16,
// and x is split into hi = bf16(x) and lo = bf16(x - hi), 16 significant bits between them. vdpbf16ps forms
// each bf16 x bf16 product exactly and accumulates in f32, so the only departure from the f32 path
// is x's last 8 bits (relative 2^-17 per element) and the order of the f32 additions.
//
// Why it is faster: on Zen 4/5 the f32 path spends three shuffles per 32 weights (widen, two table
// lookups) plus three f32 ops per token. Here four blocks (128 weights, 64 bytes) are one load,
// three shifts and four word-table lookups (vpermw), their scales one broadcast, one byte shuffle
// and two integer ops, and each token takes eight vdpbf16ps, one add and one FMA. In L1 on this
// build VM's Zen 5, one thread, 16 rows of 2880: 3.4 cycles per 64 weights and row against 4.3 for
// two-block steps (a widening, two table-loaded scales and scalar work per pair). The eight
// vdpbf16ps are still the floor: at 1.6 a cycle here they allow ~70 GB/s on two cores, and cold
// experts read 40-50 GB/s where that and memory overlap (benchmarks/RESULTS.md).
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "kernels/cpu/simd.h"

namespace {
using gptoss::cpu::kE8m0Half;

// Doubled E2M1 values as bf16, twice over: vpermw indexes 32 words by bits 0-4, and bit 4 of a
// widened byte is its high nibble's lowest bit, so both halves must agree (no mask needed).
alignas(64) constexpr uint16_t kFp4x2Bf16[32] = {
    0x0000, 0x3F80, 0x4000, 0x4040, 0x4080, 0x40C0, 0x4100, 0x4140,
    0x8000, 0xBF80, 0xC000, 0xC040, 0xC080, 0xC0C0, 0xC100, 0xC140,
    0x0000, 0x3F80, 0x4000, 0x4040, 0x4080, 0x40C0, 0x4100, 0x4140,
    0x8000, 0xBF80, 0xC000, 0xC040, 0xC080, 0xC0C0, 0xC100, 0xC140};

// E2M1 values themselves (0, 0.5, ... 6), for four-block steps, whose scales are built as 2^(s-127)
// from the scale bytes by integer ops rather than looked up. Twice over, as above.
alignas(64) constexpr uint16_t kFp4Bf16[32] = {
    0x0000, 0x3F00, 0x3F80, 0x3FC0, 0x4000, 0x4040, 0x4080, 0x40C0,
    0x8000, 0xBF00, 0xBF80, 0xBFC0, 0xC000, 0xC040, 0xC080, 0xC0C0,
    0x0000, 0x3F00, 0x3F80, 0x3FC0, 0x4000, 0x4040, 0x4080, 0x40C0,
    0x8000, 0xBF00, 0xBF80, 0xBFC0, 0xC000, 0xC040, 0xC080, 0xC0C0};

// vpshufb control for scale_quad: in 128-bit lane L, byte L of each dword (block L's scale byte,
// after a dword broadcast of four) to bits 16-23 of all four dwords; the rest zeroed.
alignas(64) constexpr uint8_t kScaleQuad[64] = {
    0x80, 0x80, 0, 0x80, 0x80, 0x80, 0, 0x80, 0x80, 0x80, 0, 0x80, 0x80, 0x80, 0, 0x80,
    0x80, 0x80, 1, 0x80, 0x80, 0x80, 1, 0x80, 0x80, 0x80, 1, 0x80, 0x80, 0x80, 1, 0x80,
    0x80, 0x80, 2, 0x80, 0x80, 0x80, 2, 0x80, 0x80, 0x80, 2, 0x80, 0x80, 0x80, 2, 0x80,
    0x80, 0x80, 3, 0x80, 0x80, 0x80, 3, 0x80, 0x80, 0x80, 3, 0x80, 0x80, 0x80, 3, 0x80};

// x[K] -> hi/lo bf16 (simd.h, Bf16Kernels::split_hilo). Per 128 elements (four blocks): for n = 0..3
// the hi of elements 4j + n (j = 0..31), then the lo of each; element 4j + n is nibble n of the
// block bytes' word j. What is left (64 or 32 elements, K % 128) as two-block steps read it: per 64,
// hi of the 32 even elements, hi of the 32 odd, then lo of each; a lone block the same with 16 each.
void split_hilo(const float* x, uint16_t* out, int K) {
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  auto lo_of = [](__m512 v, __m256bh h) {
    const __m512 hf = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)h), 16));
    return _mm512_cvtneps_pbh(_mm512_sub_ps(v, hf));
  };
  int k = 0;
  for (; k + 128 <= K; k += 128, out += 256) {
    alignas(64) float t[128];  // once per token and matrix: plain loads are cheap enough here
    for (int n = 0; n < 4; ++n)
      for (int j = 0; j < 32; ++j) t[n * 32 + j] = x[k + 4 * j + n];
    for (int v = 0; v < 8; ++v) {
      const __m512 f = _mm512_load_ps(t + 16 * v);
      const __m256bh h = _mm512_cvtneps_pbh(f);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 16 * v), (__m256i)h);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 128 + 16 * v), (__m256i)lo_of(f, h));
    }
  }
  for (; k + 64 <= K; k += 64, out += 128) {
    const __m512 a = _mm512_loadu_ps(x + k), b = _mm512_loadu_ps(x + k + 16);
    const __m512 c = _mm512_loadu_ps(x + k + 32), d = _mm512_loadu_ps(x + k + 48);
    const __m512 e0 = _mm512_permutex2var_ps(a, even, b), e1 = _mm512_permutex2var_ps(c, even, d);
    const __m512 o0 = _mm512_permutex2var_ps(a, odd, b), o1 = _mm512_permutex2var_ps(c, odd, d);
    const __m256bh he0 = _mm512_cvtneps_pbh(e0), he1 = _mm512_cvtneps_pbh(e1);
    const __m256bh ho0 = _mm512_cvtneps_pbh(o0), ho1 = _mm512_cvtneps_pbh(o1);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), (__m256i)he0);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 16), (__m256i)he1);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 32), (__m256i)ho0);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 48), (__m256i)ho1);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 64), (__m256i)lo_of(e0, he0));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 80), (__m256i)lo_of(e1, he1));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 96), (__m256i)lo_of(o0, ho0));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 112), (__m256i)lo_of(o1, ho1));
  }
  if (k < K) {  // one block of 32
    const __m512 a = _mm512_loadu_ps(x + k), b = _mm512_loadu_ps(x + k + 16);
    const __m512 e = _mm512_permutex2var_ps(a, even, b), o = _mm512_permutex2var_ps(a, odd, b);
    const __m256bh he = _mm512_cvtneps_pbh(e), ho = _mm512_cvtneps_pbh(o);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), (__m256i)he);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 16), (__m256i)ho);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 32), (__m256i)lo_of(e, he));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 48), (__m256i)lo_of(o, ho));
  }
}

// Two blocks' scales: the low 8 lanes take the first block's, the high 8 the second's. A masked
// broadcast from memory, not an insert: one shuffle fewer per row and pair.
inline __m512 scale_pair(const uint8_t* s) {
  return _mm512_mask_broadcastss_ps(_mm512_set1_ps(kE8m0Half[s[0]]), 0xFF00, _mm_load_ss(&kE8m0Half[s[1]]));
}

// A block pair's unscaled dot product with one token's x (split_hilo's layout: even hi, odd hi,
// even lo, odd lo): one chain of four vdpbf16ps from zero, the same for every R and NT, so a token's
// bits do not depend on batching.
inline __m512 pair_dot(__m512bh we, __m512bh wo, const uint16_t* x) {
  __m512 d = _mm512_dpbf16_ps(_mm512_setzero_ps(), we, (__m512bh)_mm512_loadu_si512(x));
  d = _mm512_dpbf16_ps(d, wo, (__m512bh)_mm512_loadu_si512(x + 32));
  d = _mm512_dpbf16_ps(d, we, (__m512bh)_mm512_loadu_si512(x + 64));
  return _mm512_dpbf16_ps(d, wo, (__m512bh)_mm512_loadu_si512(x + 96));
}

// Four blocks' scales, 2^(s-127) each (kFp4Bf16 holds the E2M1 values themselves): lanes 4L..4L+3
// take block L's, which is where vdpbf16ps sums block L's products (quad_dot). The exponent field
// is s itself; the max makes s = 0 the subnormal 2^-127 rather than zero; s = 255 gives inf, as
// kE8m0Half does. Exact, and no table loads: one broadcast, one shuffle, two integer ops.
inline __m512 scale_quad(const uint8_t* s, __m512i ctl) {
  uint32_t s4;
  __builtin_memcpy(&s4, s, 4);
  const __m512i e = _mm512_slli_epi32(_mm512_shuffle_epi8(_mm512_set1_epi32(int(s4)), ctl), 7);
  return _mm512_castsi512_ps(_mm512_max_epu32(e, _mm512_set1_epi32(0x00400000)));
}

// Four blocks' unscaled dot product with one token's x (split_hilo's 128-element layout): a chain
// for hi and one for lo, four vdpbf16ps each from zero, added; the same for every R and NT. Two
// chains, not one of eight: about half the latency a row waits on (3.2 against 3.5 cycles in a
// microbenchmark of this loop).
inline __m512 quad_dot(const __m512bh w[4], const uint16_t* x) {
  auto X = [&](int j) { return (__m512bh)_mm512_loadu_si512(x + 32 * j); };
  __m512 h = _mm512_dpbf16_ps(_mm512_setzero_ps(), w[0], X(0));
  __m512 l = _mm512_dpbf16_ps(_mm512_setzero_ps(), w[0], X(4));
  for (int n = 1; n < 4; ++n) {
    h = _mm512_dpbf16_ps(h, w[n], X(n));
    l = _mm512_dpbf16_ps(l, w[n], X(4 + n));
  }
  return _mm512_add_ps(h, l);
}

// R rows against NT tokens. Per (row, token) the operations are the same whatever R and NT are
// (quad_dot and one f32 FMA by the scales per four blocks; pair_dot and one FMA for a last two; the
// lone last block on 8 lanes; one final reduction), so results do not depend on tiling or batching.
// `ahead`: the rows of a later group (or null), fetched line by line as this group is read. The
// experts' rows are short streams (1.4 KB) that start anywhere, which the hardware prefetchers
// pick up late; cold-expert decode ran ~25% faster with it (two threads, this VM, alternating calls).
template <int R, int NT>
inline void rows_bf16(const uint8_t* blocks, const uint8_t* scales, int nblocks, const uint16_t* xs, int64_t ldx,
                      float* y, int64_t ldy, const uint8_t* ahead) {
  const __m512i lut = _mm512_load_si512(kFp4Bf16), ctl = _mm512_load_si512(kScaleQuad);
  const size_t row_bytes = size_t(nblocks) * 16;
  __m512 acc[R][NT];
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < NT; ++t) acc[i][t] = _mm512_setzero_ps();
  const int quads = nblocks / 4;
  if (ahead)  // each later row's last byte: the steps below reach 64 * quads bytes of it, and a
              // last two blocks (K = 2880) lie in a line beyond
    for (int i = 0; i < R; ++i) _mm_prefetch(reinterpret_cast<const char*>(ahead + (i + 1) * row_bytes - 1), _MM_HINT_T0);
  for (int q = 0; q < quads; ++q) {
    if (ahead)  // 64 bytes per row a step
      for (int i = 0; i < R; ++i)
        _mm_prefetch(reinterpret_cast<const char*>(ahead + i * row_bytes + size_t(q) * 64), _MM_HINT_T0);
    // 64 bytes = four blocks as 32 words: nibble n of word j is element 4j + n.
    auto decode = [&](int i, __m512bh w[4]) {
      const __m512i v = _mm512_loadu_si512(blocks + i * row_bytes + size_t(q) * 64);
      for (int n = 0; n < 4; ++n) w[n] = (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(v, 4 * n), lut);
    };
    if constexpr (NT == 1) {  // each row decoded where it is used: eight rows fit the registers
      for (int i = 0; i < R; ++i) {
        __m512bh w[4];
        decode(i, w);
        acc[i][0] = _mm512_fmadd_ps(quad_dot(w, xs + size_t(q) * 256), scale_quad(scales + i * size_t(nblocks) + 4 * q, ctl),
                                    acc[i][0]);
      }
      continue;  // what follows is the several-token tile's
    }
    // Several tokens: all R rows decoded first, so each token's x is read once for the R rows.
    __m512bh w[R][4];
    __m512 sc[R];
    for (int i = 0; i < R; ++i) {
      decode(i, w[i]);
      sc[i] = scale_quad(scales + i * size_t(nblocks) + 4 * q, ctl);
    }
    for (int t = 0; t < NT; ++t)
      for (int i = 0; i < R; ++i)
        acc[i][t] = _mm512_fmadd_ps(quad_dot(w[i], xs + t * ldx + size_t(q) * 256), sc[i], acc[i][t]);
  }
  const __m512i lut2 = _mm512_load_si512(kFp4x2Bf16);
  if (nblocks % 4 >= 2) {  // a last two blocks: 32 bytes, word j is byte j (low nibble 2j, high 2j+1)
    const int p = 2 * quads;
    for (int i = 0; i < R; ++i) {
      const __m512i w = _mm512_cvtepu8_epi16(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blocks + i * row_bytes + size_t(p) * 32)));
      const __m512bh we = (__m512bh)_mm512_permutexvar_epi16(w, lut2);
      const __m512bh wo = (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(w, 4), lut2);
      const __m512 sc = scale_pair(scales + i * size_t(nblocks) + 2 * p);
      for (int t = 0; t < NT; ++t)
        acc[i][t] = _mm512_fmadd_ps(pair_dot(we, wo, xs + t * ldx + size_t(p) * 128), sc, acc[i][t]);
    }
  }
  if (nblocks & 1) {  // the last block alone, on 8 lanes
    const int g = nblocks - 1;
    for (int i = 0; i < R; ++i) {
      const __m256i w = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blocks + i * row_bytes + size_t(g) * 16)));
      const __m256bh we = (__m256bh)_mm256_permutexvar_epi16(w, _mm512_castsi512_si256(lut2));
      const __m256bh wo = (__m256bh)_mm256_permutexvar_epi16(_mm256_srli_epi16(w, 4), _mm512_castsi512_si256(lut2));
      const __m256 sc = _mm256_set1_ps(kE8m0Half[scales[i * size_t(nblocks) + g]]);
      for (int t = 0; t < NT; ++t) {
        const uint16_t* x = xs + t * ldx + size_t(g) * 64;
        __m256 d = _mm256_dpbf16_ps(_mm256_setzero_ps(), we, (__m256bh)_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)));
        d = _mm256_dpbf16_ps(d, wo, (__m256bh)_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 16)));
        d = _mm256_dpbf16_ps(d, we, (__m256bh)_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 32)));
        d = _mm256_dpbf16_ps(d, wo, (__m256bh)_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 48)));
        acc[i][t] = _mm512_add_ps(acc[i][t], _mm512_castps256_ps512(_mm256_mul_ps(d, sc)));
      }
    }
  }
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < NT; ++t) y[t * ldy + i] = _mm512_reduce_add_ps(acc[i][t]);
}

// Rows [r, rows) in groups of R while a whole group is left; returns the first row not taken.
template <int R, int NT>
inline int rows_groups(const uint8_t* blocks, const uint8_t* scales, int r, int rows, int nblocks, const uint16_t* xs,
                       int64_t ldx, float* y, int64_t ldy) {
  const size_t row_bytes = size_t(nblocks) * 16;
  for (; r + R <= rows; r += R) {
    const uint8_t* ahead = r + 3 * R <= rows ? blocks + (r + 2 * R) * row_bytes : nullptr;  // two groups on
    rows_bf16<R, NT>(blocks + r * row_bytes, scales + size_t(r) * nblocks, nblocks, xs, ldx, y + r, ldy, ahead);
  }
  return r;
}

template <int NT>
inline void rows_all(const uint8_t* blocks, const uint8_t* scales, int rows, int nblocks, const uint16_t* xs,
                     int64_t ldx, float* y, int64_t ldy) {
  // One token (decode): eight rows, each decoded where it is used (8 accumulators in registers), so
  // eight rows' lines are in flight a step. Four-block steps against two-block ones (per-pair decode
  // and scale-table loads), 24-layer synthetic 20b decode, two threads, this VM, builds alternating:
  // 12.8 / 13.8 / 14.6 tokens/s against 12.0 / 13.1 / 12.8. Four tokens: three rows, decoded first
  // (12 weight vectors, 12 accumulators), each token's x loaded once for the three. With each row
  // decoded where it is used the x loads (one per vdpbf16ps) made prefill's experts 1.17x slower;
  // rows decoded first, 3 rows as fast as two-block steps were, 2 rows 1.05x and 4 rows 1.1x slower
  // (T = 128, alternating runs of `bench kernels`).
  const size_t row_bytes = size_t(nblocks) * 16;
  int r = 0;
  if constexpr (NT == 1) {
    r = rows_groups<8, NT>(blocks, scales, r, rows, nblocks, xs, ldx, y, ldy);
    r = rows_groups<4, NT>(blocks, scales, r, rows, nblocks, xs, ldx, y, ldy);
  } else {
    r = rows_groups<3, NT>(blocks, scales, r, rows, nblocks, xs, ldx, y, ldy);
  }
  for (; r < rows; ++r)
    rows_bf16<1, NT>(blocks + r * row_bytes, scales + size_t(r) * nblocks, nblocks, xs, ldx, y + r, ldy, nullptr);
}

void gemm_mxfp4_bf16(const uint8_t* blocks, const uint8_t* scales, int rows, int nblocks, const uint16_t* xs,
                     int64_t ldx, int n, float* y, int64_t ldy) {
  int t = 0;
  for (; t + 4 <= n; t += 4) rows_all<4>(blocks, scales, rows, nblocks, xs + t * ldx, ldx, y + t * ldy, ldy);
  for (; t < n; ++t) rows_all<1>(blocks, scales, rows, nblocks, xs + t * ldx, ldx, y + t * ldy, ldy);
}
}  // namespace

namespace gptoss::cpu {
extern const Bf16Kernels kBf16Avx512 = {split_hilo, gemm_mxfp4_bf16};
}
