// sample on the device (kernels/cuda/sample.cuh; reference kernels/cpu/sample.cc). Each row is cut
// into slices of kSampleSlice ids, one block per (slice, row), so a few rows still fill the GPU:
//   select: proc[r, i] = allowed(i) ? logits[r, i] : -inf, then the slice's biased / penalised ids
//           (a thread per id, each list stably sorted by id on the host: the caller's order), in
//           shared memory and into proc; the slice's argmax; TopK: the slice's own K' best (4-pass
//           8-bit radix select in shared memory, ordered compaction), listed in id order
//           TopK: the block whose warp counts the row's slices last (a counter per row, left
//           zero) merges them: the slices' argmax (ties to the lower id, in slice order) and the
//           K' best of the slices' lists (every one of the row's K' best is among its slice's K'
//           best), by the same radix select over their concatenation (id order), compacted in id
//           order
//                                                                    grid (slices, rows), 512 threads
//   exp:    Greedy / Draw: the slices' argmax (every block, warp 0), the body's exps into proc, a
//           chunk of kSampleChunk ids a block (one of exp_sum's blocks), and the chunk's `lanes` f32
//           lane sums (chains of kSampleChunk / lanes adds); Draw: each chunk's double sum; the
//           row's last block: exp_sum's fold of the chunks' lanes into the body's sum, the tail
//                                                                    grid (chunks, rows), 256 threads
// Launches for paths no row takes (SampleCudaArgs::paths) are skipped. Every f32 step is the CPU's,
// rounded the same way (no contraction: __fadd_rn, __fmul_rn, division by __fdiv_rn), so processed
// logits are bit-identical to sample_cpu's. Deterministic: integer histograms and counts, ordered
// scans and merges, no result depends on which block or thread runs first.
// Limits (checked): 1 <= V <= kSampleMaxSlices * kSampleSlice, rows < 65536; SampleCudaRow fields as
// SampleCudaBatch packs them.
#include "kernels/cuda/sample.cuh"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/cpu/simd.h"

