// moe_mxfp4_gemm_cuda (the op's per-slot contract) and moe_mxfp4_gemm_combine_cuda (routing weights
// in the down epilogue, then the scatter-combine) against the CPU ops (kernels/cpu/moe_mxfp4.cc,
// then kernels/cpu/moe_combine.cc) on fresh random MXFP4 experts: 1 token, 33 and 127 tokens
// (partial m-tiles), every token on one expert (several m-tiles of one expert), experts no token
// chose, weight-row counts that are not multiples of the 256-row tile, scales above 128, every
// E2M1 value at every scale the decode keeps exact, one weight at a time (test/cuda/mxfp4_one_hot.h),
// a bad index, and a gpt-oss-20b-shaped layer (H = I = 2880, 32 experts, top-4). Outputs and the scratch
// are NaN-poisoned before every call; every case also runs with a persistent grid smaller than its
// work (CTAs take several items) and must give the same bits under every schedule and grid.
//
// Tolerance. The weights are exact in bf16; x and the SwiGLU activations are rounded to bf16 (8
// significant bits: relative error up to u = 2^-8, ~u / sqrt(3) = 2.3e-3 RMS), products and sums
// are f32. For a dot product of n terms with independent rounding errors the error is ~2.3e-3 *
// sqrt(n) * rms(w x), against |dot| ~ sqrt(n) * rms(w x): ~2.3e-3 of the row's RMS per output and
// per rounding; an output of the down pass carries two (act's own, and x's passed through gate_up
// and the SwiGLU), ~3.3e-3 together, and rows of 64 outputs give a noisy RMS. Measured (LAB_PRINT_ERR
// prints each case's worst): up to 2.5e-2 on the 64-wide cases (1.3e-2 of it with x exact in bf16:
// the act rounding alone), 5e-3 at 2880. An output's error is taken relative to its own magnitude
// plus its row's RMS (as test/cuda/moe_mxfp4_test.cu). A lost barrier, a wrong fragment, scale or
// k permutation gives NaN or O(1) errors.
#include <algorithm>
#include <cstdlib>
#include <set>

#include "kernels/cpu/parallel.h"
#include "kernels/cuda/moe_mxfp4_gemm.cuh"
#include "kernels/moe_combine.h"
#include "test/cuda/harness.h"
#include "test/cuda/mxfp4_one_hot.h"

