// rmsnorm_f32_bf16w: y = g * x / sqrt(mean(x^2) + eps) per row (kernels/MODEL.md, "RMSNorm"), f32
// in and out, bf16 gain; the reference is kernels/cpu/rmsnorm.cc.
//
// One block of 256 threads per row. Each thread sums the squares of its elements in f32 (float4
// loads when the rows and the gain allow them), each warp adds its lanes' sums with xor shuffles,
// the 8 warp sums meet in shared memory, warp 0 adds them and publishes 1/rms (the reduction is
// kernels/cuda/rmsnorm_row.cuh, shared with the kernels that fold the norm in front), and every
// thread then scales exactly the elements it read: y may alias x, since no thread writes an
// element another thread reads. f32 partial sums of at most ceil(H / 256) squares, then a 256-way tree,
// differ from the CPU's double sum by a few ulp (tolerance in test/cuda/rmsnorm_test.cu).
// Limits (checked by the launcher): 1 <= rows < 2^31 (grid.x), H >= 1.
#include "kernels/cuda/rmsnorm.cuh"

#include "kernels/cuda/rmsnorm_row.cuh"

namespace gptoss {
namespace cuda {
namespace {
constexpr int kThreads = 256;

// kVec: H % 4 == 0, x and y rows 16-byte aligned, gain 8-byte aligned.
template <bool kVec>
__global__ void __launch_bounds__(kThreads)
    rmsnorm_f32_bf16w(const float* __restrict__ x, int64_t ldx, const uint16_t* __restrict__ gain, float* y,
                      int64_t ldy, int H, float eps) {
  __shared__ float red[norm::kRedFloats];
  const float* xr = x + int64_t(blockIdx.x) * ldx;
  float* yr = y + int64_t(blockIdx.x) * ldy;
  const int tid = threadIdx.x;
  const float inv = norm::inv_rms<kThreads, kVec>(xr, H, eps, red);
  if (kVec) {
    for (int i = tid; i < H / 4; i += kThreads) {
      const uint2 g = reinterpret_cast<const uint2*>(gain)[i];
      reinterpret_cast<float4*>(yr)[i] = norm::scale4(reinterpret_cast<const float4*>(xr)[i], inv, g.x, g.y);
    }
  } else {
    for (int i = tid; i < H; i += kThreads) yr[i] = norm::scale(xr[i], inv, gain[i]);
  }
}
}  // namespace
}  // namespace cuda

void rmsnorm_cuda(const RmsnormArgs& a, cudaStream_t stream) {
  using namespace cuda;
  if (a.rows < 0 || a.H < 1 || a.ldx < a.H || a.ldy < a.H || !a.x || !a.y || !a.gain || !(a.eps >= 0.f))
    throw invalid_argument("rmsnorm: need rows >= 0, H >= 1, ldx, ldy >= H, eps >= 0 and non-null pointers");
  if (a.rows == 0) return;
  const bool vec = a.H % 4 == 0 && a.ldx % 4 == 0 && a.ldy % 4 == 0 && aligned(a.x, 16) && aligned(a.y, 16) &&
                   aligned(a.gain, 8);
  if (vec)
    GPTOSS_LAUNCH(rmsnorm_f32_bf16w<true>, dim3(unsigned(a.rows)), dim3(kThreads), 0, stream, a.x, a.ldx, a.gain, a.y,
                  a.ldy, a.H, a.eps);
  else
    GPTOSS_LAUNCH(rmsnorm_f32_bf16w<false>, dim3(unsigned(a.rows)), dim3(kThreads), 0, stream, a.x, a.ldx, a.gain, a.y,
                  a.ldy, a.H, a.eps);
  check_launch("rmsnorm");
}
}  // namespace gptoss
