// rope on the device: the CUDA entry point of the op in kernels/rope.h (same arguments; qkv and
// positions are device memory, the table is the host's RopeTable, passed by value to the kernel),
// and rope_kv_append_cuda: the rotation fused with the KV append of kernels/kv_append.h (the
// rotated K heads and the V heads go straight from the qkv row into the cache; one launch instead
// of two, and the K heads are not read back). Both leave the qkv row exactly as rope_cuda does.
// Throws ERR_INVALID_ARGUMENT before launching on bad shapes (head_dim even and <= 128) and
// ERR_DEVICE when the launch fails.
#pragma once
#include "kernels/cuda/common.cuh"
#include "kernels/kv_append.h"
#include "kernels/rope.h"

namespace gptoss {
void rope_cuda(const RopeArgs& a, cudaStream_t stream);
// kv.k must be the K heads rope rotates (r.qkv + r.q_heads * head_dim), kv.v in the same rows
// (kv.ld == r.ld), kv.positions == r.positions, kv.T == r.T, kv.width == r.kv_heads * head_dim.
void rope_kv_append_cuda(const RopeArgs& r, const KvAppendArgs& kv, cudaStream_t stream);
}  // namespace gptoss
