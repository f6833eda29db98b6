// moe_mxfp4 on the device for many tokens (prefill, large batches): the op of kernels/moe_mxfp4.h as
// a grouped GEMM on the tensor cores over the expert groups built on the device by moe_dispatch
// (kernels/cuda/moe_dispatch.cuh): no host round trip, so a step can be captured in a CUDA graph.
// The decode GEMV (kernels/cuda/moe_mxfp4.cuh) stays the path for a few tokens;
// moe_mxfp4_use_gemm says which one a step takes.
// Launchers throw ERR_INVALID_ARGUMENT before launching on bad shapes or alignment, ERR_DEVICE when
// a launch fails; every pointer is device memory, weights in the checkpoint's layout.
#pragma once
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/moe_mxfp4.cuh"

namespace gptoss {
// The rule between the two CUDA paths of moe_mxfp4 (host side, from the step's shape alone):
// true when the grouped GEMM should run, i.e. when 4 T k >= 13 E (3.25 or more expected slots per
// expert: from T 26 at gpt-oss-20b's 32 experts, from T 104 at 120b's 128), or when the GEMV's
// limit (T * k < 65536) is exceeded. Below that the expert-major GEMV, which reads each selected
// expert once and is issue-bound only from about 4 slots per expert, wins: the GEMM's 64-token
// tiles then run mostly empty, and its fixed cost (dispatch, conversion, 4-5 launches) is not
// repaid. The crossing, by the static roofline's predictions (test/cuda/decode-roofline.mjs's
// moeGemvUs and moeGemmUs): 3.5 slots per expert at 20b, 3.2 at 120b, on H100 and A100.
bool moe_mxfp4_use_gemm(int T, int k, int E);

// The grouped GEMM's m-tile, in sorted rows, from the step's shape: 128 when the experts average
// 48 or more slots (T k >= 48 E: steps from 384 tokens on 20b, 1,536 on 120b), else 64. The
// 128-row tile decodes each weight once for up to twice the mma, runs a k loop compiled for its
// item's count of token pairs (no per-pair checks), and takes an expert of up to 128 slots as one
// item instead of two; it holds one CTA an SM. Below 48 slots the items are small and the kernel
// streams weights: the 64-row tile's two CTAs an SM keep twice the bytes in flight, which the
// issue model (test/cuda/roofline-model.mjs, moeGemmUs) does not see; that model has the 128-row
// tile ahead by 11-12% at 48 slots on H100 and even on A100, and 21-58% past 52 on H100.
int moe_mxfp4_gemm_tile_rows(int T, int k, int E);

// Device scratch of both GEMM entry points: the dispatch (moe_dispatch_scratch_cuda(T, k, E, 64)),
// x in bf16 [T, H], the SwiGLU activations in bf16 [T * k, I] and the weighted expert outputs
// [T * k, H] f32 (used by the combined path only). About 12 T k H + 2 T H + 2 T k I bytes: 94 MB
// + 12 MB + 47 MB at T 2048, k 4, H = I = 2880.
size_t moe_mxfp4_gemm_scratch_cuda(int T, int k, int E, int H, int I);

// The tensor-core instruction of the grouped GEMM's 128-row tile: mma.sync.m16n8k16 (sm_80 and
// up), or wgmma (sm_90a; Hopper's dense bf16 peak is reached only through it). The 64-row tile is
// mma.sync always. The same products, the same k order of the sums, the same epilogue: the two
// differ only by the tensor core's internal rounding. moe_mxfp4_gemm_mma_for: wgmma on compute
// capability 9.0 (the build's sm_90 code is sm_90a, CMakeLists.txt), mma.sync elsewhere.
enum class MoeGemmMma { Sync, Wgmma };
MoeGemmMma moe_mxfp4_gemm_mma_for(int cc_major, int cc_minor);

// The op's contract: y[t * k + j] = W2[e] swiglu(W1[e] x[t] + b1[e]) + b2[e], unweighted; a slot
// with an expert index outside [0, E) gets a NaN row (the CPU op throws). a.threads is ignored.
// sms: the device's SMs (multiProcessorCount; 0 takes an H100 SXM's 132): the persistent GEMM grid
// is as many CTAs as fit on them (2 per SM with 64-row m-tiles, 1 with 128), or fewer when there
// are fewer work items. tile_rows: 64 or 128, or 0 for moe_mxfp4_gemm_tile_rows's choice (tests
// run both). The bits depend on none of sms, the schedule or the tile size: every output is one
// k loop, the same mma sequence on its row and token in either tile.
void moe_mxfp4_gemm_cuda(const MoeMxfp4Args& a, int sms, cudaStream_t stream, int tile_rows = 0,
                         MoeGemmMma mma = MoeGemmMma::Sync);

// With the routing weights applied in the down pass's epilogue and moe_combine after it:
//   out[t] (+)= sum_j route_w[t, j] * y[t * k + j], j = 0..k-1 in this order (a.y is not used).
void moe_mxfp4_gemm_combine_cuda(const MoeMxfp4Args& a, const MoeCombineFused& f, int sms, cudaStream_t stream,
                                 int tile_rows = 0, MoeGemmMma mma = MoeGemmMma::Sync);
}  // namespace gptoss
