// attention_prefill_bf16: flash attention on the tensor cores for prompt chunks, with gpt-oss's
// learned sinks, GQA and the alternating 128-token sliding window, over a layer's paged bf16 KV
// cache (kernels/MODEL.md, "Attention"; the reference is kernels/cpu/attention.cc, the decode
// kernel kernels/cuda/attention.cu). Query t at position p sees keys [max(0, p - window + 1), p] of
// its own sequence (window 0: [0, p]); logits (q . k) * scale; the sink joins the softmax as a raw
// logit and its mass is dropped.
//
// One block of 4 warps per (tile of 64 query rows, KV head): a row is (token, query head of the
// KV head's group), token-major, so with gpt-oss's group of 8 a block holds 8 consecutive tokens
// and every K/V tile it loads serves all 8 heads (GQA folded into the M dimension); warp w owns
// rows 16w..16w+15. The block walks the keys of its tokens' sequence, [lowest window start,
// highest position], in tiles of 64 keys: cp.async copies each key's 128-byte K and V rows (one
// KV head) from whatever page holds it into shared memory, double-buffered (tile i + 1 is in
// flight while tile i is computed), each row's eight 16-byte chunks XOR-swizzled by the row's
// index mod 8 so that ldmatrix's eight row addresses per phase hit eight different bank quads.
// Per tile, each warp: S = Q K^T with mma.sync m16n8k16 (K fragments by ldmatrix.x4 from the
// row-major tile: a key row is a B column), the mask (causal, window, sequence) only on tiles
// that cross a row's bounds, the online softmax in registers (row max by two xor shuffles over
// the quad sharing a row, exp2 of logits pre-scaled by scale * log2 e), then O += P V with P
// taken straight from S's accumulator registers as the A operand (the C and A fragment layouts
// of m16n8k16 line up two n-tiles per k-step) and V fragments by ldmatrix.x4.trans. At the end
// the quad's partial row sums meet, the sink joins the max and the denominator, and each row's
// 64 outputs are written as f32.
//
// Precision (template parameter kSplit, the launcher's `split`): the CPU op is f32 throughout and
// the cache is bf16, so K and V are exact operands. kSplit true (fp32 mode): Q (f32) and P (f32 in
// [0, 1]) are each split into hi = bf16(x) and lo = bf16(x - hi), and every product is the sum of
// two mma (hi, then lo, into the same f32 accumulator): operands within 2^-16 relatively of their
// f32 values, logits and weighted sums within ~1e-5 of the CPU op's. kSplit false (default mode,
// bf16 products as the GEMMs there): Q and P rounded once to bf16 (2^-8 relatively), one mma per
// product, half the tensor work and none of the lo halves' conversions; the softmax's max and
// denominator stay f32 (the denominator sums the unrounded P).
// Blocks take the latest tokens (the most keys) first, so the causal tail does not run last.
// Limits (checked by the launcher): head_dim 64; q_heads a multiple of kv_heads with at most 8
// per KV head; kv_heads <= 65535; a bf16 cache, 16-byte aligned; ldq, ldo >= q_heads * 64 and
// even, q and out 8-byte aligned.
#include "kernels/cuda/attention_prefill.cuh"

#include <cmath>

#include "kernels/cuda/kv_cache.cuh"
#include "kernels/cuda/mma.cuh"

