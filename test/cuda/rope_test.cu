// rope_cuda and rope_kv_append_cuda against the CPU ops (kernels/cpu/rope.cc, then
// kernels/cpu/kv_append.cc) with gpt-oss's YaRN table: the fused QKV row of 64 Q + 8 K heads
// (+ 8 V heads) at positions 0, 1, 4095, 4096 and 131071 (angles up to 131072 rad), odd head
// counts, f32 and bf16 pools on fragmented pages; the caches NaN-poisoned before every call.
#include <algorithm>
#include <numeric>

#include "kernels/cpu/simd.h"
#include "kernels/cuda/rope.cuh"
#include "test/cuda/harness.h"

namespace {
// Tolerance: the rotation's products and differences are the CPU's bit for bit (no contraction on
// either side); cos and sin are both the double result rounded to f32, where the GPU's double
// sincospi may differ from glibc's cos/sin in the last double bit and so, rarely, round to the
// neighbouring f32. So |gpu - cpu| <= 2 ulp of C * (|x1| + |x2|): 2 * 2^-23 relative.
double tol(float a, float b) { return 2.0 * std::ldexp(1.0, -23) * 1.35 * (std::fabs(a) + std::fabs(b)) + 1e-30; }

void check(int T, int Hq, int Hkv, int64_t ld, const std::vector<int32_t>& positions, bool fused, gptoss::DType dt,
           uint64_t seed) {
  lab::Rng r(seed);
  const int D = 64, half = 32, width = Hkv * D;
  const gptoss::RopeTable table = gptoss::rope_table(gptoss::RopeParams{});
  std::vector<float> x(size_t(T) * ld);
  for (auto& v : x) v = r.uniform(-3.f, 3.f);
  std::vector<float> want = x;
  gptoss::rope_cpu({want.data(), ld, positions.data(), T, Hq, Hkv, D, &table});
  // Pages: one sequence per token, a ring of 512 pages of 8 rows (positions wrap, kv_pages.h), ids
  // shuffled over the pool.
  const int ring = 512, page = 8, pages_n = T * ring + 1;
  std::vector<int32_t> ids(pages_n), seq(T);
  std::iota(ids.begin(), ids.end(), 0);
  for (int i = pages_n - 1; i > 0; --i) std::swap(ids[i], ids[r.next() % (i + 1)]);
  std::iota(seq.begin(), seq.end(), 0);
  const int64_t rows = int64_t(pages_n) * page;
  const size_t esize = dt == gptoss::DType::F32 ? 4 : 2;
  std::vector<unsigned char> kc_want(rows * width * esize, 0xff), vc_want(rows * width * esize, 0xff);
  const int64_t kcol = int64_t(Hq) * D, vcol = kcol + width;
  gptoss::KvPages pg{seq.data(), ids.data(), ring, page};
  if (fused)
    gptoss::kv_append_cpu({want.data() + kcol, want.data() + vcol, ld, positions.data(), kc_want.data(), vc_want.data(), dt, pg, T, width});

  lab::DeviceBuf<float> dx(x);
  lab::DeviceBuf<int32_t> dpos(positions), dseq(seq), dids(ids);
  lab::DeviceBuf<unsigned char> dkc(kc_want.size()), dvc(vc_want.size());
  lab::for_each_schedule([&] {
    dx.upload(x);
    cudaMemset(dkc.p, 0xff, dkc.n);
    cudaMemset(dvc.p, 0xff, dvc.n);
    const gptoss::RopeArgs ra{dx.p, ld, dpos.p, T, Hq, Hkv, D, &table};
    if (fused)
      gptoss::rope_kv_append_cuda(ra, {dx.p + kcol, dx.p + vcol, ld, dpos.p, dkc.p, dvc.p, dt, {dseq.p, dids.p, ring, page}, T, width},
                                  nullptr);
    else
      gptoss::rope_cuda(ra, nullptr);
    const std::vector<float> got = dx.download();
    for (int t = 0; t < T; ++t)
      for (int h = 0; h < Hq + Hkv; ++h)
        for (int i = 0; i < half; ++i) {
          const size_t a = size_t(t) * ld + h * D + i, b = a + half;
          const double e = std::max(std::fabs(double(got[a]) - want[a]), std::fabs(double(got[b]) - want[b]));
          LAB_CHECK(e <= tol(x[a], x[b]), "token %d (position %d) head %d pair %d: (%.9g, %.9g), CPU (%.9g, %.9g)", t, positions[t], h,
                    i, got[a], got[b], want[a], want[b]);
        }
    // Everything past the Q and K heads (the V heads, padding) is untouched.
    for (int t = 0; t < T; ++t)
      for (int64_t c = kcol + width; c < ld; ++c)
        LAB_CHECK(std::memcmp(&got[t * ld + c], &x[t * ld + c], 4) == 0, "rope wrote column %lld of token %d", (long long)c, t);
    if (fused) {
      // The cache rows hold the rotated K (as the CPU's append of the GPU's rotation would: the
      // rotation's own tolerance is checked above) and the V heads bit for bit; other rows untouched.
      std::vector<unsigned char> kc_gpu_want(kc_want.size(), 0xff), vc_gpu_want(vc_want.size(), 0xff);
      gptoss::kv_append_cpu({got.data() + kcol, got.data() + vcol, ld, positions.data(), kc_gpu_want.data(), vc_gpu_want.data(), dt,
                             pg, T, width});
      std::vector<unsigned char> kg(dkc.n), vg(dvc.n);
      cudaMemcpy(kg.data(), dkc.p, kg.size(), cudaMemcpyDeviceToHost);
      cudaMemcpy(vg.data(), dvc.p, vg.size(), cudaMemcpyDeviceToHost);
      LAB_CHECK(kg == kc_gpu_want, "the fused append's K rows differ from kv_append of the rotated row");
      LAB_CHECK(vg == vc_gpu_want && vg == vc_want, "the fused append's V rows differ from kv_append's");
    }
  });
}
}  // namespace

LAB_TEST("rope: CUDA matches CPU on gpt-oss's QKV row (64 Q + 8 K heads) at positions 0, 1, 4095, 4096, 131071") {
  check(5, 64, 8, 5120, {0, 1, 4095, 4096, 131071}, false, gptoss::DType::F32, 51);
}
LAB_TEST("rope: CUDA matches CPU with odd head counts (1 Q head, 0 and 3 K heads) and a padded row") {
  check(2, 1, 0, 70, {7, 100000}, false, gptoss::DType::F32, 52);
  check(3, 5, 3, 5 * 64 + 3 * 64 + 3 * 64 + 4, {33, 511, 2047}, false, gptoss::DType::F32, 53);
}
LAB_TEST("rope: fused with kv_append, CUDA matches rope then kv_append on the CPU (f32 and bf16 pools, fragmented pages)") {
  check(3, 64, 8, 5120, {0, 129, 4095}, true, gptoss::DType::BF16, 54);
  check(2, 8, 2, 8 * 64 + 4 * 64, {5, 131071}, true, gptoss::DType::F32, 55);
}
