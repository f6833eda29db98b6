// matmul_bf16_cuda against the CPU op (kernels/cpu/matmul_bf16.cc) at gpt-oss's projections
// (QKV 5120 x 2880, the attention output 2880 x 4096 with the residual add, the router 32 and
// 128 x 2880 for 20b and 120b: the two models share these shapes), the unembedding's code path
// (4 rows per warp, which the launcher takes from 32768 rows, forced on 70 rows: 201,088 x 2880
// would take minutes under the emulator), odd row
// counts (1, 33, 511), odd K on the scalar path, padded rows, batched decode's launches of up to 8
// tokens (1, 3, 5 and 8 at K 2880, 8 at K 4096; two rows a warp at once from 5 tokens, row counts
// that leave a warp's second row past N or past its share), and more tokens than one launch takes
// (9); outputs NaN-poisoned before every call.
#include <algorithm>

#include "kernels/cuda/matmul_bf16.cuh"
#include "kernels/cuda/rmsnorm.cuh"
#include "test/cuda/harness.h"

namespace {
// Tolerance, per output, relative to S = sum_k |x_k w_k| + |b| (+ |y| when accumulating): both
// sides are f32 sums of the same exact products (bf16 x f32 fits an f32 FMA). Recursive f32
// summation of chains of length L errs by at most about L * u * S (u = 2^-24). The GPU's lanes
// chain K / 32 products each, then 5 shuffle levels and the bias; the CPU's SIMD lanes chain at
// most K / 8, then a horizontal sum and the bias. So |gpu - cpu| <= (K / 32 + K / 8 + 12) u S, a
// bound, not an estimate (never flaky), and still below what dropping one product changes
// (~ S / K).
double tolerance(int K) { return (K / 32.0 + K / 8.0 + 12.0) * std::ldexp(1.0, -24); }

struct Case {
  int T, N, K;
  int64_t ldx, ldy;
  bool bias, accumulate;
  int rows_per_warp = 0;
};

// every_schedule false: once, under the forward schedule (the real shapes, for the emulator's
// time; their small-shape siblings run the same code under every schedule).
void check(const Case& c, uint64_t seed, bool every_schedule = true) {
  lab::Rng r(seed);
  std::vector<float> x(size_t(c.T) * c.ldx);
  for (auto& v : x) v = r.uniform(-2.f, 2.f);
  std::vector<uint16_t> w(size_t(c.N) * c.K), b(c.bias ? c.N : 0);
  for (auto& v : w) v = lab::f32_to_bf16(r.uniform(-0.5f, 0.5f));
  for (auto& v : b) v = lab::f32_to_bf16(r.uniform(-1.f, 1.f));
  std::vector<float> y0(size_t(c.T) * c.ldy);
  for (auto& v : y0) v = r.uniform(-4.f, 4.f);
  std::vector<float> want = y0;
  std::vector<float> scratch(size_t(c.T) * c.K + 16);
  gptoss::matmul_bf16_cpu({x.data(), c.ldx, w.data(), c.bias ? b.data() : nullptr, want.data(), c.ldy, c.T, c.N, c.K,
                           c.accumulate, scratch.data()});
  lab::DeviceBuf<float> dx(x), dy(y0.size());
  lab::DeviceBuf<uint16_t> dw(w), db(std::max<size_t>(1, b.size()));
  if (c.bias) db.upload(b);
  const double tol = tolerance(c.K);
  auto run = [&] {
    if (c.accumulate) dy.upload(y0);
    else cudaMemset(dy.p, 0xff, dy.n * sizeof(float));
    gptoss::matmul_bf16_cuda({dx.p, c.ldx, dw.p, c.bias ? db.p : nullptr, dy.p, c.ldy, c.T, c.N, c.K, c.accumulate, nullptr},
                             nullptr, c.rows_per_warp);
    const std::vector<float> got = dy.download();
    for (int t = 0; t < c.T; ++t)
      for (int n = 0; n < c.N; ++n) {
        double S = (c.bias ? std::fabs(lab::bf16_to_f32(b[n])) : 0.0) + (c.accumulate ? std::fabs(y0[t * c.ldy + n]) : 0.0);
        for (int k = 0; k < c.K; ++k) S += std::fabs(double(x[t * c.ldx + k]) * lab::bf16_to_f32(w[size_t(n) * c.K + k]));
        const size_t i = size_t(t) * c.ldy + n;
        const double e = std::fabs(double(got[i]) - want[i]) / (S + 1e-30);
        LAB_CHECK(e <= tol, "T %d N %d K %d: y[%d, %d] = %.9g, CPU %.9g: error %.3g S > %.3g S", c.T, c.N, c.K, t, n, got[i],
                  want[i], e, tol);
      }
    // Columns past N in padded rows are never written.
    for (int t = 0; t < c.T; ++t)
      for (int64_t n = c.N; n < c.ldy; ++n)
        if (!c.accumulate) LAB_CHECK(std::isnan(got[t * c.ldy + n]), "wrote y[%d, %lld] past N", t, (long long)n);
  };
  if (every_schedule) lab::for_each_schedule(run);
  else run();
}
}  // namespace