namespace gptoss {
namespace cuda {
namespace {
constexpr int kD = 64;            // head_dim
constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kRows = 16 * kWarps;  // query rows (token, head) per block
constexpr int kKeys = 64;           // keys per tile
constexpr int kMaxGroup = 8;        // query heads per KV head
constexpr float kLog2e = 1.4426950408889634f;
// K and V tiles, double-buffered (bf16), then the block's tokens' positions, window starts and
// sequences (int32): 33,536 bytes.
constexpr size_t kSmemBytes = 4 * kKeys * kD * sizeof(uint16_t) + 3 * kRows * sizeof(int32_t);

// (x, y) = hi + lo to 2^-16 relatively: hi = bf16(x), lo = bf16(x - hi); x - hi is exact in f32.
__device__ __forceinline__ void split_bf16x2(float x, float y, uint32_t& hi, uint32_t& lo) {
  hi = pack_bf16x2(x, y);
  lo = pack_bf16x2(x - __uint_as_float(hi << 16), y - __uint_as_float(hi & 0xffff0000u));
}

// grid (ceil(T / tokens per block), kv_heads), kThreads threads. scale_log2 = scale * log2 e.
template <bool kSplit>
__global__ void __launch_bounds__(kThreads)
    attention_prefill_bf16(const float* __restrict__ q, int64_t ldq, const int32_t* __restrict__ positions,
                           const uint16_t* __restrict__ kc, const uint16_t* __restrict__ vc, KvPages pages,
                           const uint16_t* __restrict__ sinks, float* __restrict__ out, int64_t ldo, int T, int group,
                           int window, float scale_log2) {
  // Dynamic shared memory (kSmemBytes): the emulator finds a template kernel's static __shared__
  // arrays only when built with clang (native/DESIGN.md, "CUDA emulator facts"), the addon's is GCC.
  uint16_t* const smem = dynamic_shared<uint16_t>();
  uint16_t(*ks)[kKeys * kD] = reinterpret_cast<uint16_t(*)[kKeys * kD]>(smem);  // [buffer][key][64 dims], chunks swizzled
  uint16_t(*vs)[kKeys * kD] = reinterpret_cast<uint16_t(*)[kKeys * kD]>(smem + 2 * kKeys * kD);
  int32_t* const tok_pos = reinterpret_cast<int32_t*>(smem + 4 * kKeys * kD);  // the block's tokens
  int32_t* const tok_lo = tok_pos + kRows;
  int32_t* const tok_seq = tok_lo + kRows;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int tpb = kRows / group;                                  // tokens per block
  const int t0 = (int(gridDim.x) - 1 - int(blockIdx.x)) * tpb;   // latest tokens (most keys) first
  const int g = blockIdx.y, width = int(gridDim.y) * kD;
  const int nt = T - t0 < tpb ? T - t0 : tpb;
  if (tid < nt) {
    const int32_t p = positions[t0 + tid];
    tok_pos[tid] = p;
    tok_lo[tid] = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
    tok_seq[tid] = pages.seq[t0 + tid];
  }
  __syncthreads();

  // This thread's rows: gq and gq + 8 of the warp's 16 (the mma fragments' row split); rows of
  // the block's missing last tokens, and rows past tpb * group, are padding.
  const int gq = lane >> 2, tq = lane & 3;
  auto row_token = [&](int i) { return (warp * 16 + gq + 8 * i) / group; };
  auto row_head = [&](int i) { return warp * 16 + gq + 8 * i - row_token(i) * group; };

  // Q as A fragments, hi and lo (a[0]: row gq, dims 16k + 2tq..; a[1]: row gq + 8; a[2], a[3]: + 8
  // dims); without the split, hi is bf16(q) and lo is not used.
  uint32_t qh[4][4], ql[4][4];
#pragma unroll
  for (int k = 0; k < 4; ++k)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int i = j & 1, d = 16 * k + 2 * tq + 8 * (j >> 1);
      float2 v = make_float2(0.f, 0.f);
      if (row_token(i) < nt) v = *reinterpret_cast<const float2*>(q + (t0 + row_token(i)) * ldq + (g * group + row_head(i)) * kD + d);
      if constexpr (kSplit) split_bf16x2(v.x, v.y, qh[k][j], ql[k][j]);
      else qh[k][j] = pack_bf16x2(v.x, v.y);
    }

  float o[8][4];  // O [16 rows, 64 dims] as 8 n-tiles of C fragments
#pragma unroll
  for (int n = 0; n < 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY};  // running max, in the log2 domain (logit * log2 e)
  float l[2] = {0.f, 0.f};              // this thread's share of the row's exp-sum

