#include "kernels/kv_append.h"

#include <cstring>

#include "kernels/cpu/simd.h"

namespace gptoss {
void kv_append_cpu(const KvAppendArgs& a) {
  for (int t = 0; t < a.T; ++t) {
    const int64_t row = a.pages.row(a.pages.seq[t], a.positions[t]);
    const float* k = a.k + t * a.ld;
    const float* v = a.v + t * a.ld;
    if (a.cache_dtype == DType::F32) {
      std::memcpy(static_cast<float*>(a.k_cache) + row * a.width, k, a.width * 4);
      std::memcpy(static_cast<float*>(a.v_cache) + row * a.width, v, a.width * 4);
    } else {
      uint16_t* kc = static_cast<uint16_t*>(a.k_cache) + row * a.width;
      uint16_t* vc = static_cast<uint16_t*>(a.v_cache) + row * a.width;
      for (int i = 0; i < a.width; ++i) {
        kc[i] = cpu::f32_to_bf16(k[i]);
        vc[i] = cpu::f32_to_bf16(v[i]);
      }
    }
  }
}

void run_cpu(const KvAppendOp& o, const StepContext& s) {
  const BufferView& kc = s.pool(o.kc);
  kv_append_cpu({s.f32(o.x) + o.xcol, s.f32(o.x) + o.vcol, s.ld(o.x), s.positions, kc.data, s.pool(o.vc).data, kc.dtype,
                 s.pages_for(o.window), s.T, kc.cols});
}

}  // namespace gptoss
