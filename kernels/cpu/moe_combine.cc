#include "kernels/moe_combine.h"

#include <vector>

#include "kernels/cpu/simd.h"

namespace gptoss {
void moe_combine_cpu(const MoeCombineArgs& a) {
  float* sum = a.scratch;
  for (int t = 0; t < a.T; ++t) {
    std::fill(sum, sum + a.H, 0.f);
    for (int j = 0; j < a.k; ++j)
      cpu::simd().axpy_f32(sum, a.weight[t * a.k + j], a.y + size_t(t * a.k + j) * a.H, a.H);
    float* x = a.x + t * a.ldx;
    for (int i = 0; i < a.H; ++i) x[i] += sum[i];
  }
}

void run_cpu(const MoeCombineOp& o, const StepContext& s) {
  moe_combine_cpu({s.f32(o.x), s.ld(o.x), s.f32(o.y), s.f32(o.wt), s.T, o.k, o.H, reinterpret_cast<float*>(s.scratch)});
}

size_t scratch_bytes_cpu(const MoeCombineOp& o, const ScratchPlan&) { return align64(size_t(o.H) * 4); }

}  // namespace gptoss
