// attention_f32 (decode): grouped-query attention with learned sinks and an optional sliding
// window over a layer's paged KV cache (kernels/MODEL.md, "Attention"); the reference is
// kernels/cpu/attention.cc. Query t at position p sees keys [max(0, p - window + 1), p]
// (window 0: [0, p]); logits (q . k) * scale; the sink joins the softmax as a raw logit and its
// mass is dropped.
//
// Split over the keys, flash-decoding style (FlashInfer's split-KV decode, llama.cpp's
// fattn-vec): pass 1, attention_split_f32_<cache>, takes one block of 128 threads per (split of
// 128 keys, KV head, token). Thread j scores key j of the split against the group's query heads
// (the queries in shared memory; the key row read straight from the page holding it: 256 B f32 or
// 128 B bf16, whole rows per thread, 16-byte loads), each warp turns two heads' scores into their
// max and exp-sum (xor shuffles), then warp w accumulates p * v over keys w, w + 4, ... with lane
// l owning dims 2l, 2l + 1 of every head of the group (coalesced 256 B / 128 B value rows), and
// the four warps' sums meet in shared memory in a fixed order. Each split leaves its max, exp-sum
// and unnormalised output per head, the CPU op's partial layout. Pass 2, attention_merge_f32,
// merges a token's splits in split order with the sink folded into the max and the denominator,
// one thread per output element; with one split planned (a sliding layer's 128-key window, or a
// full layer up to 128 positions) the split kernel does that merge itself, in one launch. Splits start at the token's first key and hold 128 keys
// whatever the step: the result depends only on the token's position and its keys (a token is
// computed the same way alone or batched; runs repeat bit for bit). A sliding layer's 128-key
// window is one split. In default mode on a bf16 cache the split pass runs on the tensor cores
// instead (attention_split_mma, below: the same grid, partials and merge, bf16 Q and weights).
// Limits (checked by the launcher): head_dim 64; q_heads a multiple of kv_heads with at most 8 per
// KV head; 1 <= T <= 65535, kv_heads <= 65535; f32 or bf16 cache; ldq, ldo >= q_heads * 64 and
// multiples of 4, q and the caches 16-byte aligned; scratch >= attention_scratch_cuda(...).
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/kv_cache.cuh"
#include "kernels/cuda/mma.cuh"

#include <algorithm>
#include <cmath>