  // Each sequence of the block's tokens in turn (a prompt chunk: one; a chunk boundary: two).
  for (int i = 0; i < nt; ++i) {
    const int32_t s = tok_seq[i];
    if (i > 0 && tok_seq[i - 1] == s) continue;
    bool seen = false;
    for (int j = 0; j < i - 1; ++j) seen |= tok_seq[j] == s;
    if (seen) continue;
    int32_t klo = INT32_MAX, khi = -1;  // the keys any of the sequence's tokens may see
    for (int j = i; j < nt; ++j)
      if (tok_seq[j] == s) {
        klo = tok_lo[j] < klo ? tok_lo[j] : klo;
        khi = tok_pos[j] > khi ? tok_pos[j] : khi;
      }
    const int tiles = (khi - klo + kKeys) / kKeys;
    // This thread's rows' keys in this sequence: [slo, sp]; empty for the other sequences' rows.
    int32_t slo[2], sp[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int ti = row_token(r);
      const bool mine = ti < nt && tok_seq[ti] == s;
      slo[r] = mine ? tok_lo[ti] : INT32_MAX;
      sp[r] = mine ? tok_pos[ti] : -1;
    }

    // Thread tid copies 16-byte chunk tid % 8 of keys tid / 8 + 16c (c < 4), K and V; keys past
    // khi are zeros (a V row of NaN would give 0 * NaN in P V). The pool row of key j is
    // page_row's (kv_pages.h), with its divisions done once per tile: the next key's row steps
    // through the page and the ring.
    const int32_t* tab = pages.table + int64_t(s) * pages.ring;
    auto load = [&](int buf, int32_t kb) {
      const int ch = tid & 7;
      const int32_t j0 = kb + (tid >> 3);
      int32_t slot = j0 / pages.page_size;         // page of the sequence ...
      int32_t in = j0 - slot * pages.page_size;    // ... and row in it
      slot %= pages.ring;                          // its slot in the ring
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int r = (tid >> 3) + 16 * c;
        const int off = r * kD + ((ch ^ (r & 7)) << 3);
        if (kb + r <= khi) {
          const int64_t src = (int64_t(tab[slot]) * pages.page_size + in) * width + g * kD + ch * 8;
          cp_async16(&ks[buf][off], kc + src);
          cp_async16(&vs[buf][off], vc + src);
        } else {
          *reinterpret_cast<uint4*>(&ks[buf][off]) = make_uint4(0u, 0u, 0u, 0u);
          *reinterpret_cast<uint4*>(&vs[buf][off]) = make_uint4(0u, 0u, 0u, 0u);
        }
        for (in += 16; in >= pages.page_size; in -= pages.page_size) slot = slot + 1 == pages.ring ? 0 : slot + 1;
      }
      cp_async_commit();
    };

    load(0, klo);
    for (int it = 0; it < tiles; ++it) {
      const int32_t kb = klo + it * kKeys;
      if (it + 1 < tiles) load((it + 1) & 1, kb + kKeys);
      // Whether the warp's rows see any key of the tile, and all of them (no mask needed).
      bool act = false, full = true;
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        act |= kb <= sp[r] && kb + kKeys - 1 >= slo[r];
        full &= slo[r] <= kb && kb + kKeys - 1 <= sp[r];
      }
      const bool busy = __any_sync(kFullMask, act);
      const bool unmasked = __all_sync(kFullMask, full);
      if (it + 1 < tiles) cp_async_wait<1>();
      else cp_async_wait<0>();
      __syncthreads();  // tile it is in shared memory for every warp (each thread waited for its own copies only)

