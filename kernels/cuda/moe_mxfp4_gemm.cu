// moe_mxfp4 as a grouped GEMM (contract in kernels/cuda/moe_mxfp4_gemm.cuh; reference
// kernels/cpu/moe_mxfp4.cc, kernels/MODEL.md, "Experts" and "MXFP4"). One step is five launches,
// none waiting for the host:
//   moe_dispatch        slots grouped by expert, the list of (expert, 64-row m-tile) pairs
//   x to bf16           x [T, H] f32 -> bf16, each 32-block's elements in the kernel's k order
//   gate_up             act[p] = swiglu(W1[e] x[token(p)] + b1[e])      N = 2I, K = H
//   down                y[slot(p)] = w(p) * (W2[e] act[p] + b2[e])      N = H,  K = I
//   combine (fused)     out[t] (+)= sum_j y[t * k + j]                  (kernels/cuda/moe_dispatch.cu)
// where p runs over the sorted rows (dispatch order), act is bf16 [S, I] in that order (the down
// pass reads whole m-tiles of it without a gather) and w(p) is the slot's routing weight (1 for the
// op's unweighted contract).
//
// The GEMM kernel, persistent: grid = min(work items, the CTAs that fit on the device's SMs), CTA b
// takes items b, b + grid, ...;
// an item is (m-tile, n-tile), m-tile-major, so CTAs running at the same time share an expert's
// activations and weights in L2. Every output element is computed by exactly one CTA in a fixed
// order: bit-identical runs whatever the schedule. Empty experts have no tiles, so skew costs
// nothing but the work there is.
// Tile: 256 weight rows (the mma's M side: the weights are the A operand) x an m-tile of 64 or 128
// sorted rows (tokens, the N side; Tile<kPairs>: 4 or 8 pairs of n8 tiles) x K in steps of 32 (one
// MXFP4 block). 8 warps, each 32 weight rows (two m16 tiles) x all the m-tile's tokens: 4 kPairs
// mma.sync.m16n8k16 per 16 k (or, on an sm_90, wgmma for the 128-row tile: kWg below), 16 kPairs
// f32 accumulators per thread. A 4-stage cp.async pipeline
// moves per step the 256 rows' 16-byte blocks (4 KB, one cp.async per thread) and the token rows'
// 32 bf16 (4 or 8 KB, one or two cp.async per thread, 16-byte pieces XOR-swizzled by row so that
// ldmatrix reads are conflict-free); the 256 scale bytes (rows 90 bytes apart, not
// 16-byte aligned: cp.async cannot) are read into a register one step ahead and stored after the
// step's math as their bf16x2 factor words (below), placed so that each reading thread finds its 4
// rows' factors in one 16-byte word (one LDS.128, broadcast to the 4 lanes of a row group). For
// gate_up, the smem rows of each m16 tile are ordered so that row g is the gate row and row g + 8
// the linear row of one activation: a thread's accumulators c0, c1 (gate) and c2, c3 (linear) then
// belong to the same activation and the clamped SwiGLU needs no exchange.
//
// Dequantisation in registers, no table. mma's A fragment gives thread (g = lane / 4, t = lane % 4)
// rows g and g + 8 and, in each 16-k chunk, k positions 2t, 2t+1, 2t+8, 2t+9. The k order inside a
// 32-block is free (the activations are stored in the same order by the x conversion and by the
// gate_up epilogue), so thread t takes 32-bit word t of the row's block (elements 8t..8t+7): chunk
// c, register half h, low/high bf16 lo hold element 8t + 2c + h + 4 lo. An E2M1 nibble s|e1 e0|m
// placed at bf16 bits 15 and 8..6 is exactly its value times 2^-126 (a bf16 subnormal when e = 0),
// and nibbles i and i + 4 of a word land in the two halves: with the word's sign words
// so = q & 0x80808080 (odd nibbles' signs at bits 7, 15, 23, 31) and se = (q << 4) & 0x80808080
// (even nibbles'), 3 instructions a word,
//   raw_i = ((q << (6 - 4i)) & 0x01C001C0) | (sign_i & ~0x01C001C0)   (one LOP3)
// with sign_i = se << 8, so << 8, se, so for i = 0..3: nibble i's sign lands on bit 15, nibble
// i + 4's on 31, and the other signs on bits 7 and 23, inside the magnitude mask, not selected. Then
// one fma.rn.bf16x2 by 2^(s - 65) (the E8M0 scale, the 2^126, and a 2^-64 that keeps the factor a
// normal bf16 for every scale up to 192; the f32 accumulators are multiplied by 2^64 in the
// epilogue) gives the weight times 2^-64 exactly: 13 + 4 fma = 17 instructions a word (were 19 with
// a shift and a mask per sign), 68 per warp and 32-k step for its 32 x 32 weights, shared by the 8
// or 16 n8 tiles (~2.1 or ~1.1 per mma). The 64-row tile's k loop, PTX per 32 mma (nvcc 13, sm_90):
// gate_up 183 instructions, down 174 (were 208 and 242: the ldmatrix row address is one register
// per 16-k chunk with each pair's offset inside the instruction, not 3 adds per ldmatrix; the
// scale factor is made once by the loading thread, not 4 LDS.U8 + 4 multiply-adds per reader; the
// copies' shared addresses are kept in registers): 32 mma, 8 ldmatrix.x4, 16 fma.rn.bf16x2, 16
// lop3, 5 LDS, 2 cp.async, 1 LDG.U8 + 1 STS for the scales, the rest shifts, masks, addresses, 8
// pair checks, the loop and the barrier. The 128-row tile's, per count of pairs p (no checks, one
// more cp.async): about 120 + 10 p without the f32 moves ptxas folds, 203 for 64 mma at p = 8.
// Precision: the weights are exact in bf16; x and act are rounded to bf16 (relative 2^-8), products
// and sums are f32 (the tensor core's internal rounding aside). The tolerance is derived in
// test/cuda/moe_mxfp4_gemm_test.cu.
// Limits (checked by the launchers): H, I positive multiples of 32; 1 <= E <= 256; k >= 1;
// T <= 65535; the blocks 16-byte aligned; x rows ldx >= H; E8M0 scales exact in [66, 192] (above).
#include "kernels/cuda/moe_mxfp4_gemm.cuh"

