// moe_mxfp4: the expert MLPs of one MoE layer for T tokens, each routed to k experts
// (gpt-oss-spec.md §2.7 step 4). Weights stay MXFP4 as in the checkpoint.
//   u = W1[e] x + b1[e]           W1 [E, 2I, H/32, 16] + scales [E, 2I, H/32]; rows interleave
//                                 gate (even) and linear (odd)
//   a = min(g, L) * sigmoid(alpha * min(g, L)) * (clamp(l, -L, L) + 1)
//   y = W2[e] a + b2[e]           W2 [E, H, I/32, 16]; bias added before the routing weight
// The output is one row per (token, slot) pair, unweighted: moe_combine applies the weights.
// Tokens are grouped by expert first, so each expert's weights are read once per step.
#pragma once
#include "kernels/common.h"

namespace gptoss {
struct MoeMxfp4Args {
  const float* x;            // [T, ldx] normed activations, H wide
  int64_t ldx;
  const int32_t* idx;        // [T, k] selected experts
  const uint8_t* w1_blocks;  // [E, 2I, H/32, 16]
  const uint8_t* w1_scales;  // [E, 2I, H/32]
  const uint16_t* b1;        // [E, 2I] bf16
  const uint8_t* w2_blocks;  // [E, H, I/32, 16]
  const uint8_t* w2_scales;  // [E, H, I/32]
  const uint16_t* b2;        // [E, H] bf16
  float* y;                  // [T * k, H], row t * k + j
  int T, k, E, H, I;
  float limit, alpha;
};
// Throws ERR_INVALID_ARGUMENT (before any work) when an index is outside [0, E).
void moe_mxfp4_cpu(const MoeMxfp4Args& a);
}  // namespace gptoss
