#include "kernels/rmsnorm.h"

#include <cmath>

#include "kernels/cpu/simd.h"

namespace gptoss {
void rmsnorm_cpu(const RmsnormArgs& a) {
  for (int r = 0; r < a.rows; ++r) {
    const float* x = a.x + r * a.ldx;
    float* y = a.y + r * a.ldy;
    double ss = 0;
    for (int i = 0; i < a.H; ++i) ss += double(x[i]) * x[i];
    const float inv = float(1.0 / std::sqrt(ss / a.H + a.eps));
    for (int i = 0; i < a.H; ++i) y[i] = x[i] * inv * cpu::bf16_to_f32(a.gain[i]);
  }
}
}  // namespace gptoss