#include <algorithm>
#include <mutex>
#include <string>
#include <utility>

#include "kernels/cuda/mma.cuh"
#include "kernels/cuda/moe_dispatch.cuh"
#include "kernels/op.h"

namespace gptoss {
namespace cuda {
namespace {
constexpr int kThreads = 256;
constexpr int kTileN = 256;  // weight rows per work item
constexpr int kStageW = kTileN * 16;  // the rows' 16-byte blocks
constexpr int kStageS = kTileN * 4;   // their scale factors (bf16x2 words), in reading order
constexpr int kDefaultSms = 132;  // an H100 SXM's
// The two m-tiles: kPairs pairs of n8 token tiles, 16 kPairs sorted rows. 64 rows (4 pairs): 64
// accumulators a thread, 36 KB of stages, 2 CTAs an SM. 128 rows (8 pairs): each weight decoded in
// registers feeds twice the mma, for 128 accumulators a thread, 52 KB of stages (opted in past
// 48 KB), 1 CTA an SM; the bigger groups of prefill take it (moe_mxfp4_gemm_tile_rows).
// Stages: mma.sync, 4, loads issued 3 steps ahead. wgmma, 8 (104 KB), 6 ahead: a stage is refilled
// only once every warpgroup has retired the wgmma that read it, one step after its own.
template <int kPairs, bool kWg = false>
struct Tile {
  static constexpr int kM = 16 * kPairs;
  static constexpr int kStages = kWg ? 8 : 4;
  static constexpr int kAhead = kWg ? kStages - 2 : kStages - 1;
  static_assert((kStages & (kStages - 1)) == 0, "stage indices wrap with a mask");
  static constexpr int kStageX = kM * 64;  // kM rows x 32 bf16
  static constexpr int kStageBytes = kStageW + kStageS + kStageX;
  static constexpr size_t kSmem = size_t(kStages) * kStageBytes;
  static constexpr int kCtasPerSm = kPairs == 8 ? 1 : 2;
  static constexpr int kXCopies = kM * 4 / kThreads;  // 16-byte token pieces a thread copies per step
};
static_assert(Tile<4>::kStageBytes % 16 == 0 && Tile<8>::kStageBytes % 16 == 0, "wgmma descriptors move in 16 bytes");

// f32 -> bf16 bits, round to nearest even (NaN stays NaN).
__device__ __forceinline__ uint32_t f32_to_bf16_bits(float f) {
  const uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
  return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

#if defined(GPTOSS_CUDA_EMU)
inline uint32_t emu_bf16_mul(uint32_t a, uint32_t b) {  // one lane; the product is exact in f32
  const float p = __uint_as_float(a << 16) * __uint_as_float(b << 16);
  return f32_to_bf16_bits(p);
}
#endif
// a * b on two bf16 lanes, rounded once: fma.rn.bf16x2 with -0 added (exact for the products here,
// which have at most 2 significant bits; bf16 subnormal inputs are honoured, no flush).
__device__ __forceinline__ uint32_t bf16x2_mul(uint32_t a, uint32_t b) {
#if defined(GPTOSS_CUDA_EMU)
  return emu_bf16_mul(a & 0xffffu, b & 0xffffu) | (emu_bf16_mul(a >> 16, b >> 16) << 16);
#else
  uint32_t d;
  asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(0x80008000u));
  return d;
#endif
}

// ldmatrix.x4 at a shared address plus a constant: the offset rides in the instruction ([a+off]),
// so the k loop computes one address per 16-k chunk, not one per n8 tile pair (3 adds each before).
#if defined(GPTOSS_CUDA_EMU)
using SmemAddr = const uint8_t*;
template <int kOff>
inline void ldsm_x4(uint32_t r[4], SmemAddr a, EMU_SITE_ARGS) {
  ldmatrix<4, false>(r, a + kOff, emu_line, emu_file);
}
#else
using SmemAddr = uint32_t;
template <int kOff>
__device__ __forceinline__ void ldsm_x4(uint32_t r[4], SmemAddr a) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4+%5];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a), "n"(kOff));
}
#endif

// (a & kM) | (b & ~kM) in one LOP3, the mask an immediate.
template <uint32_t kM>
__device__ __forceinline__ uint32_t bit_select(uint32_t a, uint32_t b) {
#if defined(GPTOSS_CUDA_EMU)
  return (a & kM) | (b & ~kM);
#else
  uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, 0xE2;" : "=r"(d) : "r"(a), "n"(kM), "r"(b));
  return d;
#endif
}

