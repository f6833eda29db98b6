// embed_cuda against the CPU op (kernels/cpu/embed.cc): gpt-oss's hidden size 2880 gathering rows
// from across a table (first, last and repeated tokens), odd widths (1, 33, 511) on the scalar
// path, padded output rows; bit for bit (the widening is exact), outputs NaN-poisoned.
#include "kernels/cuda/embed.cuh"
#include "test/cuda/harness.h"

namespace {
void check(int vocab, int H, int64_t ldx, const std::vector<int32_t>& tokens, uint64_t seed) {
  lab::Rng r(seed);
  const int T = int(tokens.size());
  std::vector<uint16_t> table(size_t(vocab) * H);
  for (auto& v : table) v = lab::f32_to_bf16(r.uniform(-1.f, 1.f));
  std::vector<float> want(size_t(T) * ldx, NAN);
  gptoss::embed_cpu({tokens.data(), table.data(), want.data(), ldx, T, H});
  lab::DeviceBuf<int32_t> dt(tokens);
  lab::DeviceBuf<uint16_t> dtab(table);
  lab::DeviceBuf<float> dx(want.size());
  lab::for_each_schedule([&] {
    cudaMemset(dx.p, 0xff, dx.n * 4);
    gptoss::embed_cuda({dt.p, dtab.p, dx.p, ldx, T, H}, nullptr);
    const std::vector<float> got = dx.download();
    for (size_t i = 0; i < got.size(); ++i)
      LAB_CHECK(std::memcmp(&got[i], &want[i], 4) == 0 || (std::isnan(got[i]) && std::isnan(want[i]) && i % ldx >= size_t(H)),
                "H %d: x[%zu] = %g, CPU %g", H, i, got[i], want[i]);
  });
}
}  // namespace

LAB_TEST("embed: CUDA matches CPU bit for bit at gpt-oss's hidden size (2880), first, last and repeated tokens") {
  check(300, 2880, 2880, {0, 299, 17, 17, 150}, 71);
}
LAB_TEST("embed: CUDA matches CPU at odd widths (1, 33, 511) and padded rows") {
  check(5, 1, 1, {4, 0}, 72);
  check(7, 33, 40, {6, 1, 1}, 73);
  check(3, 511, 515, {2}, 74);
  check(4, 2880, 2884, {3, 0}, 75);
}
