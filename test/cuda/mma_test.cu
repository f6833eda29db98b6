// The tensor-core wrappers (kernels/cuda/mma.cuh) against an independent statement of their
// layouts, written here from the documentation, not from the emulator:
//   mma.m16n8k16 bf16 -> f32: CuTe's MMA_Traits<SM80_16x8x16_F32BF16BF16F32_TN>
//   (cute/atom/mma_traits_sm80.hpp), thread-value layouts into column-major (M,K), (N,K), (M,N):
//     ALayout = ((4,8),(2,2,2)) : ((32,1),(16,8,128))   A is 16x16 (M x K)
//     BLayout = ((4,8),(2,2))   : ((16,1),(8,64))       B is 8x16  (N x K)
//     CLayout = ((4,8),(2,2))   : ((32,1),(16,8))       C is 16x8  (M x N)
//   thread t = (t % 4, t / 4) in the (4,8) mode; value v = (v % 2, v / 2 % 2, v / 4); value v of A
//   is half v % 2 of register v / 2 (values pack two bf16 per 32-bit register in order).
//   ldmatrix.m8n8.x{1,2,4}[.trans].b16: PTX ISA ("ldmatrix", fragment figure) as restated by TVM's
//   tile-op docs: lane 8 * matrix + row provides that row's 16-byte-aligned shared address;
//   register word (matrix, row, word) belongs to lane 4 * row + word, i.e. lane l receives in
//   register i the two b16 at (row l / 4, columns 2 (l % 4), 2 (l % 4) + 1) of matrix i; .trans
//   loads the matrix column-major: lane l receives (rows 2 (l % 4), 2 (l % 4) + 1, column l / 4).
// Emulated mma rounds once from an exact sum and a tensor core rounds internally: a tolerance.
#include "kernels/cuda/mma.cuh"
#include "test/cuda/harness.h"