// A word's nibbles and their signs: so = q & 0x80808080 holds the signs of the odd nibbles 1, 3, 5,
// 7 at bits 7, 15, 23, 31; se = (q << 4) & 0x80808080 those of the even nibbles 0, 2, 4, 6 there.
struct Nibbles {
  uint32_t q, so, se;
};
// (In inline PTX, volatile: otherwise the compiler folds the shifts by 8 below back into shift + and
// of q per pair and recomputes the sign words in the second 16-k chunk.)
__device__ __forceinline__ Nibbles nibbles(uint32_t q) {
#if defined(GPTOSS_CUDA_EMU)
  return {q, q & 0x80808080u, (q << 4) & 0x80808080u};
#else
  uint32_t so, se;
  asm volatile(
      "{\n\t.reg .b32 t;\n\tand.b32 %0, %2, 0x80808080;\n\tshl.b32 t, %2, 4;\n\tand.b32 %1, t, 0x80808080;\n\t}"
      : "=r"(so), "=r"(se)
      : "r"(q));
  return {q, so, se};
#endif
}

// Nibbles i and i + 4 of n.q as bf16x2 = value * 2^-126 (low half nibble i): the magnitude bits
// e1 e0 m shifted to bits 8..6 and 24..22 (kEm), everything else from a sign word that holds the
// two signs at bits 15 and 31 and nothing but zeros or other signs at bits 7 and 23, which lie
// inside kEm and are not selected: per pair one shift for the magnitude, one LOP3, and for i < 2 one
// shift of the sign word by 8 (nibble i's sign at 4i + 3 -> 15, the other signs 8 apart stay at 7 mod 8).
template <int i>
__device__ __forceinline__ uint32_t e2m1x2_raw(const Nibbles& n) {
  constexpr uint32_t kEm = 0x01C001C0u;
  if constexpr (i == 0) return bit_select<kEm>(n.q << 6, n.se << 8);
  if constexpr (i == 1) return bit_select<kEm>(n.q << 2, n.so << 8);
  if constexpr (i == 2) return bit_select<kEm>(n.q >> 2, n.se);
  return bit_select<kEm>(n.q >> 6, n.so);
}

// The factor of one scale byte s as bf16x2: 2^(s - 65) = 2^(s - 127) (E8M0) * 2^126 (the decode)
// * 2^-64, the last undone on the f32 accumulators (kUnbias). With the 2^-64 every factor from s = 1
// to 192 is a normal bf16 (2^(s - 1) itself would overflow past s = 128, i.e. |w| > 12), and the
// dequantised weights w * 2^-64 are normal bf16, exact, for s >= 66 (|w| >= 2^-61); f32 products
// and sums keep their full precision down to |w x| ~ 2^-62. Limits: s in [66, 192] exact; below,
// weights under 2^-61 lose bits (to 0 under 2^-68); above, |w| >= 2^65 becomes infinite.
__device__ __forceinline__ uint32_t scale_factor(uint32_t s) {
  return (s + 62u) * 0x00800080u;  // bf16 exponent field s + 62 in both halves (< 256: no carry)
}
constexpr float kUnbias = 18446744073709551616.f;  // 2^64
template <int i>
__device__ __forceinline__ uint32_t dequant(const Nibbles& n, uint32_t f) {
  return bf16x2_mul(e2m1x2_raw<i>(n), f);
}

// The A fragments of a warp's two m16 tiles (rows 16 at + g, + 8) for 16-k chunk c: registers 0, 1
// hold positions 2t, 2t + 1 of rows g, g + 8; registers 2, 3 positions 2t + 8, 2t + 9.
template <int c>
__device__ __forceinline__ void a_frags(uint32_t (&af)[2][4], const Nibbles (&q)[2][2], const uint32_t (&f)[2][2]) {
#pragma unroll
  for (int at = 0; at < 2; ++at) {
    af[at][0] = dequant<2 * c>(q[at][0], f[at][0]);
    af[at][1] = dequant<2 * c>(q[at][1], f[at][1]);
    af[at][2] = dequant<2 * c + 1>(q[at][0], f[at][0]);
    af[at][3] = dequant<2 * c + 1>(q[at][1], f[at][1]);
  }
}

// Element e (0..31) of a 32-block sits at position perm_pos(e) in the kernel's k order, and
// position kappa holds element perm_elem(kappa) (kappa = 16 c + 8 h + 2 t + lo <-> 8 t + 2 c + h + 4 lo).
__device__ __forceinline__ int perm_elem(int kappa) {
  return 8 * ((kappa >> 1) & 3) + 2 * (kappa >> 4) + ((kappa >> 3) & 1) + 4 * (kappa & 1);
}
__device__ __forceinline__ int perm_pos(int e) {
  return 16 * ((e >> 1) & 1) + 8 * (e & 1) + 2 * (e >> 3) + ((e >> 2) & 1);
}