namespace gptoss {
namespace cuda {
namespace {
constexpr int kD = 64;          // head_dim
constexpr int kSplit = 128;     // keys per split = threads per block (one key per thread)
constexpr int kThreads = kSplit;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxGroup = 8;    // query heads per KV head
constexpr int kMergeThreads = 256;

int64_t splits_for(int64_t max_context, int window) {
  const int64_t keys = window > 0 ? std::min<int64_t>(window, max_context) : max_context;
  return (keys + kSplit - 1) / kSplit;
}

// Four consecutive elements of a cache row as f32.
__device__ __forceinline__ float4 load4(const float* p) { return __ldg(reinterpret_cast<const float4*>(p)); }
__device__ __forceinline__ float4 load4(const uint16_t* p) {
  const uint2 u = __ldg(reinterpret_cast<const uint2*>(p));
  return make_float4(bf16_bits_to_f32(u.x & 0xffffu), bf16_bits_to_f32(u.x >> 16), bf16_bits_to_f32(u.y & 0xffffu),
                     bf16_bits_to_f32(u.y >> 16));
}
// Two consecutive elements.
__device__ __forceinline__ float2 load2(const float* p) { return __ldg(reinterpret_cast<const float2*>(p)); }
__device__ __forceinline__ float2 load2(const uint16_t* p) {
  const unsigned u = __ldg(reinterpret_cast<const unsigned*>(p));
  return make_float2(bf16_bits_to_f32(u & 0xffffu), bf16_bits_to_f32(u >> 16));
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

// One output element of the merge, its splits' partials given one at a time in split order: the
// max with the sink first, then the rescaled sums (the CPU op's merge). Written once, so the split
// kernel's single-split path computes exactly what attention_merge_f32 would.
__device__ __forceinline__ float merge_finish(float sink, int nb, const float* m, const float* sum, const float* o,
                                              size_t stride) {
  float M = sink;
  for (int b = 0; b < nb; ++b) M = fmaxf(M, m[b * stride]);
  float total = expf(sink - M), acc = 0.f;
  for (int b = 0; b < nb; ++b) {
    const float f = expf(m[b * stride] - M);
    total = fmaf(sum[b * stride], f, total);
    acc = fmaf(f, o[b * stride], acc);
  }
  return acc / total;
}

// grid (max_splits, kv_heads, T); parts [T, max_splits, q_heads * (kD + 2)]: m[Hq], sum[Hq],
// acc[Hq, kD] per (token, split), as the CPU op lays its partials out. out (not null, with one
// split planned: max_splits == 1): the merge folded in, the output written here instead of the
// partials (one launch instead of two: every sliding layer, and full layers up to 128 positions).
template <class C>
__global__ void __launch_bounds__(kThreads)
    attention_split_f32(const float* __restrict__ q, int64_t ldq, const int32_t* __restrict__ positions,
                        const C* __restrict__ kc, const C* __restrict__ vc, KvPages pages, int group, int window,
                        float scale, float* __restrict__ parts, const uint16_t* __restrict__ sinks,
                        float* __restrict__ out_final, int64_t ldo) {
  __shared__ __align__(16) float qs[kMaxGroup][kD];          // the group's queries
  __shared__ __align__(16) float ps[kSplit][kMaxGroup];      // scores, then exp(score - max), [key][head]
  __shared__ __align__(16) float red[kWarps][kMaxGroup][kD]; // each warp's p . v
  const int s = blockIdx.x, g = blockIdx.y, t = blockIdx.z;
  const int Hq = int(gridDim.y) * group, width = int(gridDim.y) * kD;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t p = positions[t];
  const int64_t lo = window > 0 ? (p - window + 1 > 0 ? p - window + 1 : 0) : 0;
  const int64_t j0 = lo + int64_t(s) * kSplit;
  if (j0 > p) return;  // past the token's keys (the whole block leaves; the merge never reads it)
  if (out_final && p + 1 - lo > kSplit) {  // past the planned context (one split): as the merge, NaN
    for (int i = tid; i < group * kD; i += kThreads) out_final[t * ldo + int64_t(g) * group * kD + i] = NAN;
    return;
  }
  const int n = int(p + 1 - j0 < kSplit ? p + 1 - j0 : kSplit);
  const int32_t seq = pages.seq[t];

  const float* qt = q + t * ldq + int64_t(g) * group * kD;
  for (int i = tid; i < group * (kD / 4); i += kThreads)
    reinterpret_cast<float4*>(&qs[0][0])[i] = reinterpret_cast<const float4*>(qt)[i];
  __syncthreads();

  // Scores: thread j, key j of the split, against every head of the group.
  if (tid < n) {
    const C* kr = kc + page_row(pages, seq, int32_t(j0 + tid)) * width + g * kD;
    float dot[kMaxGroup];
#pragma unroll
    for (int h = 0; h < kMaxGroup; ++h) dot[h] = 0.f;
#pragma unroll 4
    for (int c = 0; c < kD / 4; ++c) {
      const float4 k4 = load4(kr + 4 * c);
#pragma unroll
      for (int h = 0; h < kMaxGroup; ++h) {
        if (h >= group) break;
        const float4 q4 = reinterpret_cast<const float4*>(qs[h])[c];
        dot[h] = fmaf(q4.x, k4.x, dot[h]);
        dot[h] = fmaf(q4.y, k4.y, dot[h]);
        dot[h] = fmaf(q4.z, k4.z, dot[h]);
        dot[h] = fmaf(q4.w, k4.w, dot[h]);
      }
    }
#pragma unroll
    for (int h = 0; h < kMaxGroup; ++h)
      if (h < group) ps[tid][h] = dot[h] * scale;
  }
  __syncthreads();

  // Max and exp-sum per head: warp w takes heads w, w + 4; lane l keys l, l + 32, l + 64, l + 96.
  float* part = parts + (size_t(t) * gridDim.x + s) * size_t(Hq) * (kD + 2);
  for (int h = warp; h < group; h += kWarps) {
    float m = -INFINITY;
#pragma unroll
    for (int i = 0; i < kSplit / 32; ++i)
      if (lane + 32 * i < n) m = fmaxf(m, ps[lane + 32 * i][h]);
    m = warp_max(m);
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < kSplit / 32; ++i) {
      const int j = lane + 32 * i;
      if (j < n) {
        const float e = expf(ps[j][h] - m);
        ps[j][h] = e;
        sum += e;
      }
    }
    sum = warp_sum(sum);
    if (lane == 0) {
      part[g * group + h] = m;
      part[Hq + g * group + h] = sum;
    }
  }
  __syncthreads();

  // p . v: warp w keys w, w + 4, ...; lane l dims 2l, 2l + 1 of every head.
  float acc[kMaxGroup][2];
#pragma unroll
  for (int h = 0; h < kMaxGroup; ++h) acc[h][0] = acc[h][1] = 0.f;
  for (int j = warp; j < n; j += kWarps) {
    const float2 v = load2(vc + page_row(pages, seq, int32_t(j0 + j)) * width + g * kD + 2 * lane);
    const float4 pa = reinterpret_cast<const float4*>(ps[j])[0];
    const float4 pb = reinterpret_cast<const float4*>(ps[j])[1];
    const float pj[kMaxGroup] = {pa.x, pa.y, pa.z, pa.w, pb.x, pb.y, pb.z, pb.w};
#pragma unroll
    for (int h = 0; h < kMaxGroup; ++h) {
      if (h >= group) break;
      acc[h][0] = fmaf(pj[h], v.x, acc[h][0]);
      acc[h][1] = fmaf(pj[h], v.y, acc[h][1]);
    }
  }
#pragma unroll
  for (int h = 0; h < kMaxGroup; ++h)
    if (h < group) reinterpret_cast<float2*>(red[warp][h])[lane] = make_float2(acc[h][0], acc[h][1]);
  __syncthreads();
  float* out = part + 2 * Hq + size_t(g) * group * kD;
  for (int i = tid; i < group * kD; i += kThreads) {
    const int h = i / kD, d = i % kD;
    float o = red[0][h][d];
#pragma unroll
    for (int w = 1; w < kWarps; ++w) o += red[w][h][d];
    if (!out_final) {
      out[i] = o;
      continue;
    }
    // The one split's max and sum, written above by lane 0 of the head's warp (before the barrier).
    const int hh = g * group + h;
    out_final[t * ldo + int64_t(g) * group * kD + i] =
        merge_finish(bf16_bits_to_f32(sinks[hh]), 1, part + hh, part + Hq + hh, &o, 0);
  }
}

// The split kernel's contract on the tensor cores, for a bf16 cache in default mode: the same
// grid, partials and folded merge, with Q and the softmax weights P rounded to bf16 once (one mma
// per product, as attention_prefill_bf16<false>). The CUDA-core kernel above spends ~0.68 PTX
// instructions per byte of keys and values (8 heads x 64 dims of f32 FMAs per key), over twice what
// an H100 issues per byte of its bandwidth; here a warp takes 32 of the split's 128 keys:
//   S [16 x 32] = Q [16 x 64] K^T: the group's heads are rows 0..7 of the A operand (rows 8..15
//     zero), each thread's K fragments read straight from the key rows (two 16-byte loads per key:
//     the dims' order inside the dot is free, so thread t's k positions of chunk c are dims
//     8t + 32 (c / 2) + 4 (c % 2) + 0..3, and Q's A fragments take the same dims); 16 mma.
//   The warp's max and exp-sum per head (masked keys -inf; the 4 lanes of a row by xor shuffles).
//   O [16 x 64] += P [16 x 32] V: P from S's accumulators (the A layout of the next mma), V staged
//     by cp.async in the warp's own shared rows (16-byte pieces XOR-swizzled by row: conflict-free
//     ldmatrix.trans), keys past the split's last zero-filled; 16 mma.
// Each key's pool row is computed once, by its lane, and shuffled to the lanes that load it. The 4
// warps' (max, sum, O) then meet in shared memory in warp order: the split's max, its sum and O
// rescaled to it, written as the CUDA-core kernel's partials (or merged with the sink in place).
constexpr int kMmaKeys = 32;                 // keys per warp
static_assert(kWarps * kMmaKeys == kSplit, "attention_split_mma: each warp takes its 32 keys of a split in one pass");
constexpr int kMmaVBytes = kMmaKeys * kD * 2;  // a warp's V rows
constexpr size_t kMmaSmem = size_t(kWarps) * (kMmaVBytes + (kMaxGroup * (kD + 2)) * 4);

__global__ void __launch_bounds__(kThreads)
    attention_split_mma(const float* __restrict__ q, int64_t ldq, const int32_t* __restrict__ positions,
                        const uint16_t* __restrict__ kc, const uint16_t* __restrict__ vc, KvPages pages, int group,
                        int window, float scale, float* __restrict__ parts, const uint16_t* __restrict__ sinks,
                        float* __restrict__ out_final, int64_t ldo) {
  uint8_t* const smem = dynamic_shared<uint8_t>();
  const int s = blockIdx.x, g = blockIdx.y, t = blockIdx.z;
  const int Hq = int(gridDim.y) * group, width = int(gridDim.y) * kD;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, gq = lane >> 2, tq = lane & 3;
  uint16_t* const vs = reinterpret_cast<uint16_t*>(smem + warp * kMmaVBytes);  // [32 keys][64 dims]
  float* const red = reinterpret_cast<float*>(smem + kWarps * kMmaVBytes);       // [warp][m[8], sum[8], O[8][64]]
  const int64_t p = positions[t];
  const int64_t lo = window > 0 ? (p - window + 1 > 0 ? p - window + 1 : 0) : 0;
  const int64_t j0 = lo + int64_t(s) * kSplit;
  if (j0 > p) return;
  if (out_final && p + 1 - lo > kSplit) {
    for (int i = tid; i < group * kD; i += kThreads) out_final[t * ldo + int64_t(g) * group * kD + i] = NAN;
    return;
  }
  const int n = int(p + 1 - j0 < kSplit ? p + 1 - j0 : kSplit);
  const int32_t seq = pages.seq[t];

  // Q as A fragments: row gq is head gq of the group (zero past it), the dims permuted as above.
  uint32_t qa[4][2];
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (gq < group) v = *reinterpret_cast<const float4*>(q + t * ldq + (int64_t(g) * group + gq) * kD + 8 * tq + 32 * (c >> 1) + 4 * (c & 1));
    qa[c][0] = pack_bf16x2(v.x, v.y);
    qa[c][1] = pack_bf16x2(v.z, v.w);
  }
  float o[8][4];
#pragma unroll
  for (int d = 0; d < 8; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;
  float m = -INFINITY, l = 0.f;  // row gq's max and this lane's share of its exp-sum

  // The warp's 32 keys: one pass (n <= kSplit), written as a loop so that the static checks
  // (test/cuda/static.mjs) find this body as the kernel's hot loop.
  for (int kb = kMmaKeys * warp; kb < n; kb += kSplit) {
    // Key kb + lane's pool row (the split's last key for lanes past it: loaded, never used).
    const int64_t my_row = page_row(pages, seq, int32_t(j0 + (kb + lane < n ? kb + lane : n - 1)));
    // V: row r (key kb + r) as 8 pieces of 16 bytes, piece c stored at c ^ (r % 8); past n, zeros.
#pragma unroll
    for (int it = 0; it < 8; ++it) {
      const int i = lane + 32 * it, r = i >> 3, c = i & 7;
      const int64_t row = __shfl_sync(kFullMask, my_row, r);
      uint16_t* dst = vs + r * kD + 8 * (c ^ (r & 7));
      if (kb + r < n)
        cp_async16(dst, vc + row * width + g * kD + 8 * c);
      else
        *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
    }
    cp_async_commit();

    // S = Q K^T, 4 n8 tiles of 8 keys: thread (gq, tq) holds key 8 j + gq's dims of its chunks.
    float sc[4][4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t row = __shfl_sync(kFullMask, my_row, 8 * j + gq);
      const uint16_t* kr = kc + row * width + g * kD + 8 * tq;
      const uint4 h0 = __ldg(reinterpret_cast<const uint4*>(kr)), h1 = __ldg(reinterpret_cast<const uint4*>(kr + 32));
      sc[j][0] = sc[j][1] = sc[j][2] = sc[j][3] = 0.f;
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const uint4 h = c >> 1 ? h1 : h0;
        const uint32_t b[2] = {c & 1 ? h.z : h.x, c & 1 ? h.w : h.y};
        const uint32_t a[4] = {qa[c][0], 0u, qa[c][1], 0u};
        mma_m16n8k16_bf16(sc[j], a, b, sc[j]);
      }
    }
    // Row gq's scores (c[0], c[1]: keys 8 j + 2 tq, + 1), scaled; keys past n masked.
    float mx = -INFINITY;
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int key = kb + 8 * j + 2 * tq + e;
        sc[j][e] = key < n ? sc[j][e] * scale : -INFINITY;
        mx = fmaxf(mx, sc[j][e]);
      }
    mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 2));
    m = mx;
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        sc[j][e] = expf(sc[j][e] - m);
        l += sc[j][e];
      }

    cp_async_wait<0>();
    __syncwarp();
    // O += P V: k16 chunk kk = keys 16 kk..16 kk + 15 (S tiles 2 kk, 2 kk + 1); dims in pairs of n8
    // tiles, both B fragments of a pair by one ldmatrix.x4.trans (matrix i: keys + 8 (i % 2),
    // dims + 8 (i / 2)).
