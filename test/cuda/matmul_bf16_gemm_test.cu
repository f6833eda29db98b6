// matmul_bf16's tensor-core GEMM (matmul_bf16_gemm_cuda, kernels/cuda/matmul_bf16.cu) against the
// CPU op (kernels/cpu/matmul_bf16.cc) on fresh random inputs, outputs NaN-poisoned before every
// call: K 2880 (gpt-oss's hidden size, 90 k tiles) and 4096 (the attention output's), tokens 1,
// 33, 127 (not multiples of the 32- and 128-token tiles), odd row counts (127, 511), the QKV
// projection's 5120 rows, the unembedding's logit rows picked by a row list, a K tail
// (K % 32 == 8), padded rows, the residual add, both activation modes (bf16; split hi + lo for the
// fp32 mode); the default mode's wide 128-token tile (128 x 256 a block) at T 127 to 391, ragged
// N (300, 2880, 8200), QKV at 128 tokens and the attention output at 256 at the rule's splits;
// the tile layout (every fragment position through the swizzle over 256 rows, no bank conflicts);
// the rule between the GEMV and the GEMM; a token's output independent of the others; split k
// (batched decode: T = 3, 5, 9, 16, 33 and 64 over 200 rows, 64-token tiles, the splits the rule
// takes for QKV and the attention output, uneven last splits, the fp32 mode's halves): against
// the CPU, the same bits under every schedule (which block adds a tile up changes with the block
// order), the tickets left zero, every partial discarded from L2 after its last read where N %
// 32 == 0 (the emulator's discarded lines read NaN, so a line dropped early shows in y), and the
// split rule itself. The
// real-K cases, among them the full QKV (16 x 5120 x 2880), out-proj (40 x 2880 x 4096) and
// 127 x 511 x 2880, run once under the forward schedule and are skipped with LAB_QUICK (about
// 30 s of the 33 s these tests take under ASan here); small siblings run the same code under every
// schedule.
#include <algorithm>
#include <set>

#include "kernels/cuda/matmul_bf16.cuh"
#include "kernels/cuda/matmul_bf16_gemm.cuh"
#include "kernels/cuda/mma.cuh"
#include "test/cuda/harness.h"

