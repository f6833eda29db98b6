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
}  // namespace gptoss