      if (busy) {
        const uint16_t* kt = ks[it & 1];
        const uint16_t* vt = vs[it & 1];

        // S = Q K^T [16 rows, 64 keys]: n-tile n is keys 8n..8n+7.
        float sc[8][4];
#pragma unroll
        for (int n = 0; n < 8; ++n) {
          sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.f;
          const int key = 8 * n + (lane & 7);
#pragma unroll
          for (int kk = 0; kk < 2; ++kk) {
            uint32_t b[4];  // dims 32kk..32kk+31 of 8 keys: k-steps 2kk (b[0], b[1]) and 2kk + 1
            ldmatrix<4, false>(b, kt + key * kD + (((4 * kk + (lane >> 3)) ^ (lane & 7)) << 3));
            const uint32_t b0[2] = {b[0], b[1]}, b1[2] = {b[2], b[3]};
            mma_m16n8k16_bf16(sc[n], qh[2 * kk], b0, sc[n]);
            if constexpr (kSplit) mma_m16n8k16_bf16(sc[n], ql[2 * kk], b0, sc[n]);
            mma_m16n8k16_bf16(sc[n], qh[2 * kk + 1], b1, sc[n]);
            if constexpr (kSplit) mma_m16n8k16_bf16(sc[n], ql[2 * kk + 1], b1, sc[n]);
          }
        }
        if (!unmasked) {
#pragma unroll
          for (int n = 0; n < 8; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int r = e >> 1;
              const int32_t j = kb + 8 * n + 2 * tq + (e & 1);
              if (!(j >= slo[r] && j <= sp[r])) sc[n][e] = -INFINITY;
            }
        }

        // Online softmax: the tile's row max over the quad, rescale, exponentiate.
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int n = 0; n < 8; ++n) {
          mx[0] = fmaxf(mx[0], fmaxf(sc[n][0], sc[n][1]));
          mx[1] = fmaxf(mx[1], fmaxf(sc[n][2], sc[n][3]));
        }
        float mu[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          mx[r] = fmaxf(mx[r], __shfl_xor_sync(kFullMask, mx[r], 1));
          mx[r] = fmaxf(mx[r], __shfl_xor_sync(kFullMask, mx[r], 2));
          const float mn = fmaxf(m[r], mx[r] * scale_log2);
          mu[r] = mn == -INFINITY ? 0.f : mn;  // a row with no key yet: exp2(-inf - 0) = 0, never NaN
          const float alpha = exp2f(m[r] - mu[r]);
          m[r] = mn;
          l[r] *= alpha;
#pragma unroll
          for (int n = 0; n < 8; ++n) {
            o[n][2 * r] *= alpha;
            o[n][2 * r + 1] *= alpha;
          }
        }
#pragma unroll
        for (int n = 0; n < 8; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            sc[n][e] = exp2f(fmaf(sc[n][e], scale_log2, -mu[e >> 1]));
            l[e >> 1] += sc[n][e];
          }

        // O += P V: k-step kk is keys 16kk..16kk+15, P's A fragment from n-tiles 2kk, 2kk + 1.
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
          uint32_t ah[4], al[4];
          if constexpr (kSplit) {
            split_bf16x2(sc[2 * kk][0], sc[2 * kk][1], ah[0], al[0]);
            split_bf16x2(sc[2 * kk][2], sc[2 * kk][3], ah[1], al[1]);
            split_bf16x2(sc[2 * kk + 1][0], sc[2 * kk + 1][1], ah[2], al[2]);
            split_bf16x2(sc[2 * kk + 1][2], sc[2 * kk + 1][3], ah[3], al[3]);
          } else {
            ah[0] = pack_bf16x2(sc[2 * kk][0], sc[2 * kk][1]);
            ah[1] = pack_bf16x2(sc[2 * kk][2], sc[2 * kk][3]);
            ah[2] = pack_bf16x2(sc[2 * kk + 1][0], sc[2 * kk + 1][1]);
            ah[3] = pack_bf16x2(sc[2 * kk + 1][2], sc[2 * kk + 1][3]);
          }
          const int key = 16 * kk + (lane & 7) + (lane & 8);
#pragma unroll
          for (int dd = 0; dd < 4; ++dd) {
            uint32_t b[4];  // keys 16kk.. x dims 16dd..16dd+15, transposed: n-tiles 2dd (b[0], b[1]) and 2dd + 1
            ldmatrix<4, true>(b, vt + key * kD + (((2 * dd + (lane >> 4)) ^ (lane & 7)) << 3));
            const uint32_t b0[2] = {b[0], b[1]}, b1[2] = {b[2], b[3]};
            mma_m16n8k16_bf16(o[2 * dd], ah, b0, o[2 * dd]);
            if constexpr (kSplit) mma_m16n8k16_bf16(o[2 * dd], al, b0, o[2 * dd]);
            mma_m16n8k16_bf16(o[2 * dd + 1], ah, b1, o[2 * dd + 1]);
            if constexpr (kSplit) mma_m16n8k16_bf16(o[2 * dd + 1], al, b1, o[2 * dd + 1]);
          }
        }
      }
      __syncthreads();  // every warp is done with buffer it & 1 before tile it + 2 is copied into it
    }
  }

  // The quad's exp-sums meet; the sink joins the max and the denominator (its mass dropped).
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(kFullMask, l[r], 1);
    l[r] += __shfl_xor_sync(kFullMask, l[r], 2);
    if (row_token(r) >= nt) continue;
    const int h = g * group + row_head(r);
    const float sink = bf16_bits_to_f32(sinks[h]) * kLog2e;
    const float M = fmaxf(m[r], sink);
    const float f = exp2f(m[r] - M);
    const float inv = f / fmaf(l[r], f, exp2f(sink - M));
    float* orow = out + (t0 + row_token(r)) * ldo + h * kD + 2 * tq;