namespace {
constexpr double kTol = 4e-2;  // max |got - want| / (|want| + rms(want row))
constexpr float kLimit = 7.f, kAlpha = 1.702f;

struct Shape {
  int T, k, E, H, I;
};

struct Case {
  Shape s;
  std::vector<int32_t> idx;
  std::vector<float> x;
  int bad_slot = -1;
  int scale_lo = 118, scale_n = 6;  // E8M0 scales drawn from [scale_lo, scale_lo + scale_n)
  bool x_bf16 = false;              // x exact in bf16: only the activations' rounding is left
};

template <class T>
void upload_at(T* dev, const std::vector<T>& host, size_t host_off, size_t dev_off, size_t n) {
  cudaMemcpy(dev + dev_off, host.data() + host_off, n * sizeof(T), cudaMemcpyHostToDevice);
}

double row_err(const float* got, const float* want, int n) {
  double ss = 0, worst = 0;
  for (int i = 0; i < n; ++i) ss += double(want[i]) * want[i];
  const double rms = std::sqrt(ss / n) + 1e-6;
  for (int i = 0; i < n; ++i) {
    const double e = std::fabs(double(got[i]) - want[i]) / (std::fabs(double(want[i])) + rms);
    if (!(e <= worst)) worst = std::isnan(e) ? INFINITY : e;
  }
  return worst;
}

// A run: the SMs the persistent grid fills (0: 132) and the m-tile (0: by the shape, 64 or 128).
// check() takes each run with both tensor-core instructions (mma.sync and wgmma).
struct Run {
  int sms, tile;
};
constexpr gptoss::MoeGemmMma kMmas[2] = {gptoss::MoeGemmMma::Sync, gptoss::MoeGemmMma::Wgmma};
const char* mma_name(gptoss::MoeGemmMma m) { return m == gptoss::MoeGemmMma::Wgmma ? "wgmma" : "mma.sync"; }
// The default runs: the shape's own choice on a full grid, each tile size on a grid of a few CTAs
// (each CTA loops over many items). Every run of one instruction must give the same bits (the two
// instructions' may differ by the tensor core's internal rounding on a GPU; under the emulator,
// which rounds once per 16 k for both, they are the same).
const std::vector<Run> kRuns = {{0, 0}, {3, 64}, {2, 128}};
// paths: 1 the contract, 2 the combined path, 3 both. schedules: every schedule, else forward only.
void check(const Case& c, uint64_t seed, int paths = 3, bool schedules = true, std::vector<Run> runs = kRuns) {
  const Shape& s = c.s;
  lab::Rng r(seed);
  const int S = s.T * s.k;
  std::vector<float> x = c.x;
  if (c.x_bf16)
    for (auto& v : x) v = lab::bf16_to_f32(lab::f32_to_bf16(v));
  std::set<int> uset;
  for (int i = 0; i < S; ++i)
    if (i != c.bad_slot) uset.insert(c.idx[i]);
  const std::vector<int> used(uset.begin(), uset.end());
  const int U = int(used.size());
  // Host copies are compact (expert used[u] at u); on the device only the used experts are
  // written, the others stay NaN-poisoned: a kernel reading them would show.
  const size_t n1b = size_t(s.I) * s.H, n1s = size_t(2) * s.I * s.H / 32, n2b = size_t(s.H) * s.I / 2,
               n2s = size_t(s.H) * s.I / 32;
  std::vector<uint8_t> w1b(U * n1b), w1s(U * n1s), w2b(U * n2b), w2s(U * n2s);
  std::vector<uint16_t> b1(size_t(U) * 2 * s.I), b2(size_t(U) * s.H);
  for (auto& v : w1b) v = uint8_t(r.next());
  for (auto& v : w2b) v = uint8_t(r.next());
  for (auto& v : w1s) v = uint8_t(c.scale_lo + r.next() % unsigned(c.scale_n));
  for (auto& v : w2s) v = uint8_t(c.scale_lo + r.next() % unsigned(c.scale_n));
  for (auto& v : b1) v = lab::f32_to_bf16(r.uniform(-0.5f, 0.5f));
  for (auto& v : b2) v = lab::f32_to_bf16(r.uniform(-0.5f, 0.5f));
  std::vector<float> wt(S), resid(size_t(s.T) * s.H);
  for (int t = 0; t < s.T; ++t) {
    float sum = 0;
    for (int j = 0; j < s.k; ++j) sum += (wt[t * s.k + j] = r.uniform(0.05f, 1.f));
    for (int j = 0; j < s.k; ++j) wt[t * s.k + j] /= sum;
  }
  for (auto& v : resid) v = r.uniform(-1.f, 1.f);

  std::vector<int32_t> cidx(S, 0);
  for (int i = 0; i < S; ++i)
    if (i != c.bad_slot) cidx[i] = int32_t(std::lower_bound(used.begin(), used.end(), c.idx[i]) - used.begin());
  std::vector<float> want(size_t(S) * s.H);
  const int threads = gptoss::cpu::num_threads();
  std::vector<uint8_t> cscratch(gptoss::moe_mxfp4_scratch_cpu(s.T, s.k, U, s.H, s.I, threads));
  gptoss::moe_mxfp4_cpu({x.data(), s.H, cidx.data(), w1b.data(), w1s.data(), b1.data(), w2b.data(), w2s.data(),
                         b2.data(), want.data(), s.T, s.k, U, s.H, s.I, kLimit, kAlpha, cscratch.data(),
                         cscratch.size(), threads});
  std::vector<float> want_comb = resid, csum(s.H);
  gptoss::moe_combine_cpu({want_comb.data(), s.H, want.data(), wt.data(), s.T, s.k, s.H, csum.data()});

  const size_t E = size_t(s.E);
  lab::DeviceBuf<uint8_t> dw1b(E * n1b), dw1s(E * n1s), dw2b(E * n2b), dw2s(E * n2s);
  lab::DeviceBuf<uint16_t> db1(E * 2 * s.I), db2(E * s.H);
  for (int u = 0; u < U; ++u) {
    const size_t e = size_t(used[u]);
    upload_at(dw1b.p, w1b, u * n1b, e * n1b, n1b);
    upload_at(dw1s.p, w1s, u * n1s, e * n1s, n1s);
    upload_at(dw2b.p, w2b, u * n2b, e * n2b, n2b);
    upload_at(dw2s.p, w2s, u * n2s, e * n2s, n2s);
    upload_at(db1.p, b1, u * size_t(2) * s.I, e * 2 * s.I, size_t(2) * s.I);
    upload_at(db2.p, b2, u * size_t(s.H), e * s.H, size_t(s.H));
  }
  lab::DeviceBuf<float> dx(x), dwt(wt), dy(size_t(S) * s.H), dout(size_t(s.T) * s.H);
  lab::DeviceBuf<int32_t> didx(c.idx);
  lab::DeviceBuf<uint8_t> dscratch(gptoss::moe_mxfp4_gemm_scratch_cuda(s.T, s.k, s.E, s.H, s.I));
  const gptoss::MoeMxfp4Args a{dx.p, s.H, didx.p, dw1b.p, dw1s.p, db1.p, dw2b.p, dw2s.p, db2.p, dy.p, s.T, s.k, s.E, s.H,
                               s.I, kLimit, kAlpha, dscratch.p, dscratch.n, 1};
  std::vector<float> first_y[2], first_out[2];  // the bits every later run of an instruction must repeat
  auto same_bits = [](const std::vector<float>& x, std::vector<float>& ref) {
    if (ref.empty()) {
      ref = x;
      return true;
    }
    return std::memcmp(x.data(), ref.data(), x.size() * 4) == 0;
  };
  double worst[2] = {0, 0};  // LAB_PRINT_ERR set: printed per case (to measure kTol)
  auto run = [&] {
    for (const Run& g : runs)
      for (int mi = 0; mi < (lab::has_wgmma() ? 2 : 1); ++mi) {  // wgmma only where it runs (sm_90a)
        const gptoss::MoeGemmMma mma = kMmas[mi];
        if (paths & 1) {
          cudaMemset(dy.p, 0xff, dy.n * sizeof(float));
          cudaMemset(dscratch.p, 0xff, dscratch.n);
          gptoss::moe_mxfp4_gemm_cuda(a, g.sms, nullptr, g.tile, mma);
          const std::vector<float> got = dy.download();
          for (int i = 0; i < S; ++i) {
            const float* row = got.data() + size_t(i) * s.H;
            if (i == c.bad_slot) {
              for (int h = 0; h < s.H; ++h) LAB_CHECK(std::isnan(row[h]), "slot %d with a bad index: y[%d] = %g, not NaN", i, h, row[h]);
              continue;
            }
            const double e = row_err(row, want.data() + size_t(i) * s.H, s.H);
            worst[0] = std::max(worst[0], e);
            LAB_CHECK(e <= kTol, "%s, T %d k %d E %d H %d I %d sms %d tile %d slot %d (expert %d): error %.3g > %.1g",
                      mma_name(mma), s.T, s.k, s.E, s.H, s.I, g.sms, g.tile, i, c.idx[i], e, kTol);
          }
          LAB_CHECK(same_bits(got, first_y[mi]), "%s, T %d k %d E %d: y differs bitwise from the first run (sms %d tile %d)",
                    mma_name(mma), s.T, s.k, s.E, g.sms, g.tile);
        }
        if (paths & 2) {
          dout.upload(resid);
          cudaMemset(dscratch.p, 0xff, dscratch.n);
          gptoss::moe_mxfp4_gemm_combine_cuda(a, {dwt.p, dout.p, s.H, true}, g.sms, nullptr, g.tile, mma);
          const std::vector<float> got = dout.download();
          for (int t = 0; t < s.T; ++t) {
            if (c.bad_slot >= 0 && c.bad_slot / s.k == t) {
              for (int h = 0; h < s.H; ++h) LAB_CHECK(std::isnan(got[size_t(t) * s.H + h]), "token %d of the bad slot not NaN", t);
              continue;
            }
            const double e = row_err(got.data() + size_t(t) * s.H, want_comb.data() + size_t(t) * s.H, s.H);
            worst[1] = std::max(worst[1], e);
            LAB_CHECK(e <= kTol, "%s, combined, T %d k %d E %d H %d I %d sms %d tile %d token %d: error %.3g > %.1g",
                      mma_name(mma), s.T, s.k, s.E, s.H, s.I, g.sms, g.tile, t, e, kTol);
          }
          LAB_CHECK(same_bits(got, first_out[mi]), "%s, T %d k %d E %d: out differs bitwise from the first run (sms %d tile %d)",
                    mma_name(mma), s.T, s.k, s.E, g.sms, g.tile);
        }
      }
  };
  if (schedules) lab::for_each_schedule(run);
  else run();
  if (std::getenv("LAB_PRINT_ERR"))
    std::printf("      T %d k %d E %d H %d I %d: worst error %.3g (contract), %.3g (combined)\n", s.T, s.k, s.E, s.H, s.I,
                worst[0], worst[1]);
}

std::vector<float> random_x(int T, int H, lab::Rng& r) {
  std::vector<float> x(size_t(T) * H);
  for (auto& v : x) v = r.uniform(-3.f, 3.f);
  return x;
}
std::vector<int32_t> random_idx(int T, int k, int E, lab::Rng& r) {
  std::vector<int32_t> idx;
  for (int t = 0; t < T; ++t) {
    std::set<int> seen;
    while (int(seen.size()) < k) {
      const int e = int(r.next() % unsigned(E));
      if (seen.insert(e).second) idx.push_back(e);
    }
  }
  return idx;
}
Case random_case(const Shape& s, lab::Rng& r) { return {s, random_idx(s.T, s.k, s.E, r), random_x(s.T, s.H, r)}; }
}  // namespace

