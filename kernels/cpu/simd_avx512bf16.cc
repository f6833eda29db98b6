// MXFP4 products on AVX-512 BF16 (vdpbf16ps), for precision 'default' (simd.h, Bf16Kernels). The
// build compiles this file with -mavx512bf16; it runs only where the CPU reports avx512_bf16.
//
// Why it is still within 1e-5 of f32: every E2M1 value (doubled: 0..12) is exact in bf16, and x is
// split into hi = bf16(x) and lo = bf16(x - hi), 16 significant bits between them. vdpbf16ps forms
// each bf16 x bf16 product exactly and accumulates in f32, so the only departure from the f32 path
// is x's last 8 bits (relative 2^-17 per element) and the order of the f32 additions.
//
// Why it is faster: on Zen 4/5 the f32 path spends three shuffles per 32 weights (widen, two table
// lookups) plus three f32 ops per token. Here 64 weights (two blocks) take one widening
// (vpmovzxbw), one shift and two word-table lookups (vpermw), shared by four rows' worth of
// in-flight work, and four vdpbf16ps per token.
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

// x[K] -> hi/lo bf16 (simd.h, Bf16Kernels::split_hilo): per 64 elements, hi of the 32 even ones,
// hi of the 32 odd ones, then lo of each; a last lone block of 32 the same with 16 of each.
void split_hilo(const float* x, uint16_t* out, int K) {
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  auto lo_of = [](__m512 v, __m256bh h) {
    const __m512 hf = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)h), 16));
    return _mm512_cvtneps_pbh(_mm512_sub_ps(v, hf));
  };
  int k = 0;
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

// R rows against NT tokens. Per (row, token) the operations are the same whatever R and NT are
// (a chain of four vdpbf16ps per block pair from zero, one f32 FMA by the pair's scales, the lone
// last block on 8 lanes, one final reduction), so results do not depend on tiling or batching.
// `ahead`: the rows of a later group (or null), fetched line by line as this group is read. The
// experts' rows are short streams (1.4 KB) that start anywhere, which the hardware prefetchers
// pick up late; cold-expert decode ran ~25% faster with it (two threads, this VM, alternating calls).
template <int R, int NT>
inline void rows_bf16(const uint8_t* blocks, const uint8_t* scales, int nblocks, const uint16_t* xs, int64_t ldx,
                      float* y, int64_t ldy, const uint8_t* ahead) {
  const __m512i lut = _mm512_load_si512(kFp4x2Bf16);
  const size_t row_bytes = size_t(nblocks) * 16;
  __m512 acc[R][NT];
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < NT; ++t) acc[i][t] = _mm512_setzero_ps();
  const int pairs = nblocks / 2;
  for (int p = 0; p < pairs; ++p) {
    if (ahead && !(p & 1))  // one 64-byte line per row every two pairs
      for (int i = 0; i < R; ++i)
        _mm_prefetch(reinterpret_cast<const char*>(ahead + i * row_bytes + size_t(p) * 32), _MM_HINT_T0);
    // 32 bytes = two blocks; word j is byte j, so its low nibble is element 2j, its high 2j+1.
    auto decode = [&](int i, __m512bh& e, __m512bh& o) {
      const __m512i w = _mm512_cvtepu8_epi16(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blocks + i * row_bytes + size_t(p) * 32)));
      e = (__m512bh)_mm512_permutexvar_epi16(w, lut);
      o = (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(w, 4), lut);
    };
    if constexpr (NT == 1) {  // each row decoded where it is used: R = 8 fits the registers
      const uint16_t* x = xs + size_t(p) * 128;
      for (int i = 0; i < R; ++i) {
        __m512bh we, wo;
        decode(i, we, wo);
        acc[i][0] = _mm512_fmadd_ps(pair_dot(we, wo, x), scale_pair(scales + i * size_t(nblocks) + 2 * p), acc[i][0]);
      }
      continue;  // not an else: GCC 12 keeps 3 of the four-token tile's 16 accumulators on the stack
                 // this way, all 16 with the code below in an else branch
    }
    __m512bh we[R], wo[R];
    for (int i = 0; i < R; ++i) decode(i, we[i], wo[i]);
    __m512 sc[R];
    for (int i = 0; i < R; ++i) sc[i] = scale_pair(scales + i * size_t(nblocks) + 2 * p);
    for (int t = 0; t < NT; ++t) {
      const uint16_t* x = xs + t * ldx + size_t(p) * 128;
      for (int i = 0; i < R; ++i) acc[i][t] = _mm512_fmadd_ps(pair_dot(we[i], wo[i], x), sc[i], acc[i][t]);
    }
  }
  if (nblocks & 1) {  // the last block alone, on 8 lanes
    const int g = nblocks - 1;
    for (int i = 0; i < R; ++i) {
      const __m256i w = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blocks + i * row_bytes + size_t(g) * 16)));
      const __m256bh we = (__m256bh)_mm256_permutexvar_epi16(w, _mm512_castsi512_si256(lut));
      const __m256bh wo = (__m256bh)_mm256_permutexvar_epi16(_mm256_srli_epi16(w, 4), _mm512_castsi512_si256(lut));
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
  // Four tokens: four rows, 16 accumulators, 8 weight and 4 scale registers (x is read from memory
  // by vdpbf16ps); measured in L2 on Zen 5, 4 rows x 4 tokens ~2x the MACs/s of 2 x 4 or 1 x 8.
  // One token (decode): eight rows, each decoded where it is used (8 accumulators in registers, not
  // 16 decoded vectors), so twice the rows' lines are in flight a step. The 24-layer synthetic 20b's
  // decode, two threads, this VM, builds alternating over four rounds: 10.1-12.0 tokens/s against
  // 8.6-11.3 with four rows, faster in every round. Twelve rows were no better in the engine's
  // kernel bench; sixteen were slower in a microbenchmark of cold expert slices.
  const size_t row_bytes = size_t(nblocks) * 16;
  int r = 0;
  if constexpr (NT == 1) r = rows_groups<8, NT>(blocks, scales, r, rows, nblocks, xs, ldx, y, ldy);
  r = rows_groups<4, NT>(blocks, scales, r, rows, nblocks, xs, ldx, y, ldy);
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
