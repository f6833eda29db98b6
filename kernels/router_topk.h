// router_topk: per token, the k largest router logits (bias already added), ties to the lower
// expert index, and a softmax over those k only (gpt-oss-spec.md §2.7 step 3). Indices come out
// in descending logit order, as torch.topk(sorted=True) gives them.
#pragma once
#include "kernels/common.h"

namespace gptoss {
struct RouterTopkArgs {
  const float* logits;  // [T, ldl], E used
  int64_t ldl;
  int32_t* idx;         // [T, k]
  float* weight;        // [T, k]
  int T, E, k;
};
void router_topk_cpu(const RouterTopkArgs& a);
}  // namespace gptoss