namespace {
const double kU = std::ldexp(1.0, -24);

// Tolerances, per output, relative to S = sum_k |x_k w_k| + |b| (+ |y| when accumulating).
// Accumulation: the GEMM chains K / 16 mma (K / 8 split), each rounding its f32 sum once in the
// emulator; a tensor core rounds internally, so 2 u per mma is allowed; the CPU chains at most
// K / 8 products per SIMD lane, then a horizontal sum and the bias (as matmul_bf16_test.cu).
// Split k adds the k_splits partial sums in order: k_splits - 1 more roundings.
double accumulation(int K, bool split, int k_splits = 1) {
  return (2.0 * (split ? K / 8.0 : K / 16.0) + K / 8.0 + 16.0 + 2.0 * k_splits) * kU;
}
// Against the CPU on the same x: rounding x to bf16 moves each product by at most 2^-8 of it
// (round to nearest, 8 significant bits); the split's hi + lo leaves at most 2^-16.
double contract(int K, bool split, int k_splits = 1) {
  return std::ldexp(1.0, split ? -16 : -8) + accumulation(K, split, k_splits);
}

// x as the GEMM's tensor cores see it: bf16(x), or hi + lo (exact in f32).
float as_staged(float v, bool split) {
  const float hi = lab::bf16_to_f32(lab::f32_to_bf16(v));
  return split ? hi + lab::bf16_to_f32(lab::f32_to_bf16(v - hi)) : hi;
}

struct Case {
  int T, N, K;
  int64_t ldx, ldy;
  bool bias, accumulate;
  bool split = false;
  int tile_m = 0;
  std::vector<int32_t> rows;  // x's rows for the output rows (the logit rows), else row t
  int x_rows = 0;             // rows of x when `rows` is set
  int k_splits = 1;           // 0: the rule's, with a workspace
  int sms = gptoss::kMatmulBf16GemmTargetBlocks;  // the workspace's SMs (the rule's target)
};

// every_schedule false: once, under the forward schedule.
void check(const Case& c, uint64_t seed, bool every_schedule = true) {
  lab::Rng r(seed);
  const int XR = c.rows.empty() ? c.T : c.x_rows;
  std::vector<float> x(size_t(XR) * c.ldx);
  for (auto& v : x) v = r.uniform(-2.f, 2.f);
  std::vector<uint16_t> w(size_t(c.N) * c.K), b(c.bias ? c.N : 0);
  for (auto& v : w) v = lab::f32_to_bf16(r.uniform(-0.5f, 0.5f));
  for (auto& v : b) v = lab::f32_to_bf16(r.uniform(-1.f, 1.f));
  std::vector<float> y0(size_t(c.T) * c.ldy);
  for (auto& v : y0) v = r.uniform(-4.f, 4.f);

  // The CPU op on x's gathered rows (contract), and on those rows as staged (exact check).
  std::vector<float> xg(size_t(c.T) * c.ldx), xs(xg.size());
  for (int t = 0; t < c.T; ++t) {
    const int src = c.rows.empty() ? t : c.rows[t];
    for (int64_t k = 0; k < c.ldx; ++k) {
      xg[t * c.ldx + k] = x[src * c.ldx + k];
      xs[t * c.ldx + k] = as_staged(xg[t * c.ldx + k], c.split);
    }
  }
  std::vector<float> want = y0, want_staged = y0, scratch(size_t(c.T) * c.K + 16);
  gptoss::matmul_bf16_cpu({xg.data(), c.ldx, w.data(), c.bias ? b.data() : nullptr, want.data(), c.ldy, c.T, c.N, c.K,
                           c.accumulate, scratch.data()});
  gptoss::matmul_bf16_cpu({xs.data(), c.ldx, w.data(), c.bias ? b.data() : nullptr, want_staged.data(), c.ldy, c.T, c.N,
                           c.K, c.accumulate, scratch.data()});
  std::vector<double> S(size_t(c.T) * c.N);
  for (int t = 0; t < c.T; ++t)
    for (int n = 0; n < c.N; ++n) {
      double s = (c.bias ? std::fabs(lab::bf16_to_f32(b[n])) : 0.0) + (c.accumulate ? std::fabs(y0[t * c.ldy + n]) : 0.0);
      const float* xr = xg.data() + t * c.ldx;
      const uint16_t* wr = w.data() + size_t(n) * c.K;
      for (int k = 0; k < c.K; ++k) s += std::fabs(double(xr[k]) * lab::bf16_to_f32(wr[k]));
      S[size_t(t) * c.N + n] = s;
    }

  lab::DeviceBuf<float> dx(x), dy(y0.size());
  lab::DeviceBuf<uint16_t> dw(w), db(std::max<size_t>(1, b.size()));
  lab::DeviceBuf<int32_t> drows(std::max<size_t>(1, c.rows.size()));
  if (c.bias) db.upload(b);
  if (!c.rows.empty()) drows.upload(c.rows);
  const int splits = c.k_splits ? c.k_splits : gptoss::matmul_bf16_gemm_k_splits_cuda(c.T, c.N, c.K, c.tile_m, c.split, c.sms);
  const double tol_exact = accumulation(c.K, c.split, splits), tol = contract(c.K, c.split, splits);
  // Split k's workspace: partials NaN-poisoned (each split must write its share before the sum),
  // tickets zero (as the backend leaves them).
  lab::DeviceBuf<float> dpart(size_t(std::max(1, splits)) * c.T * c.N);
  lab::DeviceBuf<unsigned> dtickets(std::max(1, gptoss::matmul_bf16_gemm_max_tiles(c.sms)));
  cudaMemset(dtickets.p, 0, dtickets.n * sizeof(unsigned));
  // (A NaN whose bits are not all set: the emulator's discarded lines read all bits set.)
  const std::vector<float> poison(dpart.n, [] {
    const uint32_t u = 0x7fc00001u;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }());
  // The default mode's 128-token tile runs on both instructions (mma.sync, and wgmma where it
  // runs). Every run of one instruction must give the same bits; under the emulator, which rounds
  // once per 16 k for both, so must the two instructions (on a GPU they may differ by the tensor
  // core's internal rounding).
  const int tm = c.tile_m ? c.tile_m : gptoss::matmul_bf16_gemm_tile_m_cuda(c.T);
  const bool both = tm == 128 && !c.split && lab::has_wgmma();
  std::vector<float> first[2];  // each instruction's first output
  bool wgmma = false;
  auto run = [&] {
    if (c.accumulate) dy.upload(y0);
    else cudaMemset(dy.p, 0xff, dy.n * sizeof(float));
    dpart.upload(poison);
    gptoss::MatmulBf16GemmOptions o;
    o.split_x = c.split;
    o.tile_m = c.tile_m;
    o.x_rows = c.rows.empty() ? nullptr : drows.p;
    o.k_splits = c.k_splits;
    o.ws = {dpart.p, dpart.n * sizeof(float), dtickets.p, c.sms, wgmma};
    gptoss::matmul_bf16_gemm_cuda(
        {dx.p, c.ldx, dw.p, c.bias ? db.p : nullptr, dy.p, c.ldy, c.T, c.N, c.K, c.accumulate, nullptr}, o, nullptr);
    const std::vector<float> got = dy.download();
    for (unsigned v : dtickets.download()) LAB_CHECK(v == 0u, "a ticket left at %u", v);
    if (splits > 1 && c.N % 32 == 0) {  // every partial read for the last time is dropped from L2
      const std::vector<float> part = dpart.download();
      for (size_t i = 0; i < size_t(splits) * c.T * c.N; ++i) {
        uint32_t u;
        std::memcpy(&u, &part[i], 4);
        LAB_CHECK(u == 0xffffffffu, "T %d N %d K %d, %d splits: partials[%zu] (split %zu, token %zu, column %zu) not discarded", c.T, c.N,
                  c.K, splits, i, i / (size_t(c.T) * c.N), i / c.N % c.T, i % c.N);
      }
    }
    const char* ins = wgmma ? "wgmma" : "mma.sync";
    std::vector<float>& f = first[wgmma];
    if (f.empty()) f = got;
    else LAB_CHECK(std::memcmp(f.data(), got.data(), got.size() * 4) == 0, "T %d N %d K %d, %d splits, %s: bits differ between schedules", c.T, c.N, c.K, splits, ins);
#if defined(GPTOSS_CUDA_EMU)
    if (wgmma && !first[0].empty())
      LAB_CHECK(std::memcmp(first[0].data(), got.data(), got.size() * 4) == 0, "T %d N %d K %d, %d splits: wgmma's bits differ from mma.sync's", c.T, c.N, c.K, splits);
#endif
    for (int t = 0; t < c.T; ++t)
      for (int n = 0; n < c.N; ++n) {
        const size_t i = size_t(t) * c.ldy + n;
        const double s = S[size_t(t) * c.N + n] + 1e-30;
        const double e = std::fabs(double(got[i]) - want_staged[i]) / s, e2 = std::fabs(double(got[i]) - want[i]) / s;
        LAB_CHECK(e <= tol_exact, "T %d N %d K %d%s, %s: y[%d, %d] = %.9g, CPU on the staged x %.9g: error %.3g S > %.3g S", c.T,
                  c.N, c.K, c.split ? " split" : "", ins, t, n, got[i], want_staged[i], e, tol_exact);
        LAB_CHECK(e2 <= tol, "T %d N %d K %d%s, %s: y[%d, %d] = %.9g, CPU %.9g: error %.3g S > %.3g S", c.T, c.N, c.K,
                  c.split ? " split" : "", ins, t, n, got[i], want[i], e2, tol);
      }
    for (int t = 0; t < c.T; ++t)
      for (int64_t n = c.N; n < c.ldy; ++n)
        if (!c.accumulate) LAB_CHECK(std::isnan(got[t * c.ldy + n]), "wrote y[%d, %lld] past N", t, (long long)n);
  };
  for (bool wg : {false, true}) {
    if (wg && !both) break;
    wgmma = wg;
    if (every_schedule) lab::for_each_schedule(run);
    else run();
  }
}

// ---- the tile layout ----
// mma.m16n8k16's fragments (PTX ISA; the same statement as kernels/cuda/mma.cuh's header):
// A value i of lane (g, q): row g + 8 ((i >> 1) & 1), col 2q + (i & 1) + 8 (i >> 2); B value i:
// k 2q + (i & 1) + 8 (i >> 1), n g.
void a_pos(int lane, int i, int& row, int& k) { row = (lane >> 2) + 8 * ((i >> 1) & 1), k = 2 * (lane & 3) + (i & 1) + 8 * (i >> 2); }
void b_pos(int lane, int i, int& n, int& k) { n = lane >> 2, k = 2 * (lane & 3) + (i & 1) + 8 * (i >> 1); }

// One warp: a tile of the widest block's rows (kBNMax = 256: the wide tile's W stage; A tiles are
// at most 128 rows) [256][32] of codes (row << 5 | k, 13 bits) stored through the swizzle, then,
// at every 16-row fragment base of that tile and both k16 steps, the A fragment (ldmatrix.x4)
// and the B fragment pair (n 16) loaded as the GEMM does, the base added as the kernel adds it:
// a_fragment / b_fragment of the warp's first row plus 16 rows of bytes per further fragment
// (warp wm's A: wm 16 MT + 16 i; warp wn's B pairs: wn 8 NT + 16 j, for every geometry).
constexpr int kProbeRows = gptoss::cuda::gemm::kBNMax;
constexpr int kProbeBases = kProbeRows / 16;
__global__ void fragment_probe(uint32_t* out) {  // [bases][k16][A, B][32 lanes][4 registers]
  using namespace gptoss::cuda::gemm;
  __shared__ __align__(16) uint16_t tile[kProbeRows * 32];
  const int lane = threadIdx.x;
  for (int i = lane; i < kProbeRows * 4; i += 32) {  // 16-byte chunks, as the GEMM's stores
    const int r = i >> 2, c = i & 3;
    uint16_t* dst = reinterpret_cast<uint16_t*>(reinterpret_cast<unsigned char*>(tile) + swizzle(r, c));
    for (int e = 0; e < 8; ++e) dst[e] = uint16_t(r << 5 | (8 * c + e));
  }
  __syncwarp();
  const unsigned char* base = reinterpret_cast<const unsigned char*>(tile);
  for (int f = 0; f < kProbeBases; ++f)
    for (int kk = 0; kk < 2; ++kk) {
      // The kernel's form: the warp's first fragment's address + 16 rows per fragment further.
      // Warp bases are multiples of 32 (A: 16 MT, MT 2 or 4; B: 8 NT, NT 4 or 8) or 0 (MT 1).
      const int w0 = f & ~1, step = f & 1;
      uint32_t r[4];
      gptoss::cuda::ldmatrix<4, false>(r, base + a_fragment(16 * w0, kk, lane) + 16 * step * kRowBytes);
      for (int i = 0; i < 4; ++i) out[(((f * 2 + kk) * 2 + 0) * 32 + lane) * 4 + i] = r[i];
      gptoss::cuda::ldmatrix<4, false>(r, base + b_fragment(16 * w0, kk, lane) + 16 * step * kRowBytes);
      for (int i = 0; i < 4; ++i) out[(((f * 2 + kk) * 2 + 1) * 32 + lane) * 4 + i] = r[i];
    }
}

// The 16-byte bank group (of 8 per 128-byte line) of each address a wavefront serves must differ.
void check_conflict_free(const char* what, const std::vector<uint32_t>& addrs) {
  std::set<uint32_t> groups;
  for (uint32_t a : addrs) groups.insert((a / 16) % 8);
  LAB_CHECK(groups.size() == addrs.size(), "%s: %zu addresses in %zu bank groups (a bank conflict)", what, addrs.size(),
            groups.size());
}
}  // namespace

