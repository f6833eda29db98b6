// Every (row, token) dot product is computed the same way whatever T is (gemv_bf16 over the
// token's pair-split x), so a token's result does not depend on what else is in the step: a
// request batched with others gives bit-identical logits to the same request alone. Each task
// takes a band of rows and runs it against every token; with many tokens the band is narrower
// so it stays in L2 between tokens.
#include "kernels/matmul_bf16.h"

#include <algorithm>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/simd.h"

namespace gptoss {
namespace {
constexpr int kBandRows = 64;     // rows per task for a few tokens: 64 x 2880 x 2 B = 368 KB
constexpr int kNarrowRows = 16;   // with many tokens: 92 KB, reread from L2 for each token
constexpr int kNarrowFromT = 8;

void finish(const MatmulBf16Args& a, int t, int r0, int nr, const float* acc) {
  float* y = a.y + t * a.ldy + r0;
  for (int i = 0; i < nr; ++i) {
    float v = acc[i] + (a.b ? cpu::bf16_to_f32(a.b[r0 + i]) : 0.f);
    y[i] = a.accumulate ? y[i] + v : v;
  }
}
}  // namespace

void matmul_bf16_cpu(const MatmulBf16Args& a) {
  const auto& k = cpu::simd();
  float* xs = a.scratch;
  for (int t = 0; t < a.T; ++t) k.split_pairs(a.x + t * a.ldx, xs + size_t(t) * a.K, a.K);
  const int band = a.T >= kNarrowFromT ? kNarrowRows : kBandRows;
  cpu::parallel_for(a.N, band, [&](int64_t r0, int64_t r1) {
    constexpr int kTokens = 4;  // tokens per gemm_bf16 call
    float acc[kTokens * kBandRows];
    for (int t = 0; t < a.T; t += kTokens) {
      const int n = std::min(kTokens, a.T - t);
      k.gemm_bf16(a.w + r0 * a.K, size_t(a.K), int(r1 - r0), xs + size_t(t) * a.K, a.K, n, a.K, acc, kBandRows);
      for (int j = 0; j < n; ++j) finish(a, t + j, int(r0), int(r1 - r0), acc + j * kBandRows);
    }
  });
}

void run_cpu(const MatmulBf16Op& o, const StepContext& s) {
  float* y = o.y.present() ? s.f32(o.y) + o.ycol : s.logits;
  const int64_t ldy = o.y.present() ? s.ld(o.y) : o.N;
  matmul_bf16_cpu({s.f32(o.x) + o.xcol, s.ld(o.x), s.bf16(o.w), s.bf16(o.b), y, ldy, o.logits_rows ? s.L : s.T, o.N, o.K,
                   o.accumulate, reinterpret_cast<float*>(s.scratch)});
}

size_t scratch_bytes_cpu(const MatmulBf16Op& o, const ScratchPlan& p) { return matmul_bf16_scratch_cpu(p.max_tokens, o.K); }

}  // namespace gptoss
