// rmsnorm on the device: the CUDA entry point of the op in kernels/rmsnorm.h (same arguments; the
// pointers are device memory). Throws ERR_INVALID_ARGUMENT before launching on bad shapes and
// ERR_DEVICE when the launch fails.
#pragma once
#include "kernels/cuda/common.cuh"
#include "kernels/rmsnorm.h"

namespace gptoss {
void rmsnorm_cuda(const RmsnormArgs& a, cudaStream_t stream);

// The RMSNorm folded in front of another launch (matmul_bf16_norm_cuda, router_topk_gemv_cuda):
// its gain and eps, and where the normalised rows go for the norm's other readers.
struct RmsnormFold {
  const uint16_t* gain;  // [width] bf16
  float eps;
  float* xn;  // [T, ldxn]; must not overlap the launch's input or output
  int64_t ldxn;
};
}  // namespace gptoss
