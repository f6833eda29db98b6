// matmul_bf16: Y[t, n] (+)= sum_k X[t, k] * W[n, k] + b[n] — every dense projection of the model
// (QKV, attention output, router, unembedding). bf16 weights [N, K] as stored in the checkpoint,
// f32 activations, f32 accumulation (kernels/MODEL.md, "Numerics").
#pragma once
#include "kernels/op.h"

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
  float* scratch;     // [T, K]: x rearranged for the SIMD dot products
};
void matmul_bf16_cpu(const MatmulBf16Args& a);
// Bytes of scratch matmul_bf16_cpu needs for T tokens of K columns.
inline size_t matmul_bf16_scratch_cpu(int T, int K) { return align64(size_t(T) * size_t(K) * 4); }

// In a program. x from column xcol, y at column ycol (a slice of a wider buffer, as the fused
// QKV row). Without y the output is the step's logits: then logitsRows must be set, N must be
// the vocabulary, and x's rows [0, L) are the gathered rows the final rmsnorm wrote.
struct MatmulBf16Op {
  Buf x;     // [T, xcol + K] f32
  Buf y;     // [T, ycol + N] f32, or absent: the logits [L, N]
  Weight w;  // [N, K] bf16
  Weight b;  // [N] bf16, optional
  int N = 0, K = 0, xcol = 0, ycol = 0;
  bool accumulate = false, logits_rows = false;
  template <class V> void fields(V& v) {
    v("x", x);
    v.opt("y", y);
    v("w", w);
    v.opt("b", b);
    v("N", N);
    v("K", K);
    v.opt("xcol", xcol);
    v.opt("ycol", ycol);
    v.opt("accumulate", accumulate);
    v.opt("logitsRows", logits_rows);
  }
};
struct MatmulBf16Limits {};
inline void check(const MatmulBf16Op& o, OpCheck& c, const MatmulBf16Limits&) {
  c.positive(o.N, "N");
  c.positive(o.K, "K");
  c.non_negative(o.xcol, "xcol");
  c.non_negative(o.ycol, "ycol");
  c.buffer(o.x, DType::F32, c.max_tokens, int64_t(o.xcol) + o.K, "x");
  if (o.y.present()) c.buffer(o.y, DType::F32, c.max_tokens, int64_t(o.ycol) + o.N, "y");
  else c.require(o.N == c.vocab && o.logits_rows && !o.accumulate, "y",
                 "the logits matmul (no y) must produce vocab columns for the logits rows only");
  c.weight(o.w, size_t(o.N) * o.K * 2, "w");
  if (o.b.present()) c.weight(o.b, size_t(o.N) * 2, "b");
}
void run_cpu(const MatmulBf16Op& o, const StepContext& s);
size_t scratch_bytes_cpu(const MatmulBf16Op& o, const ScratchPlan& p);
}  // namespace gptoss
