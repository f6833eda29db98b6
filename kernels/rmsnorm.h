// rmsnorm: y = g * x / sqrt(mean(x^2) + eps) per row (kernels/MODEL.md, "RMSNorm"), f32 in and out,
// bf16 gain. The sum of squares is kept in double so the result does not depend on the order.
#pragma once
#include "kernels/op.h"

namespace gptoss {
struct RmsnormArgs {
  const float* x;        // [rows, ldx]
  int64_t ldx;
  const uint16_t* gain;  // [H] bf16
  float* y;              // [rows, ldy]; may alias x
  int64_t ldy;
  int rows, H;
  float eps;
};
void rmsnorm_cpu(const RmsnormArgs& a);

// In a program. logitsRows: only the rows whose logits the step asks for, gathered into rows
// [0, L) of y (the final norm, before the unembedding).
struct RmsnormOp {
  Buf x;     // [T, H] f32
  Buf y;     // [T, H] f32
  Weight w;  // [H] bf16 gain
  int H = 0;
  float eps = 0;
  bool logits_rows = false;
  template <class V> void fields(V& v) {
    v("x", x);
    v("y", y);
    v("w", w);
    v("H", H);
    v("eps", eps);
    v.opt("logitsRows", logits_rows);
  }
};
struct RmsnormLimits {};
inline void check(const RmsnormOp& o, OpCheck& c, const RmsnormLimits&) {
  c.positive(o.H, "H");
  c.require(o.eps > 0, "eps", "must be positive");
  c.buffer(o.x, DType::F32, c.max_tokens, o.H, "x");
  c.buffer(o.y, DType::F32, c.max_tokens, o.H, "y");
  c.weight(o.w, size_t(o.H) * 2, "w");
}
void run_cpu(const RmsnormOp& o, const StepContext& s);
}  // namespace gptoss
