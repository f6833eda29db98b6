// embed on the device: the CUDA entry point of the op in kernels/embed.h (same arguments; tokens,
// table and x are device memory; each token < vocab, checked by the caller as for the CPU op).
// Throws ERR_INVALID_ARGUMENT before launching on bad shapes and ERR_DEVICE when the launch fails.
#pragma once
#include "kernels/cuda/common.cuh"
#include "kernels/embed.h"

namespace gptoss {
void embed_cuda(const EmbedArgs& a, cudaStream_t stream);
}  // namespace gptoss
