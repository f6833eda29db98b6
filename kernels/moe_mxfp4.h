// moe_mxfp4: the expert MLPs of one MoE layer for T tokens, each routed to k experts
// (kernels/MODEL.md, "Experts"). Weights stay MXFP4 as in the checkpoint.
//   u = W1[e] x + b1[e]           W1 [E, 2I, H/32, 16] + scales [E, 2I, H/32]; rows interleave
//                                 gate (even) and linear (odd)
//   a = min(g, L) * sigmoid(alpha * min(g, L)) * (clamp(l, -L, L) + 1)
//   y = W2[e] a + b2[e]           W2 [E, H, I/32, 16]; bias added before the routing weight
// The output is one row per (token, slot) pair, unweighted: moe_combine applies the weights.
// Tokens are grouped by expert first, so each expert's weights are read once per step.
// Limits: H and I are multiples of 32 (an MXFP4 block is 32 values sharing one scale).
#pragma once
#include "kernels/op.h"

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
  uint8_t* scratch;          // moe_mxfp4_scratch_cpu(...) bytes
  size_t scratch_bytes;
  int threads;
  // Precision 'fp32' (ScratchPlan::exact): f32 products. false: bf16 hi/lo products where the CPU
  // has AVX-512 BF16 (kernels/cpu/simd_avx512bf16.cc, within ~1e-5 of f32), else the same f32 path.
  bool exact = true;
};
// Throws ERR_INVALID_ARGUMENT (before any work) when an index is outside [0, E).
void moe_mxfp4_cpu(const MoeMxfp4Args& a);
size_t moe_mxfp4_scratch_cpu(int T, int k, int E, int H, int I, int threads, bool exact = true);

// In a program.
struct MoeMxfp4Op {
  Buf x;                     // [T, H] f32
  Buf idx;                   // [T, k] i32 (router_topk)
  Buf y;                     // [T * k, H] f32
  Weight w1b, w1s, b1;       // mlp1 blocks, scales, bf16 bias
  Weight w2b, w2s, b2;       // mlp2 blocks, scales, bf16 bias
  int E = 0, k = 0, H = 0, I = 0;
  float limit = 0, alpha = 0;  // the SwiGLU clamp and sigmoid slope (config swiglu_limit, 1.702)
  template <class V> void fields(V& v) {
    v("x", x);
    v("idx", idx);
    v("y", y);
    v("w1b", w1b);
    v("w1s", w1s);
    v("b1", b1);
    v("w2b", w2b);
    v("w2s", w2s);
    v("b2", b2);
    v("E", E);
    v("k", k);
    v("H", H);
    v("I", I);
    v("limit", limit);
    v("alpha", alpha);
  }
};
struct MoeMxfp4Limits {};
inline void check(const MoeMxfp4Op& o, OpCheck& c, const MoeMxfp4Limits&) {
  c.positive(o.E, "E");
  c.require(o.k > 0 && o.k <= o.E, "k", "must lie in [1, E], got " + std::to_string(o.k));
  c.require(o.H > 0 && o.H % 32 == 0, "H", "must be a positive multiple of 32 (the MXFP4 block), got " + std::to_string(o.H));
  c.require(o.I > 0 && o.I % 32 == 0, "I", "must be a positive multiple of 32 (the MXFP4 block), got " + std::to_string(o.I));
  c.require(o.limit > 0, "limit", "must be positive");
  c.buffer(o.x, DType::F32, c.max_tokens, o.H, "x");
  c.buffer(o.idx, DType::I32, c.max_tokens, o.k, "idx");
  c.buffer(o.y, DType::F32, int64_t(c.max_tokens) * o.k, o.H, "y");
  const size_t E = size_t(o.E), H = size_t(o.H), I = size_t(o.I);
  c.weight(o.w1b, E * 2 * I * H / 2, "w1b");
  c.weight(o.w1s, E * 2 * I * H / 32, "w1s");
  c.weight(o.b1, E * 2 * I * 2, "b1");
  c.weight(o.w2b, E * H * I / 2, "w2b");
  c.weight(o.w2s, E * H * I / 32, "w2s");
  c.weight(o.b2, E * H * 2, "b2");
}
void run_cpu(const MoeMxfp4Op& o, const StepContext& s);
size_t scratch_bytes_cpu(const MoeMxfp4Op& o, const ScratchPlan& p);
}  // namespace gptoss