LAB_TEST("moe_mxfp4_gemm: 1 token and 3 tokens under every schedule and two grids") {
  lab::Rng r(41);
  check(random_case({1, 4, 8, 64, 96}, r), 42);
  check(random_case({3, 2, 6, 128, 64}, r), 43);
}
LAB_TEST("moe_mxfp4_gemm: 33 and 127 tokens (partial m-tiles), experts no token chose, rows not a multiple of 256") {
  lab::Rng r(44);
  Case c = random_case({33, 2, 9, 96, 160}, r);  // gate_up 320 rows: 2 n-tiles, the second 2 warps wide
  for (auto& e : c.idx) e = e == 4 ? 0 : e;   // expert 4: no token
  check(c, 45);
  check(random_case({127, 4, 16, 64, 64}, r), 46, 3, true, {{5, 0}, {2, 128}});
}
LAB_TEST("moe_mxfp4_gemm: every token on one expert (3 m-tiles of 64 rows, 2 of 128), the other slot on two experts") {
  lab::Rng r(47);
  Case c{{150, 2, 12, 64, 32}, {}, random_x(150, 64, r)};
  for (int t = 0; t < 150; ++t) c.idx.insert(c.idx.end(), {7, int32_t(t % 3 ? 2 : 11)});
  check(c, 48, 3, true, {{0, 0}, {2, 64}, {2, 128}});
}
LAB_TEST("moe_mxfp4_gemm: 200 tokens on 4 experts take the 128-row tile by their shape (100 slots an expert)") {
  lab::Rng r(60);
  const Case c = random_case({200, 2, 4, 64, 32}, r);
  LAB_CHECK(gptoss::moe_mxfp4_gemm_tile_rows(200, 2, 4) == 128, "100 slots per expert do not take the 128-row tile");
  check(c, 61, 3, false, {{0, 0}, {3, 64}, {1, 128}});
}
LAB_TEST("moe_mxfp4_gemm: experts with 1 to 8 pairs of n8 token tiles (the 128-row tile's k loop per count)") {
  // Expert e gets 16 e + 9 slots: ceil(that / 16) = e + 1 pairs, the last half used.
  lab::Rng r(62);
  Case c{{520, 1, 8, 64, 32}, {}, random_x(520, 64, r)};
  for (int e = 0; e < 8; ++e) c.idx.insert(c.idx.end(), size_t(16 * e + 9), e);
  for (size_t i = c.idx.size() - 1; i > 0; --i) std::swap(c.idx[i], c.idx[r.next() % (i + 1)]);
  check(c, 63, 3, false, {{1, 128}, {3, 64}});
}
LAB_TEST("moe_mxfp4_gemm: K of 9 to 11 blocks, past every stage (mma.sync's 4, wgmma's 8): stages are refilled") {
  lab::Rng r(64);
  check(random_case({20, 2, 3, 352, 288}, r), 65, 3, true, {{0, 0}, {2, 64}});
  check(random_case({9, 1, 2, 288, 320}, r), 66, 1, true, {{1, 128}});
}
LAB_TEST("moe_mxfp4_gemm: scales 2^-2 .. 2^7 (|w| up to 1536: past 2^1 the factor needs the 2^-64 bias)") {
  lab::Rng r(49);
  Case c = random_case({5, 2, 4, 64, 64}, r);
  c.scale_lo = 125;
  c.scale_n = 10;  // 2^-2 .. 2^7
  for (auto& v : c.x) v *= 1e-3f;
  check(c, 50, 3, false);
}
LAB_TEST("moe_mxfp4_gemm: every E2M1 value at every scale the decode keeps exact (E8M0 66 .. 192), each weight seen alone") {
  // test/cuda/mxfp4_one_hot.h. The factor 2^(s - 65) is built in the exponent field of a bf16x2
  // word (scale_factor); the random cases' scales span 118 .. 134 only.
  const lab::Mxfp4OneHot c(66, 127, 71);
  lab::DeviceBuf<uint8_t> dw1b(c.w1b), dw1s(c.w1s), dw2b(c.w2b), dw2s(c.w2s);
  lab::DeviceBuf<uint16_t> db1(c.b1), db2(c.b2);
  lab::DeviceBuf<float> dx(c.x), dy(size_t(c.T) * c.H);
  lab::DeviceBuf<int32_t> didx(c.idx);
  lab::DeviceBuf<uint8_t> dscratch(gptoss::moe_mxfp4_gemm_scratch_cuda(c.T, 1, 1, c.H, c.I));
  const gptoss::MoeMxfp4Args a{dx.p, c.H, didx.p, dw1b.p, dw1s.p, db1.p, dw2b.p, dw2s.p, db2.p, dy.p, c.T, 1, 1, c.H, c.I,
                               c.kLimit, c.kAlpha, dscratch.p, dscratch.n, 1};
  for (gptoss::MoeGemmMma mma : kMmas)
    for (int tile : {64, 128}) {
      if (mma == gptoss::MoeGemmMma::Wgmma && !lab::has_wgmma()) continue;
      cudaMemset(dy.p, 0xff, dy.n * sizeof(float));
      gptoss::moe_mxfp4_gemm_cuda(a, 0, nullptr, tile, mma);
      c.check(dy.download(), lab::format("%s, %d-row tile", mma_name(mma), tile).c_str());
    }
}
LAB_TEST("moe_mxfp4_gemm: an expert index outside [0, E) gives NaN for that slot (contract) or token (combined) only") {
  lab::Rng r(52);
  Case c = random_case({4, 2, 5, 64, 64}, r);
  c.idx[3] = 9;
  c.bad_slot = 3;
  check(c, 53);
}
LAB_TEST("moe_mxfp4_gemm: gpt-oss-20b shapes (E 32, H = I = 2880, k 4), 8 tokens on 4 experts, combined [real shapes]") {
  if (lab::quick()) return;  // the mutation runs: small shapes only
  // The emulated cost is ~1 s per expert-tile pass over 2880 x 2880 weights (barriers and mma
  // rendezvous of 256 fibers per 32-k step): 4 experts, one path, one schedule.
  lab::Rng r(54);
  Case c = random_case({8, 4, 32, 2880, 2880}, r);
  const int32_t pick[4] = {3, 17, 30, 9};
  for (int t = 0; t < 8; ++t)
    for (int j = 0; j < 4; ++j) c.idx[t * 4 + j] = pick[(t + j) % 4];
  check(c, 55, 2, false, {{4, 0}});  // 8 CTAs: a block of the emulator costs its 256 fibers even when idle
}
LAB_TEST("moe_mxfp4_gemm: bad shapes and alignment are ERR_INVALID_ARGUMENT before any launch") {
  std::vector<uint8_t> buf(1 << 16);
  float f[64];
  int32_t i[4] = {0, 0, 0, 0};
  auto rejects = [&](gptoss::MoeMxfp4Args a) {
    try {
      gptoss::moe_mxfp4_gemm_cuda(a, 0, nullptr);
    } catch (const gptoss::Error& e) {
      return e.code == "ERR_INVALID_ARGUMENT";
    }
    return false;
  };
  uint16_t* b = reinterpret_cast<uint16_t*>(buf.data());
  uint8_t* al = buf.data() + (16 - reinterpret_cast<uintptr_t>(buf.data()) % 16) % 16;
  const gptoss::MoeMxfp4Args ok{f, 32, i, al, al, b, al, al, b, f, 1, 1, 1, 32, 32, 7.f, 1.702f, al, 32768, 1};
  auto a = ok;
  a.H = 48;
  LAB_CHECK(rejects(a), "H = 48 was accepted");
  a = ok;
  a.E = 300;
  LAB_CHECK(rejects(a), "E = 300 was accepted");
  a = ok;
  a.w1_blocks = al + 4;
  LAB_CHECK(rejects(a), "misaligned blocks were accepted");
  a = ok;
  a.scratch_bytes = 64;
  LAB_CHECK(rejects(a), "a short scratch was accepted");
  try {
    gptoss::moe_mxfp4_gemm_cuda(ok, 0, nullptr, 96);
    LAB_CHECK(false, "tile_rows 96 was accepted");
  } catch (const gptoss::Error& e) {
    LAB_CHECK(e.code == "ERR_INVALID_ARGUMENT", "tile_rows 96: %s, not ERR_INVALID_ARGUMENT", e.code.c_str());
  }
  // T k >= 48 E: 20b from 384 tokens, 120b from 1,536.
  LAB_CHECK(gptoss::moe_mxfp4_gemm_tile_rows(383, 4, 32) == 64 && gptoss::moe_mxfp4_gemm_tile_rows(384, 4, 32) == 128 &&
                gptoss::moe_mxfp4_gemm_tile_rows(1535, 4, 128) == 64 && gptoss::moe_mxfp4_gemm_tile_rows(1536, 4, 128) == 128,
            "the m-tile rule is not T k >= 48 E");
  // 4 T k >= 13 E: 20b from 26 tokens, 120b from 104.
  LAB_CHECK(!gptoss::moe_mxfp4_use_gemm(1, 4, 32) && !gptoss::moe_mxfp4_use_gemm(25, 4, 32) &&
                !gptoss::moe_mxfp4_use_gemm(103, 4, 128),
            "decode batches below 3.25 slots per expert take the GEMM");
  LAB_CHECK(gptoss::moe_mxfp4_use_gemm(26, 4, 32) && gptoss::moe_mxfp4_use_gemm(104, 4, 128) &&
                gptoss::moe_mxfp4_use_gemm(2048, 4, 128),
            "3.25 or more slots per expert (and prefill) take the GEMV");
}
