// matmul_bf16 on the device: the CUDA entry point of the op in kernels/matmul_bf16.h (same
// arguments; the pointers are device memory; `scratch` is not used). A GEMV for decode: any T
// works, in launches of up to 8 tokens (as many as the device's shared memory holds x for: 8 at
// gpt-oss's K on an H100 or A100), each reading the weights once. x and y must not overlap.
// Throws ERR_INVALID_ARGUMENT before launching on bad shapes (K above 12288: x for one token would
// not fit the 48 KB of shared memory a launch has without opting in) and ERR_DEVICE when the
// launch fails.
#pragma once
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/rmsnorm.cuh"
#include "kernels/matmul_bf16.h"

namespace gptoss {
constexpr int kMatmulBf16MaxKCuda = 12288;
constexpr int kMatmulBf16GemvMaxTokens = 8;
// rows_per_warp: 0 picks matmul_bf16_rows_per_warp_cuda(N, tokens of the launch) (the tuned
// choice; tests force others). The result does not depend on it.
void matmul_bf16_cuda(const MatmulBf16Args& a, cudaStream_t stream, int rows_per_warp = 0);
int matmul_bf16_rows_per_warp_cuda(int N, int T = 1);

// The GEMV with the RMSNorm folded in front (decode: one launch, one graph node, instead of two):
// a.x is the norm's input; the launch normalises each token as rmsnorm_cuda does (same sums and
// roundings), stores the normalised rows to xn [T, ldxn] (for the norm's other readers) and
// multiplies them by W: bit for bit rmsnorm_cuda({a.x, .., gain, xn, ..}) then matmul_bf16_cuda
// on xn. GEMV shapes only (the caller asks matmul_bf16_kernel_cuda); K may be at most 12272 here.
void matmul_bf16_norm_cuda(const MatmulBf16Args& a, const RmsnormFold& n, cudaStream_t stream, int rows_per_warp = 0);

// The tensor-core GEMM for many tokens (prefill, batches): mma.sync m16n8k16 bf16 with f32
// accumulation (or wgmma for the 128-token tile: ws.wgmma), blocks of up to 128 tokens x 256
// weight rows (x 128 in the fp32 mode). x is f32
// and is rounded to bf16 as it is staged (split_x false: 2^-8 relative per product, the default
// mode's budget) or split
// into two bf16 terms x = hi + lo, two mma each (split_x true: within 2^-16 per product, for the
// fp32 mode), so the op's contract (f32 activations) is unchanged. a.scratch is not used.
// x_rows: optional device [T] int32 of x's rows (output row t reads x row x_rows[t]; the logit
// rows of a step), else row t. tile_m: 0 picks matmul_bf16_gemm_tile_m_cuda(T); tests force 32,
// 64 or 128 (the 128-token tile is 256 weight rows wide unless split_x); the result does not
// depend on it.
// Split k (few tiles: batched decode's projections): k_splits blocks share each tile, each summing
// a contiguous run of k tiles into ws.partials (k_splits x T x N f32); the tile's last block adds
// the runs in order (ticket counters in ws.tickets, [matmul_bf16_gemm_max_tiles(ws.sms)] zeros, left
// zero). k_splits: 0 takes matmul_bf16_gemm_k_splits_cuda(T, N, K, .., ws.sms) when ws has partials
// and tickets (else 1); n asks for at most n runs of equal whole k tiles (fewer when they do not
// divide evenly).
// Needs K % 8 == 0, ldx % 4 == 0, x and w 16-byte aligned, x_rows in [0, rows of x), partials of
// k_splits * T * N f32; throws ERR_INVALID_ARGUMENT otherwise, ERR_DEVICE when a launch fails. x
// and y must not overlap; launches sharing tickets must not run at the same time. A token's output
// does not depend on the other tokens, on tile_m or on which block finishes last (the sum order
// is fixed by K and the splits), but it does on the number of k splits (so on T where the rule
// picks it), and differs in rounding from the GEMV's.
//
// The split rule: 1 when the grid has more than matmul_bf16_gemm_max_tiles(sms) = sms / 2 tiles,
// else enough splits of at least kMatmulBf16GemmMinSplitTiles k tiles each for about `sms` blocks,
// one per SM of the device (the backend passes its multiProcessorCount). On an H100's 132: QKV at
// up to 64 tokens 40 tiles x 4 splits; the attention output 23 x 6; the router's 1 tile 10; rounded
// down for the default mode's wide 128-token tile (QKV at 256 tokens: 40 x 3; the attention output
// at 256: 24 x 5, at 512: 48 x 2). On an A100's 108: QKV at 64 tokens 40 x 3, at 256 40 x 2; the
// attention output at 64 23 x 5, at 256 24 x 4, at 512 48 x 2. A pure function of the shape, the
// mode (split_x: the fp32 mode's narrow tiles; at 256 tokens the attention output's 46 x 3 on an
// H100) and sms.
constexpr int kMatmulBf16GemmTargetBlocks = 132;  // sms when a caller names none: an H100's SMs
constexpr int kMatmulBf16GemmMinSplitTiles = 8;
constexpr int matmul_bf16_gemm_max_tiles(int sms) { return sms / 2; }
constexpr int kMatmulBf16GemmMaxTiles = matmul_bf16_gemm_max_tiles(kMatmulBf16GemmTargetBlocks);
int matmul_bf16_gemm_k_splits_cuda(int T, int N, int K, int tile_m = 0, bool split_x = false, int sms = kMatmulBf16GemmTargetBlocks);
// Bytes of partials the rule needs for any step of up to max_T tokens (0: it never splits).
size_t matmul_bf16_gemm_scratch_cuda(int max_T, int N, int K, int sms = kMatmulBf16GemmTargetBlocks);
struct MatmulBf16Workspace {
  float* partials = nullptr;  // device
  size_t partials_bytes = 0;
  unsigned* tickets = nullptr;  // device [matmul_bf16_gemm_max_tiles(sms)], zero
  int sms = kMatmulBf16GemmTargetBlocks;  // the split rule's target: the device's SMs (at least 1)
  // The default mode's 128-token tile on wgmma (sm_90a; the backend sets it where the MoE GEMM
  // takes wgmma, moe_mxfp4_gemm_mma_for: compute capability 9.0), else mma.sync. The same products
  // and k order of the sums; the two differ only by the tensor core's internal rounding.
  bool wgmma = false;
};
struct MatmulBf16GemmOptions {
  bool split_x = false;
  const int32_t* x_rows = nullptr;
  int tile_m = 0;
  int k_splits = 0;
  MatmulBf16Workspace ws;
};
void matmul_bf16_gemm_cuda(const MatmulBf16Args& a, const MatmulBf16GemmOptions& o, cudaStream_t stream);
int matmul_bf16_gemm_tile_m_cuda(int T);

// The rule between the two, by tokens T (static roofline, a prediction): the GEMV reads all
// weights once per launch of up to 8 tokens at full bandwidth, so it takes every step of up to 8;
// past 8 the (split-k) GEMM reads them once for any T. fp32 mode takes the GEMV (f32 products,
// each token's result independent of the others) in passes of 8 up to 15 tokens and the GEMM on
// hi + lo halves from 16. The unembedding (N >= 32768: 1571 blocks, never split) takes the GEMM
// from 8 in both modes. Shapes the GEMM does not take (K % 8 != 0, ldx % 4 != 0, unaligned x or
// w) stay on the GEMV.
constexpr int kMatmulBf16GemmFromT = kMatmulBf16GemvMaxTokens + 1;
constexpr int kMatmulBf16GemmFromTExact = 16;  // fp32 mode
constexpr int kMatmulBf16GemmFromTWide = 8;    // N >= kMatmulBf16WideN
constexpr int kMatmulBf16WideN = 32768;
enum class MatmulBf16Kernel { kGemv, kGemmBf16, kGemmSplitBf16 };
MatmulBf16Kernel matmul_bf16_kernel_cuda(const MatmulBf16Args& a, bool fp32_mode);
// ws: where the GEMM may split k (none: it does not).
void matmul_bf16_select_cuda(const MatmulBf16Args& a, bool fp32_mode, cudaStream_t stream, const MatmulBf16Workspace& ws = {});
}  // namespace gptoss
