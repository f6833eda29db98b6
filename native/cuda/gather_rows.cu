// gather_rows (gather_rows.cuh): one block of 256 threads per gathered row, each thread copying
// every 256th element. No shared memory, no barriers.
#include "native/cuda/gather_rows.cuh"

namespace gptoss {
namespace cuda {
namespace {
constexpr int kThreads = 256;
__global__ void __launch_bounds__(kThreads)
    gather_rows_f32(const float* __restrict__ src, int64_t lds, const int32_t* __restrict__ rows, int cols,
                    float* __restrict__ dst, int64_t ldd) {
  const float* s = src + int64_t(rows[blockIdx.x]) * lds;
  float* d = dst + int64_t(blockIdx.x) * ldd;
  for (int i = threadIdx.x; i < cols; i += kThreads) d[i] = s[i];
}
}  // namespace
}  // namespace cuda

void gather_rows_cuda(const float* src, int64_t lds, const int32_t* rows, int n, int cols, float* dst, int64_t ldd, cudaStream_t stream) {
  using namespace cuda;
  if (n < 0 || cols < 1 || lds < cols || ldd < cols || !src || !rows || !dst)
    throw invalid_argument("gather_rows: need n >= 0, cols >= 1, lds, ldd >= cols and non-null pointers");
  if (n == 0) return;
  GPTOSS_LAUNCH(gather_rows_f32, dim3(unsigned(n)), dim3(kThreads), 0, stream, src, lds, rows, cols, dst, ldd);
  check_launch("gather_rows");
}
}  // namespace gptoss
