// gather_rows on the device: dst[i, :] = src[rows[i], :] for i < n, `cols` f32 wide. The CUDA
// backend's final norm uses it to bring the logit rows (device indices, so a captured graph reads
// each step's rows) into rows [0, n) before normalising them in place. dst must not overlap src.
#pragma once
#include "kernels/cuda/common.cuh"

namespace gptoss {
void gather_rows_cuda(const float* src, int64_t lds, const int32_t* rows, int n, int cols, float* dst, int64_t ldd, cudaStream_t stream);
}  // namespace gptoss
