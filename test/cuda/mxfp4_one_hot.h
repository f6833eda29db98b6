// A one-expert MoE layer in which each output shows one MXFP4 weight alone, for every E2M1 value at
// every E8M0 scale of a range: the kernels' decode of nibbles and scales checked value by value
// (test/cuda/moe_mxfp4_test.cu, moe_mxfp4_gemm_test.cu). The random cases there mix thousands of
// weights per output and use scales near 2^-9 .. 2^7 only.
//
// H = 32 n: block b of every gate_up row has scale lo + b. Token b is one-hot at column 32 b + b % 32
// with x = 2^(127 - s), so each gate/up value is one weight times its scale's inverse: exactly an
// E2M1 value (row r's nibble there is (r + b) % 16, so the 64 rows give all 16 at every scale), far
// from the SwiGLU's clamp. The down weights are the identity on the I = 32 activations (E2M1 1.0 at
// scale 127, zeros elsewhere), so y[b][i] is token b's activation i, within the kernels' rounding
// of the activations (f16 or bf16: at most 2^-8 relative) of the CPU op's. A wrong nibble, sign or
// scale is off by a third or more.
#pragma once
#include <cmath>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "kernels/moe_mxfp4.h"
#include "test/cuda/harness.h"

namespace lab {
struct Mxfp4OneHot {
  static constexpr int I = 32;
  static constexpr float kLimit = 7.f, kAlpha = 1.702f;
  int lo, T, H;
  std::vector<uint8_t> w1b, w1s, w2b, w2s;
  std::vector<uint16_t> b1, b2;
  std::vector<float> x, want;
  std::vector<int32_t> idx;

  Mxfp4OneHot(int scale_lo, int scales, uint64_t seed)
      : lo(scale_lo), T(scales), H(32 * scales), w1b(size_t(2) * I * H / 2), w1s(size_t(2) * I * scales),
        w2b(size_t(H) * I / 2, 0), w2s(size_t(H), 127), b1(2 * I, 0), b2(size_t(H), 0), x(size_t(T) * H, 0.f),
        want(size_t(T) * H), idx(size_t(T), 0) {
    Rng r(seed);
    for (auto& v : w1b) v = uint8_t(r.next());  // columns no token selects: multiplied by zeros
    for (int n = 0; n < 2 * I; ++n)
      for (int b = 0; b < T; ++b) {
        w1s[size_t(n) * T + b] = uint8_t(lo + b);
        const int c = b % 32;
        uint8_t& byte = w1b[(size_t(n) * T + b) * 16 + c / 2];
        const uint8_t code = uint8_t((n + b) % 16);
        byte = c % 2 ? uint8_t((byte & 0x0f) | code << 4) : uint8_t((byte & 0xf0) | code);
      }
    for (int i = 0; i < I; ++i) w2b[size_t(i) * I / 2 + i / 2] = uint8_t(i % 2 ? 0x20 : 0x02);  // w2[i][i] = 1.0
    for (int b = 0; b < T; ++b) x[size_t(b) * H + 32 * b + b % 32] = std::ldexp(1.f, 127 - (lo + b));
    const int threads = gptoss::cpu::num_threads();
    std::vector<uint8_t> scratch(gptoss::moe_mxfp4_scratch_cpu(T, 1, 1, H, I, threads));
    gptoss::moe_mxfp4_cpu({x.data(), H, idx.data(), w1b.data(), w1s.data(), b1.data(), w2b.data(), w2s.data(), b2.data(),
                           want.data(), T, 1, 1, H, I, kLimit, kAlpha, scratch.data(), scratch.size(), threads});
  }

  // got: the per-slot outputs [T, H], of every `every`-th token from 0. Every output within 2^-8
  // of the CPU's, relative.
  void check(const std::vector<float>& got, const char* what, int every = 1) const {
    int nonzero = 0;
    for (int b = 0; b < T; b += every)
      for (int h = 0; h < H; ++h) {
        const float g = got[size_t(b) * H + h], w = want[size_t(b) * H + h];
        nonzero += h < I && w != 0.f;
        LAB_CHECK(std::fabs(double(g) - w) <= std::ldexp(std::fabs(double(w)), -8), "%s, scale %d (token %d), activation %d: %.9g, CPU %.9g",
                  what, lo + b, b, h, g, w);
      }
    const int checked = (T + every - 1) / every * I;
    LAB_CHECK(nonzero >= checked * 3 / 4, "%s: only %d of %d activations are nonzero: the case tests little", what, nonzero, checked);
  }
};
}  // namespace lab