LAB_TEST("matmul_bf16: the GEMM's swizzled tile gives every mma fragment position (ldmatrix x4 for A and for [N, K] B, 256 rows: the wide tile's)") {
  lab::DeviceBuf<uint32_t> dout(size_t(kProbeBases) * 2 * 2 * 32 * 4);
  lab::for_each_schedule([&] {
    cudaMemset(dout.p, 0xff, dout.n * 4);
    GPTOSS_LAUNCH(fragment_probe, dim3(1), dim3(32), 0, nullptr, dout.p);
    const std::vector<uint32_t> out = dout.download();
    for (int f = 0; f < 2 * kProbeBases; ++f) {
      const int r0 = 16 * (f >> 1), k0 = 16 * (f & 1);
      const uint32_t* fa = out.data() + size_t(f * 2 + 0) * 32 * 4;
      const uint32_t* fb = out.data() + size_t(f * 2 + 1) * 32 * 4;
      for (int lane = 0; lane < 32; ++lane)
        for (int i = 0; i < 8; ++i) {
          int row, k, n;
          a_pos(lane, i, row, k);
          const uint32_t a = (fa[lane * 4 + i / 2] >> (16 * (i & 1))) & 0xffff;
          LAB_CHECK(a == uint32_t((r0 + row) << 5 | (k0 + k)), "A fragment (rows %d, k %d) lane %d value %d: row %u k %u, want %d %d",
                    r0, k0, lane, i, a >> 5, a & 31, r0 + row, k0 + k);
          // B: values 0..3 of the n8 fragment at r0, then of the one at r0 + 8
          b_pos(lane, i & 3, n, k);
          n += r0 + 8 * (i >> 2);
          const uint32_t b = (fb[lane * 4 + i / 2] >> (16 * (i & 1))) & 0xffff;
          LAB_CHECK(b == uint32_t(n << 5 | (k0 + k)), "B fragment (n %d, k %d) lane %d value %d: n %u k %u, want %d %d", r0, k0, lane,
                    i, b >> 5, b & 31, n, k0 + k);
        }
    }
  });
}