namespace {
using namespace gptoss::cuda;

// CuTe's layouts, evaluated: (thread, value) -> (row, col) of the operand.
void cute_a(int t, int v, int& m, int& k) {
  const int idx = (t % 4) * 32 + (t / 4) * 1 + (v % 2) * 16 + (v / 2 % 2) * 8 + (v / 4) * 128;
  m = idx % 16, k = idx / 16;
}
void cute_b(int t, int v, int& n, int& k) {
  const int idx = (t % 4) * 16 + (t / 4) * 1 + (v % 2) * 8 + (v / 2) * 64;
  n = idx % 8, k = idx / 8;
}
void cute_c(int t, int v, int& m, int& n) {
  const int idx = (t % 4) * 32 + (t / 4) * 1 + (v % 2) * 16 + (v / 2) * 8;
  m = idx % 16, n = idx / 16;
}

struct Frag {
  uint32_t a[32][4], b[32][2];
  float c[32][4], d[32][4];
};

__global__ void mma_kernel(Frag* f) {
  const int l = threadIdx.x;
  mma_m16n8k16_bf16(f->d[l], f->a[l], f->b[l], f->c[l]);
}

// A [16][16] row-major bf16, B [16][8] (k, n) bf16, both in global; ldmatrix x4 for A, x2.trans for
// B (stored k-major, as a row-major [K][N] weight tile), then one mma; D [16][8] f32.
__global__ void ldmatrix_mma_kernel(const uint16_t* A, const uint16_t* B, float* D) {
  __shared__ __align__(16) uint16_t sa[16 * 24];  // padded rows of 48 bytes (16-byte multiples)
  __shared__ __align__(16) uint16_t sb[16 * 8];
  const int l = threadIdx.x;
  for (int i = l; i < 256; i += 32) sa[(i / 16) * 24 + i % 16] = A[i];
  for (int i = l; i < 128; i += 32) sb[i] = B[i];
  __syncwarp();
  uint32_t a[4], b[2];
  ldmatrix<4, false>(a, sa + ((l % 8) + 8 * ((l / 8) % 2)) * 24 + 8 * (l / 16));
  ldmatrix<2, true>(b, sb + (l % 16) * 8);
  const float c[4] = {0, 0, 0, 0};
  float d[4];
  mma_m16n8k16_bf16(d, a, b, c);
  const int g = l / 4, t = l % 4;
  D[g * 8 + 2 * t] = d[0];
  D[g * 8 + 2 * t + 1] = d[1];
  D[(g + 8) * 8 + 2 * t] = d[2];
  D[(g + 8) * 8 + 2 * t + 1] = d[3];
}

template <int kNum, bool kTrans>
__global__ void ldmatrix_kernel(const uint16_t* M, uint32_t* out) {
  __shared__ __align__(16) uint16_t s[4 * 8 * 16];  // 4 matrices, rows 32 bytes apart (only 16 used)
  const int l = threadIdx.x;
  for (int i = l; i < 4 * 8 * 16; i += 32) s[i] = M[i];
  __syncwarp();
  uint32_t r[kNum];
  ldmatrix<kNum, kTrans>(r, s + ((l / 8) % kNum * 8 + l % 8) * 16);
  for (int i = 0; i < kNum; ++i) out[l * 4 + i] = r[i];
}

template <int kNum, bool kTrans>
void check_ldmatrix() {
  std::vector<uint16_t> M(4 * 8 * 16);
  for (size_t i = 0; i < M.size(); ++i) M[i] = uint16_t(i);  // value = position, so any mix-up shows
  lab::DeviceBuf<uint16_t> dm(M);
  lab::DeviceBuf<uint32_t> dout(32 * 4);
  lab::for_each_schedule([&] {
    GPTOSS_LAUNCH((ldmatrix_kernel<kNum, kTrans>), dim3(1), dim3(32), 0, nullptr, dm.p, dout.p);
    const std::vector<uint32_t> out = dout.download();
    for (int l = 0; l < 32; ++l)
      for (int i = 0; i < kNum; ++i)
        for (int j = 0; j < 2; ++j) {
          // the statement: matrix i, row l / 4, column 2 (l % 4) + j (rows/columns swapped with .trans)
          const int row = kTrans ? 2 * (l % 4) + j : l / 4, col = kTrans ? l / 4 : 2 * (l % 4) + j;
          const uint32_t want = M[(i * 8 + row) * 16 + col];
          const uint32_t got = (out[l * 4 + i] >> (16 * j)) & 0xffff;
          LAB_CHECK(got == want, "ldmatrix x%d%s: lane %d register %d half %d holds %u, want %u", kNum,
                    kTrans ? ".trans" : "", l, i, j, got, want);
        }
  });
}
}  // namespace

