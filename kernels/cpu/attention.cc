// One task per (token, kv head): the group's q heads share every K and V row read from the cache.
// Two passes over the allowed keys (scores, then the weighted sum of V), with the sink folded into
// the max and the denominator.
#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/simd.h"

namespace gptoss {
void attention_cpu(const AttentionArgs& a) {
  const auto& k = cpu::simd();
  const int D = a.head_dim, group = a.q_heads / a.kv_heads, width = a.kv_heads * D;
  cpu::parallel_for(int64_t(a.T) * a.kv_heads, 1, [&](int64_t i0, int64_t i1) {
    std::vector<float> scores, krow(D), acc(size_t(group) * D), denom(group);
    for (int64_t i = i0; i < i1; ++i) {
      const int t = int(i / a.kv_heads), g = int(i % a.kv_heads);
      const int64_t p = a.positions[t];
      const int64_t lo = a.window > 0 ? std::max<int64_t>(0, p - a.window + 1) : 0;
      const int n = int(p - lo + 1);
      scores.resize(size_t(n) * group);
      const int32_t seq = a.pages.seq[t];
      auto row = [&](const void* cache, int64_t pos) -> const float* {
        const int64_t r = a.pages.row(seq, pos);
        if (a.cache_dtype == DType::F32) return static_cast<const float*>(cache) + r * width + g * D;
        k.bf16_to_f32(static_cast<const uint16_t*>(cache) + r * width + g * D, krow.data(), D);
        return krow.data();
      };
      const float* q0 = a.q + t * a.ldq + int64_t(g) * group * D;
      for (int j = 0; j < n; ++j) {
        const float* kr = row(a.k_cache, lo + j);
        for (int h = 0; h < group; ++h) scores[size_t(h) * n + j] = k.dot_f32(q0 + h * D, kr, D) * a.scale;
      }
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int h = 0; h < group; ++h) {
        float* s = scores.data() + size_t(h) * n;
        const float sink = cpu::bf16_to_f32(a.sinks[g * group + h]);
        float m = sink;
        for (int j = 0; j < n; ++j) m = std::max(m, s[j]);
        double sum = std::exp(double(sink) - m);
        for (int j = 0; j < n; ++j) {
          s[j] = std::exp(s[j] - m);
          sum += s[j];
        }
        denom[h] = float(1.0 / sum);
      }
      for (int j = 0; j < n; ++j) {
        const float* vr = row(a.v_cache, lo + j);
        for (int h = 0; h < group; ++h) k.axpy_f32(acc.data() + h * D, scores[size_t(h) * n + j], vr, D);
      }
      float* o = a.out + t * a.ldo + int64_t(g) * group * D;
      for (int h = 0; h < group; ++h)
        for (int d = 0; d < D; ++d) o[h * D + d] = acc[size_t(h) * D + d] * denom[h];
    }
  });
}
}  // namespace gptoss
