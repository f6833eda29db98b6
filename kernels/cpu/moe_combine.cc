#include "kernels/moe_combine.h"

#include <vector>

#include "kernels/cpu/simd.h"

namespace gptoss {
void moe_combine_cpu(const MoeCombineArgs& a) {
  std::vector<float> sum(a.H);
  for (int t = 0; t < a.T; ++t) {
    std::fill(sum.begin(), sum.end(), 0.f);
    for (int j = 0; j < a.k; ++j)
      cpu::simd().axpy_f32(sum.data(), a.weight[t * a.k + j], a.y + size_t(t * a.k + j) * a.H, a.H);
    float* x = a.x + t * a.ldx;
    for (int i = 0; i < a.H; ++i) x[i] += sum[i];
  }
}
}  // namespace gptoss