LAB_TEST("matmul_bf16: CUDA matches CPU at the QKV projection (5120 x 2880, bias), 1 token") {
  if (!lab::quick()) check({1, 5120, 2880, 2880, 5120, true, false}, 11, false);
  check({2, 40, 2880, 2880, 40, true, false}, 111);
}
LAB_TEST("matmul_bf16: CUDA matches CPU at the attention output's K (4096) accumulating into the residual, 3 tokens") {
  check({3, 24, 4096, 4096, 2880, true, true}, 12);
}
LAB_TEST("matmul_bf16: CUDA matches CPU at the router (32 x 2880) and odd row counts (1, 33, 511)") {
  check({2, 32, 2880, 2880, 32, true, false}, 13);
  check({1, 1, 2880, 2880, 1, true, false}, 15);
  check({4, 33, 2880, 2884, 40, false, false}, 16);
  check({1, 511, 512, 512, 511, true, false}, 17, false);
}
LAB_TEST("matmul_bf16: CUDA matches CPU on the unembedding's path (4 rows a warp, taken from 32768 rows; no bias)") {
  LAB_CHECK(gptoss::matmul_bf16_rows_per_warp_cuda(201088) == 4 && gptoss::matmul_bf16_rows_per_warp_cuda(5120) == 1 &&
                gptoss::matmul_bf16_rows_per_warp_cuda(201088, 8) == 4 && gptoss::matmul_bf16_rows_per_warp_cuda(5120, 4) == 1 &&
                gptoss::matmul_bf16_rows_per_warp_cuda(5120, 5) == 2 && gptoss::matmul_bf16_rows_per_warp_cuda(2880, 8) == 2,
            "the rows-per-warp rule moved (unembedding 4; projections 1 up to 4 tokens, 2 from 5)");
  Case c{2, 70, 2880, 2880, 72, false, false};
  c.rows_per_warp = 4;  // 3 blocks of 32 rows, the last ragged
  check(c, 18);
}
LAB_TEST("matmul_bf16: CUDA matches CPU on the scalar path (odd K, unaligned rows) and past one launch's tokens") {
  check({3, 33, 33, 35, 37, true, false}, 19);
  check({2, 17, 511, 511, 17, true, true}, 20);
  check({7, 40, 96, 100, 41, true, false}, 21);  // 4 + 3 tokens in two launches
}
LAB_TEST("matmul_bf16: CUDA matches CPU for batched decode's launches of 1, 3, 5 and 8 tokens at K 2880 (N 37, 120)") {
  check({1, 37, 2880, 2880, 37, true, false}, 51);
  check({3, 37, 2880, 2880, 40, true, false}, 52);
  check({5, 37, 2880, 2884, 37, true, false}, 53);  // 2 rows a warp: 3 blocks of 16, the last with 5 rows
  check({8, 120, 2880, 2880, 120, true, true}, 54);
  if (!lab::quick()) check({8, 5120, 2880, 2880, 5120, true, false}, 55, false);  // QKV, one pass
}
LAB_TEST("matmul_bf16: CUDA matches CPU at K 4096 for 8 tokens in one launch (128 KB of x) and 9 in two, adding to the residual") {
  check({8, 24, 4096, 4096, 2880, true, true}, 56);
  check({9, 17, 4096, 4096, 20, true, true}, 57);  // 8 + 1 tokens
  if (!lab::quick()) check({8, 2880, 4096, 4096, 2880, true, true}, 58, false);  // the attention output, one pass
}
LAB_TEST("matmul_bf16: two rows a warp with forced rows per warp (odd counts: a warp's second row past its share)") {
  for (int rpw : {1, 3, 4}) {
    Case c{6, 41, 256, 256, 41, true, false};
    c.rows_per_warp = rpw;
    check(c, 59 + rpw);
  }
}
LAB_TEST("matmul_bf16: a token's output is bit-identical alone and in batches of 4 and 8 (two rows a warp)") {
  const int N = 100, K = 2880;
  lab::Rng r(22);
  std::vector<float> x(size_t(8) * K);
  for (auto& v : x) v = r.uniform(-2.f, 2.f);
  std::vector<uint16_t> w(size_t(N) * K), b(N);
  for (auto& v : w) v = lab::f32_to_bf16(r.uniform(-0.5f, 0.5f));
  for (auto& v : b) v = lab::f32_to_bf16(r.uniform(-1.f, 1.f));
  lab::DeviceBuf<float> dx(x), d8(size_t(8) * N), d1(N);
  lab::DeviceBuf<uint16_t> dw(w), db(b);
  for (int T : {4, 8}) {
    gptoss::matmul_bf16_cuda({dx.p, K, dw.p, db.p, d8.p, N, T, N, K, false, nullptr}, nullptr);
    const std::vector<float> all = d8.download();
    for (int t = 0; t < T; ++t) {
      gptoss::matmul_bf16_cuda({dx.p + t * K, K, dw.p, db.p, d1.p, N, 1, N, K, false, nullptr}, nullptr);
      const std::vector<float> one = d1.download();
      LAB_CHECK(std::memcmp(one.data(), all.data() + t * N, N * 4) == 0, "token %d differs alone and in a batch of %d", t, T);
    }
  }
}
namespace {
// The norm folded in front against its two launches: rmsnorm_cuda into xn, then the GEMV of xn.
// Bit for bit, both the GEMV's output and the xn block 0 stores.
void check_norm(int T, int N, int K, int64_t ldx, uint64_t seed) {
  lab::Rng r(seed);
  std::vector<float> x(size_t(T) * ldx);
  for (auto& v : x) v = r.uniform(-3.f, 3.f);
  std::vector<uint16_t> w(size_t(N) * K), b(N), g(K);
  for (auto& v : w) v = lab::f32_to_bf16(r.uniform(-0.5f, 0.5f));
  for (auto& v : b) v = lab::f32_to_bf16(r.uniform(-1.f, 1.f));
  for (auto& v : g) v = lab::f32_to_bf16(r.uniform(0.25f, 2.f));
  lab::DeviceBuf<float> dx(x), xn_want(size_t(T) * K), y_want(size_t(T) * N), xn(size_t(T) * K), y(size_t(T) * N);
  lab::DeviceBuf<uint16_t> dw(w), db(b), dg(g);
  gptoss::rmsnorm_cuda({dx.p, ldx, dg.p, xn_want.p, K, T, K, 1e-5f}, nullptr);
  gptoss::matmul_bf16_cuda({xn_want.p, K, dw.p, db.p, y_want.p, N, T, N, K, false, nullptr}, nullptr);
  const std::vector<float> want_xn = xn_want.download(), want_y = y_want.download();
  lab::for_each_schedule([&] {
    cudaMemset(xn.p, 0xff, xn.n * 4);
    cudaMemset(y.p, 0xff, y.n * 4);
    gptoss::matmul_bf16_norm_cuda({dx.p, ldx, dw.p, db.p, y.p, N, T, N, K, false, nullptr}, {dg.p, 1e-5f, xn.p, K},
                                  nullptr);
    LAB_CHECK(std::memcmp(xn.download().data(), want_xn.data(), want_xn.size() * 4) == 0,
              "T %d N %d K %d: the normalised rows differ from rmsnorm_cuda's", T, N, K);
    LAB_CHECK(std::memcmp(y.download().data(), want_y.data(), want_y.size() * 4) == 0,
              "T %d N %d K %d: the output differs from rmsnorm_cuda then the GEMV", T, N, K);
  });
}
}  // namespace