LAB_TEST("mma: m16n8k16 bf16 fragments follow CuTe's SM80_16x8x16_F32BF16BF16F32_TN layouts") {
  lab::Rng r(11);
  float A[16][16], B[8][16], C[16][8];  // B as (N, K), as CuTe indexes it
  for (auto& row : A) for (float& v : row) v = lab::bf16_to_f32(lab::f32_to_bf16(r.uniform(-2, 2)));
  for (auto& row : B) for (float& v : row) v = lab::bf16_to_f32(lab::f32_to_bf16(r.uniform(-2, 2)));
  for (auto& row : C) for (float& v : row) v = r.uniform(-1, 1);
  std::vector<Frag> h(1);
  Frag& f = h[0];
  for (int t = 0; t < 32; ++t) {
    uint16_t av[8], bv[4];
    for (int v = 0; v < 8; ++v) { int m, k; cute_a(t, v, m, k); av[v] = lab::f32_to_bf16(A[m][k]); }
    for (int v = 0; v < 4; ++v) { int n, k; cute_b(t, v, n, k); bv[v] = lab::f32_to_bf16(B[n][k]); }
    for (int i = 0; i < 4; ++i) f.a[t][i] = av[2 * i] | (uint32_t(av[2 * i + 1]) << 16);
    for (int i = 0; i < 2; ++i) f.b[t][i] = bv[2 * i] | (uint32_t(bv[2 * i + 1]) << 16);
    for (int v = 0; v < 4; ++v) { int m, n; cute_c(t, v, m, n); f.c[t][v] = C[m][n]; }
  }
  lab::DeviceBuf<Frag> df(h);
  lab::for_each_schedule([&] {
    df.upload(h);
    GPTOSS_LAUNCH(mma_kernel, dim3(1), dim3(32), 0, nullptr, df.p);
    const Frag got = df.download()[0];
    for (int t = 0; t < 32; ++t)
      for (int v = 0; v < 4; ++v) {
        int m, n;
        cute_c(t, v, m, n);
        double want = C[m][n];
        for (int k = 0; k < 16; ++k) want += double(A[m][k]) * B[n][k];
        LAB_CHECK(std::fabs(got.d[t][v] - want) <= 1e-5 * (1 + std::fabs(want)), "D[%d][%d] (lane %d value %d) = %g, want %g", m,
                  n, t, v, got.d[t][v], want);
      }
  });
}
LAB_TEST("ldmatrix: x1, x2, x4 give each lane the PTX ISA's fragment") {
  check_ldmatrix<1, false>();
  check_ldmatrix<2, false>();
  check_ldmatrix<4, false>();
}
LAB_TEST("ldmatrix: .trans x1, x2, x4 give each lane the transposed fragment") {
  check_ldmatrix<1, true>();
  check_ldmatrix<2, true>();
  check_ldmatrix<4, true>();
}
LAB_TEST("mma: ldmatrix x4 (A) and x2.trans (k-major B) feed mma to give A x B") {
  lab::Rng r(12);
  std::vector<uint16_t> A(256), B(128);
  for (auto& v : A) v = lab::f32_to_bf16(r.uniform(-2, 2));
  for (auto& v : B) v = lab::f32_to_bf16(r.uniform(-2, 2));
  lab::DeviceBuf<uint16_t> da(A), db(B);
  lab::DeviceBuf<float> dd(128);
  lab::for_each_schedule([&] {
    GPTOSS_LAUNCH(ldmatrix_mma_kernel, dim3(1), dim3(32), 0, nullptr, da.p, db.p, dd.p);
    const std::vector<float> D = dd.download();
    for (int m = 0; m < 16; ++m)
      for (int n = 0; n < 8; ++n) {
        double want = 0;
        for (int k = 0; k < 16; ++k) want += double(lab::bf16_to_f32(A[m * 16 + k])) * lab::bf16_to_f32(B[k * 8 + n]);
        LAB_CHECK(std::fabs(D[m * 8 + n] - want) <= 1e-5 * (1 + std::fabs(want)), "D[%d][%d] = %g, want %g", m, n, D[m * 8 + n], want);
      }
  });
}

#if defined(GPTOSS_CUDA_EMU)
namespace {
__global__ void cp_async_kernel(const float* src, float* out) {
  __shared__ __align__(16) float s[12];
  if (threadIdx.x != 0) return;
  for (int g = 0; g < 3; ++g) {
    cp_async16(s + 4 * g, src + 4 * g);
    cp_async_commit();
  }
  out[0] = s[0], out[1] = s[4], out[2] = s[8];  // nothing waited for: all NaN
  cp_async_wait<2>();
  out[3] = s[0], out[4] = s[4], out[5] = s[8];  // the oldest group only
  cp_async_wait<0>();
  out[6] = s[0], out[7] = s[4], out[8] = s[8];
}
}  // namespace
LAB_TEST("cp.async: a destination reads NaN until its group is waited for (emulator semantics)") {
  std::vector<float> src(12);
  for (int i = 0; i < 12; ++i) src[i] = float(i + 1);
  lab::DeviceBuf<float> ds(src), dout(9);
  GPTOSS_LAUNCH(cp_async_kernel, dim3(1), dim3(32), 0, nullptr, ds.p, dout.p);
  const std::vector<float> o = dout.download();
  LAB_CHECK(std::isnan(o[0]) && std::isnan(o[1]) && std::isnan(o[2]), "read before any wait: %g %g %g", o[0], o[1], o[2]);
  LAB_CHECK(o[3] == 1 && std::isnan(o[4]) && std::isnan(o[5]), "after wait_group 2: %g %g %g", o[3], o[4], o[5]);
  LAB_CHECK(o[6] == 1 && o[7] == 5 && o[8] == 9, "after wait_group 0: %g %g %g", o[6], o[7], o[8]);
}
#endif