LAB_TEST("matmul_bf16: the GEMM's ldmatrix rows and tile stores are free of bank conflicts") {
  using namespace gptoss::cuda::gemm;
  // ldmatrix.x4: one wavefront per 8x8 matrix, i.e. per 8 lanes' row addresses; every 16-row
  // fragment base of the widest W stage (256 rows, the wide tile's) and of the A tiles (<= 128).
  static_assert(block_n(4, false) == kBNMax && block_n(4, true) == kBN && block_n(2, false) == kBN && block_m(4) <= kBNMax, "tile geometry");
  for (int r0 = 0; r0 < kBNMax; r0 += 16)
    for (int kk = 0; kk < 2; ++kk)
      for (int m = 0; m < 4; ++m) {
        std::vector<uint32_t> a, b;
        for (int l = 8 * m; l < 8 * m + 8; ++l) a.push_back(a_fragment(r0, kk, l)), b.push_back(b_fragment(r0, kk, l));
        check_conflict_free(lab::format("A fragment rows %d k16 %d matrix %d", r0, kk, m).c_str(), a);
        check_conflict_free(lab::format("B fragment rows %d k16 %d matrix %d", r0, kk, m).c_str(), b);
      }
  // The kernel adds 16 rows of bytes to reach the next fragment: the swizzle must repeat so.
  for (int r0 = 0; r0 + 16 < kBNMax; r0 += 16)
    for (int kk = 0; kk < 2; ++kk)
      for (int l = 0; l < 32; ++l)
        LAB_CHECK(a_fragment(r0 + 16, kk, l) == a_fragment(r0, kk, l) + 16 * kRowBytes &&
                      b_fragment(r0 + 16, kk, l) == b_fragment(r0, kk, l) + 16 * kRowBytes,
                  "the swizzle does not repeat every 16 rows (rows %d, k16 %d, lane %d)", r0, kk, l);
  // The stores: thread id writes chunk id & 3 of row id >> 2 (16 bytes); 8 threads per wavefront.
  for (int id0 = 0; id0 < kBNMax * 4; id0 += 8) {
    std::vector<uint32_t> s;
    for (int id = id0; id < id0 + 8; ++id) s.push_back(swizzle(id >> 2, id & 3));
    check_conflict_free(lab::format("tile store threads %d..%d", id0, id0 + 7).c_str(), s);
  }
  // Unswizzled, the same A fragment would conflict: the check can fail.
  std::vector<uint32_t> plain;
  for (int l = 0; l < 8; ++l) plain.push_back(uint32_t(l * kRowBytes));
  std::set<uint32_t> g;
  for (uint32_t p : plain) g.insert((p / 16) % 8);
  LAB_CHECK(g.size() == 2, "the unswizzled layout was expected to put 8 rows in 2 bank groups, got %zu", g.size());
}

LAB_TEST("matmul_bf16: the wgmma tile's W stage: each copy's place is 16 x its number, every (row, piece) once, in wgmma's core-matrix layout") {
  using namespace gptoss::cuda::gemm;
  std::vector<int> seen(256 * 4, 0);
  for (int id = 0; id < 256 * 4; ++id) {
    const int r = w_row(id), c = w_piece(id);
    LAB_CHECK(r >= 0 && r < 256 && c >= 0 && c < 4, "copy %d: row %d piece %d", id, r, c);
    LAB_CHECK(w_core(r, c) == uint32_t(16 * id), "copy %d: row %d piece %d at %u, not %d", id, r, c, w_core(r, c), 16 * id);
    ++seen[r * 4 + c];
    // the layout wgmma reads through (LBO 128, SBO 512): k half h of 16-k chunk c / 2 of row r
    LAB_CHECK(w_core(r, c) == uint32_t((c >> 1) * 256 + (c & 1) * 128 + (r >> 3) * 512 + (r & 7) * 16), "row %d piece %d", r, c);
  }
  for (int i = 0; i < 256 * 4; ++i) LAB_CHECK(seen[i] == 1, "row %d piece %d filled %d times", i / 4, i % 4, seen[i]);
  // 16-byte stores: each 8-copy phase of a warp lands in 8 distinct 16-byte bank groups
  for (int p0 = 0; p0 < 256 * 4; p0 += 8) {
    std::vector<uint32_t> a;
    for (int id = p0; id < p0 + 8; ++id) a.push_back(w_core(w_row(id), w_piece(id)));
    check_conflict_free("wgmma W fill", a);
  }
}

LAB_TEST("matmul_bf16: GEMM matches CPU at K 2880 for 33 tokens and 127 rows, and 127 tokens x 136 rows (128-token tiles)") {
  if (!lab::quick()) check({33, 127, 2880, 2880, 127, true, false}, 31, false);
  if (!lab::quick()) check({127, 511, 2880, 2880, 511, true, false}, 32, false);
  check({127, 136, 96, 96, 136, true, false}, 33);
}

LAB_TEST("matmul_bf16: GEMM matches CPU for 1 token (32-token tiles) at K 2880 and 511 rows, and 33 tokens in 32-token tiles") {
  if (!lab::quick()) check({1, 40, 2880, 2880, 40, true, false}, 34, false);
  check({1, 511, 64, 64, 511, true, false}, 35);
  Case c{33, 72, 64, 64, 72, true, false};
  c.tile_m = 32;  // two token tiles, the second holding one token
  check(c, 36);
}

LAB_TEST("matmul_bf16: GEMM matches CPU at the QKV projection (5120 x 2880, bias), 16 tokens") {
  if (!lab::quick()) check({16, 5120, 2880, 2880, 5120, true, false}, 37, false);
  check({16, 5120, 64, 64, 5120, true, false}, 38, false);
  check({16, 256, 64, 64, 256, true, false}, 38);
}

LAB_TEST("matmul_bf16: GEMM matches CPU at the attention output's K (4096) adding into a padded residual") {
  if (!lab::quick()) check({9, 40, 4096, 4096, 2880, true, true}, 39, false);
  if (!lab::quick()) check({40, 2880, 4096, 4096, 2880, true, true}, 40, false);
  check({130, 40, 128, 132, 44, true, true}, 41);  // 2 token tiles (the second 2 rows), padded x rows
}

