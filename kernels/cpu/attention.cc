// Split over the keys (flash-decoding): each task takes one token and one block of kBlock keys,
// for every head, reading each key's and value's row once, front to back (one row holds all KV
// heads, so the cache streams sequentially; a task per head group strided through it instead and
// waited on memory for every key). A block leaves its own max, exp-sum and unnormalised weighted
// V sum per head; a token's blocks are merged in order, with the sink folded into the max and the
// denominator. Blocks depend only on the position, so a token is computed the same way whatever
// else is in the step (batch invariance) and whatever the thread count.
#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/simd.h"

namespace gptoss {
namespace {
constexpr int kBlock = 256;
// Partials of one (token, block): m[Hq], sum[Hq], acc[Hq * D].
constexpr size_t kMaxPartialBytes = size_t(64) << 20;
}  // namespace

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

  // Tokens go in groups whose partials fit kMaxPartialBytes (a long prefill chunk at a long context).
  // Kept between calls (one per calling thread): a decode step would otherwise allocate, and
  // page-fault, a fresh partials buffer in every attention layer. Bound to references so the
  // workers below use the caller's copies, not their own thread_local ones.
  thread_local std::vector<int64_t> t_first;
  thread_local std::vector<float> t_parts;
  std::vector<int64_t>& first = t_first;  // first task of each token in the group
  std::vector<float>& parts = t_parts;
  for (int t0 = 0; t0 < a.T;) {
    first.assign(1, 0);
    int t1 = t0;
    while (t1 < a.T && (t1 == t0 || size_t(first.back() + blocks_of(t1)) * partial * 4 <= kMaxPartialBytes))
      first.push_back(first.back() + blocks_of(t1++));
    const int64_t tasks = first.back();
    parts.resize(size_t(tasks) * partial);

    cpu::parallel_for(tasks, 1, [&](int64_t i0, int64_t i1) {
      thread_local std::vector<float> scores, row_f32, w;
      for (int64_t i = i0; i < i1; ++i) {
        const int t = t0 + int(std::upper_bound(first.begin(), first.end(), i) - first.begin()) - 1;
        const int b = int(i - first[size_t(t - t0)]);
        const auto [lo, hi] = range(t);
        const int64_t j0 = lo + int64_t(b) * kBlock, j1 = std::min(hi, j0 + kBlock);
        const int n = int(j1 - j0);
        const int32_t seq = a.pages.seq[t];
        row_f32.resize(size_t(width));
        w.resize(size_t(group));
        scores.resize(size_t(Hq) * n);
        auto row = [&](const void* cache, int64_t pos) -> const float* {
          const char* p = static_cast<const char*>(cache) + a.pages.row(seq, pos) * width * esize;
          if (a.cache_dtype == DType::F32) return reinterpret_cast<const float*>(p);
          k.bf16_to_f32(reinterpret_cast<const uint16_t*>(p), row_f32.data(), size_t(width));
          return row_f32.data();
        };
        const float* q = a.q + t * a.ldq;
        // Scores [Hq, n]: each key row against every head of its group.
        for (int j = 0; j < n; ++j) {
          const float* kr = row(a.k_cache, j0 + j);
          for (int g = 0; g < a.kv_heads; ++g) {
            k.dots_f32(q + int64_t(g) * group * D, D, group, kr + g * D, D, w.data());
            for (int h = 0; h < group; ++h) scores[size_t(g * group + h) * n + j] = w[size_t(h)] * a.scale;
          }
        }
        float* m = parts.data() + size_t(i) * partial;
        float* sum = m + Hq;
        float* acc = sum + Hq;
        for (int h = 0; h < Hq; ++h) {
          float* s = scores.data() + size_t(h) * n;
          m[h] = *std::max_element(s, s + n);
          sum[h] = float(k.exp_sum(s, m[h], 1.f, s, n));
        }
        std::fill(acc, acc + size_t(Hq) * D, 0.f);
        for (int j = 0; j < n; ++j) {
          const float* vr = row(a.v_cache, j0 + j);
          for (int g = 0; g < a.kv_heads; ++g) {
            for (int h = 0; h < group; ++h) w[size_t(h)] = scores[size_t(g * group + h) * n + j];
            k.axpys_f32(acc + int64_t(g) * group * D, D, w.data(), group, vr + g * D, D);
          }
        }
      }
    });

    // Merge each token's blocks in order; the sink joins the softmax as a raw logit.
    cpu::parallel_for(t1 - t0, 1, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int t = t0 + int(i);
        const int nb = int(first[size_t(i) + 1] - first[size_t(i)]);
        const float* base = parts.data() + size_t(first[size_t(i)]) * partial;
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
}  // namespace gptoss
