// router_topk: per token, the k largest router logits (bias already added), ties to the lower
// expert index, and a softmax over those k only (kernels/MODEL.md, "Router"). Indices come out
// in descending logit order, as torch.topk(sorted=True) gives them.
#pragma once
#include "kernels/op.h"

namespace gptoss {
struct RouterTopkArgs {
  const float* logits;  // [T, ldl], E used
  int64_t ldl;
  int32_t* idx;         // [T, k]
  float* weight;        // [T, k]
  int T, E, k;
};
void router_topk_cpu(const RouterTopkArgs& a);

// In a program.
struct RouterTopkOp {
  Buf x;    // [T, E] f32 router logits
  Buf idx;  // [T, k] i32
  Buf wt;   // [T, k] f32
  int E = 0, k = 0;
  template <class V> void fields(V& v) {
    v("x", x);
    v("idx", idx);
    v("wt", wt);
    v("E", E);
    v("k", k);
  }
};
// max_experts: the CPU kernel marks taken experts in a fixed 256-bit set per token.
struct RouterTopkLimits {
  int max_experts = 256;
};
inline void check(const RouterTopkOp& o, OpCheck& c, const RouterTopkLimits& lim) {
  c.require(o.E > 0 && o.E <= lim.max_experts, "E",
            "must lie in [1, " + std::to_string(lim.max_experts) + "] (this backend's limit), got " + std::to_string(o.E));
  c.require(o.k > 0 && o.k <= o.E, "k", "must lie in [1, E], got " + std::to_string(o.k));
  c.buffer(o.x, DType::F32, c.max_tokens, o.E, "x");
  c.buffer(o.idx, DType::I32, c.max_tokens, o.k, "idx");
  c.buffer(o.wt, DType::F32, c.max_tokens, o.k, "wt");
}
void run_cpu(const RouterTopkOp& o, const StepContext& s);
}  // namespace gptoss
