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

void run_cpu(const RmsnormOp& o, const StepContext& s) {
  const int64_t ldx = s.ld(o.x), ldy = s.ld(o.y);
  if (!o.logits_rows) {
    rmsnorm_cpu({s.f32(o.x), ldx, s.bf16(o.w), s.f32(o.y), ldy, s.T, o.H, o.eps});
    return;
  }
  // The final norm gathers the logit rows into rows [0, L); the unembedding reads those.
  for (int i = 0; i < s.L; ++i)
    rmsnorm_cpu({s.f32(o.x) + size_t(s.logit_rows[i]) * ldx, ldx, s.bf16(o.w), s.f32(o.y) + size_t(i) * ldy, ldy, 1, o.H, o.eps});
}

}  // namespace gptoss