#pragma unroll
    for (int kk = 0; kk < 2; ++kk) {
      const uint32_t a[4] = {pack_bf16x2(sc[2 * kk][0], sc[2 * kk][1]), 0u, pack_bf16x2(sc[2 * kk + 1][0], sc[2 * kk + 1][1]),
                             0u};
      const int r = 16 * kk + 8 * ((lane >> 3) & 1) + (lane & 7);
#pragma unroll
      for (int dp = 0; dp < 4; ++dp) {
        uint32_t b[4];
        ldmatrix<4, true>(b, vs + r * kD + 8 * ((2 * dp + (lane >> 4)) ^ (r & 7)));
        mma_m16n8k16_bf16(o[2 * dp], a, b, o[2 * dp]);
        mma_m16n8k16_bf16(o[2 * dp + 1], a, b + 2, o[2 * dp + 1]);
      }
    }
  }
  l += __shfl_xor_sync(kFullMask, l, 1);
  l += __shfl_xor_sync(kFullMask, l, 2);

  // The warps meet in shared memory: row gq's max, sum and O (c[0], c[1]: dims 8 d + 2 tq, + 1).
  float* mine = red + warp * (kMaxGroup * (kD + 2));
  if (gq < group && kMmaKeys * warp < n) {
    if (tq == 0) {
      mine[gq] = m;
      mine[kMaxGroup + gq] = l;
    }
#pragma unroll
    for (int d = 0; d < 8; ++d)
      *reinterpret_cast<float2*>(mine + 2 * kMaxGroup + gq * kD + 8 * d + 2 * tq) = make_float2(o[d][0], o[d][1]);
  }
  __syncthreads();
  float* part = parts + (size_t(t) * gridDim.x + s) * size_t(Hq) * (kD + 2);
  for (int i = tid; i < group * kD; i += kThreads) {
    const int h = i / kD, d = i % kD;
    const int nw = (n + kMmaKeys - 1) / kMmaKeys;  // the warps that had keys (the others wrote nothing)
    float M = -INFINITY;
    for (int w = 0; w < nw; ++w) M = fmaxf(M, red[w * (kMaxGroup * (kD + 2)) + h]);
    float sum = 0.f, acc = 0.f;
    for (int w = 0; w < nw; ++w) {
      const float* r = red + w * (kMaxGroup * (kD + 2));
      const float f = expf(r[h] - M);
      sum = fmaf(r[kMaxGroup + h], f, sum);
      acc = fmaf(r[2 * kMaxGroup + h * kD + d], f, acc);
    }
    const int hh = g * group + h;
    if (!out_final) {
      if (d == 0) {
        part[hh] = M;
        part[Hq + hh] = sum;
      }
      part[2 * Hq + size_t(g) * group * kD + i] = acc;
      continue;
    }
    out_final[t * ldo + int64_t(g) * group * kD + i] = merge_finish(bf16_bits_to_f32(sinks[hh]), 1, &M, &sum, &acc, 0);
  }
}