#if defined(GPTOSS_CUDA_EMU)
namespace {
// Thread i copies row i of a 64-row tile; warp 0 then reads rows 32..63 (warp 1's) by ldmatrix.
__global__ void ldmatrix_after_cp_async_kernel(const uint16_t* src, uint32_t* out, bool barrier) {
  __shared__ __align__(16) uint16_t s[64 * 8];
  const int t = threadIdx.x, l = t & 31;
  cp_async16(s + 8 * t, src + 8 * t);
  cp_async_commit();
  cp_async_wait<0>();  // this thread's row only
  if (barrier) __syncthreads();
  if (t >= 32) return;
  uint32_t r[4];
  ldmatrix<4, false>(r, s + 8 * (32 + l));
  for (int i = 0; i < 4; ++i) out[l * 4 + i] = r[i];
}
}  // namespace
LAB_TEST("ldmatrix: a row whose cp.async another warp has not waited for reads NaN (emulator semantics: read at arrival)") {
  std::vector<uint16_t> src(64 * 8);
  for (size_t i = 0; i < src.size(); ++i) src[i] = uint16_t(i);
  lab::DeviceBuf<uint16_t> ds(src);
  lab::DeviceBuf<uint32_t> dout(32 * 4);
  for (bool barrier : {false, true}) {
    GPTOSS_LAUNCH(ldmatrix_after_cp_async_kernel, dim3(1), dim3(64), 0, nullptr, ds.p, dout.p, barrier);  // forward schedule
    const std::vector<uint32_t> o = dout.download();
    for (int l = 0; l < 32; ++l) {
      const int row = 32 + l / 4, col = 2 * (l % 4);  // matrix 0: rows 32..39
      const uint32_t want = barrier ? src[row * 8 + col] | uint32_t(src[row * 8 + col + 1]) << 16 : 0xffffffffu;
      LAB_CHECK(o[l * 4] == want, "%s barrier: lane %d register 0 holds 0x%08x, want 0x%08x", barrier ? "with" : "without", l, o[l * 4],
                want);
    }
  }
}
#endif

