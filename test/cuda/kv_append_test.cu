// kv_append_cuda against the CPU op (kernels/cpu/kv_append.cc): gpt-oss's 8 KV heads (width 512)
// from the fused QKV row, f32 and bf16 pools (bf16 rounded to nearest even, NaN kept quiet: bit for
// bit), interleaved sequences on fragmented pages, a sliding layer's ring wrapping, an odd width;
// the pools NaN-poisoned before every call and every row compared, so a write to a wrong row shows.
#include <algorithm>
#include <numeric>

#include "kernels/cuda/kv_append.cuh"
#include "test/cuda/harness.h"

namespace {
void check(int width, int64_t ld, const std::vector<int32_t>& positions, const std::vector<int32_t>& seq, int ring, int page,
           gptoss::DType dt, uint64_t seed) {
  lab::Rng r(seed);
  const int T = int(positions.size()), S = *std::max_element(seq.begin(), seq.end()) + 1, pages_n = S * ring + 2;
  std::vector<int32_t> ids(pages_n);
  std::iota(ids.begin(), ids.end(), 0);
  for (int i = pages_n - 1; i > 0; --i) std::swap(ids[i], ids[r.next() % (i + 1)]);
  std::vector<float> x(size_t(T) * ld);
  for (auto& v : x) v = r.uniform(-5.f, 5.f);
  x[0] = NAN;  // NaN stays NaN (quiet) in a bf16 pool, as on the CPU
  const int64_t rows = int64_t(pages_n) * page;
  const size_t bytes = rows * width * (dt == gptoss::DType::F32 ? 4 : 2);
  std::vector<unsigned char> kw(bytes, 0xff), vw(bytes, 0xff);
  const int64_t vcol = ld - width;
  gptoss::kv_append_cpu({x.data(), x.data() + vcol, ld, positions.data(), kw.data(), vw.data(), dt,
                         {seq.data(), ids.data(), ring, page}, T, width});
  lab::DeviceBuf<float> dx(x);
  lab::DeviceBuf<int32_t> dpos(positions), dseq(seq), dids(ids);
  lab::DeviceBuf<unsigned char> dk(bytes), dv(bytes);
  lab::for_each_schedule([&] {
    cudaMemset(dk.p, 0xff, bytes);
    cudaMemset(dv.p, 0xff, bytes);
    gptoss::kv_append_cuda({dx.p, dx.p + vcol, ld, dpos.p, dk.p, dv.p, dt, {dseq.p, dids.p, ring, page}, T, width}, nullptr);
    LAB_CHECK(dk.download() == kw, "K pool differs from the CPU's (width %d, %s)", width, dt == gptoss::DType::F32 ? "f32" : "bf16");
    LAB_CHECK(dv.download() == vw, "V pool differs from the CPU's (width %d, %s)", width, dt == gptoss::DType::F32 ? "f32" : "bf16");
  });
}
}  // namespace

LAB_TEST("kv_append: CUDA matches CPU bit for bit at gpt-oss's width (8 x 64) from the QKV row, f32 and bf16 pools") {
  for (auto dt : {gptoss::DType::F32, gptoss::DType::BF16})
    check(512, 5120, {0, 7, 3, 129, 4095}, {0, 1, 0, 2, 1}, 256, 16, dt, 61);
}
LAB_TEST("kv_append: CUDA matches CPU on a sliding layer's wrapping ring and an odd width (33)") {
  check(512, 1024, {127, 128, 300, 301}, {0, 0, 1, 1}, 9, 16, gptoss::DType::BF16, 62);
  check(33, 70, {0, 1, 2}, {2, 0, 1}, 3, 4, gptoss::DType::F32, 63);
}
