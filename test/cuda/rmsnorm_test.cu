// rmsnorm_cuda against the CPU op (kernels/cpu/rmsnorm.cc) at gpt-oss's hidden size and at odd
// shapes, with padded rows, in place, outputs NaN-poisoned before every call.
#include "kernels/cuda/rmsnorm.cuh"
#include "test/cuda/harness.h"

namespace {
// f32 partial sums vs the CPU's double sum: a few ulp on 1/rms, one rounding more per element.
constexpr double kTol = 4e-6;

void check(int rows, int H, int64_t ldx, int64_t ldy, bool in_place, uint64_t seed) {
  lab::Rng r(seed);
  std::vector<float> x(size_t(rows) * ldx);
  for (auto& v : x) v = r.uniform(-3.f, 3.f);
  std::vector<uint16_t> g(H);
  for (auto& v : g) v = lab::f32_to_bf16(r.uniform(0.25f, 2.f));
  if (in_place) ldy = ldx;
  std::vector<float> want(size_t(rows) * ldy, 0.f);
  gptoss::rmsnorm_cpu({x.data(), ldx, g.data(), want.data(), ldy, rows, H, 1e-5f});
  lab::DeviceBuf<float> dx(x);
  lab::DeviceBuf<uint16_t> dg(g);
  lab::DeviceBuf<float> dy(size_t(rows) * ldy);
  lab::for_each_schedule([&] {
    dx.upload(x);
    cudaMemset(dy.p, 0xff, dy.n * sizeof(float));
    float* y = in_place ? dx.p : dy.p;
    gptoss::rmsnorm_cuda({dx.p, ldx, dg.p, y, ldy, rows, H, 1e-5f}, nullptr);
    const std::vector<float> got = (in_place ? dx : dy).download();
    for (int i = 0; i < rows; ++i) {
      const double e = lab::max_rel_err(got.data() + size_t(i) * ldy, want.data() + size_t(i) * ldy, size_t(H), 1e-3);
      LAB_CHECK(e <= kTol, "rows %d H %d ldx %lld row %d: max relative error %.3g > %.1g", rows, H, (long long)ldx, i, e, kTol);
    }
  });
}
}  // namespace

LAB_TEST("rmsnorm: CUDA matches CPU at gpt-oss's hidden size (2880), 1 and 5 rows") {
  check(1, 2880, 2880, 2880, false, 1);
  check(5, 2880, 2880, 2880, false, 2);
}
LAB_TEST("rmsnorm: CUDA matches CPU at odd widths (1, 33, 511) on the scalar path") {
  check(3, 1, 1, 1, false, 3);
  check(2, 33, 33, 33, false, 4);
  check(2, 511, 515, 520, false, 5);
}
LAB_TEST("rmsnorm: CUDA matches CPU with padded rows and in place (y = x)") {
  check(3, 2880, 2884, 2888, false, 6);
  check(4, 2880, 2880, 2880, true, 7);
  check(2, 33, 40, 40, true, 8);
}
LAB_TEST("rmsnorm: bad shapes are ERR_INVALID_ARGUMENT before any launch") {
  std::vector<float> x(4);
  std::vector<uint16_t> g(4);
  bool threw = false;
  try {
    gptoss::rmsnorm_cuda({x.data(), 2, g.data(), x.data(), 4, 1, 4, 1e-5f}, nullptr);
  } catch (const gptoss::Error& e) {
    threw = e.code == "ERR_INVALID_ARGUMENT";
  }
  LAB_CHECK(threw, "ldx < H was accepted");
}