namespace gptoss {
namespace cuda {
namespace {
constexpr int kThreads = 512, kWarps = kThreads / 32;  // select (and its merge)
constexpr int kExpThreads = 256;                        // one chunk of kSampleChunk ids a block
constexpr int kMaxLanes = 16;  // lane sums stored per chunk (the widest CPU vector)
constexpr uint32_t kKeyNegInf = 0x007fffffu;  // order_key(-inf)
static_assert(kSampleSlice % kSampleChunk == 0 && kSampleSlice % kThreads == 0, "slice shape");
static_assert(kSampleChunk == cpu::kExpSumBlock && kSampleChunk % kMaxLanes == 0, "a chunk is one of exp_sum's blocks");

__device__ __forceinline__ float div_rn(float a, float b) {
#if defined(GPTOSS_CUDA_EMU)
  return a / b;
#else
  return __fdiv_rn(a, b);
#endif
}

// Orders floats as unsigned integers (larger value, larger key); -0 as +0; NaN lowest (0).
__device__ __forceinline__ uint32_t order_key(float v) {
  if (v != v) return 0;
  const uint32_t u = v == 0.f ? 0u : __float_as_uint(v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
// exp((l - m) * s) exactly as the CPU's exp_sum computes it: fused = the AVX2/AVX-512 lanes
// (kernels/cpu/simd_impl.h vexp), else exp_scalar's separate steps.
__device__ __forceinline__ float cpu_exp(float l, float m, float s, bool fused) {
  const float x = __fmul_rn(__fadd_rn(l, -m), s);
  if (!(x >= -87.f)) return 0.f;
  float k, r, p;
  if (fused) {
    k = floorf(__fmaf_rn(x, 1.44269504f, 0.5f));
    r = __fmaf_rn(-k, -2.12194440e-4f, __fmaf_rn(-k, 0.693359375f, x));
    p = 1.9875691500e-4f;
    p = __fmaf_rn(p, r, 1.3981999507e-3f);
    p = __fmaf_rn(p, r, 8.3334519073e-3f);
    p = __fmaf_rn(p, r, 4.1665795894e-2f);
    p = __fmaf_rn(p, r, 1.6666665459e-1f);
    p = __fmaf_rn(p, r, 5.0000001201e-1f);
    p = __fmaf_rn(__fmul_rn(p, r), r, __fadd_rn(r, 1.f));
  } else {
    k = floorf(__fadd_rn(__fmul_rn(x, 1.44269504f), 0.5f));
    r = __fadd_rn(__fsub_rn(x, __fmul_rn(k, 0.693359375f)), __fmul_rn(k, 2.12194440e-4f));
    p = 1.9875691500e-4f;
    p = __fadd_rn(__fmul_rn(p, r), 1.3981999507e-3f);
    p = __fadd_rn(__fmul_rn(p, r), 8.3334519073e-3f);
    p = __fadd_rn(__fmul_rn(p, r), 4.1665795894e-2f);
    p = __fadd_rn(__fmul_rn(p, r), 1.6666665459e-1f);
    p = __fadd_rn(__fmul_rn(p, r), 5.0000001201e-1f);
    p = __fadd_rn(__fadd_rn(__fmul_rn(__fmul_rn(p, r), r), r), 1.f);
  }
  return __int_as_float(__float_as_int(p) + int(uint32_t(__float2int_rn(k)) << 23));
}

__device__ __forceinline__ bool allowed(const uint32_t* allow, int i) {
  return !allow || ((allow[i >> 5] >> (i & 31)) & 1u);
}


// First index in [lo, hi) of entries with id >= id (entries sorted by id there).
__device__ __forceinline__ int lower_bound(const SampleCudaEntry* e, int lo, int hi, int id) {
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if (e[mid].id < id) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
// (key, id) of the better of two: larger key, then lower id.
__device__ __forceinline__ void better(uint32_t& k, int& i, uint32_t k2, int i2) {
  if (k2 > k || (k2 == k && i2 < i)) k = k2, i = i2;
}

// The K'-th largest key among the eligible (key > -inf's), 8 bits at a time, over the keys each(f)
// hands this thread's f (the counts are integers: any split of the keys over threads gives the same
// cut): ids with key > *T all go, then the first *need (lowest ids) with key == *T; with fewer than
// K' eligible, every eligible id goes (*T = -inf's key + 1, *all: key >= *T). Returns the eligible count.
template <class Each>
__device__ __forceinline__ int radix_select(int want, Each each, int* hist, uint32_t* sel, uint32_t* T, bool* all,
                                            int* need_out) {
  const int tid = threadIdx.x;
  uint32_t prefix = 0, mask = 0;
  int need = want, eligible = 0;
  for (int pass = 0; pass < 4; ++pass) {
    const int shift = 24 - 8 * pass;
    for (int b = tid; b < 256; b += kThreads) hist[b] = 0;
    __syncthreads();
    each([&](uint32_t k) {
      if (k > kKeyNegInf && (k & mask) == prefix) atomicAdd(&hist[(k >> shift) & 255], 1);
    });
    __syncthreads();
    if (tid == 0) {
      int cum = 0, b = 255;
      for (; b >= 0; --b) {
        if (cum + hist[b] >= need) break;
        cum += hist[b];
      }
      if (pass == 0) {
        int tot = 0;
        for (int j = 0; j < 256; ++j) tot += hist[j];
        sel[1] = uint32_t(tot);
      }
      sel[0] = b < 0 ? 0xffffffffu : uint32_t(b);  // fewer than K' eligible: take them all
      hist[0] = cum;  // read back below (after the barrier), then cleared by the next pass
    }
    __syncthreads();
    const uint32_t b = sel[0];
    if (pass == 0) eligible = int(sel[1]);
    const int cum = hist[0];
    __syncthreads();
    if (b == 0xffffffffu) {
      prefix = kKeyNegInf + 1;  // every eligible id
      mask = 0;
      need = 0;
      break;
    }
    need -= cum;
    prefix |= b << shift;
    mask |= 255u << shift;
  }
  *T = prefix;
  *all = mask == 0;
  *need_out = need;
  return eligible;
}

// The selected entries of 0..count in index order: put(slot, i) for each; returns how many. Each
// warp takes a contiguous run of indices: it counts its takes (key > T; key == T), one barrier
// shares the counts, and it walks its run again writing at its offset (the first `need` ids with
// key == T overall are taken, so a warp takes those of its own whose rank is below need).
template <class Key, class Put>
__device__ __forceinline__ int compact(int count, uint32_t T, bool all, int need, Key key, Put put, int* gt_tot,
                                       int* eq_tot) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int per = ((count + kWarps - 1) / kWarps + 31) / 32 * 32;
  const int w0 = min(count, warp * per), w1 = min(count, w0 + per);
  const auto gt_of = [&](uint32_t k) { return all ? k >= T : k > T; };
  int gt_n = 0, eq_n = 0;
  for (int base = w0; base < w1; base += 32) {
    const int i = base + lane;
    const uint32_t k = i < w1 ? key(i) : 0;
    gt_n += __popc(__ballot_sync(kFullMask, i < w1 && gt_of(k)));
    eq_n += __popc(__ballot_sync(kFullMask, i < w1 && !all && k == T));
  }
  if (lane == 0) gt_tot[warp] = gt_n, eq_tot[warp] = eq_n;
  __syncthreads();
  int gt_before = 0, eq_before = 0, gt_sum = 0, eq_sum = 0;
  for (int w = 0; w < kWarps; ++w) {
    if (w < warp) gt_before += gt_tot[w], eq_before += eq_tot[w];
    gt_sum += gt_tot[w];
    eq_sum += eq_tot[w];
  }
  int written = gt_before + min(need, eq_before), eq_seen = eq_before;
  const unsigned below = (1u << lane) - 1u;
  for (int base = w0; base < w1; base += 32) {
    const int i = base + lane;
    const uint32_t k = i < w1 ? key(i) : 0;
    const bool gt = i < w1 && gt_of(k), eq = i < w1 && !all && k == T;
    const unsigned eq_b = __ballot_sync(kFullMask, eq);
    const bool take = gt || (eq && eq_seen + __popc(eq_b & below) < need);
    const unsigned take_b = __ballot_sync(kFullMask, take);
    if (take) put(written + __popc(take_b & below), i);
    written += __popc(take_b);
    eq_seen += __popc(eq_b);
  }
  return gt_sum + min(need, eq_sum);
}

// Argmax over the block of the (key, id) each thread holds; every thread gets the result.
__device__ __forceinline__ void block_best(uint32_t* bk, int* bi, uint32_t* red_key, int* red_id) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1)
    better(*bk, *bi, __shfl_xor_sync(kFullMask, *bk, o), __shfl_xor_sync(kFullMask, *bi, o));
  if (lane == 0) red_key[warp] = *bk, red_id[warp] = *bi;
  __syncthreads();
  *bk = red_key[0];
  *bi = red_id[0];
  for (int w = 1; w < kWarps; ++w) better(*bk, *bi, red_key[w], red_id[w]);
}

// Per-slice results in the scratch after the processed rows (see sample_cuda_scratch).
struct SliceRec {
  uint32_t key;  // the slice's best key (0: none, or every id NaN)
  int32_t id;    // its id, ties to the lower (n when the slice holds no id below n)
  int32_t count, eligible;  // candidates listed (TopK), eligible ids in the slice
  float value;   // Greedy / Draw: the processed logit of id (key > 0)
  float last;    // Greedy / Draw: the processed logit of id n - 1, in the slice that holds it
};
constexpr int kSliceCap = kSampleMaxCandidates;  // candidates a slice lists (K' <= 2048)

// TopK, in the block of sample_select whose warp counted a row's slices last: the slices' argmax
// and the K' best of the slices' lists (their concatenation is in id order), compacted in id order.
// Its shared arrays are sample_select's.
__device__ __forceinline__ void merge_slices(int V, int S, int r, const SampleCudaRow& row, const float* proc,
                                             const float* lists, const SliceRec* recs, SampleCudaOut* outs,
                                             SampleCudaCand* cands, int* start, uint32_t* red_key, int* red_id,
                                             int* hist, int (*warp_tot)[kWarps], uint32_t* sel) {
  const int tid = threadIdx.x, lane = tid & 31;
  const int n = row.n;
  const float* l = proc + size_t(r) * V;
  const SliceRec* rec = recs + size_t(r) * S;
  SampleCudaOut& out = outs[r];

  uint32_t bk = 0;
  int bi = n;
  for (int s = tid; s < S; s += kThreads) better(bk, bi, rec[s].key, rec[s].id);
  block_best(&bk, &bi, red_key, red_id);
  if (bk == 0) bi = n - 1;  // every logit NaN (the CPU's scan ends on the last one)
  if (tid == 0) out.best = bi, out.max = l[bi];
  // start[]: the slices' counts scanned by warp 0, 32 at a time; and the eligible total.
  if (tid < 32) {
    int run = 0, eligible = 0;
    for (int s0 = 0; s0 < S; s0 += 32) {
      const int c = s0 + lane < S ? rec[s0 + lane].count : 0;
      eligible += s0 + lane < S ? rec[s0 + lane].eligible : 0;
      int incl = c;
      for (int o = 1; o < 32; o <<= 1) {
        const int u = __shfl_up_sync(kFullMask, incl, o);
        if (lane >= o) incl += u;
      }
      if (s0 + lane < S) start[s0 + lane] = run + incl - c;
      run += __reduce_add_sync(kFullMask, c);
    }
    for (int o = 16; o > 0; o >>= 1) eligible += __shfl_xor_sync(kFullMask, eligible, o);
    if (lane == 0) start[S] = run, sel[1] = uint32_t(eligible);
  }
  __syncthreads();
  const int total = start[S], eligible = int(sel[1]);
  // Candidate j of the concatenation: its slice by binary search over start[].
  const auto at = [&](int j) {
    int a = 0, b = S;
    while (b - a > 1) {
      const int mid = (a + b) >> 1;
      if (start[mid] <= j) a = mid;
      else b = mid;
    }
    return (size_t(r) * S + a) * 2 * kSliceCap + size_t(j - start[a]);
  };
  const auto key = [&](int j) { return order_key(lists[at(j)]); };
  // The radix passes: a warp per slice's list (no search).
  const auto each = [&](auto f) {
    for (int s = tid >> 5; s < S; s += kWarps) {
      const float* list = lists + (size_t(r) * S + s) * 2 * kSliceCap;
      for (int j = lane; j < start[s + 1] - start[s]; j += 32) f(order_key(list[j]));
    }
  };
  uint32_t T;
  bool all;
  int need;
  radix_select(row.ncand, each, hist, sel, &T, &all, &need);
  SampleCudaCand* c = cands + size_t(r) * kSampleMaxCandidates;
  const int written = compact(
      total, T, all, need, key,
      [&](int slot, int j) {
        const size_t k = at(j);
        c[slot].id = reinterpret_cast<const int*>(lists + kSliceCap)[k];
        c[slot].logit = lists[k];
      },
      warp_tot[0], warp_tot[1]);
  if (tid == 0) out.count = written, out.eligible = eligible;
}

// One block per (slice of kSampleSlice ids, row): the logits with the mask, the slice's listed ids
// (bias, penalties) over them, into shared memory and the processed row; the slice's argmax; TopK:
// its K' best by (key, lower id), listed in id order (their union holds the row's K' best).
__global__ void __launch_bounds__(kThreads, 2)
    sample_select(const float* __restrict__ logits, int64_t ld, int V, const SampleCudaRow* __restrict__ rows,
                  const SampleCudaEntry* __restrict__ entries, const uint32_t* __restrict__ allow_all,
                  float* __restrict__ proc, float* __restrict__ lists, SliceRec* __restrict__ recs,
                  unsigned* __restrict__ tickets, SampleCudaOut* __restrict__ outs, SampleCudaCand* __restrict__ cands,
                  unsigned* __restrict__ merge_tickets) {
  __shared__ float v[kSampleSlice];
  __shared__ uint32_t red_key[kWarps];
  __shared__ int red_id[kWarps];
  __shared__ int hist[256];
  __shared__ int warp_tot[2][kWarps];  // compact's per-warp counts
  __shared__ uint32_t sel[2];
  __shared__ bool counted_last[kWarps];
  __shared__ int start[kSampleMaxSlices + 1];  // the merge's: start[s], candidates of the slices before s
  const int r = blockIdx.y, s = blockIdx.x, S = gridDim.x, tid = threadIdx.x;
  const SampleCudaRow& row = rows[r];
  if (row.path == int32_t(SamplePath::FullRow)) return;
  const uint32_t* allow = row.allow_off >= 0 ? allow_all + row.allow_off : nullptr;
  const float* l = logits + r * ld;
  const int lo = s * kSampleSlice, len = min(kSampleSlice, V - lo), n = row.n;
  for (int i = tid; i < len; i += kThreads) v[i] = allowed(allow, lo + i) ? l[lo + i] : -INFINITY;
  __syncthreads();
  // The listed ids in [lo, lo + len): a thread per id applies its bias entries, then its history
  // (each list stably sorted by id on the host: the caller's order within an id).
  const SampleCudaEntry* bias = entries + row.bias_off;
  const SampleCudaEntry* hist_e = entries + row.hist_off;
  const int nb = row.bias_len, nh = row.hist_len;
  const int b_lo = lower_bound(bias, 0, nb, lo), b_hi = lower_bound(bias, b_lo, nb, lo + len);
  const int h_lo = lower_bound(hist_e, 0, nh, lo), h_hi = lower_bound(hist_e, h_lo, nh, lo + len);
  const int nbs = b_hi - b_lo;
  for (int w = tid; w < nbs + (h_hi - h_lo); w += kThreads) {
    int id, b0, b1, h0;
    if (w < nbs) {
      const int j = b_lo + w;
      if (w > 0 && bias[j - 1].id == bias[j].id) continue;
      id = bias[j].id;
      b0 = j;
      b1 = j + 1;
      while (b1 < b_hi && bias[b1].id == id) ++b1;
      h0 = lower_bound(hist_e, h_lo, h_hi, id);
    } else {
      const int j = h_lo + w - nbs;
      if (j > h_lo && hist_e[j - 1].id == hist_e[j].id) continue;
      id = hist_e[j].id;
      const int b = lower_bound(bias, b_lo, b_hi, id);
      if (b < b_hi && bias[b].id == id) continue;  // its bias thread applies it
      b0 = b1 = 0;
      h0 = j;
    }
    int h1 = h0;
    while (h1 < h_hi && hist_e[h1].id == id) ++h1;
    if (!allowed(allow, id)) continue;  // stays -inf (the mask comes last on the CPU)
    float x = l[id];
    for (int i = b0; i < b1; ++i) x = __fadd_rn(x, bias[i].value);
    for (int i = h0; i < h1; ++i) {
      const int c = hist_e[i].count;
      if (c <= 0) continue;
      if (row.repetition != 1.f) x = x > 0 ? div_rn(x, row.repetition) : __fmul_rn(x, row.repetition);
      x = __fsub_rn(x, __fadd_rn(__fmul_rn(row.frequency, float(c)), row.presence));
    }
    v[id - lo] = x;
  }
  __syncthreads();
  float* o = proc + size_t(r) * V + lo;
  for (int i = tid; i < len; i += kThreads) o[i] = v[i];

  // The slice's argmax over ids below n, ties to the lower id; NaN never wins (key 0).
  const int m = max(0, min(len, n - lo));
  uint32_t bk = 0;
  int bi = n;
  for (int i = tid; i < m; i += kThreads) better(bk, bi, order_key(v[i]), lo + i);
  block_best(&bk, &bi, red_key, red_id);
  SliceRec& rec = recs[size_t(r) * S + s];
  if (row.path != int32_t(SamplePath::TopK)) {
    if (tid == 0) {
      const bool has_last = n - 1 >= lo && n - 1 < lo + len;
      rec = {bk, bi, 0, 0, bk ? v[bi - lo] : 0.f, has_last ? v[n - 1 - lo] : 0.f};
      if (s == 0) tickets[r] = 0u;  // sample_exp's count of the row's finished chunks
    }
    return;
  }
  uint32_t T;
  bool all;
  int need;
  const auto key = [&](int i) { return order_key(v[i]); };
  const auto each = [&](auto f) {
    for (int i = tid; i < m; i += kThreads) f(key(i));
  };
  const int eligible = radix_select(row.ncand, each, hist, sel, &T, &all, &need);
  float* cl = lists + (size_t(r) * S + s) * 2 * kSliceCap;
  int* ci = reinterpret_cast<int*>(cl + kSliceCap);
  const int count = compact(m, T, all, need, key, [&](int at, int i) { cl[at] = v[i], ci[at] = lo + i; }, warp_tot[0], warp_tot[1]);
  if (tid == 0) rec = {bk, bi, count, eligible, 0.f, 0.f};
  // Each warp counts itself done for the row after its stores (the processed slice, its list, the
  // record) and fences; the last of the row's S x kWarps counts sets the counter back to zero (no
  // other warp of the row reads it again) and its block merges the slices. Which block that is
  // does not change a bit: the merge reads only what every block stored.
  __threadfence();
  __syncwarp();  // every lane has stored before lane 0 counts: another block merges them
  if ((tid & 31) == 0) {
    const bool is_last = atomicAdd(merge_tickets + r, 1u) == unsigned(S * kWarps - 1);
    if (is_last) merge_tickets[r] = 0u;
    counted_last[tid >> 5] = is_last;
  }
  __syncthreads();
  bool last = false;
  for (int w = 0; w < kWarps; ++w) last = last || counted_last[w];
  if (!last) return;
  __threadfence();  // the other blocks' slices, after their counts
  merge_slices(V, S, r, row, proc, lists, recs, outs, cands, start, red_key, red_id, hist, warp_tot, sel);
}

// Greedy / Draw: one block per (chunk of kSampleChunk body ids, row); a row with no body still has
// its block 0. Each block merges the slices' argmax (warp 0: the same (key, lower id) order as
// merge_slices; every key 0, i.e. every logit NaN: id n - 1, as the CPU's scan ends), then writes
// the exps exp((l - max) * scale) by the CPU's formula into the processed row and the chunk's W f32
// lane sums in exp_sum's order (a chunk is one of its blocks: lane j adds ids j, j + W, ... of the
// chunk in order; warp 1); Draw: the chunk's double sum, in the order the host's bound assumes (32
// lanes each in id order, then the lanes in order; warp 0). Warp 1 then counts the chunk done (a
// ticket per row, zeroed by sample_select, taken after its lanes' stores and fences); the row's
// last to count folds the chunks' lane sums as exp_sum does (lane j's into a double in chunk
// order, a chain of n / kSampleChunk adds, then the W double lanes in order) and writes the row's
// out. Which block is last does not change a bit: the fold reads every chunk's stored sums in a
// fixed order.
// (At least 4 blocks an SM: left to itself, ptxas kept sm_80 to 32 registers and spilled 4 bytes.)
__global__ void __launch_bounds__(kExpThreads, 4)
    sample_exp(int V, int S, const SampleCudaRow* __restrict__ rows, float* __restrict__ proc,
               const SliceRec* __restrict__ recs, SampleCudaOut* __restrict__ outs, double* __restrict__ chunks,
               float* __restrict__ clanes, unsigned* __restrict__ tickets) {
  __shared__ float e[kSampleChunk];
  __shared__ double part[32];
  __shared__ float max_of_row;
  __shared__ int best_of_row;
  __shared__ double fold[kMaxLanes];
  const int r = blockIdx.y, c = blockIdx.x, tid = threadIdx.x;
  const SampleCudaRow& row = rows[r];
  const bool draw = row.path == int32_t(SamplePath::Draw);
  if (row.path != int32_t(SamplePath::Greedy) && !draw) return;
  const int n = row.n, W = row.lanes, nbody = n - n % W, base = c * kSampleChunk;
  const int used = max(1, (nbody + kSampleChunk - 1) / kSampleChunk);  // the row's blocks that go on
  if (c >= used) return;
  const SliceRec* rec = recs + size_t(r) * S;
  if (tid < 32) {
    uint32_t bk = 0;
    int bi = n, bs = 0;
    for (int k = tid; k < S; k += 32)
      if (rec[k].key > bk || (rec[k].key == bk && rec[k].id < bi)) bk = rec[k].key, bi = rec[k].id, bs = k;
    for (int o = 16; o > 0; o >>= 1) {
      const uint32_t k2 = __shfl_xor_sync(kFullMask, bk, o);
      const int i2 = __shfl_xor_sync(kFullMask, bi, o), s2 = __shfl_xor_sync(kFullMask, bs, o);
      if (k2 > bk || (k2 == bk && i2 < bi)) bk = k2, bi = i2, bs = s2;
    }
    if (tid == 0) {
      best_of_row = bk ? bi : n - 1;
      max_of_row = bk ? rec[bs].value : rec[(n - 1) / kSampleSlice].last;
    }
  }
  __syncthreads();
  const int len = max(0, min(kSampleChunk, nbody - base));  // a multiple of W
  const float m = max_of_row, s = draw ? row.scale : 1.f;
  const bool fused = row.fused_exp != 0;
  float* l = proc + size_t(r) * V + base;
  for (int i = tid; i < len; i += kExpThreads) {
    const float x = cpu_exp(l[i], m, s, fused);
    l[i] = x;
    e[i] = x;
  }
  __syncthreads();
  const size_t nch = size_t(sample_cuda_chunks(V));
  if (draw && tid < 32) {
    double acc = 0.0;
    for (int i = tid; i < len; i += 32) acc += double(e[i]);
    part[tid] = acc;
    __syncwarp();
    if (tid == 0) {
      double t = 0.0;
      for (int j = 0; j < 32; ++j) t += part[j];
      chunks[size_t(r) * nch + c] = t;
    }
  }
  if (tid < 32 || tid >= 64) return;
  // Warp 1: the lane sums, its ticket, and, in the row's last warp to count, the fold.
  const int j = tid - 32;
  float* cl = clanes + size_t(r) * nch * kMaxLanes;
  if (j < W) {
    float acc = 0.f;
    for (int i = j; i < len; i += W) acc = __fadd_rn(acc, e[i]);
    cl[size_t(c) * kMaxLanes + j] = acc;
    __threadfence();  // this lane sum is visible device-wide before the warp's ticket
  }
  __syncwarp();  // every lane has stored before lane 0 counts: another block folds them
  unsigned ticket = 0;
  if (j == 0) ticket = atomicAdd(tickets + r, 1u);
  if (__shfl_sync(kFullMask, ticket, 0) != unsigned(used - 1)) return;
  __threadfence();  // the other blocks' lane sums, after their tickets
  if (j < W) {
    double acc = 0.0;
    for (int k = 0; k < used; ++k) acc += double(cl[size_t(k) * kMaxLanes + j]);
    fold[j] = acc;
  }
  SampleCudaOut& out = outs[r];
  // The tail ids are past the body: no block writes their exps over them.
  if (j < n - nbody) out.tail[j] = proc[size_t(r) * V + nbody + j];
  __syncwarp();
  if (j == 0) {
    double t = 0.0;
    for (int k = 0; k < W; ++k) t += fold[k];
    out.body = t;
    out.best = best_of_row;
    out.max = m;
    out.tail_n = n - nbody;
  }
}

void check_args(const SampleCudaArgs& a) {
  if (a.V < 1 || a.rows < 0 || a.rows > 65535 || a.ld < a.V || sample_cuda_slices(a.V) > kSampleMaxSlices)
    throw invalid_argument("sample: need 1 <= V <= 8388608, 0 <= rows < 65536, ld >= V");
  if (a.rows > 0 && (!a.logits || !a.row || !a.out || !a.cand || !a.scratch || !a.chunks))
    throw invalid_argument("sample: null pointer");
  if (a.rows > 0 && ((a.paths >> int(SamplePath::TopK)) & 1u) && !a.tickets)
    throw invalid_argument("sample: top-k rows need tickets ([rows] zeros)");
  if (a.scratch_bytes < sample_cuda_scratch(a.rows, a.V))
    throw invalid_argument("sample: scratch must hold sample_cuda_scratch(rows, V) bytes");
}
}  // namespace
}  // namespace cuda

SamplePath sample_cuda_path(const SampleParams& p, int V) {
  const int n = p.ban_from > 0 && p.ban_from < V ? p.ban_from : V;
  if (p.temperature < 1e-4f) return SamplePath::Greedy;
  if (p.top_k > 0 && p.top_k < n && p.top_k <= kSampleMaxTopK) return SamplePath::TopK;
  if ((p.top_k == 0 || p.top_k >= n) && p.top_p >= 1.f && p.min_p <= 0.f) return SamplePath::Draw;
  return SamplePath::FullRow;
}

int sample_cuda_candidates(int top_k) { return std::min(2 * top_k + 64, kSampleMaxCandidates); }

namespace {
// The CPU sampler's exp_sum order: its SIMD width and whether its vector exps are fused, found by
// probing the compiled code once (so a build whose exp differs is detected, not assumed).
struct HostOrder {
  int lanes = 8;
  int fused = -1;  // -1: neither formula reproduces the CPU's exps: greedy rows need the full row
};
float host_exp(float x, bool fused) {
  // Each step rounded on its own (volatile), or fused with std::fma: as cpu_exp on the device.
  if (!(x >= -87.f)) return 0.f;
  volatile float t;
  float k, r, p;
  const float c[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f, 1.6666665459e-1f,
                      5.0000001201e-1f};
  if (fused) {
    k = std::floor(std::fma(x, 1.44269504f, 0.5f));
    r = std::fma(-k, -2.12194440e-4f, std::fma(-k, 0.693359375f, x));
    p = c[0];
    for (int i = 1; i < 6; ++i) p = std::fma(p, r, c[i]);
    t = p * r;
    p = std::fma(float(t), r, r + 1.f);
  } else {
    t = x * 1.44269504f;
    k = std::floor(float(t) + 0.5f);
    t = k * 0.693359375f;
    float a = x - float(t);
    t = k * 2.12194440e-4f;
    r = a + float(t);
    p = c[0];
    for (int i = 1; i < 6; ++i) {
      t = p * r;
      p = float(t) + c[i];
    }
    t = p * r;
    t = float(t) * r;
    float q = float(t) + r;
    p = q + 1.f;
  }
  int32_t bits;
  std::memcpy(&bits, &p, 4);
  bits += int32_t(uint32_t(int32_t(k)) << 23);
  std::memcpy(&p, &bits, 4);
  return p;
}
const HostOrder& host_order() {
  static const HostOrder order = [] {
    HostOrder o;
    const auto& k = cpu::simd();
    o.lanes = std::strcmp(k.name, "avx512") == 0 ? 16 : 8;
    bool fused = true, plain = true;
    float l[16], e[16];
    for (int round = 0; round < 16; ++round) {
      for (int i = 0; i < o.lanes; ++i) l[i] = -0.731f * float(round * o.lanes + i) * (1.f + 0.0137f * float(i));
      for (int i = 0; i < o.lanes; ++i) l[i] = std::max(l[i], -86.5f) + 0.001f * float(round);
      k.exp_sum(l, 0.f, 1.f, e, o.lanes);  // one full vector: the lanes' formula
      for (int i = 0; i < o.lanes; ++i) {
        const float ef = host_exp(l[i], true), ep = host_exp(l[i], false);
        if (std::memcmp(&e[i], &ef, 4) != 0) fused = false;
        if (std::memcmp(&e[i], &ep, 4) != 0) plain = false;
      }
    }
    o.fused = fused ? 1 : plain ? 0 : -1;
    return o;
  }();
  return order;
}

// Bin of a relative probability, as kernels/cpu/sample.cc bins them (16 per octave).
int bin_of(float e) {
  uint32_t bits;
  std::memcpy(&bits, &e, 4);
  return 2032 - int(bits >> 19);
}

[[noreturn]] void throw_nonfinite(float m) {
  throw invalid_argument(std::isnan(m)  ? "sample: every logit is NaN"
                         : m > 0        ? "sample: a logit is +inf"
                                        : "sample: every allowed logit is -inf");
}
}  // namespace

SamplePath SampleCudaBatch::add(const SampleParams& p, int V) {
  SampleCudaRow r{};
  const SamplePath path = sample_cuda_path(p, V);
  r.n = p.ban_from > 0 && p.ban_from < V ? p.ban_from : V;
  r.path = int32_t(path);
  r.ncand = path == SamplePath::TopK ? std::min(sample_cuda_candidates(p.top_k), r.n) : 0;
  r.lanes = host_order().lanes;
  r.scale = path == SamplePath::Draw ? 1.f / p.temperature : 1.f;  // sample_cpu's own rounding
  r.fused_exp = host_order().fused == 1;
  r.repetition = p.repetition_penalty;
  r.frequency = p.frequency_penalty;
  r.presence = p.presence_penalty;
  // Each list stably sorted by id: a device thread per id applies that id's entries in order.
  auto put = [&](size_t len, auto entry) {
    std::vector<SampleCudaEntry> v(len);
    for (size_t i = 0; i < len; ++i) v[i] = entry(i);
    std::stable_sort(v.begin(), v.end(), [](const SampleCudaEntry& a, const SampleCudaEntry& b) { return a.id < b.id; });
    const int32_t off = int32_t(entries.size());
    entries.insert(entries.end(), v.begin(), v.end());
    return off;
  };
  r.bias_len = int32_t(p.bias_ids.size());
  r.bias_off = put(p.bias_ids.size(), [&](size_t i) { return SampleCudaEntry{p.bias_ids[i], p.bias_values[i], 0}; });
  r.hist_len = int32_t(p.history_ids.size());
  r.hist_off = put(p.history_ids.size(), [&](size_t i) { return SampleCudaEntry{p.history_ids[i], 0.f, p.history_counts[i]}; });
  r.allow_off = -1;
  if (!p.allow.empty()) {
    r.allow_off = int32_t(allow.size());
    allow.insert(allow.end(), p.allow.begin(), p.allow.end());
  }
  rows.push_back(r);
  paths |= 1u << unsigned(path);
  return path;
}

// The processed rows [rows, V] f32 (rounded up to 16 bytes), then each (row, slice)'s candidate list
// (kSliceCap logits, then their ids), then each (row, slice)'s SliceRec.
namespace {
size_t proc_floats(int rows, int V) { return (size_t(rows) * size_t(V) + 3) / 4 * 4; }
size_t list_floats(int rows, int V) { return size_t(rows) * size_t(sample_cuda_slices(V)) * 2 * cuda::kSliceCap; }
size_t lane_floats(int rows, int V) { return size_t(rows) * size_t(sample_cuda_chunks(V)) * cuda::kMaxLanes; }
}  // namespace
size_t sample_cuda_scratch(int rows, int V) {
  return (proc_floats(rows, V) + lane_floats(rows, V) + list_floats(rows, V)) * 4 +
         size_t(rows) * size_t(sample_cuda_slices(V)) * sizeof(cuda::SliceRec) + size_t(rows) * sizeof(unsigned);
}

void sample_cuda(const SampleCudaArgs& a, cudaStream_t stream) {
  using namespace cuda;
  check_args(a);
  if (a.rows == 0) return;
  const int S = sample_cuda_slices(a.V);
  float* clanes = a.scratch + proc_floats(a.rows, a.V);
  float* lists = clanes + lane_floats(a.rows, a.V);
  auto* recs = reinterpret_cast<SliceRec*>(lists + list_floats(a.rows, a.V));
  auto* tickets = reinterpret_cast<unsigned*>(recs + size_t(a.rows) * size_t(S));
  const auto has = [&](SamplePath p) { return (a.paths >> int(p)) & 1u; };
  if (!has(SamplePath::Greedy) && !has(SamplePath::TopK) && !has(SamplePath::Draw)) return;
  GPTOSS_LAUNCH(sample_select, dim3(unsigned(S), unsigned(a.rows)), dim3(kThreads), 0, stream, a.logits, a.ld, a.V,
                a.row, a.entries, a.allow, a.scratch, lists, recs, tickets, a.out, a.cand, a.tickets);
  check_launch("sample (select)");
  if (!has(SamplePath::Greedy) && !has(SamplePath::Draw)) return;
  GPTOSS_LAUNCH(sample_exp, dim3(unsigned(sample_cuda_chunks(a.V)), unsigned(a.rows)), dim3(kExpThreads), 0, stream,
                a.V, S, a.row, a.scratch, recs, a.out, a.chunks, clanes, tickets);
  check_launch("sample (exp)");
}

namespace {
// Draw: sample_cpu's keep-all draw, u = uniform * z, then u -= e[i] over ids in order until it
// falls below zero. The chunk sums locate the crossing; only that chunk's exps are computed here,
// by the CPU's own code. Every value this walk sees differs from the CPU's by at most delta: both
// add the same exps to the same start in double, in different orders (the CPU one at a time; here
// the device's tree per chunk, then one at a time), each add rounding by at most 2^-53 of a value
// below 2z, over fewer than n + chunks + 64 adds. A crossing nearer zero than delta is declined.
bool finish_draw(const SampleParams& p, const SampleCudaOut& o, int n, float s, double z, const float* etail,
                 const double* chunks, const SampleRawLogits& raw, uint64_t* rng, SampleResult* res) {
  if (!chunks || !raw || !(z > 0)) return false;
  const int nbody = n - o.tail_n, nch = (nbody + kSampleChunk - 1) / kSampleChunk;
  const double delta = 4.0 * (double(n) + double(nch) + 64.0) * 0x1p-53 * z;
  uint64_t r = *rng;
  double u = sample_uniform(&r) * z;
  int c = 0;
  for (; c < nch && u - chunks[c] >= 0; ++c) u -= chunks[c];
  // The crossing lies in chunk c (c == nch: the tail) only if u is clear of zero at both its ends.
  if (!(u > delta) || (c < nch && !(u - chunks[c] < -delta))) return false;
  const int first = c < nch ? c * kSampleChunk : nbody, count = c < nch ? std::min(kSampleChunk, nbody - first) : o.tail_n;
  std::vector<float> l(static_cast<size_t>(count)), e(static_cast<size_t>(count));
  if (c < nch) {
    raw(first, count, l.data());
    sample_process_range(l.data(), first, count, p);
    cpu::simd().exp_sum(l.data(), o.max, s, e.data(), count);  // count % lanes == 0: the vector exps
  } else {
    std::copy(etail, etail + count, e.begin());
  }
  for (int i = 0; i < count; ++i) {
    if (!(e[size_t(i)] > 0)) continue;
    const double before = u;
    u -= e[size_t(i)];
    if (u < 0) {
      if (!(before > delta && u < -delta)) return false;
      *rng = r;
      *res = {first + i, float(std::log(e[size_t(i)] / z))};
      return true;
    }
  }
  return false;  // no crossing clear of the bound in this chunk
}
}  // namespace

bool sample_cuda_finish(const SampleParams& p, int V, const SampleCudaOut& o, const SampleCudaCand* cand,
                        uint64_t* rng, SampleResult* res, const double* chunks, const SampleRawLogits& raw) {
  const SamplePath path = sample_cuda_path(p, V);
  if (path == SamplePath::FullRow) return false;
  const int n = p.ban_from > 0 && p.ban_from < V ? p.ban_from : V;
  if (!std::isfinite(o.max)) throw_nonfinite(o.max);
  const HostOrder& ord = host_order();
  const auto& k = cpu::simd();
  if (path == SamplePath::Greedy || path == SamplePath::Draw) {
    // exp_sum: the body's sum (the device's, in exp_sum's order), then the tail, each
    // exp_scalar(l - m) added in double.
    if (ord.fused < 0) return false;
    const float s = path == SamplePath::Draw ? 1.f / p.temperature : 1.f;
    double z = o.body;
    float e[16];
    k.exp_sum(o.tail, o.max, s, e, o.tail_n);  // fewer than lanes: all by the scalar tail code
    for (int i = 0; i < o.tail_n; ++i) z += e[i];
    if (path == SamplePath::Greedy) {
      *res = {o.best, float(-std::log(z))};
      return true;
    }
    return finish_draw(p, o, n, s, z, e, chunks, raw, rng, res);
  }
  // TopK: a compact row [body candidates | -inf to a whole vector, and past top_k | tail candidates]
  // in id order, so each exp is computed by the same code as in the full row (vector lanes or the
  // scalar tail) and take_top sees the same ids in the same order.
  const int W = ord.lanes, nbody = n - n % W, cnt = o.count;
  int nb = 0;
  while (nb < cnt && cand[nb].id < nbody) ++nb;
  const int nt = cnt - nb;
  int len = (nb + W - 1) / W * W;
  while (len + nt <= p.top_k) len += W;
  const int nc = len + nt;
  SampleWork work(nc);
  float* row = work.row;
  std::vector<int32_t> id(size_t(nc), -1);
  for (int i = 0; i < nc; ++i) row[i] = -std::numeric_limits<float>::infinity();
  for (int i = 0; i < nb; ++i) row[i] = cand[i].logit, id[size_t(i)] = cand[i].id;
  for (int i = 0; i < nt; ++i) row[len + i] = cand[nb + i].logit, id[size_t(len + i)] = cand[nb + i].id;
  if (o.eligible > cnt) {
    // Some eligible ids are not here: prove that every one of them lies in a bin at least two below
    // the top-k cut (so the cut, the kept set and their order are those of the full row).
    const float s = 1.f / p.temperature;
    std::vector<float> e(static_cast<size_t>(nc));
    k.exp_sum(row, o.max, s, e.data(), nc);
    std::vector<float> pos;
    for (float v : e)
      if (v > 0) pos.push_back(v);
    if (int(pos.size()) < p.top_k) return false;
    std::nth_element(pos.begin(), pos.begin() + (p.top_k - 1), pos.end(), std::greater<float>());
    const int cut = bin_of(pos[size_t(p.top_k - 1)]);
    float last = std::numeric_limits<float>::infinity();
    for (int i = 0; i < cnt; ++i) last = std::min(last, cand[i].logit);
    float lv[16], ev[16];
    for (int i = 0; i < W; ++i) lv[i] = last;
    k.exp_sum(lv, o.max, s, ev, W);  // the vector formula
    float bound = ev[0];
    k.exp_sum(lv, o.max, s, ev, 1);  // the scalar one
    bound = std::max(bound, ev[0]);
    if (bound > 0 && bin_of(bound) < cut + 2) return false;
  }
  SampleParams q;
  q.temperature = p.temperature;
  q.top_k = p.top_k;
  q.top_p = p.top_p;
  q.min_p = p.min_p;
  const SampleResult r = sample_cpu(row, nc, q, rng, work.scratch);
  *res = {id[size_t(r.token)], r.logprob};
  return true;
}
}  // namespace gptoss
