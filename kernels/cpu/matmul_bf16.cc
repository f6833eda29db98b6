// Decode (T small): each task streams a band of weight rows once against all T tokens (GEMV).
// Prefill: each task converts a tile of weight rows to f32 once and multiplies it with every
// token (gemm_f32's 4x2 register tile), so weights are read once per step either way.
#include "kernels/matmul_bf16.h"

#include <vector>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/simd.h"

namespace gptoss {
namespace {
constexpr int kGemvRows = 64;   // rows per task: 64 x 2880 x 2 B = 368 KB streamed
constexpr int kTileRows = 16;   // rows per f32 tile when T is large (16 x 4096 x 4 B = 256 KB)
constexpr int kGemvMaxT = 4;    // up to this many tokens, re-stream the band per token

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
  if (a.T <= kGemvMaxT) {
    std::vector<float> xs(size_t(a.T) * a.K);
    for (int t = 0; t < a.T; ++t) k.split_pairs(a.x + t * a.ldx, xs.data() + size_t(t) * a.K, a.K);
    cpu::parallel_for(a.N, kGemvRows, [&](int64_t r0, int64_t r1) {
      float acc[kGemvRows];
      for (int t = 0; t < a.T; ++t) {
        k.gemv_bf16(a.w + r0 * a.K, size_t(a.K), int(r1 - r0), xs.data() + size_t(t) * a.K, a.K, acc);
        finish(a, t, int(r0), int(r1 - r0), acc);
      }
    });
    return;
  }
  cpu::parallel_for(a.N, kTileRows, [&](int64_t r0, int64_t r1) {
    const int nr = int(r1 - r0);
    std::vector<float> wf(size_t(nr) * a.K), acc(size_t(a.T) * kTileRows);
    k.bf16_to_f32(a.w + r0 * a.K, wf.data(), wf.size());
    k.gemm_f32(wf.data(), size_t(a.K), nr, a.x, size_t(a.ldx), a.T, acc.data(), kTileRows, a.K);
    for (int t = 0; t < a.T; ++t) finish(a, t, int(r0), nr, acc.data() + t * kTileRows);
  });
}
}  // namespace gptoss
