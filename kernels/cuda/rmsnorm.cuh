// rmsnorm on the device: the CUDA entry point of the op in kernels/rmsnorm.h (same arguments; the
// pointers are device memory). Throws ERR_INVALID_ARGUMENT before launching on bad shapes and
// ERR_DEVICE when the launch fails.
#pragma once
#include "kernels/cuda/common.cuh"
#include "kernels/rmsnorm.h"

namespace gptoss {
void rmsnorm_cuda(const RmsnormArgs& a, cudaStream_t stream);
}  // namespace gptoss