// One pair of n8 token tiles (J, J + 1) of a 16-k chunk, if it holds tokens (J < jn): both tiles'
// B fragments by one ldmatrix.x4 (rows 512 J bytes past xa), 4 mma.
template <int J, int NJ>
__device__ __forceinline__ void mma_pair(float (&acc)[2][NJ][4], const uint32_t (&af)[2][4], SmemAddr xa, int jn) {
  if (J < jn) {
    uint32_t r[4];
    ldsm_x4<512 * J>(r, xa);
#pragma unroll
    for (int at = 0; at < 2; ++at) {
      mma_m16n8k16_bf16(acc[at][J], af[at], r, acc[at][J]);
      mma_m16n8k16_bf16(acc[at][J + 1], af[at], r + 2, acc[at][J + 1]);
    }
  }
}
// The first sizeof...(P) pairs in order, each with its offset as a constant.
template <int NJ, size_t... P>
__device__ __forceinline__ void mma_pairs(float (&acc)[2][NJ][4], const uint32_t (&af)[2][4], SmemAddr xa, int jn,
                                          std::index_sequence<P...>) {
  (mma_pair<2 * int(P)>(acc, af, xa, jn), ...);
}
// f(std::integral_constant<int, n>()) for the runtime n in [P, kMax]: each count its own code.
template <int P, int kMax, class F>
__device__ __forceinline__ void with_pairs(int n, F&& f) {
  if constexpr (P == kMax) {
    f(std::integral_constant<int, P>());
  } else {
    if (n == P)
      f(std::integral_constant<int, P>());
    else
      with_pairs<P + 1, kMax>(n, f);
  }
}

struct GemmArgs {
  const uint16_t* xin;  // gate_up: x in bf16 [T, K] (row = token); down: act [S, K] (row = sorted row)
  const int32_t* order;
  const int32_t* offsets;
  const int32_t* tile_expert;
  const int32_t* tile_row0;
  const int32_t* ntiles;
  const uint8_t* wb;     // [E, N, K / 32, 16]
  const uint8_t* ws;     // [E, N, K / 32]
  const uint16_t* bias;  // [E, N] bf16
  int N, K, k, E;
  uint16_t* act;  // gate_up out: [S, N / 2] bf16, sorted rows, k order of the down pass
  float limit, alpha;
  float* y;              // down out: [S, N] f32, row = slot
  const float* route_w;  // down: [S] routing weights, or null (unweighted)
};

