// Split over the keys (flash-decoding): each task takes one token and one block of kBlock keys,
// for every head, reading each key's and value's row once, front to back (one row holds all KV
// heads, so the cache streams sequentially; a task per head group strided through it instead and
// waited on memory for every key). A block leaves its own max, exp-sum and unnormalised weighted
// V sum per head; a token's blocks are merged in order, with the sink folded into the max and the
// denominator. Blocks depend only on the position, so a token is computed the same way whatever
// else is in the step (batch invariance) and whatever the thread count. All working memory is the
// caller's scratch (the program's arena): the partials, then one slice per worker thread.
#include "kernels/attention.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/simd.h"

namespace gptoss {
namespace {
constexpr int kBlock = 256;
// Keys whose rows each head group takes in turn (32 rows of 8 KV heads x 64 f32: 64 KB, so the
// groups after the first find them in L1/L2, and the rows stream from memory in order).
constexpr int kChunk = 32;
// Partials of one (token, block): m[Hq], sum[Hq], acc[Hq * D].
constexpr size_t kMaxPartialBytes = size_t(64) << 20;

// The scratch, carved the same way when it is sized and when it is used.
struct Scratch {
  int64_t* first;  // [T + 1] first task of each token in a group
  float* parts;    // [tasks, partial]
  // Per worker thread: scores [Hq, kBlock], a chunk's cache rows in f32 [kChunk, width] (bf16 caches).
  float* scores;
  float* row_f32;
  size_t per_thread_floats;
};
Scratch carve(ScratchCarver& c, int T, int64_t max_context, int Hq, int Hkv, int D, int window, int threads) {
  const size_t partial = size_t(Hq) * (D + 2);
  const int64_t keys = window > 0 ? std::min<int64_t>(window, max_context) : max_context;
  const int64_t max_blocks = (keys + kBlock - 1) / kBlock;
  // Tokens go in groups whose partials fit kMaxPartialBytes; a token alone may pass it.
  const int64_t tasks = std::min<int64_t>(int64_t(T) * max_blocks,
                                          std::max<int64_t>(int64_t(kMaxPartialBytes / (partial * 4)), max_blocks));
  Scratch s;
  s.first = c.take<int64_t>(size_t(T) + 1);
  s.parts = c.take<float>(size_t(tasks) * partial);
  s.per_thread_floats = align64(size_t(Hq) * kBlock * 4) / 4 + align64(size_t(kChunk) * Hkv * D * 4) / 4;
  float* all = c.take<float>(s.per_thread_floats * size_t(threads));
  s.scores = all;
  s.row_f32 = all ? all + align64(size_t(Hq) * kBlock * 4) / 4 : nullptr;
  return s;
}
}  // namespace

size_t attention_scratch_cpu(int T, int64_t max_context, int q_heads, int kv_heads, int head_dim, int window, int threads) {
  ScratchCarver c;
  carve(c, T, max_context, q_heads, kv_heads, head_dim, window, threads);
  return c.used;
}

void attention_cpu(const AttentionArgs& a) {
  const auto& k = cpu::simd();
  const int D = a.head_dim, Hq = a.q_heads, group = Hq / a.kv_heads, width = a.kv_heads * D;
  const size_t esize = a.cache_dtype == DType::F32 ? 4 : 2;
  const size_t partial = size_t(Hq) * (D + 2);
  auto range = [&](int t) {
    const int64_t p = a.positions[t];
    const int64_t lo = a.window > 0 ? std::max<int64_t>(0, p - a.window + 1) : 0;
    return std::pair<int64_t, int64_t>{lo, p + 1};
  };
  auto blocks_of = [&](int t) {
    const auto [lo, hi] = range(t);
    return int((hi - lo + kBlock - 1) / kBlock);
  };
  // The largest position of the step bounds the blocks a token has; the scratch was sized for
  // the program's max_context, which every position is below (checked before the step runs).
  int64_t max_pos = 0;
  for (int t = 0; t < a.T; ++t) max_pos = std::max<int64_t>(max_pos, a.positions[t]);
  ScratchCarver carver{a.scratch, 0, a.scratch_bytes};
  const Scratch sc = carve(carver, a.T, max_pos + 1, Hq, a.kv_heads, D, a.window, a.threads);

  for (int t0 = 0; t0 < a.T;) {
    int64_t* first = sc.first;  // first[i]: first task of token t0 + i
    first[0] = 0;
    int t1 = t0;
    while (t1 < a.T && (t1 == t0 || size_t(first[t1 - t0] + blocks_of(t1)) * partial * 4 <= kMaxPartialBytes)) {
      first[t1 - t0 + 1] = first[t1 - t0] + blocks_of(t1);
      ++t1;
    }
    const int64_t tasks = first[t1 - t0];
    float* parts = sc.parts;

    cpu::parallel_for(tasks, 1, [&](int64_t i0, int64_t i1) {
      float* mine = sc.scores + sc.per_thread_floats * size_t(cpu::worker_index());
      float* scores = mine;
      float* row_f32 = sc.row_f32 - sc.scores + mine;
      for (int64_t i = i0; i < i1; ++i) {
        const int t = t0 + int(std::upper_bound(first, first + (t1 - t0) + 1, i) - first) - 1;
        const int b = int(i - first[t - t0]);
        const auto [lo, hi] = range(t);
        const int64_t j0 = lo + int64_t(b) * kBlock, j1 = std::min(hi, j0 + kBlock);
        const int n = int(j1 - j0);
        const int32_t seq = a.pages.seq[t];
        // rows[j] = the cache row of key j0 + c + j for j < nc: an f32 cache in place, a bf16 one
        // converted into this thread's chunk buffer.
        const float* rows[kChunk];
        auto gather = [&](const void* cache, int c, int nc) {
          for (int j = 0; j < nc; ++j) {
            const char* p = static_cast<const char*>(cache) + a.pages.row(seq, j0 + c + j) * width * esize;
            if (a.cache_dtype == DType::F32) {
              rows[j] = reinterpret_cast<const float*>(p);
            } else {
              float* f = row_f32 + size_t(j) * width;
              k.bf16_to_f32(reinterpret_cast<const uint16_t*>(p), f, size_t(width));
              rows[j] = f;
            }
          }
        };
        const float* q = a.q + t * a.ldq;
        // Scores [Hq, n]: each head group against a chunk's key rows in one call.
        for (int c = 0; c < n; c += kChunk) {
          const int nc = std::min(kChunk, n - c);
          gather(a.k_cache, c, nc);
          for (int g = 0; g < a.kv_heads; ++g)
            k.dots_f32(q + int64_t(g) * group * D, D, group, rows, int64_t(g) * D, nc, D, scores + size_t(g) * group * n + c, n);
        }
        for (size_t i = 0; i < size_t(Hq) * n; ++i) scores[i] *= a.scale;
        float* m = parts + size_t(i) * partial;
        float* sum = m + Hq;
        float* acc = sum + Hq;
        for (int h = 0; h < Hq; ++h) {
          float* s = scores + size_t(h) * n;
          m[h] = *std::max_element(s, s + n);
          sum[h] = float(k.exp_sum(s, m[h], 1.f, s, n));
        }
        std::fill(acc, acc + size_t(Hq) * D, 0.f);
        // Values: each head group over a chunk's rows, its accumulators in registers; the same FMAs in
        // the same order as a row at a time.
        for (int c = 0; c < n; c += kChunk) {
          const int nc = std::min(kChunk, n - c);
          gather(a.v_cache, c, nc);
          for (int g = 0; g < a.kv_heads; ++g)
            k.axpys_f32(acc + int64_t(g) * group * D, D, group, scores + size_t(g) * group * n + c, n, rows, int64_t(g) * D,
                        nc, D);
        }
      }
    });

    // Merge each token's blocks in order; the sink joins the softmax as a raw logit.
    cpu::parallel_for(t1 - t0, 1, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int t = t0 + int(i);
        const int nb = int(first[i + 1] - first[i]);
        const float* base = parts + size_t(first[i]) * partial;
        float* o = a.out + t * a.ldo;
        for (int h = 0; h < Hq; ++h) {
          const float sink = cpu::bf16_to_f32(a.sinks[h]);
          float M = sink;
          for (int b = 0; b < nb; ++b) M = std::max(M, base[size_t(b) * partial + h]);
          double total = std::exp(double(sink) - M);
          std::fill(o + h * D, o + (h + 1) * D, 0.f);
          for (int b = 0; b < nb; ++b) {
            const float* pb = base + size_t(b) * partial;
            const float f = std::exp(pb[h] - M);
            total += double(pb[Hq + h]) * f;
            k.axpy_f32(o + h * D, f, pb + 2 * Hq + size_t(h) * D, D);
          }
          const float inv = float(1.0 / total);
          for (int d = 0; d < D; ++d) o[h * D + d] *= inv;
        }
      }
    });
    t0 = t1;
  }
}

void run_cpu(const AttentionOp& o, const StepContext& s) {
  const BufferView& kc = s.pool(o.kc);
  attention_cpu({s.f32(o.x), s.ld(o.x), s.positions, kc.data, s.pool(o.vc).data, kc.dtype, s.pages_for(o.window), s.bf16(o.w),
                 s.f32(o.y), s.ld(o.y), s.T, o.q_heads, o.kv_heads, o.head_dim, o.window, o.scale, s.scratch, s.scratch_bytes,
                 cpu::num_threads()});
}

size_t scratch_bytes_cpu(const AttentionOp& o, const ScratchPlan& p) {
  return attention_scratch_cpu(p.max_tokens, p.max_context, o.q_heads, o.kv_heads, o.head_dim, o.window, p.threads);
}
}  // namespace gptoss
