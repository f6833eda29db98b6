// rope: YaRN rotary embedding on the Q and K heads of a fused qkv row, in place
// (gpt-oss-spec.md §2.5): half-split pairs (i, i + D/2), NTK-by-parts frequencies with fractional
// ramp bounds, and the concentration multiplied into both cos and sin.
#pragma once
#include <vector>

#include "kernels/common.h"

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

}  // namespace gptoss
