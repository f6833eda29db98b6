// matmul_bf16 on the device: the CUDA entry point of the op in kernels/matmul_bf16.h (same
// arguments; the pointers are device memory; `scratch` is not used). A GEMV for decode: any T
// works, in launches of up to 4 tokens, each reading the weights once. x and y must not overlap.
// Throws ERR_INVALID_ARGUMENT before launching on bad shapes (K above 12288: x would not fit the
// 48 KB of shared memory a launch uses without opting in) and ERR_DEVICE when the launch fails.
#pragma once
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/rmsnorm.cuh"
#include "kernels/matmul_bf16.h"

namespace gptoss {
constexpr int kMatmulBf16MaxKCuda = 12288;
// rows_per_warp: 0 picks matmul_bf16_rows_per_warp_cuda(N) (the tuned choice; tests force the
// large-N choice on small N). The result does not depend on it.
void matmul_bf16_cuda(const MatmulBf16Args& a, cudaStream_t stream, int rows_per_warp = 0);
int matmul_bf16_rows_per_warp_cuda(int N);

// The GEMV with the RMSNorm folded in front (decode: one launch, one graph node, instead of two):
// a.x is the norm's input; the launch normalises each token as rmsnorm_cuda does (same sums and
// roundings), stores the normalised rows to xn [T, ldxn] (for the norm's other readers) and
// multiplies them by W: bit for bit rmsnorm_cuda({a.x, .., gain, xn, ..}) then matmul_bf16_cuda
// on xn. GEMV shapes only (the caller asks matmul_bf16_kernel_cuda); K may be at most 12272 here.
void matmul_bf16_norm_cuda(const MatmulBf16Args& a, const RmsnormFold& n, cudaStream_t stream, int rows_per_warp = 0);

// The tensor-core GEMM for many tokens (prefill, large batches): mma.sync m16n8k16 bf16 with f32
// accumulation, blocks of up to 128 tokens x 128 weight rows. x is f32 and is rounded to bf16 as
// it is staged (split_x false: 2^-8 relative per product, the default mode's budget) or split
// into two bf16 terms x = hi + lo, two mma each (split_x true: within 2^-16 per product, for the
// fp32 mode), so the op's contract (f32 activations) is unchanged. a.scratch is not used; no
// scratch. x_rows: optional device [T] int32 of x's rows (output row t reads x row x_rows[t]; the
// logit rows of a step), else row t. tile_m: 0 picks matmul_bf16_gemm_tile_m_cuda(T); tests force
// 32 or 128; the result does not depend on it. Needs K % 8 == 0, ldx % 4 == 0, x and w 16-byte
// aligned, x_rows in [0, rows of x); throws ERR_INVALID_ARGUMENT otherwise, ERR_DEVICE when a
// launch fails. x and y must not overlap. A token's output does not depend on T, on the other
// tokens or on tile_m (the k order is fixed), but differs in rounding from the GEMV's.
struct MatmulBf16GemmOptions {
  bool split_x = false;
  const int32_t* x_rows = nullptr;
  int tile_m = 0;
};
void matmul_bf16_gemm_cuda(const MatmulBf16Args& a, const MatmulBf16GemmOptions& o, cudaStream_t stream);
int matmul_bf16_gemm_tile_m_cuda(int T);

// The rule between the two, by tokens T (static roofline, a prediction: the GEMM's grid has
// ceil(N / 128) blocks per 32-token tile, each streaming its weights through a 3-tile-deep
// cp.async ring, about a 1/132 share of HBM; the GEMV reads all weights once per 4 tokens at full
// bandwidth): for the projections (N < 32768: 23 to 40 blocks) the GEMM is ahead from about 16
// tokens (QKV, H100: ~30 us against 4 GEMV passes of ~9 us); for the unembedding (1571 blocks)
// from 8 (one 1.16 GB pass against two). fp32_mode takes the split GEMM. Shapes the GEMM does
// not take (K % 8 != 0, ldx % 4 != 0, unaligned x or w) stay on the GEMV.
constexpr int kMatmulBf16GemmFromT = 16;
constexpr int kMatmulBf16GemmFromTWide = 8;  // N >= kMatmulBf16WideN
constexpr int kMatmulBf16WideN = 32768;
enum class MatmulBf16Kernel { kGemv, kGemmBf16, kGemmSplitBf16 };
MatmulBf16Kernel matmul_bf16_kernel_cuda(const MatmulBf16Args& a, bool fp32_mode);
void matmul_bf16_select_cuda(const MatmulBf16Args& a, bool fp32_mode, cudaStream_t stream);
}  // namespace gptoss