LAB_TEST("matmul_bf16: GEMM matches CPU on the unembedding's logit rows picked by a row list (no bias)") {
  Case c{9, 200, 2880, 2880, 200, false, false};
  c.rows = {39, 0, 17, 3, 38, 21, 22, 9, 30};
  c.x_rows = 40;
  if (!lab::quick()) check(c, 42, false);
  Case s{5, 200, 64, 68, 201, false, false};
  s.rows = {7, 1, 6, 6, 0};
  s.x_rows = 8;
  check(s, 43);
}

LAB_TEST("matmul_bf16: GEMM matches CPU with a K tail (K % 32 == 8) and K below one tile") {
  check({20, 130, 264, 264, 130, true, false}, 44);
  check({3, 17, 8, 8, 17, true, true}, 45);
}

LAB_TEST("matmul_bf16: wide GEMM tile (128 tokens x 256 rows, the default mode from 65 tokens) at the prefill's shapes") {
  // Small siblings, every schedule, each on mma.sync and wgmma: 2 token tiles (the second 2 rows)
  // x 2 ragged row tiles (300: the second 44 rows), padded x and y rows, the residual add; split k
  // (10 k tiles in 4, 4, 2); the rule's 2 splits of 2 x 2 tiles at K 512.
  check({130, 300, 96, 100, 303, true, true}, 90);
  // 11 k tiles, the last of 8 k: past wgmma's 8 stages (refilled), and an odd count (its steps go
  // in pairs: the last adds zeros).
  check({130, 264, 328, 328, 264, true, false}, 99);
  Case s{200, 520, 320, 320, 520, true, false};
  s.k_splits = 3;
  check(s, 91);
  Case r{129, 264, 512, 516, 264, false, true};
  r.k_splits = 0;  // the rule's 2
  check(r, 92);
  if (lab::quick()) return;
  // Further shapes at a small K, once (forward schedule): 391 tokens (4 token tiles, the last 7
  // rows) over the attention output's 2880 rows (11 wide tiles and one of 64 rows) unsplit, adding
  // into the residual; a tall ragged N (8200: 32 tiles and one of 8 rows) on logit rows picked by
  // a row list; the fp32 mode's halves at 256 tokens (the narrow tile; the rule's 4 splits).
  check({391, 2880, 512, 512, 2880, true, true}, 95, false);
  Case u{129, 8200, 64, 64, 8200, false, false};
  for (int t = 0; t < 129; ++t) u.rows.push_back((t * 37) % 200);
  u.x_rows = 200;
  check(u, 97, false);
  Case f{256, 520, 1024, 1024, 520, true, true};
  f.split = true;
  f.k_splits = 0;
  LAB_CHECK(gptoss::matmul_bf16_gemm_k_splits_cuda(256, 520, 1024, 0, true) == 4, "the fp32 mode's split rule moved");
  check(f, 98, false);
  // The real shapes, once (about 100 s here): QKV at 128 tokens (the rule's 6 splits of 15 k
  // tiles) and the attention output at 256 (the rule's 5 splits, the last of 24 k tiles, adding
  // into the residual). (127 x 511 x 2880 above runs the wide tile unsplit at K 2880.)
  Case q{128, 5120, 2880, 2880, 5120, true, false};
  q.k_splits = 0;
  check(q, 93, false);
  Case o{256, 2880, 4096, 4096, 2880, true, true};
  o.k_splits = 0;
  check(o, 94, false);
}

LAB_TEST("matmul_bf16: split GEMM (x = hi + lo, the fp32 mode) is within 2^-16 of the CPU") {
  Case c{20, 72, 2880, 2880, 72, true, false};
  c.split = true;
  if (!lab::quick()) check(c, 46, false);
  Case s{20, 72, 96, 96, 72, true, true};
  s.split = true;
  check(s, 47);
  s.tile_m = 128;
  check(s, 48);
}

LAB_TEST("matmul_bf16: split-k GEMM matches CPU for batched decode's 3 to 64 tokens (K 2880) and discards its partials from L2 where lines fit a tile (N 192, 256)") {
  // 2 tiles of 128 rows (the second 72); 90 k tiles in 3 splits of 30, or 4 of 23 (the last 21).
  for (int T : {3, 5, 9, 16, 33, 64}) {
    Case c{T, 200, 2880, 2880, 200, true, false};
    c.k_splits = T == 33 ? 4 : 3;
    if (!lab::quick() || T == 9) check(c, 60 + T, !lab::quick() && T <= 16);
  }
  // The same paths at a small K, every schedule: 5 k tiles in splits of 2, 2, 1; 64-token tiles.
  // N 200 keeps its partials (a 128-byte line would straddle two tiles' columns); N 192 discards
  // every line after its last read, so a line dropped before its warp has read it reads NaN.
  for (int N : {200, 192})
    for (int T : {5, 33, 64}) {
      Case c{T, N, 160, 164, 203, true, T == 33};
      c.k_splits = 3;
      check(c, 70 + T + N);
    }
  // 129 tokens: two lines a row per warp in the wide tile (64 columns), one in the fp32 mode's.
  for (bool split : {false, true}) {
    Case c{129, 256, 160, 160, 256, true, split};
    c.split = split;
    c.k_splits = 3;
    check(c, 75 + split);
  }
}

