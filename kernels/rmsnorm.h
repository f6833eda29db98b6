// rmsnorm: y = g * x / sqrt(mean(x^2) + eps) per row (gpt-oss-spec.md §2.3), f32 in and out,
// bf16 gain. The sum of squares is kept in double so the result does not depend on the order.
#pragma once
#include "kernels/common.h"

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
}  // namespace gptoss
