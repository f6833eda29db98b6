// moe_combine: x[t] += sum_j weight[t, j] * y[t * k + j], j in routing order (the weighted sum of
// the experts' outputs and the MoE residual add, kernels/MODEL.md, "Combine").
#pragma once
#include "kernels/op.h"

namespace gptoss {
struct MoeCombineArgs {
  float* x;            // [T, ldx] residual stream
  int64_t ldx;
  const float* y;      // [T * k, H]
  const float* weight; // [T, k]
  int T, k, H;
  float* scratch;      // [H]
};
void moe_combine_cpu(const MoeCombineArgs& a);

// In a program.
struct MoeCombineOp {
  Buf x;   // [T, H] f32, added to
  Buf y;   // [T * k, H] f32 expert outputs (moe_mxfp4)
  Buf wt;  // [T, k] f32 routing weights (router_topk)
  int k = 0, H = 0;
  template <class V> void fields(V& v) {
    v("x", x);
    v("y", y);
    v("wt", wt);
    v("k", k);
    v("H", H);
  }
};
struct MoeCombineLimits {};
inline void check(const MoeCombineOp& o, OpCheck& c, const MoeCombineLimits&) {
  c.positive(o.k, "k");
  c.positive(o.H, "H");
  c.buffer(o.x, DType::F32, c.max_tokens, o.H, "x");
  c.buffer(o.y, DType::F32, int64_t(c.max_tokens) * o.k, o.H, "y");
  c.buffer(o.wt, DType::F32, c.max_tokens, o.k, "wt");
}
void run_cpu(const MoeCombineOp& o, const StepContext& s);
size_t scratch_bytes_cpu(const MoeCombineOp& o, const ScratchPlan& p);
}  // namespace gptoss