// grid (ceil(q_heads * kD / 256), T): one thread per output element; a token's splits merged in
// split order (the CPU op's merge: max with the sink first, then the rescaled sums).
__global__ void __launch_bounds__(kMergeThreads)
    attention_merge_f32(const float* __restrict__ parts, const int32_t* __restrict__ positions,
                        const uint16_t* __restrict__ sinks, float* __restrict__ out, int64_t ldo, int Hq, int window,
                        int max_splits) {
  const int i = blockIdx.x * kMergeThreads + threadIdx.x, t = blockIdx.y;
  if (i >= Hq * kD) return;
  const int h = i / kD, d = i % kD;
  const int64_t p = positions[t];
  const int64_t lo = window > 0 ? (p - window + 1 > 0 ? p - window + 1 : 0) : 0;
  const int64_t nb = (p + 1 - lo + kSplit - 1) / kSplit;
  float* o = out + t * ldo + i;
  if (nb > max_splits) {  // the position is past the planned context: no silent truncation
    *o = NAN;
    return;
  }
  const size_t stride = size_t(Hq) * (kD + 2);
  const float* base = parts + size_t(t) * max_splits * stride;
  *o = merge_finish(bf16_bits_to_f32(sinks[h]), int(nb), base + h, base + Hq + h, base + 2 * Hq + h * kD + d, stride);
}
}  // namespace
}  // namespace cuda

