// moe_combine: x[t] += sum_j weight[t, j] * y[t * k + j], j in routing order (the weighted sum of
// the experts' outputs and the MoE residual add, gpt-oss-spec.md §2.7 step 5).
#pragma once
#include "kernels/common.h"

namespace gptoss {
struct MoeCombineArgs {
  float* x;            // [T, ldx] residual stream
  int64_t ldx;
  const float* y;      // [T * k, H]
  const float* weight; // [T, k]
  int T, k, H;
};
void moe_combine_cpu(const MoeCombineArgs& a);
}  // namespace gptoss
