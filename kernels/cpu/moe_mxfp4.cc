// Dispatch, then two passes of (expert, row tile) tasks, each running the fused MXFP4 product for
// every token the expert got (each block decoded once for four tokens at a time). In precision
// 'default' on a CPU with AVX-512 BF16 the products are bf16 hi/lo (simd.h, Bf16Kernels): the
// inputs are split once per slot, the activations once after the gate_up pass. Every output element
// is written by exactly one task and computed the same way whatever else is in the step, so the
// result depends neither on the thread count nor on batching. All working memory is the caller's
// scratch (the program's arena), with one tile buffer per worker thread.
#include "kernels/moe_mxfp4.h"

#include <algorithm>
#include <string>
#include <cmath>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/simd.h"

namespace gptoss {
namespace {
// Weight rows per task (even: gate/linear pairs stay together). 128: each task streams 184 KB of
// one expert, so prefetching restarts less often (cold experts, one token: 128-row tiles ~1.2x the
// speed of 32-row ones, alternating runs on this VM).
constexpr int kTile = 128;
// Up to this many slots (decode's few tokens) each thread instead takes whole slices of an expert's
// matrix (1/threads of its rows): the weights then stream as a few long runs that the prefetch
// follows across, not 128-row pieces that start cold.
constexpr int kSliceSlots = 16;

// Rows per slice of a matrix of `rows` rows (even: gate/linear pairs stay together).
int slice_rows(int rows, int threads) {
  const int slice = (rows + threads - 1) / threads;
  return std::max(kTile, slice + (slice & 1));
}
// Rows per task for S slots.
int tile_rows(int S, int rows, int threads) {
  return S <= kSliceSlots && threads >= 2 ? slice_rows(rows, threads) : kTile;
}

struct Job {
  int expert, row0;
};

// Position of element i of a K-wide row in block-split order (simd.h).
inline int split_index(int i) {
  const int j = i & 31;
  return (i & ~31) + ((j & 1) ? 16 + (j >> 1) : (j >> 1));
}

// rows [r0, r0 + nr) of one expert's matrix against `n` gathered block-split rows X [n, K].
// out[s * ldo + r] for s < n, r < nr.
void expert_tile(const uint8_t* blocks, const uint8_t* scales, int K, int r0, int nr, const float* X, int n, float* out,
                 int ldo) {
  const auto& k = cpu::simd();
  const int nb = K / 32;
  const uint8_t* b = blocks + size_t(r0) * nb * 16;
  const uint8_t* s = scales + size_t(r0) * nb;
  k.gemm_mxfp4(b, s, nr, nb, X, K, n, out, ldo);
}
}  // namespace

namespace {
// The scratch, carved the same way when it is sized and when it is used.
struct Scratch {
  int* count;   // [E + 1] slots per expert, then prefix sums
  int* order;   // [S] slots in dispatch order
  int* fill;    // [E]
  float* xg;    // [S, H] gathered, block-split inputs (bf16: [S, 2H] hi/lo, the same bytes)
  float* act;   // [S, I] activations (bf16: in element order, then split into actb)
  uint16_t* actb;  // bf16 only: [S, 2I] hi/lo activations
  Job* jobs;    // [E * ceil(max(2I, H) / kTile)]
  float* tiles; // per worker thread: S outputs of a task's rows (tile_rows), for any S up to the plan's
};
Scratch carve(ScratchCarver& c, int S, int E, int H, int I, int threads, bool bf16) {
  Scratch s;
  s.count = c.take<int>(size_t(E) + 1);
  s.order = c.take<int>(size_t(S));
  s.fill = c.take<int>(size_t(E));
  s.xg = c.take<float>(size_t(S) * H);
  s.act = c.take<float>(size_t(S) * I);
  s.actb = bf16 ? c.take<uint16_t>(size_t(S) * 2 * I) : nullptr;
  s.jobs = c.take<Job>(size_t(E) * size_t((std::max(2 * I, H) + kTile - 1) / kTile));
  // Sized for every slot count up to S (a program planned for S slots runs steps of fewer, which
  // may take slices): S 128-row tiles, or min(S, kSliceSlots) slices.
  const int slice = threads >= 2 ? std::max(slice_rows(2 * I, threads), slice_rows(H, threads)) : 0;
  const size_t per_thread = std::max(size_t(S) * kTile, size_t(std::min(S, kSliceSlots)) * slice);
  s.tiles = c.take<float>(per_thread * size_t(threads));
  return s;
}
}  // namespace

// The bf16 products' kernels for this call, or null for the f32 path.
const cpu::Bf16Kernels* bf16_kernels(bool exact) { return exact ? nullptr : cpu::simd_bf16(); }

size_t moe_mxfp4_scratch_cpu(int T, int k, int E, int H, int I, int threads, bool exact) {
  ScratchCarver c;
  carve(c, T * k, E, H, I, threads, bf16_kernels(exact) != nullptr);
  return c.used;
}

void moe_mxfp4_cpu(const MoeMxfp4Args& a) {
  const int S = a.T * a.k, H = a.H, I = a.I;
  for (int s = 0; s < S; ++s)
    if (a.idx[s] < 0 || a.idx[s] >= a.E)
      throw invalid_argument("moe_mxfp4: expert index " + std::to_string(a.idx[s]) + " outside [0, " + std::to_string(a.E) + ")");
  ScratchCarver carver{a.scratch, 0, a.scratch_bytes};
  const cpu::Bf16Kernels* bk = bf16_kernels(a.exact);
  const Scratch sc = carve(carver, S, a.E, H, I, a.threads, bk != nullptr);
  // Dispatch: slots grouped by expert, in token order within an expert.
  int* count = sc.count;
  int* order = sc.order;
  std::fill(count, count + a.E + 1, 0);
  for (int s = 0; s < S; ++s) count[a.idx[s] + 1]++;
  for (int e = 0; e < a.E; ++e) count[e + 1] += count[e];
  std::copy(count, count + a.E, sc.fill);
  for (int s = 0; s < S; ++s) order[sc.fill[a.idx[s]]++] = s;
  // Gathered, block-split inputs [S, H] and activations [S, I], both in dispatch order.
  float* xg = sc.xg;
  float* act = sc.act;
  uint16_t* xgb = reinterpret_cast<uint16_t*>(sc.xg);
  cpu::parallel_for(S, 16, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const float* x = a.x + (order[p] / a.k) * a.ldx;
      if (bk) bk->split_hilo(x, xgb + p * 2 * H, H);
      else cpu::split_blocks(x, xg + p * H, H);
    }
  });
  // rows [r0, r0 + nr) of an expert's matrix against its n slots' inputs (block-split f32 or
  // hi/lo bf16) from slot p0: out[s * ldo + r].
  auto tile = [&](const uint8_t* blocks, const uint8_t* scales, int K, int r0, int nr, const float* X,
                  const uint16_t* Xb, int p0, int n, float* out, int ldo) {
    if (bk) {
      const int nb = K / 32;
      bk->gemm_mxfp4(blocks + size_t(r0) * nb * 16, scales + size_t(r0) * nb, nr, nb, Xb + size_t(p0) * 2 * K, 2 * K,
                     n, out, ldo);
    } else {
      expert_tile(blocks, scales, K, r0, nr, X + size_t(p0) * K, n, out, ldo);
    }
  };

  Job* jobs = sc.jobs;
  int njobs = 0;
  const int tile1 = tile_rows(S, 2 * I, a.threads), tile2 = tile_rows(S, H, a.threads);
  for (int e = 0; e < a.E; ++e)
    if (count[e + 1] > count[e])
      for (int r = 0; r < 2 * I; r += tile1) jobs[njobs++] = {e, r};
  cpu::parallel_for(njobs, 1, [&](int64_t j0, int64_t j1) {
    float* u = sc.tiles + size_t(S) * tile1 * size_t(cpu::worker_index());
    for (int64_t j = j0; j < j1; ++j) {
      const int e = jobs[j].expert, r0 = jobs[j].row0, nr = std::min(tile1, 2 * I - r0);
      const int p0 = count[e], n = count[e + 1] - p0;
      tile(a.w1_blocks + size_t(e) * 2 * I * (H / 32) * 16, a.w1_scales + size_t(e) * 2 * I * (H / 32), H, r0, nr, xg,
           xgb, p0, n, u, tile1);
      const uint16_t* b1 = a.b1 + size_t(e) * 2 * I;
      for (int p = 0; p < n; ++p)
        for (int r = 0; r < nr; r += 2) {
          // Clamp after the bias, in f32 (kernels/MODEL.md, "Experts").
          float g = u[size_t(p) * tile1 + r] + cpu::bf16_to_f32(b1[r0 + r]);
          float l = u[size_t(p) * tile1 + r + 1] + cpu::bf16_to_f32(b1[r0 + r + 1]);
          g = std::min(g, a.limit);
          l = std::clamp(l, -a.limit, a.limit);
          const float glu = g / (1.f + std::exp(-a.alpha * g));
          const int j = (r0 + r) / 2;
          act[size_t(p0 + p) * I + (bk ? j : split_index(j))] = glu * (l + 1.f);
        }
    }
  });

  if (bk)
    cpu::parallel_for(S, 16, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) bk->split_hilo(act + p * I, sc.actb + p * 2 * I, I);
    });

  njobs = 0;
  for (int e = 0; e < a.E; ++e)
    if (count[e + 1] > count[e])
      for (int r = 0; r < H; r += tile2) jobs[njobs++] = {e, r};
  cpu::parallel_for(njobs, 1, [&](int64_t j0, int64_t j1) {
    float* v = sc.tiles + size_t(S) * tile2 * size_t(cpu::worker_index());
    for (int64_t j = j0; j < j1; ++j) {
      const int e = jobs[j].expert, r0 = jobs[j].row0, nr = std::min(tile2, H - r0);
      const int p0 = count[e], n = count[e + 1] - p0;
      tile(a.w2_blocks + size_t(e) * H * (I / 32) * 16, a.w2_scales + size_t(e) * H * (I / 32), I, r0, nr, act,
           sc.actb, p0, n, v, tile2);
      const uint16_t* b2 = a.b2 + size_t(e) * H;
      for (int p = 0; p < n; ++p) {
        float* y = a.y + size_t(order[p0 + p]) * H;
        for (int r = 0; r < nr; ++r) y[r0 + r] = v[size_t(p) * tile2 + r] + cpu::bf16_to_f32(b2[r0 + r]);
      }
    }
  });
}

void run_cpu(const MoeMxfp4Op& o, const StepContext& s) {
  moe_mxfp4_cpu({s.f32(o.x), s.ld(o.x), s.i32(o.idx), s.bytes(o.w1b), s.bytes(o.w1s), s.bf16(o.b1), s.bytes(o.w2b),
                 s.bytes(o.w2s), s.bf16(o.b2), s.f32(o.y), s.T, o.k, o.E, o.H, o.I, o.limit, o.alpha, s.scratch,
                 s.scratch_bytes, cpu::num_threads(), s.exact});
}

size_t scratch_bytes_cpu(const MoeMxfp4Op& o, const ScratchPlan& p) {
  return moe_mxfp4_scratch_cpu(p.max_tokens, o.k, o.E, o.H, o.I, p.threads, p.exact);
}
}  // namespace gptoss