// kWg: the tensor-core instruction. false: mma.sync.m16n8k16, each warp its 32 rows x the m-tile's
// tokens (B fragments by ldmatrix from the XOR-swizzled token rows). true (sm_90a, the 128-row
// tile only): wgmma, each warpgroup (warps 4 wg..4 wg + 3) 2 x m64 rows, the same rows per warp in
// the same A fragments, x the m-tile's tokens as N = 16 p (p: the pairs holding tokens), B read by
// the tensor core from the token rows in wgmma's no-swizzle core-matrix layout: token r's 16-byte
// piece c at (r / 8) 512 + 128 c + 16 (r % 8), so a 16-k chunk c is a descriptor at 256 c with
// the two k halves 128 bytes apart (LBO) and 8-token groups 512 apart (SBO). The accumulators'
// layout is the mma's (kernels/cuda/mma.cuh), so the epilogue is the same; so is every product and
// the k order of the sums (one wgmma per 16-k chunk, in order), not the tensor core's internal
// rounding. One step's wgmma stay in flight while the warpgroup decodes the next step's weights
// (wgmma_wait<1>): the A registers alternate by the step's parity, and a stage is refilled two
// steps after it was read (8 stages, loads 6 ahead). ptxas keeps wgmma in flight only where no
// branch it cannot prove uniform lies between them and their wait (else it serializes them,
// remark C7518, which test/cuda/static.mjs fails on): the width is a predicate inside one asm
// (wgmma_m128n_k32_rs), the steps go in pairs (an odd K's last pair adds zero weights), and every
// warpgroup computes, the last n-tile's rows past N included (not stored). k loop, PTX per step and
// warp (nvcc 13): about 167 instructions: 8 setp, 32 predicated wgmma, a proxy fence and 126 others.
template <bool kGateUp, int kPairs, bool kWg>
__global__ void __launch_bounds__(kThreads, Tile<kPairs>::kCtasPerSm) moe_mxfp4_gemm_kernel(GemmArgs a) {
  using Tl = Tile<kPairs, kWg>;
  static_assert(!kWg || kPairs == 8, "wgmma takes the 128-row tile");
  constexpr int kStages = Tl::kStages, kAhead = Tl::kAhead;
  constexpr int kTileM = Tl::kM, kStageBytes = Tl::kStageBytes, kXC = Tl::kXCopies;
  uint8_t* smem = dynamic_shared<uint8_t>();
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t4 = lane & 3;
  const int nb = a.K / 32;
  const int ntn = (a.N + kTileN - 1) / kTileN;
  const int items = *a.ntiles * ntn;
  for (int item = blockIdx.x; item < items; item += gridDim.x) {
    const int mt = item / ntn, n0 = (item - mt * ntn) * kTileN;
    const int e = a.tile_expert[mt], row0 = a.tile_row0[mt];
    const int rows = min(kTileM, a.offsets[e + 1] - row0);
    // This thread's copies: weight row `tid` of the tile (smem row order; rows past N load row
    // N - 1, their results are not stored) and 16-byte piece xc of token row xr.
    int grow = n0 + tid;
    if (kGateUp) grow = n0 + 2 * ((tid >> 4) * 8 + (tid & 7)) + ((tid >> 3) & 1);
    grow = min(grow, a.N - 1);
    const uint8_t* wsrc = a.wb + (size_t(e) * a.N + grow) * size_t(nb) * 16;
    const uint8_t* ssrc = a.ws + (size_t(e) * a.N + grow) * size_t(nb);
    // Token rows xr + 64 h (h < kXC): the swizzle term (row / 2) % 4 is the same for each h.
    const int xr = tid >> 2, xc = tid & 3;
    const uint16_t* xsrc[kXC];
#pragma unroll
    for (int h = 0; h < kXC; ++h) {
      const int xrow = row0 + min(xr + 64 * h, rows - 1);  // rows past the tile repeat its last row (not stored)
      xsrc[h] = a.xin + (kGateUp ? int64_t(a.order[xrow] / a.k) : int64_t(xrow)) * a.K + xc * 8;
    }
    const int xdst = opaque(kStageW + kStageS +
                            (kWg ? (xr >> 3) * 512 + 128 * xc + 16 * (xr & 7) : xr * 64 + 16 * (xc ^ ((xr >> 1) & 3))));
    // Row tid's scale factor goes where its reader finds it: thread (warp w, g) reads the factors
    // of its rows 32 w + 16 at + 8 hh + g as one 16-byte word at 16 (8 w + g), [at][hh].
    const int sdst = opaque(kStageW + 16 * (8 * (tid >> 5) + (tid & 7)) + 8 * ((tid >> 4) & 1) + 4 * ((tid >> 3) & 1));

    for (int s = 0; s < kAhead; ++s) {
      if (s < nb) {
        uint8_t* st = smem + s * kStageBytes;
        cp_async16(st + tid * 16, wsrc + size_t(s) * 16);
#pragma unroll
        for (int h = 0; h < kXC; ++h) cp_async16(st + xdst + 4096 * h, xsrc[h] + s * 32);
        *reinterpret_cast<uint32_t*>(st + sdst) = scale_factor(__ldg(ssrc + s));
      }
      cp_async_commit();
    }
    float acc[2][2 * kPairs][4];
#pragma unroll
    for (int at = 0; at < 2; ++at)
#pragma unroll
      for (int j = 0; j < 2 * kPairs; ++j)
#pragma unroll
        for (int r = 0; r < 4; ++r) acc[at][j][r] = 0.f;
    // N is a multiple of 32: a warp's rows all or none. A wgmma warpgroup runs when any of its
    // warps has rows (the others' rows repeat row N - 1; they are not stored).
    const bool stores = n0 + 32 * warp < a.N;
    const bool active = kWg || stores;
    // Pairs of n8 tiles holding tokens. The 128-row tile's k loop is compiled once per count
    // (with_pairs): no pair is checked inside it. The 64-row tile checks each pair per 16-k chunk
    // (2 instructions; compiled per count, its sm_90 build spilled past the 128 registers that 2
    // CTAs an SM allow). The odd tile of a half-used pair costs its mma.
    const int np = (rows + 15) >> 4;
    const int jn = kPairs == 8 ? 2 * kPairs : (rows + 7) >> 3;  // n8 tiles checked against
    // ldmatrix row addresses (lanes 8i..8i+7: matrix i = n8 tile j + i / 2, k half i % 2) for
    // k16 chunk c, relative to the stage's token rows and n8 tile pair j: + 512 j. The swizzle term
    // (row / 2) % 4 depends on the lane only, as 8 j is a multiple of 8.
    const int foff = opaque(kStageW + 16 * (8 * warp + g));  // this thread's scale factors in a stage
    const int woff = opaque((32 * warp + g) * 4 + t4);        // and its first row's word (uint32 index)
    int xoff[2];
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const int tok = 8 * (lane >> 4) + (lane & 7);
      xoff[c] = opaque(tok * 64 + 16 * ((2 * c + ((lane >> 3) & 1)) ^ ((tok >> 1) & 3)));
    }

    // wgmma: the descriptor of stage 0's token rows, chunk 0 (B of the m-tile's first 16 k), and
    // the token columns (16 per pair holding tokens; the same in the whole CTA).
    uint64_t xdesc = 0;
    if constexpr (kWg) xdesc = opaque(wgmma_desc(smem + kStageW + kStageS, 128, 512));
    const int ncols = 16 * np;

    // The next step's sources, advanced by one block per step (cheaper than recomputing them).
    const uint8_t* wnext = wsrc + size_t(kAhead) * 16;
    const uint16_t* xnext[kXC];
#pragma unroll
    for (int h = 0; h < kXC; ++h) xnext[h] = xsrc[h] + kAhead * 32;
    const uint8_t* snext_src = ssrc + kAhead;
    // wgmma: the A fragments of two steps in flight, [step parity][chunk][m16 tile].
    uint32_t afb[2][2][2][4] = {};
    // One 32-k step. par (wgmma): the step's parity, naming its A registers. A step kb >= nb
    // (wgmma's steps go in pairs) adds zero weights times the last stage's tokens.
    auto step = [&](int kb, auto pairs, auto par) {
      cp_async_wait<kAhead - 1>();
      if constexpr (kWg) fence_proxy_async();  // its token rows' copies, before wgmma reads them
      // Stage kb landed for every thread; the stage refilled below was last read at step
      // kb + kAhead - kStages: done by every warp (mma.sync: kb - 1) or retired by every
      // warpgroup (wgmma: kb - 2, by the wgmma_wait<1> of step kb - 1).
      __syncthreads();
      const int kn = kb + kAhead;
      uint8_t* const nst = smem + (kn & (kStages - 1)) * kStageBytes;
      uint32_t snext = 0;
      if (kn < nb) {
        cp_async16(nst + tid * 16, wnext);
#pragma unroll
        for (int h = 0; h < kXC; ++h) cp_async16(nst + xdst + 4096 * h, xnext[h]);
        snext = __ldg(snext_src);
      }
      cp_async_commit();
      wnext += 16;
#pragma unroll
      for (int h = 0; h < kXC; ++h) xnext[h] += 32;
      ++snext_src;
      if (active) {
        const bool real = !kWg || kb < nb;
        const int sk = real ? kb : nb - 1;
        const uint32_t keep = real ? ~0u : 0u;  // a mask, not a branch around the loads
        const uint8_t* st = smem + (sk & (kStages - 1)) * kStageBytes;
        const uint32_t* w = reinterpret_cast<const uint32_t*>(st);  // word woff: row 32 warp + g, word t4
        Nibbles q[2][2];   // the rows' words
        uint32_t f[2][2];  // and scale factors
        const uint4 fv = *reinterpret_cast<const uint4*>(st + foff);
        f[0][0] = fv.x;
        f[0][1] = fv.y;
        f[1][0] = fv.z;
        f[1][1] = fv.w;
#pragma unroll
        for (int at = 0; at < 2; ++at)
#pragma unroll
          for (int hh = 0; hh < 2; ++hh) q[at][hh] = nibbles(w[woff + (16 * at + 8 * hh) * 4] & keep);
        if constexpr (kWg) {
          uint32_t(&af)[2][2][4] = afb[decltype(par)::value];
          a_frags<0>(af[0], q, f);
          a_frags<1>(af[1], q, f);
          const uint64_t desc = xdesc + uint64_t(((sk & (kStages - 1)) * kStageBytes) >> 4);
          wgmma_fence();
          const uint64_t dsc[2] = {desc, desc + 16};  // chunk 1: 256 bytes on
          wgmma_m128n_k32_rs(reinterpret_cast<float(&)[2][64]>(acc), af, dsc, ncols);
          wgmma_commit();
          wgmma_wait<1>();                            // step kb - 1's retired: its stage and A registers are free
          wgmma_keep(afb[1 - decltype(par)::value]);  // (which the compiler must not reuse before here)
        } else {
          // Both chunks' ldmatrix row addresses, computed here once (kept in registers: otherwise
          // the compiler recomputes them inside each pair's branch).
          const uint8_t* xs = st + kStageW + kStageS;
          SmemAddr xa[2];
#pragma unroll
          for (int c = 0; c < 2; ++c) {
#if defined(GPTOSS_CUDA_EMU)
            xa[c] = xs + xoff[c];
#else
            xa[c] = uint32_t(opaque(int(__cvta_generic_to_shared(xs)) + xoff[c]));
#endif
          }
#pragma unroll
          for (int c = 0; c < 2; ++c) {
            uint32_t af[2][4];
            if (c == 0)
              a_frags<0>(af, q, f);
            else
              a_frags<1>(af, q, f);
            // Tokens in pairs of n8 tiles: one ldmatrix.x4 gives both tiles' B fragments.
            mma_pairs(acc, af, xa[c], jn, std::make_index_sequence<decltype(pairs)::value>());
          }
        }
      }
      if (kn < nb) *reinterpret_cast<uint32_t*>(nst + sdst) = scale_factor(snext);
    };
    using P0 = std::integral_constant<int, 0>;
    using P1 = std::integral_constant<int, 1>;
    if constexpr (kWg) {
      // No branch between a wgmma and its wait (ptxas would serialize them): the columns are a
      // predicate on the instruction, the steps go in pairs (each names its A registers), every
      // warpgroup computes.
      wgmma_keep(acc);
      for (int kb = 0; kb < nb; kb += 2) {
        step(kb, P0(), P0());
        step(kb + 1, P0(), P1());
      }
      wgmma_wait<0>();
      wgmma_keep(acc);
    } else {
      auto k_loop = [&](auto pairs) {
        for (int kb = 0; kb < nb; ++kb) step(kb, pairs, P0());
      };
      if constexpr (kPairs == 8)
        with_pairs<1, kPairs>(np, k_loop);
      else
        k_loop(std::integral_constant<int, kPairs>());
    }

    if (stores) {
#pragma unroll
      for (int at = 0; at < 2; ++at) {
        const int r = n0 + 32 * warp + 16 * at + g;  // down: output rows r, r + 8
        const int pair = (n0 >> 1) + (2 * warp + at) * 8 + g;  // gate_up: activation index
#pragma unroll
        for (int j = 0; j < 2 * kPairs; ++j) {
#pragma unroll
          for (int l = 0; l < 2; ++l) {
            const int tok = 8 * j + 2 * t4 + l;
            if (tok >= rows) continue;
            const int p = row0 + tok;
            if (kGateUp) {
              // Clamp after the bias, in f32 (kernels/MODEL.md, "Experts"), as the CPU op.
              float gt = acc[at][j][l] * kUnbias + bf16_bits_to_f32(a.bias[size_t(e) * a.N + 2 * pair]);
              float ln = acc[at][j][2 + l] * kUnbias + bf16_bits_to_f32(a.bias[size_t(e) * a.N + 2 * pair + 1]);
              gt = fminf(gt, a.limit);
              ln = fminf(fmaxf(ln, -a.limit), a.limit);
              const float glu = gt / (1.f + expf(-a.alpha * gt));
              const int I = a.N >> 1;
              a.act[size_t(p) * I + (pair & ~31) + perm_pos(pair & 31)] = uint16_t(f32_to_bf16_bits(glu * (ln + 1.f)));
            } else {
              const int slot = a.order[p];
              const float wt = a.route_w ? a.route_w[slot] : 1.f;
              float* y = a.y + size_t(slot) * a.N;
              y[r] = (acc[at][j][l] * kUnbias + bf16_bits_to_f32(a.bias[size_t(e) * a.N + r])) * wt;
              y[r + 8] = (acc[at][j][2 + l] * kUnbias + bf16_bits_to_f32(a.bias[size_t(e) * a.N + r + 8])) * wt;
            }
          }
        }
      }
    }
    __syncthreads();  // the next item's prologue refills the stages this one read last
  }
}