LAB_TEST("matmul_bf16: the norm folded in front is bit for bit rmsnorm_cuda then the GEMV (1 to 9 tokens, both paths)") {
  check_norm(1, 40, 2880, 2880, 23);  // 5 blocks: only block 0 stores xn
  check_norm(5, 17, 256, 260, 24);    // two rows a warp, padded rows
  check_norm(8, 33, 2880, 2880, 26);  // 3 blocks of 16 rows
  check_norm(9, 20, 256, 256, 27);    // 8 + 1 tokens in two launches
  check_norm(2, 9, 33, 35, 25);       // the scalar path
}
LAB_TEST("matmul_bf16: bad shapes are ERR_INVALID_ARGUMENT before any launch") {
  std::vector<float> x(16), y(16);
  std::vector<uint16_t> w(16);
  auto code = [&](gptoss::MatmulBf16Args a) {
    try {
      gptoss::matmul_bf16_cuda(a, nullptr);
    } catch (const gptoss::Error& e) {
      return e.code;
    }
    return std::string("none");
  };
  LAB_CHECK(code({x.data(), 2, w.data(), nullptr, y.data(), 4, 1, 4, 4, false, nullptr}) == "ERR_INVALID_ARGUMENT", "ldx < K accepted");
  LAB_CHECK(code({x.data(), 20000, w.data(), nullptr, y.data(), 4, 1, 1, 20000, false, nullptr}) == "ERR_INVALID_ARGUMENT",
            "K past the shared-memory limit accepted");
  bool threw = false;
  try {
    gptoss::matmul_bf16_norm_cuda({x.data(), 4, w.data(), nullptr, y.data(), 4, 1, 4, 4, false, nullptr},
                                  {w.data(), 1e-5f, y.data(), 2}, nullptr);
  } catch (const gptoss::Error& e) {
    threw = e.code == "ERR_INVALID_ARGUMENT";
  }
  LAB_CHECK(threw, "the norm's ldxn < K accepted");
}