size_t attention_scratch_cuda(int T, int64_t max_context, int q_heads, int head_dim, int window) {
  return size_t(std::max(T, 0)) * size_t(cuda::splits_for(std::max<int64_t>(max_context, 1), window)) * size_t(q_heads) *
         size_t(head_dim + 2) * 4;
}

size_t attention_scratch_plan_cuda(int max_T, int64_t max_context, int q_heads, int head_dim, int window) {
  const size_t one = attention_scratch_cuda(1, max_context, q_heads, head_dim, window);
  if (one == 0) return 0;
  const size_t tokens = std::max<size_t>(1, kAttentionScratchCapBytes / one);
  return std::min<size_t>(size_t(std::max(max_T, 0)), tokens) * one;
}

void attention_cuda(const AttentionArgs& a, int64_t max_context, cudaStream_t stream, bool fold_merge, bool mma) {
  using namespace cuda;
  if (a.T < 0 || a.T > 65535 || a.kv_heads < 1 || a.kv_heads > 65535 || a.q_heads < 1 || a.q_heads % a.kv_heads != 0 ||
      a.q_heads / a.kv_heads > kMaxGroup || a.window < 0 || max_context < 1 || !(a.scale > 0.f))
    throw invalid_argument("attention: need 0 <= T <= 65535, 1 <= kv_heads <= 65535, q_heads a multiple of kv_heads with at "
                           "most 8 per KV head, window >= 0, max_context >= 1, scale > 0");
  if (a.head_dim != kD) throw invalid_argument("attention: head_dim must be 64, got " + std::to_string(a.head_dim));
  if (a.cache_dtype != DType::F32 && a.cache_dtype != DType::BF16)
    throw invalid_argument("attention: the KV cache must be f32 or bf16");
  const int64_t width = int64_t(a.q_heads) * kD;
  if (a.ldq < width || a.ldo < width || a.ldq % 4 != 0 || !aligned(a.q, 16) || !aligned(a.k_cache, 16) ||
      !aligned(a.v_cache, 16))
    throw invalid_argument("attention: need ldq, ldo >= q_heads * 64, ldq % 4 == 0, q and the caches 16-byte aligned");
  if (mma && a.cache_dtype != DType::BF16) throw invalid_argument("attention: the tensor-core kernel needs a bf16 cache");
  if (a.T == 0) return;
  if (!a.q || !a.positions || !a.k_cache || !a.v_cache || !a.pages.seq || !a.pages.table || !a.sinks || !a.out || !a.scratch ||
      a.pages.ring < 1 || a.pages.page_size < 1)
    throw invalid_argument("attention: null pointer or empty page table");
  const size_t one = attention_scratch_cuda(1, max_context, a.q_heads, kD, a.window);
  if (a.scratch_bytes < one)
    throw invalid_argument("attention: scratch of " + std::to_string(a.scratch_bytes) + " bytes < the " + std::to_string(one) +
                           " needed for a token below position " + std::to_string(max_context));
  const int64_t splits = splits_for(max_context, a.window);
  if (splits > INT32_MAX) throw invalid_argument("attention: max_context too large");
  float* parts = reinterpret_cast<float*>(a.scratch);
  const int group = a.q_heads / a.kv_heads;
  // As many tokens per launch as the scratch holds (all of them when it was planned for the step).
  const int chunk = int(std::min<size_t>(size_t(a.T), a.scratch_bytes / one));
  for (int t0 = 0; t0 < a.T; t0 += chunk) {
    const int n = std::min(chunk, a.T - t0);
    const float* q = a.q + int64_t(t0) * a.ldq;
    const int32_t* positions = a.positions + t0;
    const KvPages pages{a.pages.seq + t0, a.pages.table, a.pages.ring, a.pages.page_size};
    float* out = a.out + int64_t(t0) * a.ldo;
    const dim3 grid(unsigned(splits), unsigned(a.kv_heads), unsigned(n));
    // One split planned: the split kernel merges too (the same merge_finish), one launch.
    float* fin = fold_merge && splits == 1 ? out : nullptr;
    if (mma)
      GPTOSS_LAUNCH(attention_split_mma, grid, dim3(kThreads), kMmaSmem, stream, q, a.ldq, positions,
                    static_cast<const uint16_t*>(a.k_cache), static_cast<const uint16_t*>(a.v_cache), pages, group,
                    a.window, a.scale, parts, a.sinks, fin, a.ldo);
    else if (a.cache_dtype == DType::F32)
      GPTOSS_LAUNCH(attention_split_f32<float>, grid, dim3(kThreads), 0, stream, q, a.ldq, positions,
                    static_cast<const float*>(a.k_cache), static_cast<const float*>(a.v_cache), pages, group, a.window,
                    a.scale, parts, a.sinks, fin, a.ldo);
    else
      GPTOSS_LAUNCH(attention_split_f32<uint16_t>, grid, dim3(kThreads), 0, stream, q, a.ldq, positions,
                    static_cast<const uint16_t*>(a.k_cache), static_cast<const uint16_t*>(a.v_cache), pages, group,
                    a.window, a.scale, parts, a.sinks, fin, a.ldo);
    check_launch("attention");
    if (fin) continue;
    const dim3 mgrid(unsigned((width + kMergeThreads - 1) / kMergeThreads), unsigned(n));
    GPTOSS_LAUNCH(attention_merge_f32, mgrid, dim3(kMergeThreads), 0, stream, parts, positions, a.sinks, out, a.ldo,
                  a.q_heads, a.window, int(splits));
    check_launch("attention");
  }
}
}  // namespace gptoss
