// moe_mxfp4 on the device: the CUDA entry points of the op in kernels/moe_mxfp4.h (same arguments;
// every pointer is device memory, weights in the checkpoint's layout, uploaded as they are).
// Both throw ERR_INVALID_ARGUMENT before launching on bad shapes or alignment, ERR_DEVICE when a
// launch fails. One token runs two launches (gate_up, down); T >= 2 tokens run the expert-major
// path: moe_dispatch_cuda (kernels/cuda/moe_dispatch.cuh), gate_up and down over its tiles (each
// selected expert's weights read from DRAM once per step), and the combine when fused. An expert index outside [0, E) (the CPU op throws) makes that slot's outputs NaN.
#pragma once
#include "kernels/cuda/common.cuh"
#include "kernels/moe_mxfp4.h"

namespace gptoss {
// How the dequantised weights meet the activations. F16 (the default): activations rounded to f16
// after an exact power-of-two pre-scale, 16 products summed in f16 (HFMA2), everything after in f32:
// ~1e-3 relative, fine for the default mode. F32 (fp32 mode): the same decode widened exactly to
// f32 and FFMA in f32, within ~1e-6 relative of the CPU op; about 1.5x the instructions per weight,
// and 4 * H * 4 and k * I * 4 bytes of staged activations (H, I up to 3072 at k = 4).
enum class MoeMxfp4Products { F16, F32 };

// Device scratch (a.scratch, 16-byte aligned, a.scratch_bytes) both entry points need: the expert
// dispatch of the batched path (moe_dispatch_scratch_cuda(T, k, E, 4)), the SwiGLU activations
// [T * k, I] f32 and the per-slot down outputs [T * k, H] f32 (the batched combined path).
size_t moe_mxfp4_scratch_cuda(int T, int k, int E, int H, int I);

// The op's contract: y[t * k + j] = W2[e] a + b2[e], unweighted (moe_combine applies the weights).
// a.threads is ignored.
void moe_mxfp4_cuda(const MoeMxfp4Args& a, cudaStream_t stream, MoeMxfp4Products products = MoeMxfp4Products::F16);

// The decode path, with moe_combine fused after the down pass: for each token t,
//   out[t] (+)= sum_j route_w[t, j] * (W2[e_j] a_j + b2[e_j]),  j = 0..k-1 in this order,
// one thread summing one output element in f32 (one token: in the down pass; T >= 2: a combine
// launch over the per-slot outputs, the same arithmetic), so the result depends neither on timing
// nor on the batch. a.y is not used. accumulate: add to out (the residual add), else overwrite.
struct MoeCombineFused {
  const float* route_w;  // [T, k] routing weights (router_topk)
  float* out;            // [T, ldo]
  int64_t ldo;
  bool accumulate;
};
void moe_mxfp4_combine_cuda(const MoeMxfp4Args& a, const MoeCombineFused& f, cudaStream_t stream,
                            MoeMxfp4Products products = MoeMxfp4Products::F16);
}  // namespace gptoss
