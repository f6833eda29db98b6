// router_topk on the device: the CUDA entry points of the op in kernels/router_topk.h (same
// arguments; the pointers are device memory). Throw ERR_INVALID_ARGUMENT before launching on bad
// shapes, ERR_DEVICE when the launch fails.
#pragma once
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/rmsnorm.cuh"
#include "kernels/router_topk.h"

namespace gptoss {
// The op's contract: top-k of the given logits [T, ldl] and the softmax over those k.
void router_topk_cuda(const RouterTopkArgs& a, cudaStream_t stream);

// The decode path: the router GEMV fused in front, logits = W x[t] + b computed on the device
// (bf16 W [E, H], bf16 b [E] or null, f32 accumulation) across E / 4 CTAs per token. a.logits
// (required here) receives the logits [T, ldl]: the CTAs meet there, and the last one to finish
// selects; tickets: [T] device counters, zero before the first launch, left zero by each launch
// (so a captured graph replays). idx and weight as in the contract. No host round trip.
struct RouterGemv {
  const float* x;     // [T, ldx]
  int64_t ldx;
  const uint16_t* w;  // [E, H] bf16
  const uint16_t* b;  // [E] bf16 or null
  int H;
};
// n (optional): the RMSNorm folded in front as well (decode: norm, router and top-k in one launch,
// one graph node). g.x is then the norm's input; each CTA normalises token t as rmsnorm_cuda does
// (same sums and roundings) and CTA 0 stores the normalised row to xn [T, ldxn] for the experts:
// bit for bit rmsnorm_cuda into xn, then this launch on xn. xn must not overlap x.
void router_topk_gemv_cuda(const RouterTopkArgs& a, const RouterGemv& g, unsigned* tickets, cudaStream_t stream,
                           const RmsnormFold* n = nullptr);

// The rule between the fused launch and the router's own GEMM (native/cuda/backend.cc,
// launch_fused; mirrored in test/cuda/roofline-model.mjs, routerGemm): the fused launch streams
// the router's E x H weights once per token (from L2), which grows as T x E; the GEMM
// (matmul_bf16_select_cuda) reads them once, at the cost of the norm's own launch, x read again
// and the top-k launch (router_topk_cuda) on the logits it wrote: two more launches (an assumed
// 1 us gap each) and the GEMM's own time, which steps up past 64 tokens, where its 128-token tile
// computes 256 weight rows whatever E is (8 x the rows at 20b's 32 experts, 2 x at 120b's 128).
// Per layer, with the gaps (test/cuda/prefill-roofline.mjs's models, a PREDICTION): up to 64
// tokens (the 32- and 64-token tiles) the GEMM's path is faster from T x E of about 5,760 on an
// H100 and 4,224 on an A100 (120b from 45 and 33 tokens); past 64 from about 12,288 / 11,520 at
// E 32 (384 and 360 tokens) and 15,360 / 12,544 at E 128 (120 and 98 tokens). Hence T x E >= 5,120
// up to 64 tokens, 12,288 past (20b from 384 tokens; 120b from 40, then again from 96), within
// 1.1 us a layer of the faster path on either GPU. Default mode only: the GEMM rounds the router's
// input to bf16 (the default mode's budget), where fp32 mode keeps the fused f32 products. A pure
// function of the step's shape (part of a graph's key).
constexpr int kRouterTopkGemmFromTE = 5120;       // up to kRouterTopkGemmNarrowT tokens
constexpr int kRouterTopkGemmFromTEWide = 12288;  // past it (the GEMM's wide 128-token tile)
constexpr int kRouterTopkGemmNarrowT = 64;
constexpr bool router_topk_use_gemm(int T, int E, bool fp32_mode) {
  return !fp32_mode && int64_t(T) * E >= (T <= kRouterTopkGemmNarrowT ? kRouterTopkGemmFromTE : kRouterTopkGemmFromTEWide);
}
}  // namespace gptoss