#if defined(GPTOSS_CUDA_EMU)
namespace {
// Misuses the emulator must name (each is undefined behaviour on a GPU): ldmatrix rows from global
// memory, ldmatrix rows in shared memory that are not 16-byte aligned, cp.async into global memory.
enum Misuse { kLdmatrixGlobal, kLdmatrixMisaligned, kCpAsyncToGlobal };
__global__ void misuse_kernel(uint16_t* g, int misuse) {
  __shared__ __align__(16) uint16_t s[8 * 8 + 8];
  const int l = threadIdx.x;
  for (int i = l; i < 8 * 8 + 8; i += 32) s[i] = uint16_t(i);
  __syncwarp();
  uint32_t r[1] = {0};
  if (misuse == kLdmatrixGlobal) ldmatrix<1, false>(r, g + 8 * (l % 8));  // 16-byte aligned, but global
  if (misuse == kLdmatrixMisaligned) ldmatrix<1, false>(r, s + 4 + 8 * (l % 8));  // 8 bytes off
  if (misuse == kCpAsyncToGlobal) {
    cp_async16(g + 8 * l, s + 8 * (l % 8));
    cp_async_commit();
    cp_async_wait<0>();
  }
  g[l] = uint16_t(r[0]);
}
void expect_misuse(const char* what, int misuse, const char* must_contain) {
  lab::DeviceBuf<uint16_t> g(8 * 32);
  std::string msg = "no error";
  try {
    GPTOSS_LAUNCH(misuse_kernel, dim3(1), dim3(32), 0, nullptr, g.p, misuse);
    g.download();
  } catch (const std::exception& e) {
    msg = e.what();
  }
  LAB_CHECK(std::strstr(msg.c_str(), must_contain), "%s was not caught as '%s': %s", what, must_contain, msg.c_str());
  std::printf("      caught '%s': %s\n", what, msg.c_str());
}
}  // namespace
LAB_TEST("ldmatrix: rows in global memory are caught (emulator rule)") {
  expect_misuse("ldmatrix from global memory", kLdmatrixGlobal, "is not in shared memory");
}
LAB_TEST("ldmatrix: a shared row not 16-byte aligned is caught (emulator rule)") {
  expect_misuse("ldmatrix from a misaligned shared row", kLdmatrixMisaligned, "is not 16-byte aligned");
}
LAB_TEST("cp.async: a destination in global memory is caught (emulator rule)") {
  expect_misuse("cp.async into global memory", kCpAsyncToGlobal, "is not shared memory");
}
#endif

