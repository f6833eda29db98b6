// kv_append on the device: the CUDA entry point of the op in kernels/kv_append.h (same arguments;
// every pointer, the page table's included, is device memory). Throws ERR_INVALID_ARGUMENT before
// launching on bad shapes and ERR_DEVICE when the launch fails. rope_kv_append_cuda (rope.cuh)
// fuses it with the rotation.
#pragma once
#include "kernels/cuda/common.cuh"
#include "kernels/kv_append.h"

namespace gptoss {
void kv_append_cuda(const KvAppendArgs& a, cudaStream_t stream);
}  // namespace gptoss
