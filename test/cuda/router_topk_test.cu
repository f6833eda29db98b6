// router_topk_cuda and router_topk_gemv_cuda against the CPU op (kernels/cpu/router_topk.cc):
// logits with many exact ties (lower index must win), E from 1 to 256, 1 and 33 tokens; the fused
// GEMV at gpt-oss-20b's and 120b's router shapes (E 32 / 128, H 2880), on the vector and the
// scalar path, with duplicated expert rows (exact ties through the GEMV). Outputs poisoned before
// every call.
//
// Tolerances. Indices must match exactly. The weights: the kernel's softmax is f32 (expf, a
// 32-lane tree sum), the CPU's double: a few f32 ulp, so 2e-6 relative. The fused GEMV's logits:
// an f32 dot product of 2880 terms against a double one, error <= ~n * 2^-24 * sum |w x| in the
// worst case, ~sqrt(n) * 2^-24 * ... in practice: checked at 1e-5 * sum |w x|; its top-k is then
// checked exactly against the CPU op run on the kernel's own logits (near-ties in the GEMV's
// rounding must not make the test flaky; exact ties are duplicated rows, equal on both sides).
#include <algorithm>
#include <cstdlib>

#include "kernels/cuda/rmsnorm.cuh"
#include "kernels/cuda/router_topk.cuh"
#include "test/cuda/harness.h"

namespace {
void check_selection(const std::vector<float>& logits, int64_t ldl, int T, int E, int k, const std::vector<int32_t>& gi,
                     const std::vector<float>& gw, const char* what) {
  std::vector<int32_t> wi(size_t(T) * k);
  std::vector<float> ww(size_t(T) * k);
  gptoss::router_topk_cpu({logits.data(), ldl, wi.data(), ww.data(), T, E, k});
  for (int i = 0; i < T * k; ++i) {
    LAB_CHECK(gi[i] == wi[i], "%s T %d E %d k %d: idx[%d][%d] = %d, CPU %d", what, T, E, k, i / k, i % k, gi[i], wi[i]);
    LAB_CHECK(std::fabs(gw[i] - ww[i]) <= 2e-6 * std::fabs(ww[i]) + 1e-30, "%s T %d E %d k %d: weight[%d][%d] = %.9g, CPU %.9g",
              what, T, E, k, i / k, i % k, gw[i], ww[i]);
  }
}

// Logits on a coarse grid (many exact ties), padded rows.
void check_topk(int T, int E, int k, uint64_t seed) {
  lab::Rng r(seed);
  const int64_t ldl = E + 3;
  std::vector<float> lg(size_t(T) * ldl);
  for (auto& v : lg) v = float(int(r.next() % 9) - 4) * 0.5f;
  lab::DeviceBuf<float> dl(lg);
  lab::DeviceBuf<int32_t> di(size_t(T) * k);
  lab::DeviceBuf<float> dw(size_t(T) * k);
  lab::for_each_schedule([&] {
    cudaMemset(di.p, 0xff, di.n * 4);
    cudaMemset(dw.p, 0xff, dw.n * 4);
    gptoss::router_topk_cuda({dl.p, ldl, di.p, dw.p, T, E, k}, nullptr);
    check_selection(lg, ldl, T, E, k, di.download(), dw.download(), "router_topk");
  });
}

void check_gemv(int T, int E, int H, int k, bool misaligned, bool all_schedules, uint64_t seed) {
  lab::Rng r(seed);
  const int64_t ldx = H + (misaligned ? 1 : 0);
  std::vector<float> x(size_t(T) * ldx + 1);
  for (auto& v : x) v = r.uniform(-3.f, 3.f);
  std::vector<uint16_t> w(size_t(E) * H + 8), b(E);
  for (auto& v : w) v = lab::f32_to_bf16(r.uniform(-0.05f, 0.05f));
  for (auto& v : b) v = lab::f32_to_bf16(r.uniform(-0.2f, 0.2f));
  // Exact ties through the GEMV: expert 5 repeats expert 1's row and bias, the last repeats 0's.
  if (E > 5) {
    std::copy(w.begin() + H, w.begin() + 2 * H, w.begin() + 5 * H);
    b[5] = b[1];
  }
  if (E > 1) {
    std::copy(w.begin(), w.begin() + H, w.begin() + size_t(E - 1) * H);
    b[E - 1] = b[0];
  }
  const int off = misaligned ? 1 : 0;  // x and w one element off 16-byte alignment: the scalar path
  std::vector<double> want(size_t(T) * E), mag(size_t(T) * E);
  for (int t = 0; t < T; ++t)
    for (int e = 0; e < E; ++e) {
      double s = lab::bf16_to_f32(b[e]), m = 0;
      for (int i = 0; i < H; ++i) {
        const double p = double(lab::bf16_to_f32(w[off + size_t(e) * H + i])) * x[off + t * ldx + i];
        s += p;
        m += std::fabs(p);
      }
      want[size_t(t) * E + e] = s;
      mag[size_t(t) * E + e] = m;
    }
  lab::DeviceBuf<float> dx(x), dl(size_t(T) * E), dw(size_t(T) * k);
  lab::DeviceBuf<uint16_t> dW(w), db(b);
  lab::DeviceBuf<int32_t> di(size_t(T) * k);
  lab::DeviceBuf<unsigned> tickets(std::vector<unsigned>(size_t(T), 0u));
  auto run = [&] {
    cudaMemset(dl.p, 0xff, dl.n * 4);
    cudaMemset(di.p, 0xff, di.n * 4);
    cudaMemset(dw.p, 0xff, dw.n * 4);
    gptoss::router_topk_gemv_cuda({dl.p, E, di.p, dw.p, T, E, k}, {dx.p + off, ldx, dW.p + off, db.p, H}, tickets.p, nullptr);
    const std::vector<float> lg = dl.download();
    for (int i = 0; i < T * E; ++i)
      LAB_CHECK(std::fabs(lg[i] - want[i]) <= 1e-5 * mag[i] + 1e-6, "gemv T %d E %d H %d: logit[%d][%d] = %.9g, want %.9g",
                T, E, H, i / E, i % E, lg[i], want[i]);
    check_selection(lg, E, T, E, k, di.download(), dw.download(), "router_topk_gemv");
    for (unsigned v : tickets.download()) LAB_CHECK(v == 0, "a ticket was left at %u", v);
  };
  if (all_schedules) lab::for_each_schedule(run);
  else run();
}
}  // namespace