// ---- wgmma (sm_90a) ----
// The independent statement: CuTe's GMMA layouts (cute/atom/mma_traits_sm90_gmma.hpp), evaluated.
//   ALayout_64x16 = ((4,8,4),(2,2,2)) : ((128,1,16),(64,8,512)) into column-major (M = 64, K = 16);
//   CLayout_64xN  = ((4,8,4),(2,2,N/8)) : ((128,1,16),(64,8,512)) into column-major (M = 64, N);
//   value v of A is half v % 2 of register v / 2. B, K-major, no swizzle (make_gmma_desc,
//   Major::K, INTERLEAVE): ((8,n),(8,2)) : ((8,SBO),(1,LBO)) in bf16 elements, with SBO and LBO in
//   the descriptor as bytes.
namespace {
void cute_wg(int t, int v, int& m, int& j) {  // j: k of A, or n of C
  const int idx = (t % 4) * 128 + (t / 4 % 8) + (t / 32) * 16 + (v % 2) * 64 + (v / 2 % 2) * 8 + (v / 4) * 512;
  m = idx % 64, j = idx / 64;
}
size_t cute_b_k_major(int k, int n, size_t lbo, size_t sbo) {  // byte offset of B(k, n), k < 16
  return (n % 8) * 16 + (n / 8) * sbo + (k % 8) * 2 + (k / 8) * lbo;
}

// wgmma_m128n_k32_rs: A [128 x 32] (two m64 tiles t, two k16 chunks c: fragment a[c][t] from
// CuTe's layout of rows 64 t.., k 16 c..), B [32 x N] with chunk c at desc[c] (koff bytes apart);
// B's image is copied into dynamic shared memory as given.
template <int N>
__global__ void wgmma_kernel(const uint32_t* afrag, const uint16_t* bimg, int bwords, uint32_t lbo, uint32_t sbo, int koff,
                             float* out) {
  uint16_t* s = dynamic_shared<uint16_t>();
  const int t = threadIdx.x;
  for (int i = t; i < bwords; i += 128) s[i] = bimg[i];
  fence_proxy_async();  // the stores, before wgmma reads them (a no-op under the emulator)
  __syncthreads();
  float d[2][64];
  for (auto& row : d) for (float& v : row) v = 0.f;
  uint32_t a[2][2][4];
  for (int c = 0; c < 2; ++c)
    for (int tt = 0; tt < 2; ++tt)
      for (int i = 0; i < 4; ++i) a[c][tt][i] = afrag[((c * 2 + tt) * 128 + t) * 4 + i];
  const uint64_t d0 = wgmma_desc(s, lbo, sbo);
  const uint64_t desc[2] = {d0, d0 + uint64_t(koff >> 4)};
  wgmma_fence();
  wgmma_m128n_k32_rs(d, a, desc, N);
  wgmma_commit();
  wgmma_wait<0>();
  for (int tt = 0; tt < 2; ++tt)
    for (int i = 0; i < N / 2; ++i) out[(tt * 128 + t) * (N / 2) + i] = d[tt][i];
}

template <int N>
void check_wgmma(bool halves_apart) {
  lab::Rng r(13 + N);
  static float A[128][32], B[32][N];
  for (auto& row : A) for (float& v : row) v = lab::bf16_to_f32(lab::f32_to_bf16(r.uniform(-2, 2)));
  for (auto& row : B) for (float& v : row) v = lab::bf16_to_f32(lab::f32_to_bf16(r.uniform(-2, 2)));
  // Two B layouts, so that LBO and SBO cannot stand in for each other: 8 columns' two k halves
  // together (lbo 128, sbo 256), or every column's first halves, then every second half.
  const uint32_t lbo = halves_apart ? 16 * N : 128, sbo = halves_apart ? 128 : 256;
  const int koff = 32 * N;  // one k16 chunk of B
  std::vector<uint16_t> img(size_t(2 * koff) / 2, 0);
  for (int k = 0; k < 32; ++k)
    for (int n = 0; n < N; ++n) img[((k / 16) * koff + cute_b_k_major(k % 16, n, lbo, sbo)) / 2] = lab::f32_to_bf16(B[k][n]);
  std::vector<uint32_t> af(4 * 512);
  for (int c = 0; c < 2; ++c)
    for (int tt = 0; tt < 2; ++tt)
      for (int t = 0; t < 128; ++t)
        for (int i = 0; i < 4; ++i) {
          int m0, k0, m1, k1;
          cute_wg(t, 2 * i, m0, k0);
          cute_wg(t, 2 * i + 1, m1, k1);
          af[((c * 2 + tt) * 128 + t) * 4 + i] = lab::f32_to_bf16(A[64 * tt + m0][16 * c + k0]) |
                                                 uint32_t(lab::f32_to_bf16(A[64 * tt + m1][16 * c + k1])) << 16;
        }
  lab::DeviceBuf<uint32_t> da(af);
  lab::DeviceBuf<uint16_t> db(img);
  lab::DeviceBuf<float> dout(size_t(256) * N / 2);
  lab::for_each_schedule([&] {
    GPTOSS_LAUNCH(wgmma_kernel<N>, dim3(1), dim3(128), img.size() * 2, nullptr, da.p, db.p, int(img.size()), lbo, sbo, koff,
                  dout.p);
    const std::vector<float> D = dout.download();
    for (int tt = 0; tt < 2; ++tt)
      for (int t = 0; t < 128; ++t)
        for (int v = 0; v < N / 2; ++v) {
          int m, n;
          cute_wg(t, v, m, n);
          m += 64 * tt;
          double want = 0;
          for (int k = 0; k < 32; ++k) want += double(A[m][k]) * B[k][n];
          const float got = D[(tt * 128 + t) * (N / 2) + v];
          LAB_CHECK(std::fabs(got - want) <= 1e-5 * (1 + std::fabs(want)), "N %d (%s): D[%d][%d] (thread %d value %d) = %g, want %g", N,
                    halves_apart ? "halves apart" : "halves together", m, n, t, v, got, want);
        }
  });
}
}  // namespace
LAB_TEST("wgmma: m64nNk16 with A in registers and a no-swizzle K-major B follows CuTe's GMMA layouts and descriptor") {
  for (bool apart : {false, true}) {
    check_wgmma<16>(apart);
    check_wgmma<48>(apart);
    check_wgmma<64>(apart);
    check_wgmma<128>(apart);
  }
}

