// moe_combine_f32: x[t] += sum_j weight[t, j] * y[t * k + j], j in routing order (kernels/MODEL.md,
// "Combine"); the reference is kernels/cpu/moe_combine.cc.
//
// Grid (ceil(H / 256), T), 256 threads: each thread owns one element of one token's row and sums
// its k expert outputs in f32 in routing order, as the CPU op does (so the order, not timing,
// fixes the rounding), then adds the sum to x. Coalesced: consecutive threads read consecutive
// elements of each expert row. No shared memory, no barriers. The decode path fuses this into
// moe_mxfp4's down pass (moe_mxfp4_combine_cuda); this is the op on its own.
// Limits (checked by the launcher): 1 <= T <= 65535 (grid.y), k >= 1, H >= 1.
#include "kernels/cuda/moe_combine.cuh"

namespace gptoss {
namespace cuda {
namespace {
constexpr int kThreads = 256;
__global__ void __launch_bounds__(kThreads)
    moe_combine_f32(float* __restrict__ x, int64_t ldx, const float* __restrict__ y, const float* __restrict__ weight, int k, int H) {
  const int i = blockIdx.x * kThreads + threadIdx.x;
  if (i >= H) return;
  const int t = blockIdx.y;
  float sum = 0.f;
  for (int j = 0; j < k; ++j) sum = __fmaf_rn(weight[t * k + j], y[(int64_t(t) * k + j) * H + i], sum);
  x[int64_t(t) * ldx + i] += sum;
}
}  // namespace
}  // namespace cuda

void moe_combine_cuda(const MoeCombineArgs& a, cudaStream_t stream) {
  using namespace cuda;
  if (a.T < 0 || a.T > 65535 || a.k < 1 || a.H < 1 || a.ldx < a.H || !a.x || !a.y || !a.weight)
    throw invalid_argument("moe_combine: need 0 <= T <= 65535, k >= 1, H >= 1, ldx >= H and non-null pointers");
  if (a.T == 0) return;
  GPTOSS_LAUNCH(moe_combine_f32, dim3(unsigned((a.H + kThreads - 1) / kThreads), unsigned(a.T)), dim3(kThreads), 0, stream, a.x,
                a.ldx, a.y, a.weight, a.k, a.H);
  check_launch("moe_combine");
}
}  // namespace gptoss
