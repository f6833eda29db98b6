#include "kernels/rope.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/parallel.h"

namespace gptoss {

RopeTable rope_table(const RopeParams& p) {
  const int half = p.head_dim / 2;
  RopeTable t;
  t.omega.resize(half);
  const double d_half = half;
  const double low = d_half * std::log(p.initial_context / (p.ntk_beta * 2 * M_PI)) / std::log(p.theta);
  const double high = d_half * std::log(p.initial_context / (p.ntk_alpha * 2 * M_PI)) / std::log(p.theta);
  const bool yarn = p.factor > 1.0;
  t.concentration = yarn ? float(0.1 * std::log(p.factor) + 1.0) : 1.f;
  for (int i = 0; i < half; ++i) {
    // float32 throughout, like the reference's torch tensors
    const float freq = std::pow(float(p.theta), float(2 * i) / float(p.head_dim));
    if (!yarn) {
      t.omega[i] = 1.f / freq;
      continue;
    }
    const float interp = 1.f / (float(p.factor) * freq);
    const float extrap = 1.f / freq;
    const float ramp = (float(i) - float(low)) / float(high - low);
    const float mask = 1.f - std::clamp(ramp, 0.f, 1.f);
    t.omega[i] = interp * (1.f - mask) + extrap * mask;
  }
  return t;
}

void rope_cpu(const RopeArgs& a) {
  const int half = a.head_dim / 2;
  const int heads = a.q_heads + a.kv_heads;  // K heads follow the Q heads in the row
  cpu::parallel_for(a.T, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> c(half), s(half);
    for (int64_t t = t0; t < t1; ++t) {
      const float pos = float(a.positions[t]);
      for (int i = 0; i < half; ++i) {
        // The angle is the float32 product, as in the reference; cos/sin of it are exact.
        const float ang = pos * a.table->omega[i];
        c[i] = float(std::cos(double(ang))) * a.table->concentration;
        s[i] = float(std::sin(double(ang))) * a.table->concentration;
      }
      float* row = a.qkv + t * a.ld;
      for (int h = 0; h < heads; ++h) {
        float* x = row + h * a.head_dim;
        for (int i = 0; i < half; ++i) {
          const float x1 = x[i], x2 = x[i + half];
          x[i] = x1 * c[i] - x2 * s[i];
          x[i + half] = x2 * c[i] + x1 * s[i];
        }
      }
    }
  });
}


void run_cpu(const RopeOp& o, const StepContext& s) {
  rope_cpu({s.f32(o.x), s.ld(o.x), s.positions, s.T, o.q_heads, o.kv_heads, o.head_dim, s.rope});
}

}  // namespace gptoss