#if defined(GPTOSS_CUDA_EMU)
namespace {
// What the emulator makes of wgmma's asynchrony (each is a bug on a GPU that may pass there by
// timing): reading the accumulators before the wait, overwriting B before the wait, no fence, no
// wait at all, a warpgroup whose threads give different widths.
enum WgMisuse { kWgReadEarly, kWgOverwriteB, kWgNoFence, kWgNoWait, kWgDisagree };
__global__ void wgmma_misuse_kernel(float* out, int misuse) {
  uint16_t* s = dynamic_shared<uint16_t>();
  const int t = threadIdx.x;
  for (int i = t; i < 16 * 16; i += 128) s[i] = 0x3f80;  // B = 1
  fence_proxy_async();
  __syncthreads();
  float d[2][64];
  for (auto& row : d) for (float& v : row) v = 0.f;
  uint32_t a[2][2][4];
  for (auto& c : a) for (auto& tt : c) for (uint32_t& v : tt) v = 0x3f803f80u;  // A = 1
  const uint64_t d0 = wgmma_desc(s, 128, 256);
  const uint64_t desc[2] = {d0, d0};
  if (misuse != kWgNoFence) wgmma_fence();
  wgmma_m128n_k32_rs(d, a, desc, misuse == kWgDisagree && t >= 64 ? 32 : 16);
  wgmma_commit();
  out[t] = d[0][0];  // before the wait
  if (misuse == kWgOverwriteB) {
    for (int i = t; i < 16 * 16; i += 128) s[i] = 0;
    __syncthreads();
  }
  if (misuse != kWgNoWait) wgmma_wait<0>();
  out[128 + t] = d[0][0];
}
std::string run_wgmma_misuse(int misuse, std::vector<float>& out) {
  lab::DeviceBuf<float> d(256);
  try {
    GPTOSS_LAUNCH(wgmma_misuse_kernel, dim3(1), dim3(128), 16 * 16 * 2, nullptr, d.p, misuse);
    out = d.download();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "no error";
}
}  // namespace
LAB_TEST("wgmma: accumulators read NaN until waited for, and B is read at the wait (emulator semantics)") {
  std::vector<float> o;
  std::string msg = run_wgmma_misuse(kWgReadEarly, o);
  LAB_CHECK(msg == "no error", "%s", msg.c_str());
  LAB_CHECK(std::isnan(o[0]) && o[128] == 32.f, "before the wait %g (want NaN), after %g (want 32: k 32)", o[0], o[128]);
  msg = run_wgmma_misuse(kWgOverwriteB, o);
  LAB_CHECK(msg == "no error", "%s", msg.c_str());
  LAB_CHECK(o[128] == 0.f, "B overwritten before the wait: D = %g, want 0 (B as it is at the wait)", o[128]);
}
LAB_TEST("wgmma: no fence before a batch, no wait before the end, or threads of a warpgroup giving different widths is caught (emulator rule)") {
  std::vector<float> o;
  std::string msg = run_wgmma_misuse(kWgNoFence, o);
  LAB_CHECK(msg.find("without a wgmma.fence") != std::string::npos, "no fence: %s", msg.c_str());
  std::printf("      caught 'no fence': %s\n", msg.c_str());
  msg = run_wgmma_misuse(kWgNoWait, o);
  LAB_CHECK(msg.find("in flight") != std::string::npos, "no wait: %s", msg.c_str());
  std::printf("      caught 'no wait': %s\n", msg.c_str());
  msg = run_wgmma_misuse(kWgDisagree, o);
  LAB_CHECK(msg.find("disagree on N") != std::string::npos, "different widths: %s", msg.c_str());
  std::printf("      caught 'different widths': %s\n", msg.c_str());
}
#endif
