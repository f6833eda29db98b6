// matmul_bf16: Y[t, n] (+)= sum_k X[t, k] * W[n, k] + b[n] — every dense projection of the model
// (QKV, attention output, router, unembedding). bf16 weights [N, K] as stored in the checkpoint,
// f32 activations, f32 accumulation (gpt-oss-spec.md §8).
#pragma once
#include "kernels/common.h"

namespace gptoss {
struct MatmulBf16Args {
  const float* x;     // [T, ldx]
  int64_t ldx;
  const uint16_t* w;  // [N, K] bf16
  const uint16_t* b;  // [N] bf16 or null
  float* y;           // [T, ldy]
  int64_t ldy;
  int T, N, K;
  bool accumulate;    // y += instead of y = (the residual add of the attention output)
};
void matmul_bf16_cpu(const MatmulBf16Args& a);
}  // namespace gptoss
