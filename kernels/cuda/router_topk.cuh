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
// and the top-k launch (router_topk_cuda) on the logits it wrote. From T x E >= 8192 (256 tokens
// at 20b's 32 experts, 64 at 120b's 128) the GEMM's three launches are predicted faster on H100
// and A100 (test/cuda/prefill-roofline.mjs, a PREDICTION). Default mode only: the GEMM rounds the
// router's input to bf16 (the default mode's budget), where fp32 mode keeps the fused f32 products.
// A pure function of the step's shape (part of a graph's key).
constexpr int kRouterTopkGemmFromTE = 8192;
constexpr bool router_topk_use_gemm(int T, int E, bool fp32_mode) {
  return !fp32_mode && int64_t(T) * E >= kRouterTopkGemmFromTE;
}
}  // namespace gptoss