LAB_TEST("matmul_bf16: split-k GEMM at the rule's splits: QKV (5120 x 2880) and the attention output (2880 x 4096) at 64 tokens") {
  // 128-token tiles: default mode wide (256 rows; the count rounded down), fp32 mode 128 rows.
  LAB_CHECK(gptoss::matmul_bf16_gemm_k_splits_cuda(64, 5120, 2880) == 4 && gptoss::matmul_bf16_gemm_k_splits_cuda(9, 5120, 2880) == 4 &&
                gptoss::matmul_bf16_gemm_k_splits_cuda(64, 2880, 4096) == 6 && gptoss::matmul_bf16_gemm_k_splits_cuda(256, 5120, 2880) == 3 &&
                gptoss::matmul_bf16_gemm_k_splits_cuda(256, 2880, 4096) == 5 && gptoss::matmul_bf16_gemm_k_splits_cuda(512, 2880, 4096) == 2 &&
                gptoss::matmul_bf16_gemm_k_splits_cuda(128, 5120, 2880) == 6 && gptoss::matmul_bf16_gemm_k_splits_cuda(640, 2880, 4096) == 2 &&
                gptoss::matmul_bf16_gemm_k_splits_cuda(768, 2880, 4096) == 1 &&
                gptoss::matmul_bf16_gemm_k_splits_cuda(256, 5120, 2880, 0, true) == 1 &&
                gptoss::matmul_bf16_gemm_k_splits_cuda(256, 2880, 4096, 0, true) == 3 &&
                gptoss::matmul_bf16_gemm_k_splits_cuda(64, 5120, 2880, 0, true) == 4 &&
                gptoss::matmul_bf16_gemm_k_splits_cuda(512, 5120, 2880) == 1 && gptoss::matmul_bf16_gemm_k_splits_cuda(8, 201088, 2880) == 1 &&
                gptoss::matmul_bf16_gemm_k_splits_cuda(16, 32, 2880) == 10 && gptoss::matmul_bf16_gemm_k_splits_cuda(16, 200, 160) == 1,
            "the split rule moved: update this test, decode-roofline.mjs and the lab.json launches");
  // The same shapes on an A100's 108 SMs (the backend passes the device's count): at most 54 tiles
  // split, toward 108 blocks (the wide tile's count rounded down: one round of blocks there).
  auto a100 = [](int T, int N, int K, bool split_x = false) { return gptoss::matmul_bf16_gemm_k_splits_cuda(T, N, K, 0, split_x, 108); };
  LAB_CHECK(a100(64, 5120, 2880) == 3 && a100(9, 5120, 2880) == 3 && a100(64, 2880, 4096) == 5 && a100(256, 5120, 2880) == 2 &&
                a100(256, 2880, 4096) == 4 && a100(512, 2880, 4096) == 2 && a100(128, 5120, 2880) == 5 && a100(640, 2880, 4096) == 1 &&
                a100(256, 5120, 2880, true) == 1 && a100(256, 2880, 4096, true) == 3 && a100(64, 5120, 2880, true) == 3 &&
                a100(512, 5120, 2880) == 1 && a100(16, 32, 2880) == 10 && a100(16, 200, 160) == 1,
            "the split rule at 108 SMs moved: update this test, the header's comment and roofline-model.mjs");
  LAB_CHECK(gptoss::matmul_bf16_gemm_k_splits_cuda(64, 5120, 2880, 0, false, 0) == 1 &&
                gptoss::matmul_bf16_gemm_k_splits_cuda(16, 32, 2880, 0, false, 1) == 1 &&
                gptoss::matmul_bf16_gemm_k_splits_cuda(16, 32, 2880, 0, false, 2) == 2,
            "the split rule at 0, 1 or 2 SMs");
  // The scratch: the most partials of any step up to max_T (the attention output's at 108 SMs: 128
  // tokens, 12 wide tiles x 9 splits, more than 256 tokens' 24 x 4).
  LAB_CHECK(gptoss::matmul_bf16_gemm_scratch_cuda(64, 5120, 2880) == size_t(4) * 64 * 5120 * 4 &&
                gptoss::matmul_bf16_gemm_scratch_cuda(64, 5120, 2880, 108) == size_t(3) * 64 * 5120 * 4 &&
                gptoss::matmul_bf16_gemm_scratch_cuda(256, 2880, 4096, 108) == size_t(9) * 128 * 2880 * 4 &&
                gptoss::matmul_bf16_gemm_scratch_cuda(1, 201088, 2880) == 0,
            "the split rule's scratch moved");
  Case q{64, 5120, 2880, 2880, 5120, true, false};
  q.k_splits = 0;  // the rule's 4
  if (!lab::quick()) check(q, 80, false);
  Case o{64, 2880, 4096, 4096, 2880, true, true};
  o.k_splits = 0;  // the rule's 6 (128 k tiles: 5 of 22, the last 18)
  if (!lab::quick()) check(o, 81, false);
  Case r{16, 32, 2880, 2880, 32, true, false};
  r.k_splits = 0;  // the router's one tile: 10 splits of 9 k tiles
  check(r, 82, !lab::quick());
  // The workspace's SMs steer the rule (tickets of sms / 2): 129 x 264 x 1024 is 2 x 2 wide tiles of
  // 32 k tiles, split 4 ways toward 132 blocks, 3 toward 12 (6 tickets), 2 toward 8, unsplit at 6.
  for (int sms : {132, 12, 8, 6}) {
    Case w{129, 264, 1024, 1024, 264, true, sms == 12};
    w.k_splits = 0;
    w.sms = sms;
    LAB_CHECK(gptoss::matmul_bf16_gemm_k_splits_cuda(129, 264, 1024, 0, false, sms) == (sms == 132 ? 4 : sms == 12 ? 3 : sms == 8 ? 2 : 1),
              "129 x 264 x 1024 at %d SMs: %d splits", sms, gptoss::matmul_bf16_gemm_k_splits_cuda(129, 264, 1024, 0, false, sms));
    if (!lab::quick() || sms == 12) check(w, 86 + sms, sms == 12);
  }
}

LAB_TEST("matmul_bf16: split-k GEMM in the fp32 mode's halves (x = hi + lo) is within 2^-16 of the CPU") {
  Case c{20, 72, 2880, 2880, 72, true, false};
  c.split = true;
  c.k_splits = 5;
  if (!lab::quick()) check(c, 83, false);
  Case s{40, 136, 256, 256, 136, true, true};
  s.split = true;
  s.k_splits = 2;  // 64-token tile
  check(s, 84);
}

