// embed_bf16_f32: x[t, :] = table[tokens[t], :], bf16 rows widened to f32 (exact); the reference is
// kernels/cpu/embed.cc. One block of 256 threads per token; with H % 8 == 0 and 16-byte aligned
// rows each thread turns 16-byte loads (8 bf16) into two float4 stores, else one element at a time.
// Limits (checked by the launcher): 0 <= T < 2^31, H >= 1, ldx >= H.
#include "kernels/cuda/embed.cuh"

namespace gptoss {
namespace cuda {
namespace {
constexpr int kThreads = 256;

template <bool kVec>
__global__ void __launch_bounds__(kThreads)
    embed_bf16_f32(const int32_t* __restrict__ tokens, const uint16_t* __restrict__ table, float* __restrict__ x, int64_t ldx,
                   int H) {
  const int t = blockIdx.x;
  const uint16_t* row = table + int64_t(tokens[t]) * H;
  float* out = x + t * ldx;
  if (kVec) {
    for (int i = threadIdx.x; i < H / 8; i += kThreads) {
      const uint4 q = __ldg(reinterpret_cast<const uint4*>(row) + i);
      reinterpret_cast<float4*>(out)[2 * i] = make_float4(bf16_bits_to_f32(q.x & 0xffffu), bf16_bits_to_f32(q.x >> 16),
                                                          bf16_bits_to_f32(q.y & 0xffffu), bf16_bits_to_f32(q.y >> 16));
      reinterpret_cast<float4*>(out)[2 * i + 1] = make_float4(bf16_bits_to_f32(q.z & 0xffffu), bf16_bits_to_f32(q.z >> 16),
                                                              bf16_bits_to_f32(q.w & 0xffffu), bf16_bits_to_f32(q.w >> 16));
    }
  } else {
    for (int i = threadIdx.x; i < H; i += kThreads) out[i] = bf16_bits_to_f32(row[i]);
  }
}
}  // namespace
}  // namespace cuda

void embed_cuda(const EmbedArgs& a, cudaStream_t stream) {
  using namespace cuda;
  if (a.T < 0 || a.H < 1 || a.ldx < a.H) throw invalid_argument("embed: need T >= 0, H >= 1, ldx >= H");
  if (a.T == 0) return;
  if (!a.tokens || !a.table || !a.x) throw invalid_argument("embed: null pointer");
  const bool vec = a.H % 8 == 0 && a.ldx % 4 == 0 && aligned(a.table, 16) && aligned(a.x, 16);
  if (vec)
    GPTOSS_LAUNCH(embed_bf16_f32<true>, dim3(unsigned(a.T)), dim3(kThreads), 0, stream, a.tokens, a.table, a.x, a.ldx, a.H);
  else
    GPTOSS_LAUNCH(embed_bf16_f32<false>, dim3(unsigned(a.T)), dim3(kThreads), 0, stream, a.tokens, a.table, a.x, a.ldx, a.H);
  check_launch("embed");
}
}  // namespace gptoss
