#include "kernels/router_topk.h"

#include <cmath>

namespace gptoss {
void router_topk_cpu(const RouterTopkArgs& a) {
  for (int t = 0; t < a.T; ++t) {
    const float* l = a.logits + t * a.ldl;
    int32_t* idx = a.idx + t * a.k;
    float* w = a.weight + t * a.k;
    uint64_t taken[4] = {0, 0, 0, 0};  // E <= 256
    for (int j = 0; j < a.k; ++j) {
      int best = -1;
      for (int e = 0; e < a.E; ++e) {
        if (taken[e >> 6] >> (e & 63) & 1) continue;
        // Strictly greater: on a tie the lower index, found first, stays.
        if (best < 0 || l[e] > l[best]) best = e;
      }
      taken[best >> 6] |= uint64_t(1) << (best & 63);
      idx[j] = best;
    }
    const float m = l[idx[0]];
    double sum = 0;
    for (int j = 0; j < a.k; ++j) sum += std::exp(double(l[idx[j]]) - m);
    for (int j = 0; j < a.k; ++j) w[j] = float(std::exp(double(l[idx[j]]) - m) / sum);
  }
}

void run_cpu(const RouterTopkOp& o, const StepContext& s) {
  router_topk_cpu({s.f32(o.x), s.ld(o.x), s.i32(o.idx), s.f32(o.wt), s.T, o.E, o.k});
}

}  // namespace gptoss