// x [T, ldx] f32 -> xb [T, H] bf16 in the kernel's k order; with y_nan, the rows of slots whose
// expert index lies outside [0, E) become NaN (the op's contract; no GEMM tile writes them).
constexpr int kConvThreads = 256;
__global__ void __launch_bounds__(kConvThreads)
    moe_mxfp4_gemm_x_bf16(const float* __restrict__ x, int64_t ldx, int H, uint16_t* __restrict__ xb,
                          const int32_t* __restrict__ idx, int k, int E, float* __restrict__ y_nan) {
  const int i = blockIdx.x * kConvThreads + threadIdx.x;
  if (i >= H) return;
  const int t = blockIdx.y;
  xb[int64_t(t) * H + i] = uint16_t(f32_to_bf16_bits(x[int64_t(t) * ldx + (i & ~31) + perm_elem(i & 31)]));
  if (y_nan)
    for (int j = 0; j < k; ++j) {
      const int e = idx[t * k + j];
      if (e < 0 || e >= E) y_nan[(int64_t(t) * k + j) * H + i] = NAN;
    }
}

struct Scratch {
  uint8_t* dispatch;
  size_t dispatch_bytes;
  uint16_t* xb;   // [T, H]
  uint16_t* act;  // [S, I]
  float* yw;      // [S, H]
  size_t bytes;
};
Scratch carve(uint8_t* base, int T, int k, int E, int H, int I) {
  const size_t S = size_t(T) * size_t(k);
  ScratchCarver c{base, 0, SIZE_MAX};
  Scratch s;
  // Sized for the 64-row m-tiles: the 128-row tiles' plan is smaller and is carved from the front.
  s.dispatch_bytes = moe_dispatch_scratch_cuda(T, k, E, 64);
  s.dispatch = c.take<uint8_t>(s.dispatch_bytes);
  s.xb = c.take<uint16_t>(size_t(T) * H);
  s.act = c.take<uint16_t>(S * I);
  s.yw = c.take<float>(S * H);
  s.bytes = c.used;
  return s;
}