#pragma unroll
    for (int n = 0; n < 8; ++n)
      *reinterpret_cast<float2*>(orow + 8 * n) = make_float2(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
  }
}
}  // namespace
}  // namespace cuda

void attention_prefill_cuda(const AttentionArgs& a, cudaStream_t stream, bool split) {
  using namespace cuda;
  if (a.T < 0 || a.kv_heads < 1 || a.kv_heads > 65535 || a.q_heads < 1 || a.q_heads % a.kv_heads != 0 ||
      a.q_heads / a.kv_heads > kMaxGroup || a.window < 0 || !(a.scale > 0.f))
    throw invalid_argument("attention (prefill): need T >= 0, 1 <= kv_heads <= 65535, q_heads a multiple of kv_heads with at "
                           "most 8 per KV head, window >= 0, scale > 0");
  if (a.head_dim != kD) throw invalid_argument("attention (prefill): head_dim must be 64, got " + std::to_string(a.head_dim));
  if (a.cache_dtype != DType::BF16)
    throw invalid_argument("attention (prefill): the tensor-core kernel reads a bf16 KV cache (an f32 cache is attention_cuda's)");
  const int64_t width = int64_t(a.q_heads) * kD;
  if (a.ldq < width || a.ldo < width || a.ldq % 2 != 0 || a.ldo % 2 != 0 || !aligned(a.q, 8) || !aligned(a.out, 8) ||
      !aligned(a.k_cache, 16) || !aligned(a.v_cache, 16))
    throw invalid_argument("attention (prefill): need ldq, ldo >= q_heads * 64 and even, q and out 8-byte aligned, the caches "
                           "16-byte aligned");
  if (a.T == 0) return;
  if (!a.q || !a.positions || !a.k_cache || !a.v_cache || !a.pages.seq || !a.pages.table || !a.sinks || !a.out ||
      a.pages.ring < 1 || a.pages.page_size < 1)
    throw invalid_argument("attention (prefill): null pointer or empty page table");
  const int group = a.q_heads / a.kv_heads, tpb = kRows / group;
  const dim3 grid(unsigned((int64_t(a.T) + tpb - 1) / tpb), unsigned(a.kv_heads));
  const auto* kc = static_cast<const uint16_t*>(a.k_cache);
  const auto* vc = static_cast<const uint16_t*>(a.v_cache);
  if (split)
    GPTOSS_LAUNCH(attention_prefill_bf16<true>, grid, dim3(kThreads), kSmemBytes, stream, a.q, a.ldq, a.positions, kc, vc, a.pages,
                  a.sinks, a.out, a.ldo, a.T, group, a.window, a.scale * kLog2e);
  else
    GPTOSS_LAUNCH(attention_prefill_bf16<false>, grid, dim3(kThreads), kSmemBytes, stream, a.q, a.ldq, a.positions, kc, vc, a.pages,
                  a.sinks, a.out, a.ldo, a.T, group, a.window, a.scale * kLog2e);
  check_launch("attention");
}
}  // namespace gptoss