LAB_TEST("router_topk: CUDA matches CPU with exact ties (lower index wins), E 1..256, 1 and 33 tokens") {
  check_topk(1, 1, 1, 1);
  check_topk(33, 32, 4, 2);
  check_topk(3, 128, 4, 3);
  check_topk(2, 256, 8, 4);
  check_topk(2, 5, 5, 5);
  check_topk(1, 40, 33, 6);
}
// From router_topk_use_gemm's size (T x E >= 5120 up to 64 tokens, 12288 past) the router's logits
// come from the GEMM and this launch selects on them: its smallest steps at gpt-oss's expert counts
// (20b from 384 tokens; 120b from 40, fused again at 65 to 95, the GEMM from 96).
LAB_TEST("router_topk: the top-k launch at the step sizes that take the router's GEMM (384 x 32, 40 and 96 x 128 experts)") {
  static_assert(!gptoss::router_topk_use_gemm(383, 32, false) && gptoss::router_topk_use_gemm(384, 32, false) &&
                    !gptoss::router_topk_use_gemm(64, 32, false) && !gptoss::router_topk_use_gemm(39, 128, false) &&
                    gptoss::router_topk_use_gemm(40, 128, false) && gptoss::router_topk_use_gemm(64, 128, false) &&
                    !gptoss::router_topk_use_gemm(65, 128, false) && !gptoss::router_topk_use_gemm(95, 128, false) &&
                    gptoss::router_topk_use_gemm(96, 128, false) && !gptoss::router_topk_use_gemm(4096, 128, true),
                "router_topk_use_gemm: T x E >= 5120 up to 64 tokens, 12288 past, default mode only");
  check_topk(384, 32, 4, 11);
  check_topk(40, 128, 4, 12);
  check_topk(96, 128, 4, 13);
}
LAB_TEST("router_topk: fused GEMV at gpt-oss-20b and 120b router shapes (E 32 / 128, H 2880) [real shapes]") {
  if (std::getenv("LAB_QUICK")) return;  // the mutation runs: small shapes only
  check_gemv(3, 32, 2880, 4, false, false, 7);
  check_gemv(1, 128, 2880, 4, false, false, 8);
}
LAB_TEST("router_topk: fused GEMV under every schedule: vector and scalar path, duplicated rows tie") {
  check_gemv(2, 32, 256, 4, false, true, 9);
  check_gemv(33, 7, 33, 3, true, true, 10);
  check_gemv(1, 200, 64, 8, false, true, 11);
}
namespace {
// The norm folded in front against its two launches: rmsnorm_cuda into xn, then the fused GEMV of
// xn. Bit for bit: logits, selection, weights, and the xn that CTA 0 stores.
void check_norm(int T, int E, int H, int k, bool misaligned, bool all_schedules, uint64_t seed) {
  lab::Rng r(seed);
  const int off = misaligned ? 1 : 0;
  std::vector<float> x(size_t(T) * H + off);
  for (auto& v : x) v = r.uniform(-3.f, 3.f);
  std::vector<uint16_t> w(size_t(E) * H), b(E), g(H);
  for (auto& v : w) v = lab::f32_to_bf16(r.uniform(-0.5f, 0.5f));
  for (auto& v : b) v = lab::f32_to_bf16(r.uniform(-1.f, 1.f));
  for (auto& v : g) v = lab::f32_to_bf16(r.uniform(0.25f, 2.f));
  lab::DeviceBuf<float> dx(x), xn(size_t(T) * H), l(size_t(T) * E), wt(size_t(T) * k);
  lab::DeviceBuf<uint16_t> dw(w), db(b), dg(g);
  lab::DeviceBuf<int32_t> idx(size_t(T) * k);
  lab::DeviceBuf<unsigned> tickets(std::vector<unsigned>(size_t(T), 0u));
  gptoss::rmsnorm_cuda({dx.p + off, H, dg.p, xn.p, H, T, H, 1e-5f}, nullptr);
  gptoss::router_topk_gemv_cuda({l.p, E, idx.p, wt.p, T, E, k}, {xn.p, H, dw.p, db.p, H}, tickets.p, nullptr);
  const std::vector<float> want_xn = xn.download(), want_l = l.download(), want_wt = wt.download();
  const std::vector<int32_t> want_idx = idx.download();
  auto run = [&] {
    for (auto* p : {&xn, &l, &wt}) cudaMemset(p->p, 0xff, p->n * 4);
    cudaMemset(idx.p, 0xff, idx.n * 4);
    const gptoss::RmsnormFold n{dg.p, 1e-5f, xn.p, H};
    gptoss::router_topk_gemv_cuda({l.p, E, idx.p, wt.p, T, E, k}, {dx.p + off, H, dw.p, db.p, H}, tickets.p, nullptr, &n);
    LAB_CHECK(std::memcmp(xn.download().data(), want_xn.data(), want_xn.size() * 4) == 0,
              "T %d E %d H %d: the normalised rows differ from rmsnorm_cuda's", T, E, H);
    LAB_CHECK(std::memcmp(l.download().data(), want_l.data(), want_l.size() * 4) == 0,
              "T %d E %d H %d: the logits differ from rmsnorm_cuda then the fused GEMV", T, E, H);
    LAB_CHECK(idx.download() == want_idx && std::memcmp(wt.download().data(), want_wt.data(), want_wt.size() * 4) == 0,
              "T %d E %d H %d: the selection differs", T, E, H);
    for (unsigned v : tickets.download()) LAB_CHECK(v == 0, "a ticket was left at %u", v);
  };
  if (all_schedules) lab::for_each_schedule(run);
  else run();
}
}  // namespace

LAB_TEST("router_topk: the norm folded in front is bit for bit rmsnorm_cuda then the fused GEMV (xn too)") {
  if (!lab::quick()) check_norm(1, 32, 2880, 4, false, false, 12);  // gpt-oss-20b's router
  check_norm(2, 32, 256, 4, false, true, 13);                       // 8 CTAs: only CTA 0 stores xn
  check_norm(3, 7, 33, 3, true, true, 14);                          // the scalar path
}
LAB_TEST("router_topk: bad shapes are ERR_INVALID_ARGUMENT before any launch") {
  float l[8];
  int32_t i[8];
  bool threw = false;
  try {
    gptoss::router_topk_cuda({l, 8, i, l, 1, 300, 4}, nullptr);
  } catch (const gptoss::Error& e) {
    threw = e.code == "ERR_INVALID_ARGUMENT";
  }
  LAB_CHECK(threw, "E = 300 was accepted");
  threw = false;
  try {
    gptoss::router_topk_cuda({l, 8, i, l, 1, 8, 9}, nullptr);
  } catch (const gptoss::Error& e) {
    threw = e.code == "ERR_INVALID_ARGUMENT";
  }
  LAB_CHECK(threw, "k > E was accepted");
}
