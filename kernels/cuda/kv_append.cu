// kv_append_f32: writes the K and V heads of T tokens into a layer's paged KV pool at the rows
// their sequence's pages give their positions (kernels/kv_pages.h); the reference is
// kernels/cpu/kv_append.cc (f32 copies, or bf16 rounded to nearest even, bit for bit).
// One block of 128 threads per token; thread i copies elements i, i + 128, ... of the K and the V
// row (coalesced on both sides). Limits (checked by the launcher): 0 <= T < 2^31, width >= 1,
// ld >= width, f32 or bf16 pool.
#include "kernels/cuda/kv_append.cuh"
#include "kernels/cuda/kv_cache.cuh"

namespace gptoss {
namespace cuda {
namespace {
constexpr int kThreads = 128;

template <class C>
__global__ void __launch_bounds__(kThreads)
    kv_append_f32(const float* __restrict__ k, const float* __restrict__ v, int64_t ld, const int32_t* __restrict__ positions,
                  C* __restrict__ kc, C* __restrict__ vc, KvPages pages, int width) {
  const int t = blockIdx.x;
  const int64_t row = page_row(pages, pages.seq[t], positions[t]) * width;
  for (int i = threadIdx.x; i < width; i += kThreads) {
    store_cache(kc + row + i, k[t * ld + i]);
    store_cache(vc + row + i, v[t * ld + i]);
  }
}
}  // namespace
}  // namespace cuda

void kv_append_cuda(const KvAppendArgs& a, cudaStream_t stream) {
  using namespace cuda;
  if (a.T < 0 || a.width < 1 || a.ld < a.width || (a.cache_dtype != DType::F32 && a.cache_dtype != DType::BF16))
    throw invalid_argument("kv_append: need T >= 0, width >= 1, ld >= width and an f32 or bf16 pool");
  if (a.T == 0) return;
  if (!a.k || !a.v || !a.positions || !a.k_cache || !a.v_cache || !a.pages.seq || !a.pages.table || a.pages.ring < 1 ||
      a.pages.page_size < 1)
    throw invalid_argument("kv_append: null pointer or empty page table");
  if (a.cache_dtype == DType::F32)
    GPTOSS_LAUNCH(kv_append_f32<float>, dim3(unsigned(a.T)), dim3(kThreads), 0, stream, a.k, a.v, a.ld, a.positions,
                  static_cast<float*>(a.k_cache), static_cast<float*>(a.v_cache), a.pages, a.width);
  else
    GPTOSS_LAUNCH(kv_append_f32<uint16_t>, dim3(unsigned(a.T)), dim3(kThreads), 0, stream, a.k, a.v, a.ld, a.positions,
                  static_cast<uint16_t*>(a.k_cache), static_cast<uint16_t*>(a.v_cache), a.pages, a.width);
  check_launch("kv_append");
}
}  // namespace gptoss