void check_args(const MoeMxfp4Args& a, const char* op) {
  const std::string p = std::string(op) + ": ";
  if (a.T < 0 || a.T > 65535 || a.k < 1 || a.E < 1 || a.E > 256 || a.H < 32 || a.H % 32 || a.I < 32 || a.I % 32)
    throw invalid_argument(p + "need 0 <= T <= 65535, k >= 1, 1 <= E <= 256, H and I positive multiples of 32");
  if (a.ldx < a.H) throw invalid_argument(p + "ldx must be >= H");
  if (!a.x || !a.idx || !a.w1_blocks || !a.w1_scales || !a.b1 || !a.w2_blocks || !a.w2_scales || !a.b2)
    throw invalid_argument(p + "null pointer");
  if (!aligned(a.w1_blocks, 16) || !aligned(a.w2_blocks, 16) || !aligned(a.scratch, 16))
    throw invalid_argument(p + "the MXFP4 blocks and the scratch must be 16-byte aligned (cp.async copies 16 bytes)");
  if (a.T > 0 && a.scratch_bytes < moe_mxfp4_gemm_scratch_cuda(a.T, a.k, a.E, a.H, a.I))
    throw invalid_argument(p + "scratch must hold moe_mxfp4_gemm_scratch_cuda(T, k, E, H, I) bytes");
}

// One GEMM pass over the dispatch's m-tiles: a persistent grid of the CTAs that fit on `sms` SMs.
template <bool kGateUp, int kPairs, bool kWg>
void launch_gemm(const GemmArgs& g, int max_tiles, int sms, cudaStream_t stream) {
  using Tl = Tile<kPairs, kWg>;
  if (Tl::kSmem > 48 * 1024) {  // past the default 48 KB: opt in once per instance
    static std::once_flag once;
    std::call_once(once, [] {
      cudaFuncSetAttribute(moe_mxfp4_gemm_kernel<kGateUp, kPairs, kWg>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           int(Tl::kSmem));
    });
  }
  const int items = max_tiles * ((g.N + kTileN - 1) / kTileN);
  GPTOSS_LAUNCH((moe_mxfp4_gemm_kernel<kGateUp, kPairs, kWg>), dim3(unsigned(std::min(items, Tl::kCtasPerSm * sms))),
                dim3(kThreads), Tl::kSmem, stream, g);
  check_launch(kGateUp ? "moe_mxfp4_gemm (gate_up)" : "moe_mxfp4_gemm (down)");
}