LAB_TEST("matmul_bf16: a token's split-k GEMM output is bit-identical alone and among 64 (same splits, 32- and 64-token tiles)") {
  const int T = 64, N = 136, K = 256;
  lab::Rng r(85);
  std::vector<float> x(size_t(T) * K);
  for (auto& v : x) v = r.uniform(-2.f, 2.f);
  std::vector<uint16_t> w(size_t(N) * K), b(N);
  for (auto& v : w) v = lab::f32_to_bf16(r.uniform(-0.5f, 0.5f));
  for (auto& v : b) v = lab::f32_to_bf16(r.uniform(-1.f, 1.f));
  lab::DeviceBuf<float> dx(x), dall(size_t(T) * N), d1(N), dpart(size_t(2) * T * N);
  lab::DeviceBuf<uint16_t> dw(w), db(b);
  lab::DeviceBuf<unsigned> dtickets(gptoss::kMatmulBf16GemmMaxTiles);
  cudaMemset(dtickets.p, 0, dtickets.n * sizeof(unsigned));
  for (bool split : {false, true}) {
    gptoss::MatmulBf16GemmOptions o;
    o.split_x = split;
    o.k_splits = 2;
    o.ws = {dpart.p, dpart.n * sizeof(float), dtickets.p};
    gptoss::matmul_bf16_gemm_cuda({dx.p, K, dw.p, db.p, dall.p, N, T, N, K, false, nullptr}, o, nullptr);
    const std::vector<float> all = dall.download();
    for (int t : {0, 37, 63}) {
      gptoss::matmul_bf16_gemm_cuda({dx.p + t * K, K, dw.p, db.p, d1.p, N, 1, N, K, false, nullptr}, o, nullptr);
      const std::vector<float> one = d1.download();
      LAB_CHECK(std::memcmp(one.data(), all.data() + size_t(t) * N, N * 4) == 0, "token %d differs alone and among %d%s", t, T,
                split ? " (split)" : "");
    }
  }
}

LAB_TEST("matmul_bf16: a token's GEMM output is bit-identical alone (32-token tile) and among 100 (128-token tiles)") {
  const int T = 100, N = 136, K = 128;
  lab::Rng r(48);
  std::vector<float> x(size_t(T) * K);
  for (auto& v : x) v = r.uniform(-2.f, 2.f);
  std::vector<uint16_t> w(size_t(N) * K), b(N);
  for (auto& v : w) v = lab::f32_to_bf16(r.uniform(-0.5f, 0.5f));
  for (auto& v : b) v = lab::f32_to_bf16(r.uniform(-1.f, 1.f));
  lab::DeviceBuf<float> dx(x), dall(size_t(T) * N), d1(N);
  lab::DeviceBuf<uint16_t> dw(w), db(b);
  for (bool split : {false, true}) {
    gptoss::MatmulBf16GemmOptions o;
    o.split_x = split;
    gptoss::matmul_bf16_gemm_cuda({dx.p, K, dw.p, db.p, dall.p, N, T, N, K, false, nullptr}, o, nullptr);
    const std::vector<float> all = dall.download();
    for (int t : {0, 63, 99}) {
      gptoss::matmul_bf16_gemm_cuda({dx.p + t * K, K, dw.p, db.p, d1.p, N, 1, N, K, false, nullptr}, o, nullptr);
      const std::vector<float> one = d1.download();
      LAB_CHECK(std::memcmp(one.data(), all.data() + size_t(t) * N, N * 4) == 0, "token %d differs alone and among %d%s", t, T,
                split ? " (split)" : "");
    }
  }
}

LAB_TEST("matmul_bf16: the GEMV up to 8 tokens (15 in fp32 mode, 7 for the unembedding), the GEMM past there (split in fp32 mode), the GEMV for shapes the GEMM refuses") {
  using gptoss::MatmulBf16Kernel;
  std::vector<float> x(8 * 64 + 4), y(64);
  std::vector<uint16_t> w(64 + 8);
  float* xa = x.data();
  while (!gptoss::cuda::aligned(xa, 16)) ++xa;
  uint16_t* wa = w.data();
  while (!gptoss::cuda::aligned(wa, 16)) ++wa;
  // The rule only looks at the arguments: nothing is launched here.
  auto kernel = [&](int T, int N, int K, int64_t ldx, bool fp32, float* xp) {
    return gptoss::matmul_bf16_kernel_cuda({xp, ldx, wa, nullptr, y.data(), N, T, N, K, false, nullptr}, fp32);
  };
  LAB_CHECK(gptoss::kMatmulBf16GemmFromT == 9 && gptoss::kMatmulBf16GemmFromTExact == 16 && gptoss::kMatmulBf16GemmFromTWide == 8 &&
                gptoss::kMatmulBf16WideN == 32768,
            "the rule's thresholds moved: update this test, decode-roofline.mjs and the lab.json launches");
  for (int T = 1; T < 9; ++T) LAB_CHECK(kernel(T, 5120, 64, 64, false, xa) == MatmulBf16Kernel::kGemv, "QKV, T %d: not the GEMV", T);
  for (int T = 1; T < 16; ++T) LAB_CHECK(kernel(T, 5120, 64, 64, true, xa) == MatmulBf16Kernel::kGemv, "QKV, T %d, fp32 mode: not the GEMV", T);
  LAB_CHECK(kernel(9, 5120, 64, 64, false, xa) == MatmulBf16Kernel::kGemmBf16, "QKV, T 9: not the bf16 GEMM");
  LAB_CHECK(kernel(16, 5120, 64, 64, true, xa) == MatmulBf16Kernel::kGemmSplitBf16, "QKV, T 16, fp32 mode: not the split GEMM");
  LAB_CHECK(kernel(7, 201088, 64, 64, false, xa) == MatmulBf16Kernel::kGemv, "unembedding, T 7: not the GEMV");
  LAB_CHECK(kernel(8, 201088, 64, 64, false, xa) == MatmulBf16Kernel::kGemmBf16, "unembedding, T 8: not the GEMM");
  LAB_CHECK(kernel(16, 64, 60, 64, false, xa) == MatmulBf16Kernel::kGemv, "K 60: not the GEMV");
  LAB_CHECK(kernel(16, 64, 64, 66, false, xa) == MatmulBf16Kernel::kGemv, "ldx 66: not the GEMV");
  LAB_CHECK(kernel(16, 64, 64, 64, false, xa + 1) == MatmulBf16Kernel::kGemv, "unaligned x: not the GEMV");
  LAB_CHECK(gptoss::matmul_bf16_gemm_tile_m_cuda(32) == 32 && gptoss::matmul_bf16_gemm_tile_m_cuda(33) == 64 &&
                gptoss::matmul_bf16_gemm_tile_m_cuda(64) == 64 && gptoss::matmul_bf16_gemm_tile_m_cuda(65) == 128,
            "the token-tile rule moved");

  // Through matmul_bf16_select_cuda (with a workspace: split k where the rule splits): both sides
  // of each threshold against the CPU op.
  const int N = 40, K = 512;
  lab::DeviceBuf<float> dpart(gptoss::matmul_bf16_gemm_scratch_cuda(16, N, K) / 4);
  lab::DeviceBuf<unsigned> dtickets(gptoss::kMatmulBf16GemmMaxTiles);
  cudaMemset(dtickets.p, 0, dtickets.n * sizeof(unsigned));
  LAB_CHECK(gptoss::matmul_bf16_gemm_k_splits_cuda(9, N, K) == 2, "the rule no longer splits 9 x 40 x 512 in two");
  for (int T : {8, 9, 15, 16}) {
    lab::Rng r(49 + T);
    std::vector<float> hx(size_t(T) * K);
    for (auto& v : hx) v = r.uniform(-2.f, 2.f);
    std::vector<uint16_t> hw(size_t(N) * K);
    for (auto& v : hw) v = lab::f32_to_bf16(r.uniform(-0.5f, 0.5f));
    std::vector<float> want(size_t(T) * N), scratch(size_t(T) * K + 16);
    gptoss::matmul_bf16_cpu({hx.data(), K, hw.data(), nullptr, want.data(), N, T, N, K, false, scratch.data()});
    lab::DeviceBuf<float> dx(hx), dy(want.size());
    lab::DeviceBuf<uint16_t> dw(hw);
    for (bool fp32 : {false, true}) {
      cudaMemset(dy.p, 0xff, dy.n * 4);
      gptoss::matmul_bf16_select_cuda({dx.p, K, dw.p, nullptr, dy.p, N, T, N, K, false, nullptr}, fp32, nullptr,
                                      {dpart.p, dpart.n * sizeof(float), dtickets.p});
      const std::vector<float> got = dy.download();
      const bool gemv = T < (fp32 ? 16 : 9);
      const double tol = gemv ? 1e-5 : contract(K, fp32, gptoss::matmul_bf16_gemm_k_splits_cuda(T, N, K));
      for (int t = 0; t < T; ++t)
        for (int n = 0; n < N; ++n) {
          double S = 0;
          for (int k = 0; k < K; ++k) S += std::fabs(double(hx[t * K + k]) * lab::bf16_to_f32(hw[n * K + k]));
          const double e = std::fabs(double(got[t * N + n]) - want[t * N + n]) / (S + 1e-30);
          LAB_CHECK(e <= tol, "T %d%s: y[%d, %d] = %.9g, CPU %.9g: error %.3g S", T, fp32 ? " fp32" : "", t, n, got[t * N + n],
                    want[t * N + n], e);
        }
    }
  }
}

