// sample on the device (kernels/cuda/sample.cuh; reference kernels/cpu/sample.cc). Three launches:
//   process: proc[r, i] = allowed(i) ? logits[r, i] : -inf            grid (V / 1024, rows), 256 threads
//   listed:  the biased / penalised ids, one thread per id (each list stably sorted by id on the
//            host, so a thread applies its id's entries in the caller's order: bias, then history)
//                                                                      grid (rows), 256 threads
//   reduce:  argmax; then Greedy / Draw: the exps of the body, tile by tile through shared memory,
//            and `lanes` threads summing each tile sequentially (Draw: the exps also into proc, then
//            each warp the double sums of its chunks); or TopK: a 4-pass
//            8-bit radix select of the K'-th key and an ordered compaction (ballot scans) in id
//            order                                                     grid (rows), 512 threads
// Every f32 step is the CPU's, rounded the same way (no contraction: __fadd_rn, __fmul_rn, division
// by __fdiv_rn), so processed logits are bit-identical to sample_cpu's.
// Limits (checked): V >= 1, rows < 65536; SampleCudaRow fields as SampleCudaBatch packs them.
#include "kernels/cuda/sample.cuh"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/cpu/simd.h"

namespace gptoss {
namespace cuda {
namespace {
constexpr int kProcThreads = 256, kProcPerThread = 4;
constexpr int kListThreads = 256;
constexpr int kThreads = 512, kWarps = kThreads / 32;
constexpr int kTile = 4096;  // exps per shared-memory tile of the greedy / draw lane sums
constexpr uint32_t kKeyNegInf = 0x007fffffu;  // order_key(-inf)

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

__global__ void __launch_bounds__(kProcThreads)
    sample_process(const float* __restrict__ logits, int64_t ld, int V, const SampleCudaRow* __restrict__ rows,
                   const uint32_t* __restrict__ allow_all, float* __restrict__ proc) {
  const SampleCudaRow& row = rows[blockIdx.y];
  if (row.path == int32_t(SamplePath::FullRow)) return;
  const uint32_t* allow = row.allow_off >= 0 ? allow_all + row.allow_off : nullptr;
  const float* l = logits + blockIdx.y * ld;
  float* o = proc + size_t(blockIdx.y) * V;
  const int i0 = blockIdx.x * kProcThreads * kProcPerThread + threadIdx.x;
#pragma unroll
  for (int u = 0; u < kProcPerThread; ++u) {
    const int i = i0 + u * kProcThreads;
    if (i < V) o[i] = allowed(allow, i) ? l[i] : -INFINITY;
  }
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

__global__ void __launch_bounds__(kListThreads)
    sample_listed(const float* __restrict__ logits, int64_t ld, int V, const SampleCudaRow* __restrict__ rows,
                  const SampleCudaEntry* __restrict__ entries, const uint32_t* __restrict__ allow_all,
                  float* __restrict__ proc) {
  const SampleCudaRow& row = rows[blockIdx.x];
  if (row.path == int32_t(SamplePath::FullRow)) return;
  const uint32_t* allow = row.allow_off >= 0 ? allow_all + row.allow_off : nullptr;
  const float* l = logits + blockIdx.x * ld;
  float* o = proc + size_t(blockIdx.x) * V;
  const SampleCudaEntry* bias = entries + row.bias_off;
  const SampleCudaEntry* hist = entries + row.hist_off;
  const int nb = row.bias_len, nh = row.hist_len;
  // Work items: the heads of the bias runs, then the heads of the history runs whose id has no bias.
  for (int w = threadIdx.x; w < nb + nh; w += kListThreads) {
    int id, b0, b1, h0, h1;
    if (w < nb) {
      if (w > 0 && bias[w - 1].id == bias[w].id) continue;
      id = bias[w].id;
      b0 = w;
      b1 = w + 1;
      while (b1 < nb && bias[b1].id == id) ++b1;
      h0 = lower_bound(hist, 0, nh, id);
    } else {
      const int j = w - nb;
      if (j > 0 && hist[j - 1].id == hist[j].id) continue;
      id = hist[j].id;
      const int b = lower_bound(bias, 0, nb, id);
      if (b < nb && bias[b].id == id) continue;  // its bias thread applies it
      b0 = b1 = 0;
      h0 = j;
    }
    h1 = h0;
    while (h1 < nh && hist[h1].id == id) ++h1;
    if (!allowed(allow, id)) continue;  // stays -inf (the mask comes last on the CPU)
    float x = l[id];
    for (int i = b0; i < b1; ++i) x = __fadd_rn(x, bias[i].value);
    for (int i = h0; i < h1; ++i) {
      const int c = hist[i].count;
      if (c <= 0) continue;
      if (row.repetition != 1.f) x = x > 0 ? div_rn(x, row.repetition) : __fmul_rn(x, row.repetition);
      x = __fsub_rn(x, __fadd_rn(__fmul_rn(row.frequency, float(c)), row.presence));
    }
    o[id] = x;
  }
}

// (key, id) of the better of two: larger key, then lower id.
__device__ __forceinline__ void better(uint32_t& k, int& i, uint32_t k2, int i2) {
  if (k2 > k || (k2 == k && i2 < i)) k = k2, i = i2;
}

// Exclusive prefix of flag over the block (thread order = id order within a tile) and the total.
// No barrier after the reads: callers alternate two warp_tot arrays, so a scan's writes come after
// the barrier of the scan between, which every thread reaches only after this scan's reads.
__device__ __forceinline__ int block_scan(bool flag, int* warp_tot, int* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const unsigned b = __ballot_sync(kFullMask, flag);
  if (lane == 0) warp_tot[warp] = __popc(b);
  __syncthreads();
  int before = __popc(b & ((1u << lane) - 1u)), sum = 0;
  for (int w = 0; w < kWarps; ++w) {
    if (w < warp) before += warp_tot[w];
    sum += warp_tot[w];
  }
  *total = sum;
  return before;
}

// Two blocks per SM (64 registers): without the hint ptxas picked 32 and spilled (sm_90).
__global__ void __launch_bounds__(kThreads, 2)
    sample_reduce(int V, const SampleCudaRow* __restrict__ rows, float* __restrict__ proc,
                  SampleCudaOut* __restrict__ outs, SampleCudaCand* __restrict__ cands, double* __restrict__ chunks) {
  __shared__ uint32_t red_key[kWarps];
  __shared__ int red_id[kWarps];
  __shared__ int hist[256];
  __shared__ int warp_tot[2][kWarps];  // the two scans of a tile alternate (block_scan)
  __shared__ uint32_t sel[2];  // the K'-th key's prefix, and how many ids with that key still to take
  const SampleCudaRow& row = rows[blockIdx.x];
  if (row.path == int32_t(SamplePath::FullRow)) return;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, n = row.n;
  float* l = proc + size_t(blockIdx.x) * V;
  SampleCudaOut& out = outs[blockIdx.x];

  // Argmax, ties to the lower id; NaN never wins (key 0) unless every value is NaN.
  uint32_t bk = 0;
  int bi = n;
  for (int i = tid; i < n; i += kThreads) better(bk, bi, order_key(l[i]), i);
  for (int o = 16; o > 0; o >>= 1) better(bk, bi, __shfl_xor_sync(kFullMask, bk, o), __shfl_xor_sync(kFullMask, bi, o));
  if (lane == 0) red_key[warp] = bk, red_id[warp] = bi;
  __syncthreads();
  bk = red_key[0];
  bi = red_id[0];
  for (int w = 1; w < kWarps; ++w) better(bk, bi, red_key[w], red_id[w]);
  if (bk == 0) bi = n - 1;  // every logit NaN (the CPU's scan ends on the last one)
  const float m = l[bi];
  if (tid == 0) out.best = bi, out.max = m;

  const bool draw = row.path == int32_t(SamplePath::Draw);
  if (row.path == int32_t(SamplePath::Greedy) || draw) {
    const int W = row.lanes, nbody = n - n % W;
    const bool fused = row.fused_exp != 0;
    const float s = draw ? row.scale : 1.f;
    if (tid < n - nbody) out.tail[tid] = l[nbody + tid];
    if (tid == 0) out.tail_n = n - nbody;
    __syncthreads();  // every thread has read l[bi] before the exps overwrite it (Draw)
    // Lane j: e[j] + e[j + W] + ..., one f32 add at a time, as the CPU's vector accumulator: a
    // chain of n / W dependent adds, so its operands come from shared memory, not L2. The exps go
    // tile by tile into one of two shared buffers (and, for Draw, back into the row) by every
    // thread, while threads 0..W-1 add up the previous tile (kTile is a multiple of W, so lane j
    // still meets ids j, j + W, ... in order); one barrier per tile orders the two buffers' reuse.
    __shared__ float tile[2][kTile];
    float acc = 0.f;
    const int ntiles = (nbody + kTile - 1) / kTile;
    for (int t = 0; t <= ntiles; ++t) {
      if (t < ntiles) {
        const int base = t * kTile, len = min(kTile, nbody - base);
        for (int i = tid; i < len; i += kThreads) {
          const float e = cpu_exp(l[base + i], m, s, fused);
          tile[t & 1][i] = e;
          if (draw) l[base + i] = e;
        }
      }
      if (t > 0 && tid < W) {
        const int len = min(kTile, nbody - (t - 1) * kTile);
        for (int i = tid; i < len; i += W) acc = __fadd_rn(acc, tile[(t - 1) & 1][i]);
      }
      __syncthreads();
    }
    if (tid < W) out.lanes[tid] = acc;
    if (!draw) return;
    // Each chunk's exps summed in double by one warp, in any order: the host bounds the rounding.
    __shared__ double part[kWarps][32];
    double* csum = chunks + size_t(blockIdx.x) * size_t(sample_cuda_chunks(V));
    for (int c = warp; c * kSampleChunk < nbody; c += kWarps) {
      const int end = min(nbody, (c + 1) * kSampleChunk);
      double acc = 0.0;
      for (int i = c * kSampleChunk + lane; i < end; i += 32) acc += double(l[i]);
      part[warp][lane] = acc;
      __syncwarp();
      if (lane == 0) {
        double t = 0.0;
        for (int j = 0; j < 32; ++j) t += part[warp][j];
        csum[c] = t;
      }
      __syncwarp();  // lane 0 has read the partials before the next chunk's overwrite them
    }
    return;
  }

  // TopK: the K'-th largest key among the eligible (key > -inf's), by 8 bits at a time.
  const int want = row.ncand;
  uint32_t prefix = 0, mask = 0;
  int need = want, eligible = 0;
  for (int pass = 0; pass < 4; ++pass) {
    const int shift = 24 - 8 * pass;
    for (int b = tid; b < 256; b += kThreads) hist[b] = 0;
    __syncthreads();
    for (int i = tid; i < n; i += kThreads) {
      const uint32_t k = order_key(l[i]);
      if (k > kKeyNegInf && (k & mask) == prefix) atomicAdd(&hist[(k >> shift) & 255], 1);
    }
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
  // Ids with key > T all go; then the first `need` (lowest ids) with key == T. With every eligible
  // id taken, T = -inf's key + 1 and key >= T.
  const uint32_t T = prefix;
  const bool all = mask == 0;
  int written = 0, eq_seen = 0;
  SampleCudaCand* c = cands + size_t(blockIdx.x) * kSampleMaxCandidates;
  for (int base = 0; base < n; base += kThreads) {
    const int i = base + tid;
    const float v = i < n ? l[i] : 0.f;
    const uint32_t k = i < n ? order_key(v) : 0;
    const bool gt = i < n && (all ? k >= T : k > T);
    const bool eq = i < n && !all && k == T;
    int eq_tot, take_tot;
    const int eq_before = block_scan(eq, warp_tot[0], &eq_tot);
    const bool take = gt || (eq && eq_seen + eq_before < need);
    const int at = block_scan(take, warp_tot[1], &take_tot);
    if (take) {
      c[written + at].id = i;
      c[written + at].logit = v;
    }
    written += take_tot;
    eq_seen += eq_tot;
  }
  if (tid == 0) out.count = written, out.eligible = eligible;
}

void check_args(const SampleCudaArgs& a) {
  if (a.V < 1 || a.rows < 0 || a.rows > 65535 || a.ld < a.V)
    throw invalid_argument("sample: need V >= 1, 0 <= rows < 65536, ld >= V");
  if (a.rows > 0 && (!a.logits || !a.row || !a.out || !a.cand || !a.scratch || !a.chunks))
    throw invalid_argument("sample: null pointer");
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
  return path;
}

size_t sample_cuda_scratch(int rows, int V) { return size_t(rows) * size_t(V) * 4; }

void sample_cuda(const SampleCudaArgs& a, cudaStream_t stream) {
  using namespace cuda;
  check_args(a);
  if (a.rows == 0) return;
  const int per = kProcThreads * kProcPerThread;
  GPTOSS_LAUNCH(sample_process, dim3(unsigned((a.V + per - 1) / per), unsigned(a.rows)), dim3(kProcThreads), 0, stream,
                a.logits, a.ld, a.V, a.row, a.allow, a.scratch);
  check_launch("sample (process)");
  GPTOSS_LAUNCH(sample_listed, dim3(unsigned(a.rows)), dim3(kListThreads), 0, stream, a.logits, a.ld, a.V, a.row,
                a.entries, a.allow, a.scratch);
  check_launch("sample (listed ids)");
  GPTOSS_LAUNCH(sample_reduce, dim3(unsigned(a.rows)), dim3(kThreads), 0, stream, a.V, a.row, a.scratch, a.out, a.cand,
                a.chunks);
  check_launch("sample (reduce)");
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
    // exp_sum: double(vsum(lanes)) then the tail, each exp_scalar(l - m) added in double. vsum is
    // the CPU's own: sum_f32 over 4 vectors, lanes then zeros, adds zeros to the lanes exactly.
    if (ord.fused < 0) return false;
    const float s = path == SamplePath::Draw ? 1.f / p.temperature : 1.f;
    float pad[64] = {};
    std::memcpy(pad, o.lanes, sizeof(float) * size_t(ord.lanes));
    double z = k.sum_f32(pad, size_t(4 * ord.lanes));
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
