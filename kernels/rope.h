// rope: YaRN rotary embedding on the Q and K heads of a fused qkv row, in place
// (kernels/MODEL.md, "YaRN rotary"): half-split pairs (i, i + D/2), NTK-by-parts frequencies with
// fractional ramp bounds, and the concentration multiplied into both cos and sin.
#pragma once
#include <vector>

#include "kernels/op.h"

namespace gptoss {

struct RopeParams {
  double theta = 150000, factor = 32, ntk_alpha = 1, ntk_beta = 32;
  int initial_context = 4096;
  int head_dim = 64;
};

// The per-pair angular frequencies, computed in float32 the way the official reference does
// (so the fixtures' float32 logits are matched), and the concentration C.
struct RopeTable {
  std::vector<float> omega;  // [head_dim / 2]
  float concentration = 1.f;
};
RopeTable rope_table(const RopeParams& p);

struct RopeArgs {
  float* qkv;               // [T, ld]: Q heads at column 0, K heads at column q_heads * D
  int64_t ld;
  const int32_t* positions; // [T] absolute positions
  int T, q_heads, kv_heads, head_dim;
  const RopeTable* table;
};
void rope_cpu(const RopeArgs& a);

// In a program: in place on the Q and K heads of x, with the program's table (its head_dim must
// be the program's rope.headDim).
struct RopeOp {
  Buf x;  // [T, (qHeads + kvHeads) * headDim] f32, or wider
  int q_heads = 0, kv_heads = 0, head_dim = 0;
  template <class V> void fields(V& v) {
    v("x", x);
    v("qHeads", q_heads);
    v("kvHeads", kv_heads);
    v("headDim", head_dim);
  }
};
struct RopeLimits {};
inline void check(const RopeOp& o, OpCheck& c, const RopeLimits&) {
  const int rope_head_dim = c.rope_head_dim;
  c.positive(o.q_heads, "qHeads");
  c.non_negative(o.kv_heads, "kvHeads");
  c.require(o.head_dim > 0 && o.head_dim % 2 == 0 && o.head_dim == rope_head_dim, "headDim",
            "must be even and equal the program's rope.headDim " + std::to_string(rope_head_dim) + ", got " + std::to_string(o.head_dim));
  c.buffer(o.x, DType::F32, c.max_tokens, int64_t(o.q_heads + o.kv_heads) * o.head_dim, "x");
}
void run_cpu(const RopeOp& o, const StepContext& s);

}  // namespace gptoss