LAB_TEST("matmul_bf16: GEMM refuses shapes it does not take with ERR_INVALID_ARGUMENT before any launch") {
  std::vector<float> x(64 + 4), y(64);
  std::vector<uint16_t> w(64 + 8);
  float* xa = x.data();
  while (!gptoss::cuda::aligned(xa, 16)) ++xa;
  uint16_t* wa = w.data();
  while (!gptoss::cuda::aligned(wa, 16)) ++wa;
  auto code = [&](gptoss::MatmulBf16Args a, int tile_m = 0) {
    gptoss::MatmulBf16GemmOptions o;
    o.tile_m = tile_m;
    try {
      gptoss::matmul_bf16_gemm_cuda(a, o, nullptr);
    } catch (const gptoss::Error& e) {
      return e.code;
    }
    return std::string("none");
  };
  LAB_CHECK(code({xa, 12, wa, nullptr, y.data(), 4, 1, 4, 12, false, nullptr}) == "ERR_INVALID_ARGUMENT", "K 12 accepted");
  LAB_CHECK(code({xa, 18, wa, nullptr, y.data(), 4, 1, 2, 16, false, nullptr}) == "ERR_INVALID_ARGUMENT", "ldx 18 accepted");
  LAB_CHECK(code({xa + 1, 16, wa, nullptr, y.data(), 4, 1, 4, 16, false, nullptr}) == "ERR_INVALID_ARGUMENT", "unaligned x accepted");
  LAB_CHECK(code({xa, 8, wa, nullptr, y.data(), 4, 1, 4, 16, false, nullptr}) == "ERR_INVALID_ARGUMENT", "ldx < K accepted");
  LAB_CHECK(code({xa, 16, wa, nullptr, y.data(), 4, 1, 4, 16, false, nullptr}, 48) == "ERR_INVALID_ARGUMENT", "tile_m 48 accepted");
  // Split k: more than one split without a workspace, or partials too small for k_splits x T x N.
  std::vector<float> part(64);
  std::vector<unsigned> tickets(gptoss::kMatmulBf16GemmMaxTiles);
  auto split_code = [&](int k_splits, gptoss::MatmulBf16Workspace ws) {
    gptoss::MatmulBf16GemmOptions o;
    o.k_splits = k_splits;
    o.ws = ws;
    try {
      gptoss::matmul_bf16_gemm_cuda({xa, 512, wa, nullptr, y.data(), 4, 1, 4, 512, false, nullptr}, o, nullptr);
    } catch (const gptoss::Error& e) {
      return e.code;
    }
    return std::string("none");
  };
  LAB_CHECK(split_code(2, {}) == "ERR_INVALID_ARGUMENT", "2 k splits without a workspace accepted");
  LAB_CHECK(split_code(2, {part.data(), 4 * 4, tickets.data()}) == "ERR_INVALID_ARGUMENT", "partials of 4 floats for 2 x 1 x 4 accepted");
  // The workspace's SMs: at least 1; its tickets (sms / 2) bound the tiles a split launch may have.
  LAB_CHECK(split_code(0, {part.data(), part.size() * 4, tickets.data(), 0}) == "ERR_INVALID_ARGUMENT", "a workspace of 0 SMs accepted");
  LAB_CHECK(split_code(2, {part.data(), part.size() * 4, tickets.data(), 1}) == "ERR_INVALID_ARGUMENT",
            "2 k splits of 1 tile with 0 tickets (1 SM) accepted");
}
