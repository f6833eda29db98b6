// moe_combine on the device: the CUDA entry point of the op in kernels/moe_combine.h (same
// arguments; the pointers are device memory; `scratch` is not used). Throws ERR_INVALID_ARGUMENT
// before launching on bad shapes and ERR_DEVICE when the launch fails.
#pragma once
#include "kernels/cuda/common.cuh"
#include "kernels/moe_combine.h"

namespace gptoss {
void moe_combine_cuda(const MoeCombineArgs& a, cudaStream_t stream);
}  // namespace gptoss