template <int kPairs, bool kWg>
void gemms(const MoeMxfp4Args& a, const Scratch& s, const MoeDispatchPlan& d, float* y, const float* route_w, int sms,
           cudaStream_t stream) {
  const int max_tiles = moe_dispatch_max_tiles(a.T * a.k, a.E, Tile<kPairs>::kM);
  launch_gemm<true, kPairs, kWg>(GemmArgs{s.xb, d.order, d.offsets, d.tile_expert, d.tile_row0, d.ntiles, a.w1_blocks,
                                     a.w1_scales, a.b1, 2 * a.I, a.H, a.k, a.E, s.act, a.limit, a.alpha, nullptr, nullptr},
                            max_tiles, sms, stream);
  launch_gemm<false, kPairs, kWg>(GemmArgs{s.act, d.order, d.offsets, d.tile_expert, d.tile_row0, d.ntiles, a.w2_blocks,
                                      a.w2_scales, a.b2, a.H, a.I, a.k, a.E, nullptr, 0.f, 0.f, y, route_w},
                             max_tiles, sms, stream);
}

// Dispatch, conversion, gate_up and down; y: the per-slot output rows, route_w: null or weights.
void run(const MoeMxfp4Args& a, float* y, const float* route_w, int sms, int tile_rows, MoeGemmMma mma,
         cudaStream_t stream) {
  const Scratch s = carve(a.scratch, a.T, a.k, a.E, a.H, a.I);
  if (tile_rows == 0) tile_rows = moe_mxfp4_gemm_tile_rows(a.T, a.k, a.E);
  if (sms <= 0) sms = kDefaultSms;
  moe_dispatch_cuda(a.idx, a.T, a.k, a.E, tile_rows, s.dispatch, s.dispatch_bytes, stream);
  const MoeDispatchPlan d = moe_dispatch_carve(s.dispatch, a.T, a.k, a.E, tile_rows);
  GPTOSS_LAUNCH(moe_mxfp4_gemm_x_bf16, dim3(unsigned((a.H + kConvThreads - 1) / kConvThreads), unsigned(a.T)),
                dim3(kConvThreads), 0, stream, a.x, a.ldx, a.H, s.xb, a.idx, a.k, a.E, route_w ? nullptr : y);
  check_launch("moe_mxfp4_gemm (x to bf16)");
  // wgmma only for the 128-row tile: the 64-row tile's small groups are bound by the decode's issue
  // and the weights' stream, where its 2 CTAs an SM do better (test/cuda/roofline-model.mjs).
  if (tile_rows == 128 && mma == MoeGemmMma::Wgmma)
    gemms<8, true>(a, s, d, y, route_w, sms, stream);
  else if (tile_rows == 128)
    gemms<8, false>(a, s, d, y, route_w, sms, stream);
  else
    gemms<4, false>(a, s, d, y, route_w, sms, stream);
}
}  // namespace
}  // namespace cuda

bool moe_mxfp4_use_gemm(int T, int k, int E) {
  const int64_t S = int64_t(T) * k;
  return 4 * S >= int64_t(13) * E || S >= 65536;
}

int moe_mxfp4_gemm_tile_rows(int T, int k, int E) { return int64_t(T) * k >= int64_t(48) * E ? 128 : 64; }

size_t moe_mxfp4_gemm_scratch_cuda(int T, int k, int E, int H, int I) { return cuda::carve(nullptr, T, k, E, H, I).bytes; }

namespace {
void check_tile_rows(int tile_rows) {
  if (tile_rows != 0 && tile_rows != 64 && tile_rows != 128)
    throw invalid_argument("moe_mxfp4_gemm: tile_rows must be 0 (by the shape), 64 or 128");
}
}  // namespace

MoeGemmMma moe_mxfp4_gemm_mma_for(int cc_major, int cc_minor) {
  return cc_major == 9 && cc_minor == 0 ? MoeGemmMma::Wgmma : MoeGemmMma::Sync;
}

void moe_mxfp4_gemm_cuda(const MoeMxfp4Args& a, int sms, cudaStream_t stream, int tile_rows, MoeGemmMma mma) {
  using namespace cuda;
  check_args(a, "moe_mxfp4_gemm");
  check_tile_rows(tile_rows);
  if (!a.y) throw invalid_argument("moe_mxfp4_gemm: null pointer y");
  if (a.T == 0) return;
  run(a, a.y, nullptr, sms, tile_rows, mma, stream);
}

void moe_mxfp4_gemm_combine_cuda(const MoeMxfp4Args& a, const MoeCombineFused& f, int sms, cudaStream_t stream,
                                 int tile_rows, MoeGemmMma mma) {
  using namespace cuda;
  check_args(a, "moe_mxfp4_gemm");
  check_tile_rows(tile_rows);
  if (!f.route_w || !f.out || f.ldo < a.H) throw invalid_argument("moe_mxfp4_gemm: need route_w, out and ldo >= H");
  if (a.T == 0) return;
  const Scratch s = carve(a.scratch, a.T, a.k, a.E, a.H, a.I);
  run(a, s.yw, f.route_w, sms, tile_rows, mma, stream);
  moe_dispatch_combine_cuda(s.yw, a.idx, a.T, a.k, a.E, a.H, f.out, f.ldo, f.accumulate, stream);
}
}  // namespace gptoss
