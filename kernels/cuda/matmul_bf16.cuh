// matmul_bf16 on the device: the CUDA entry point of the op in kernels/matmul_bf16.h (same
// arguments; the pointers are device memory; `scratch` is not used). A GEMV for decode: any T
// works, in launches of up to 4 tokens, each reading the weights once. x and y must not overlap.
// Throws ERR_INVALID_ARGUMENT before launching on bad shapes (K above 12288: x would not fit the
// 48 KB of shared memory a launch uses without opting in) and ERR_DEVICE when the launch fails.
#pragma once
#include "kernels/cuda/common.cuh"
#include "kernels/matmul_bf16.h"

namespace gptoss {
constexpr int kMatmulBf16MaxKCuda = 12288;
// rows_per_warp: 0 picks matmul_bf16_rows_per_warp_cuda(N) (the tuned choice; tests force the
// large-N choice on small N). The result does not depend on it.
void matmul_bf16_cuda(const MatmulBf16Args& a, cudaStream_t stream, int rows_per_warp = 0);
int matmul_bf16_rows_per_warp_cuda(int N);
}  // namespace gptoss
