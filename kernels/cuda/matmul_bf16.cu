// matmul_bf16_f32 (GEMV for decode): y[t, n] (+)= sum_k x[t, k] * W[n, k] + b[n] for the QKV
// projection (5120 x 2880), the attention output (2880 x 4096, accumulate: the residual add), the
// router (E x 2880) and the unembedding (201088 x 2880). W is bf16 [N, K] as in the checkpoint,
// x and y f32; the reference is kernels/cpu/matmul_bf16.cc.
//
// A block is 8 warps and owns 8 * rows_per_warp rows; each warp owns whole rows, one at a time up
// to 4 tokens, two at a time from 5 (gemv_rows_at_once). The block first copies the launch's
// tokens of x (up to 8 x K f32, past 48 KB in opted-in shared memory) into shared memory with
// float4 loads, then each lane streams its rows' weights with 16-byte read-only loads (8 bf16 per
// load, lanes adjacent in memory: one 512-byte coalesced request per warp and row; 4 loads in
// flight per lane) and keeps one f32 accumulator per row and token; the 32 lanes meet with xor
// shuffles. Decode is bandwidth-bound: each
// weight byte is read once per launch, the x reread comes from shared memory (LDS.128, broadcast-
// free: lanes read consecutive 32-byte spans). The sum order depends only on K, never on T, on the
// other tokens or on the grid, so a token's output is bit-identical alone or batched, and runs
// repeat bit for bit. f32 accumulation as the CPU op (kernels/MODEL.md, "Numerics"); the tolerance
// against it is argued in test/cuda/matmul_bf16_test.cu.
// Limits (checked by the launcher): T >= 0, N >= 1, 1 <= K <= 12288, ldx >= K, ldy >= N; the
// vector path needs K % 8 == 0, W and x 16-byte aligned and ldx % 4 == 0 (else a scalar path).
//
// The GEMM (matmul_bf16_gemm_f32, below the GEMV) is described where it begins.
#include "kernels/cuda/matmul_bf16.cuh"

#include <algorithm>
#include <cstring>
#include <mutex>

#include "kernels/cuda/matmul_bf16_gemm.cuh"
#include "kernels/cuda/mma.cuh"
#include "kernels/cuda/rmsnorm_row.cuh"
#if !defined(GPTOSS_CUDA_EMU)
#include <cuda_bf16.h>
#endif

namespace gptoss {
namespace cuda {
namespace {
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxTokens = kMatmulBf16GemvMaxTokens;  // accumulators per lane and row; more tokens go in further launches
constexpr size_t kSmemBytes = 48 * 1024;  // without opting in

// Rows a warp works on at once. From 5 tokens, two: each x value a lane reads from shared memory
// then serves two rows. Per 512 bytes of one row's weights a warp reads T KB of x (two LDS.128 per
// lane and token); at 128 bytes per clock per SM against a DRAM share of ~13 bytes per clock
// (H100) that is 8 T clocks against 40, so one row at a time would make shared memory, not DRAM,
// the bound from about 5 tokens; two rows halve it. The sum order of a row does not change.
__host__ __device__ constexpr int gemv_rows_at_once(int T, bool vec) { return vec && T > 4 ? 2 : 1; }

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

// gain (not null): x is the RMSNorm's input; the block normalises its copy of each token in shared
// memory (kernels/cuda/rmsnorm_row.cuh: rmsnorm_cuda's sums and roundings) and block 0 also stores
// the normalised rows to xn, so the launch is bit for bit rmsnorm_cuda into xn, then the GEMV of xn.
template <int T, bool kVec>
__global__ void __launch_bounds__(kThreads)
    matmul_bf16_f32(const float* __restrict__ x, int64_t ldx, const uint16_t* __restrict__ w,
                    const uint16_t* __restrict__ bias, float* __restrict__ y, int64_t ldy, int N, int K,
                    int rows_per_warp, bool accumulate, const uint16_t* __restrict__ gain, float eps,
                    float* __restrict__ xn, int64_t ldxn) {
  constexpr int R = gemv_rows_at_once(T, kVec);
  float* xs = dynamic_shared<float>();  // [T, K]
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  if (kVec) {
    const int k4 = K / 4;
    for (int i = tid; i < T * k4; i += kThreads) {
      const int t = i / k4;
      reinterpret_cast<float4*>(xs)[i] = reinterpret_cast<const float4*>(x + t * ldx)[i - t * k4];
    }
  } else {
    for (int i = tid; i < T * K; i += kThreads) {
      const int t = i / K;
      xs[i] = x[t * ldx + (i - t * K)];
    }
  }
  __syncthreads();
  if (gain) {
    __shared__ float red[norm::kRedFloats];
    for (int t = 0; t < T; ++t) {
      float* xt = xs + t * K;
      const float inv = norm::inv_rms<kThreads, kVec>(xt, K, eps, red);
      // After inv_rms's last barrier every sum has been read: any thread may scale any element.
      if (kVec) {
        for (int i = tid; i < K / 4; i += kThreads) {
          const uint2 g = reinterpret_cast<const uint2*>(gain)[i];
          const float4 o = norm::scale4(reinterpret_cast<const float4*>(xt)[i], inv, g.x, g.y);
          reinterpret_cast<float4*>(xt)[i] = o;
          if (blockIdx.x == 0) reinterpret_cast<float4*>(xn + t * ldxn)[i] = o;
        }
      } else {
        for (int i = tid; i < K; i += kThreads) {
          const float o = norm::scale(xt[i], inv, gain[i]);
          xt[i] = o;
          if (blockIdx.x == 0) xn[t * ldxn + i] = o;
        }
      }
    }
    __syncthreads();
  }

  // The warp's rows in this block are r = 0 .. rows_per_warp - 1, row (block * rows_per_warp + r)
  // * 8 + warp; R of them at a time (a row past N or past the warp's share reads row n[0] and
  // stores nothing).
  for (int r = 0; r < rows_per_warp; r += R) {
    const int n0 = (blockIdx.x * rows_per_warp + r) * kWarps + warp;
    if (n0 >= N) break;  // no barrier follows: a warp past N simply stops
    int n[R];
    bool live[R];
#pragma unroll
    for (int i = 0; i < R; ++i) {
      n[i] = n0 + i * kWarps;
      live[i] = i == 0 || (r + i < rows_per_warp && n[i] < N);
      if (!live[i]) n[i] = n0;
    }
    float acc[R][T];
#pragma unroll
    for (int i = 0; i < R; ++i)
#pragma unroll
      for (int t = 0; t < T; ++t) acc[i][t] = 0.f;
    if (kVec) {
      const float4* x4 = reinterpret_cast<const float4*>(xs);
      const int k8 = K / 8;
      // U chunks of R rows loaded before any is used: 4 16-byte loads in flight per lane (2 KB a
      // warp), whatever R. Chunks are added in increasing c, as one at a time would.
      constexpr int U = 4 / R;
      for (int c0 = lane; c0 < k8; c0 += 32 * U) {
        uint4 q[U][R];
#pragma unroll
        for (int u = 0; u < U; ++u)
#pragma unroll
          for (int i = 0; i < R; ++i)
            q[u][i] = c0 + 32 * u < k8 ? __ldg(reinterpret_cast<const uint4*>(w + int64_t(n[i]) * K) + c0 + 32 * u)
                                       : make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const int c = c0 + 32 * u;
          if (c < k8) {  // (not a break: the loop must unroll, q stays in registers)
#pragma unroll
            for (int t = 0; t < T; ++t) {
              const float4 a = x4[t * (K / 4) + 2 * c], b = x4[t * (K / 4) + 2 * c + 1];
#pragma unroll
              for (int i = 0; i < R; ++i) {
                float s = acc[i][t];
                s = fmaf(bf16_bits_to_f32(q[u][i].x & 0xffffu), a.x, s);
                s = fmaf(bf16_bits_to_f32(q[u][i].x >> 16), a.y, s);
                s = fmaf(bf16_bits_to_f32(q[u][i].y & 0xffffu), a.z, s);
                s = fmaf(bf16_bits_to_f32(q[u][i].y >> 16), a.w, s);
                s = fmaf(bf16_bits_to_f32(q[u][i].z & 0xffffu), b.x, s);
                s = fmaf(bf16_bits_to_f32(q[u][i].z >> 16), b.y, s);
                s = fmaf(bf16_bits_to_f32(q[u][i].w & 0xffffu), b.z, s);
                s = fmaf(bf16_bits_to_f32(q[u][i].w >> 16), b.w, s);
                acc[i][t] = s;
              }
            }
          }
        }
      }
    } else {
      const uint16_t* wr = w + int64_t(n0) * K;
      for (int k = lane; k < K; k += 32) {
        const float wk = bf16_bits_to_f32(wr[k]);
#pragma unroll
        for (int t = 0; t < T; ++t) acc[0][t] = fmaf(wk, xs[t * K + k], acc[0][t]);
      }
    }
#pragma unroll
    for (int i = 0; i < R; ++i) {
      const float b = bias ? bf16_bits_to_f32(bias[n[i]]) : 0.f;
#pragma unroll
      for (int t = 0; t < T; ++t) {
        const float v = warp_sum(acc[i][t]) + b;
        // Lane t writes token t (static indices only: acc stays in registers).
        if (lane == t && live[i]) {
          float* yp = y + t * ldy + n[i];
          *yp = accumulate ? *yp + v : v;
        }
      }
    }
  }
}

// The most shared memory one block may have on this device (opting in past 48 KB).
size_t smem_optin_bytes() {
#if defined(GPTOSS_CUDA_EMU)
  return 227 * 1024;  // the emulator's limit (an H100's)
#else
  int dev = 0, v = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) {
    cudaGetLastError();  // not sticky: clear it so the launch check does not report it
    return kSmemBytes;
  }
  return std::max<size_t>(kSmemBytes, size_t(v));
#endif
}

// Opts a kernel in to `smem` bytes of dynamic shared memory when past 48 KB (once per size it grows to).
template <class F>
void opt_in(F kernel, size_t smem, int& granted) {
  static std::mutex mu;
  if (smem <= kSmemBytes) return;
  std::lock_guard<std::mutex> g(mu);
  if (int(smem) <= granted) return;
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  granted = int(smem);
}

template <int T, bool kVec>
void launch(const MatmulBf16Args& a, const float* x, float* y, int rows_per_warp, const RmsnormFold* n,
            float* xn, cudaStream_t stream) {
  const int rows_per_block = kWarps * rows_per_warp;
  const dim3 grid(unsigned((a.N + rows_per_block - 1) / rows_per_block));
  const size_t smem = size_t(T) * a.K * 4;
  static int granted = int(kSmemBytes);
  opt_in(matmul_bf16_f32<T, kVec>, smem, granted);
  GPTOSS_LAUNCH((matmul_bf16_f32<T, kVec>), grid, dim3(kThreads), smem, stream, x, a.ldx, a.w, a.b, y, a.ldy, a.N, a.K,
                rows_per_warp, a.accumulate, n ? n->gain : nullptr, n ? n->eps : 0.f, xn, n ? n->ldxn : int64_t(0));
}
}  // namespace

// ---- matmul_bf16_gemm_f32: the tensor-core GEMM for many tokens ----
// y[t, n] (+)= sum_k x[t, k] * W[n, k] + b[n] as mma.sync m16n8k16 (A = x rows, row-major; B = W
// rows as stored, the "col" operand), f32 accumulators in registers. A block owns BM tokens x BN
// weight rows (grid: x over N tiles, fastest, so neighbouring blocks share an x tile in L2; y over
// token tiles); its 8 warps are 2 x 4, each owning (BM / 2) x (BN / 4) outputs: MT x NT m16n8
// tiles. Narrow tiles (32 and 64 tokens, and every tile of the fp32 mode): BN 128, NT 4. The
// default mode's 128-token tile (prefill, batches past 64) is wide: BN 256, NT 8, warps of 64 x 64
// (kernels/cuda/matmul_bf16_gemm.cuh: warp_nt, block_n).
// Per k tile of 32:
//   - W: BN x 32 bf16 by cp.async (BN / 64 16-byte copies per thread) into a ring of kStages = 4
//     tiles, issued 3 tiles ahead;
//   - x: BM x 32 f32 by 16-byte read-only loads into registers one tile ahead, issued before the
//     tile's mma and converted + stored after them (so the load's latency hides behind them), as
//     bf16 (kSplit: hi = bf16(x) and lo = bf16(x - hi), two tiles) into one of two buffers;
//   - both tiles use the swizzle of matmul_bf16_gemm.cuh: ldmatrix and the stores conflict-free;
//   - per warp and k16 step: MT ldmatrix.x4 of A (2 MT with kSplit), NT / 2 ldmatrix.x4 of B,
//     MT NT mma (2 MT NT with kSplit).
// Shared-memory bytes per mma (the bound at 128 B per clock per SM; test/cuda/roofline-model.mjs
// GEMM_SMEM_PER_MMA): per block and k tile, ldmatrix 8 warps x 2 k16 x (MT + NT / 2) x 512 B,
// fills BN x 64 B (W, cp.async) + BM x 64 B (x, stores), over 8 x 2 x MT NT mma. The narrow
// 128-token tile: (49152 + 16384) / 256 = 256 B (0.5 mma per clock: about half an H100's dense
// peak); the wide one: (65536 + 24576) / 512 = 176 B (0.73 mma per clock).
// Why the wide tile holds up with one block (8 warps) per SM (reasoned, not measured): 128 f32
// accumulators + 16 B-fragment and 4 A-fragment registers + 16 of x in flight + addresses fit
// 255 (ptxas: about 220, no spills; kernels/cuda/lab.json budgets 240), so 2 warps per scheduler.
// Each warp has 32 independent mma per k16 step (64 per k tile) behind 8 ldmatrix, so ILP, not
// more warps, feeds the tensor pipe: the SM needs ~512+ clocks per k tile for its 512 mma, the W
// ring covers 3 tiles (~1500 clocks) of cp.async latency, and x is loaded one tile (~500 clocks)
// ahead, from L2 for all but the first of the N tiles sharing it. Shared memory: 4 x 16 KB of W +
// 2 x 8 KB of x = 80 KB (opted in).
// One __syncthreads per k tile: after it, tile kt's W (waited for by each thread) and x (stored in
// iteration kt - 1) are visible to all, and every warp has finished iteration kt - 1, whose
// buffers (W stage (kt - 1) % 4, x buffer (kt + 1) % 2) are refilled in this iteration.
// Tails: rows of W past N are a copy of row N - 1 (never stored), tokens past T and k past K
// (K % 8 == 0: a 16-byte chunk is all in or all out) are zeros in shared memory, so nothing past
// an array is read and the zeros add nothing. Epilogue: v = acc + b[n], y = v or y + v (the CPU
// op's order), tokens < T and columns < N only.
// Split k (grid z > 1: few tiles, batched decode and prefill steps of up to ~640 tokens): block z
// sums k tiles [z kt_split, (z + 1) kt_split) and stores its sums to partials[z]; the tile's last
// block (tickets: one count per warp, after its lanes' stores and a fence) adds the z partials in
// z order (its own from its registers), then the bias, then y as above, and discards the partials
// from L2 so they are never written back. Which block is last depends on timing; the bits do not.
// Sum order: for each output, k16 steps in increasing k, each one mma (kSplit: hi then lo), per
// split, then the splits in order; it depends only on K and the splits, so a token's result is the
// same whatever the other tokens or BM (on one instruction: where the wide tile takes wgmma, the
// narrow tiles' mma.sync may round differently inside the tensor core).
// kWg (sm_90a, the wide tile only): wgmma instead of mma.sync, the same block tile, products and k
// order (one wgmma per 16 k, in order; only the tensor core's internal rounding may differ).
// Warpgroup wg (warps 4 wg..4 wg + 3) computes its 64 tokens x all 256 weight rows: A = its x
// fragments by ldmatrix from the same swizzled x tile (warp w: tokens 64 wg + 16 w..), B = the W
// stage read by the tensor core through a descriptor, two wgmma.m64n256k16 per k tile
// (wgmma_m64n256_k32_rs). The W stage is in wgmma's no-swizzle core-matrix layout (row r's 16-byte
// piece c at (r / 8) 512 + 128 c + 16 (r % 8): LBO 128, SBO 512), and the cp.async that fill it
// are numbered so that each lands at 16 x its index (conflict-free). One k tile's wgmma stay in
// flight while the warps load the next tile's x fragments (wgmma_wait<1>; the A registers
// alternate by the tile's parity), so a W stage is refilled two tiles after it was read: 8 stages,
// loads 6 ahead (128 KB + 16 KB of x). No branch between a wgmma and its wait (ptxas would
// serialize them, remark C7518, which test/cuda/static.mjs fails on): the k tiles go in pairs, an
// odd count's last adding zero x (a mask on its fragments) times the last W tile. Shared-memory
// bytes per mma (test/cuda/roofline-model.mjs GEMM_WGMMA_SMEM_PER_MMA): ldmatrix 8 KB, wgmma's B
// 2 x 16 KB, fills 24 KB, per 512 mma: 128 B (the mma.sync wide tile's 176 B). The accumulators
// are the mma's C layout over 32 n8 tiles, so the epilogues are the same code (EMT, ENT, tb, nb).
namespace {
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // one cvt.rn.bf16x2.f32
  uint32_t u;
  memcpy(&u, &v, 4);
  return u;
}
// The f32 values of a packed pair (exact).
__device__ __forceinline__ float bf16_lo(uint32_t p) { return __uint_as_float(p << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t p) { return __uint_as_float(p & 0xffff0000u); }

template <int MT, bool kSplit, bool kWg>
__global__ void __launch_bounds__(gemm::kThreads, kSplit || gemm::warp_nt(MT, kSplit) == 8 ? 1 : 2)
    matmul_bf16_gemm_f32(const float* __restrict__ x, int64_t ldx, const int32_t* __restrict__ x_rows,
                         const uint16_t* __restrict__ w, const uint16_t* __restrict__ bias, float* __restrict__ y,
                         int64_t ldy, int T, int N, int K, bool accumulate, int kt_split, float* __restrict__ partials,
                         unsigned* __restrict__ tickets) {
  using namespace gemm;
  static_assert(!kWg || (MT == 4 && !kSplit), "wgmma takes the default mode's wide tile");
  constexpr int BM = block_m(MT);
  constexpr int NT = warp_nt(MT, kSplit);       // n8 fragments per warp
  constexpr int WN = 8 * NT;                    // weight rows per warp
  constexpr int BN = block_n(MT, kSplit);       // weight rows per block
  constexpr int kWTile = BN * kRowBytes;        // bytes of one W stage
  constexpr int kWPer = BN * 4 / gemm::kThreads;  // 16-byte W chunks per thread and tile
  constexpr int kParts = kSplit ? 2 : 1;
  constexpr int kATileBytes = BM * kRowBytes;
  constexpr int kAChunks = BM * 4;  // 16-byte bf16 chunks of an x tile
  constexpr int kAPer = (kAChunks + gemm::kThreads - 1) / gemm::kThreads;
  constexpr int kWStages = w_stages(kWg), kAhead = w_ahead(kWg);
  unsigned char* smem = dynamic_shared<unsigned char>();
  unsigned char* ws = smem;                      // [kWStages][BN rows][32] bf16 (swizzled; wgmma: core matrices)
  unsigned char* as = smem + kWStages * kWTile;  // [2][kParts][BM rows][32] bf16, swizzled

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp / kWarpsN, wn = warp % kWarpsN;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  // The accumulators as the epilogue sees them: [EMT m16 tiles][ENT n8 tiles][4] from token
  // m0 + tb and weight row n0 + nb. mma.sync: the warp's MT x NT tiles at (wm, wn). wgmma: warp w
  // of warpgroup wg holds tokens 64 wg + 16 w.. (16 warp) of its m64 tile x all 256 rows.
  constexpr int EMT = kWg ? 1 : MT, ENT = kWg ? 32 : NT, EWN = kWg ? BN : WN;
  const int tb = kWg ? 16 * warp : wm * 16 * MT, nb = kWg ? 0 : wn * WN;
  // This block's k tiles: kt0 + [0, KT) of the (K + 31) / 32 (blockIdx.z: its k split).
  const int kt0 = blockIdx.z * kt_split;
  const int KT = min((K + kBK - 1) / kBK - kt0, kt_split);
  __shared__ unsigned last;  // split k: whether this block adds up the tile (see the epilogue)
  if (tid == 0) last = 0u;   // read after the k loop's barriers

  // This thread's x chunks: row pointers resolved once (null past T).
  const float* arow[kAPer];
#pragma unroll
  for (int i = 0; i < kAPer; ++i) {
    const int id = tid + i * gemm::kThreads, t = m0 + (id >> 2);
    arow[i] = (id < kAChunks && t < T) ? x + int64_t(x_rows ? x_rows[t] : t) * ldx + (id & 3) * 8 : nullptr;
  }
  // mma.sync: the weight row addresses are recomputed per tile (two IMADs, where keeping them
  // would cost the registers that made sm_90 spill). wgmma (192 registers, room to spare): copy id
  // fills row w_row(id), piece w_piece(id) (the same piece for all of a thread's copies), at its
  // core-matrix place 16 id, from row pointers resolved once and moved on by a tile per step.
  const uint16_t* wrow[kWg ? kWPer : 1];
  const int wk0 = (kt0 * kBK) + (kWg ? w_piece(tid) * 8 : 0);  // wgmma: this thread's first k
  if constexpr (kWg) {
#pragma unroll
    for (int i = 0; i < kWPer; ++i) wrow[i] = w + int64_t(min(n0 + w_row(tid + i * gemm::kThreads), N - 1)) * K + wk0;
  }
  auto load_w = [&](int kt) {
    unsigned char* tile = ws + (kt & (kWStages - 1)) * kWTile;
    if constexpr (kWg) {
      const bool in = wk0 + kt * kBK < K;
#pragma unroll
      for (int i = 0; i < kWPer; ++i) {
        unsigned char* dst = tile + 16 * (tid + i * gemm::kThreads);
        if (in) cp_async16(dst, wrow[i] + kt * kBK);
        else *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
      }
    } else {
#pragma unroll
      for (int i = 0; i < kWPer; ++i) {
        const int id = tid + i * gemm::kThreads, r = id >> 2, c = id & 3;
        const int k = (kt0 + kt) * kBK + c * 8;
        unsigned char* dst = tile + swizzle(r, c);
        if (k < K) cp_async16(dst, w + int64_t(min(n0 + r, N - 1)) * K + k);
        else *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
      }
    }
  };
  float4 ra[kAPer][2];
  auto fetch_x = [&](int kt) {
#pragma unroll
    for (int i = 0; i < kAPer; ++i) {
      const int k = (kt0 + kt) * kBK + ((tid + i * gemm::kThreads) & 3) * 8;
      if (arow[i] && k < K) {
        ra[i][0] = __ldg(reinterpret_cast<const float4*>(arow[i] + (kt0 + kt) * kBK));
        ra[i][1] = __ldg(reinterpret_cast<const float4*>(arow[i] + (kt0 + kt) * kBK + 4));
      } else {
        ra[i][0] = ra[i][1] = make_float4(0.f, 0.f, 0.f, 0.f);
      }
    }
  };
  auto store_x = [&](int buf) {
#pragma unroll
    for (int i = 0; i < kAPer; ++i) {
      const int id = tid + i * gemm::kThreads;
      if (kAChunks % gemm::kThreads != 0 && id >= kAChunks) continue;
      unsigned char* dst = as + buf * kParts * kATileBytes + swizzle(id >> 2, id & 3);
      const float v[8] = {ra[i][0].x, ra[i][0].y, ra[i][0].z, ra[i][0].w, ra[i][1].x, ra[i][1].y, ra[i][1].z, ra[i][1].w};
      uint4 hi;
      hi.x = pack_bf16x2(v[0], v[1]), hi.y = pack_bf16x2(v[2], v[3]);
      hi.z = pack_bf16x2(v[4], v[5]), hi.w = pack_bf16x2(v[6], v[7]);
      *reinterpret_cast<uint4*>(dst) = hi;
      if (kSplit) {  // x - hi is exact in f32; lo rounds it to bf16: |x - hi - lo| <= 2^-16 |x|
        uint4 lo;
        lo.x = pack_bf16x2(v[0] - bf16_lo(hi.x), v[1] - bf16_hi(hi.x));
        lo.y = pack_bf16x2(v[2] - bf16_lo(hi.y), v[3] - bf16_hi(hi.y));
        lo.z = pack_bf16x2(v[4] - bf16_lo(hi.z), v[5] - bf16_hi(hi.z));
        lo.w = pack_bf16x2(v[6] - bf16_lo(hi.w), v[7] - bf16_hi(hi.w));
        *reinterpret_cast<uint4*>(dst + kATileBytes) = lo;
      }
    }
  };

  float acc[EMT][ENT][4];
#pragma unroll
  for (int i = 0; i < EMT; ++i)
#pragma unroll
    for (int j = 0; j < ENT; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.f;

  // Prologue: W tiles 0..kAhead-1 in flight (one commit group each, empty past KT, so that the
  // wait below always counts kAhead - 1 younger groups), x tile 0 stored.
#pragma unroll
  for (int s = 0; s < kAhead; ++s) {
    if (s < KT) load_w(s);
    cp_async_commit();
  }
  fetch_x(0);
  store_x(0);

  // This lane's fragment addresses within a tile, loop-invariant: the swizzle repeats every 8
  // rows, so the fragment 16 rows further is 16 rows of bytes further (an immediate offset).
  uint32_t a_off[2], b_off[2];
#pragma unroll
  for (int kk = 0; kk < 2; ++kk) {
    a_off[kk] = a_fragment(tb, kk, lane);
    b_off[kk] = b_fragment(wn * WN, kk, lane);
  }

  if constexpr (kWg) {
    // The descriptor of stage 0's first 16-k chunk (the next chunk 256 bytes on, a stage kWTile).
    const uint64_t wdesc = opaque(wgmma_desc(ws, 128, 512));
    uint32_t afb[2][2][4] = {};  // the x fragments of two steps in flight, [step parity][chunk]
    // One k tile; par: its parity, naming its A registers. kt == KT (an odd KT's pair) adds zero
    // x times the last tile's weights.
    auto step = [&](int kt, auto par) {
      cp_async_wait<kAhead - 1>();  // this thread's copies of W tile kt have landed
      fence_proxy_async();          // its W writes (copies, the K tail's zeros), before wgmma reads them
      // After it: W tile kt and x tile kt (stored in step kt - 1) are visible to all, every warp
      // is past step kt - 1's ldmatrix (x buffer (kt + 1) & 1 is free) and every warpgroup has
      // retired step kt - 2's wgmma (its wgmma_wait<1> in step kt - 1), the last reader of the W
      // stage refilled here.
      __syncthreads();
      if (kt + kAhead < KT) load_w(kt + kAhead);
      cp_async_commit();
      if (kt + 1 < KT) fetch_x(kt + 1);
      const bool real = kt < KT;
      const uint32_t keep = real ? ~0u : 0u;  // a mask, not a branch around the ldmatrix
      const int sk = real ? kt : KT - 1;
      const unsigned char* at = as + (kt & 1) * kATileBytes;
      uint32_t(&af)[2][4] = afb[decltype(par)::value];
#pragma unroll
      for (int kk = 0; kk < kBK / 16; ++kk) {
        ldmatrix<4, false>(af[kk], at + a_off[kk]);
#pragma unroll
        for (int r = 0; r < 4; ++r) af[kk][r] &= keep;
      }
      const uint64_t d0 = wdesc + uint64_t(((sk & (kWStages - 1)) * kWTile) >> 4);
      const uint64_t dsc[2] = {d0, d0 + 16};  // chunk 1: 256 bytes on
      wgmma_fence();
      wgmma_m64n256_k32_rs(reinterpret_cast<float(&)[128]>(acc), af, dsc);
      wgmma_commit();
      wgmma_wait<1>();                            // step kt - 1's retired: its W stage and A registers are free
      wgmma_keep(afb[1 - decltype(par)::value]);  // (which the compiler must not reuse before here)
      if (kt + 1 < KT) store_x((kt + 1) & 1);
    };
    // No branch between a wgmma and its wait (ptxas would serialize them): the steps go in pairs,
    // each naming its A registers.
    wgmma_keep(reinterpret_cast<float(&)[128]>(acc));
    for (int kt = 0; kt < KT; kt += 2) {
      step(kt, std::integral_constant<int, 0>());
      step(kt + 1, std::integral_constant<int, 1>());
    }
    wgmma_wait<0>();
    wgmma_keep(reinterpret_cast<float(&)[128]>(acc));
  } else {
    for (int kt = 0; kt < KT; ++kt) {
      cp_async_wait<kAhead - 1>();  // this thread's copies of W tile kt have landed
      __syncthreads();
      if (kt + kAhead < KT) load_w(kt + kAhead);
      cp_async_commit();
      if (kt + 1 < KT) fetch_x(kt + 1);
      const unsigned char* wt = ws + (kt & (kWStages - 1)) * kWTile;
      const unsigned char* at = as + (kt & 1) * kParts * kATileBytes;
#pragma unroll
      for (int kk = 0; kk < kBK / 16; ++kk) {
        uint32_t b[NT][2];
#pragma unroll
        for (int j = 0; j < NT / 2; ++j) {
          uint32_t r[4];
          ldmatrix<4, false>(r, wt + b_off[kk] + 16 * j * kRowBytes);
          b[2 * j][0] = r[0], b[2 * j][1] = r[1], b[2 * j + 1][0] = r[2], b[2 * j + 1][1] = r[3];
        }
#pragma unroll
        for (int i = 0; i < MT; ++i)
#pragma unroll
          for (int p = 0; p < kParts; ++p) {
            uint32_t a[4];
            ldmatrix<4, false>(a, at + p * kATileBytes + a_off[kk] + 16 * i * kRowBytes);
#pragma unroll
            for (int j = 0; j < NT; ++j) mma_m16n8k16_bf16(acc[i][j], a, b[j], acc[i][j]);
          }
      }
      if (kt + 1 < KT) store_x((kt + 1) & 1);
    }
  }

  const int g = lane >> 2, q = lane & 3;
  if (gridDim.z > 1) {
    // Split k: this block's sums (no bias) into partials[z][t][n]; the tile's last block to
    // arrive (a ticket per tile, one count per warp after its lanes' stores and fences) adds the
    // splits up in z order, so the bits do not depend on which block came last, and leaves the
    // ticket zero for the next launch.
    float* part = partials + int64_t(blockIdx.z) * T * N;
#pragma unroll
    for (int j = 0; j < ENT; ++j) {
      const int n = n0 + nb + 8 * j + 2 * q;
#pragma unroll
      for (int i = 0; i < EMT; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int t = m0 + tb + 16 * i + g + 8 * h;
          if (t >= T) continue;
          if (n < N) part[int64_t(t) * N + n] = acc[i][j][2 * h];
          if (n + 1 < N) part[int64_t(t) * N + n + 1] = acc[i][j][2 * h + 1];
        }
    }
    __threadfence();  // this lane's partials are visible device-wide before its warp's ticket
    __syncwarp();  // every lane has stored before lane 0 counts: another block's last warp reads them
    if (lane == 0) {
      unsigned* ticket = tickets + blockIdx.y * gridDim.x + blockIdx.x;
      if (atomicAdd(ticket, 1u) == gridDim.z * (gemm::kThreads / 32) - 1) {
        *ticket = 0u;  // every other warp of the tile has counted: none reads it again
        last = 1u;
      }
    }
    __syncthreads();  // the last warp's flag, to its block
    if (!last) return;
    __threadfence();  // the other blocks' partials, after their tickets
    // Each thread adds up the splits of the outputs its fragments hold, in z order, its own
    // split's sums from its registers (ks - 1 partials read per output; its own are not read
    // back). Per m16 fragment row and kJ n8 fragments (4 x kJ sums in registers), the loads of
    // one split are issued together, from two row pointers with immediate column offsets: one L2
    // latency per split, not per output. kJ 4: 16 KB in flight a block, about what the roofline's
    // assumed 64 B per clock from L2 needs at ~250 clocks of L2 latency (an assumption); 2 in the
    // 32-token tiles, whose 16 more registers would cost their third block an SM. Loads bypass L1
    // (volatile): another SM's lines, never a stale L1 copy.
    const unsigned zs = blockIdx.z;
    const int64_t zstride = int64_t(T) * N;
    constexpr int kJ = MT == 1 ? 2 : 4;
#pragma unroll
    for (int i = 0; i < EMT; ++i) {
      const int t0 = m0 + tb + 16 * i + g;  // this lane's rows: t0 and t0 + 8
#pragma unroll
      for (int j0 = 0; j0 < ENT; j0 += kJ) {
        const int nc = n0 + nb + 8 * j0 + 2 * q;  // its columns: nc + 8 j + {0, 1}
        const volatile float* p = partials + int64_t(t0) * N + nc;
        float v[kJ][4];
#pragma unroll 1
        for (unsigned z = 0; z < gridDim.z; ++z, p += zstride) {
#pragma unroll
          for (int j = 0; j < kJ; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) {
              const bool in = t0 + 8 * (r >> 1) < T && nc + 8 * j + (r & 1) < N;
              const float s = z == zs ? acc[i][j0 + j][r] : in ? p[(r >> 1) * 8 * int64_t(N) + 8 * j + (r & 1)] : 0.f;
              v[j][r] = z == 0 ? s : v[j][r] + s;
            }
        }
#pragma unroll
        for (int j = 0; j < kJ; ++j)
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            const int t = t0 + 8 * (r >> 1), n = nc + 8 * j + (r & 1);
            if (t >= T || n >= N) continue;
            const float vb = v[j][r] + (bias ? bf16_bits_to_f32(bias[n]) : 0.f);
            float* yp = y + int64_t(t) * ldy + n;
            *yp = accumulate ? *yp + vb : vb;
          }
      }
    }
    // The partials are read for the last time: each 128-byte line (32 outputs of a row) was read
    // by this warp alone, so once its lanes are past their loads (__syncwarp) it discards them
    // from L2, and they never go to DRAM (written, read and dropped in L2: the 4 T N bytes a
    // split would otherwise cost in write-back). Only where every line lies inside one tile's
    // row: N % 32 == 0 and the partials 128-byte aligned (gpt-oss's N; the backend's scratch).
    if (N % 32 == 0 && reinterpret_cast<uintptr_t>(partials) % 128 == 0) {
      __syncwarp();
      constexpr int kRows = 16 * EMT, kLines = EWN / 32;  // a warp's rows, and lines per row
      for (int e = lane; e < int(gridDim.z) * kRows * kLines; e += 32) {
        const int z = e / (kRows * kLines), t = m0 + tb + e / kLines % kRows, n = n0 + nb + 32 * (e % kLines);
        if (t < T && n < N) discard_l2(partials + (int64_t(z) * T + t) * N + n);
      }
    }
    return;
  }
#pragma unroll
  for (int j = 0; j < ENT; ++j) {
    const int n = n0 + nb + 8 * j + 2 * q;
    const float b0 = bias && n < N ? bf16_bits_to_f32(bias[n]) : 0.f;
    const float b1 = bias && n + 1 < N ? bf16_bits_to_f32(bias[n + 1]) : 0.f;
#pragma unroll
    for (int i = 0; i < EMT; ++i)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int t = m0 + tb + 16 * i + g + 8 * h;
        if (t >= T) continue;
        float* yr = y + int64_t(t) * ldy;
        const float v0 = acc[i][j][2 * h] + b0, v1 = acc[i][j][2 * h + 1] + b1;
        if (n < N) yr[n] = accumulate ? yr[n] + v0 : v0;
        if (n + 1 < N) yr[n + 1] = accumulate ? yr[n + 1] + v1 : v1;
      }
  }
}

template <int MT, bool kSplit, bool kWg = false>
void launch_gemm(const MatmulBf16Args& a, const int32_t* x_rows, int k_splits, int kt_split, float* partials,
                 unsigned* tickets, cudaStream_t stream) {
  using namespace gemm;
  const size_t smem = gemm_smem_bytes(MT, kSplit, kWg);
  if (smem > 48 * 1024) {  // past the default 48 KB: opt in once per instance
    static std::once_flag once;
    std::call_once(once, [&] {
      cudaFuncSetAttribute(matmul_bf16_gemm_f32<MT, kSplit, kWg>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    });
  }
  constexpr int BN = block_n(MT, kSplit);
  const dim3 grid(unsigned((a.N + BN - 1) / BN), unsigned((a.T + block_m(MT) - 1) / block_m(MT)), unsigned(k_splits));
  GPTOSS_LAUNCH((matmul_bf16_gemm_f32<MT, kSplit, kWg>), grid, dim3(gemm::kThreads), smem, stream, a.x, a.ldx, x_rows, a.w, a.b,
                a.y, a.ldy, a.T, a.N, a.K, a.accumulate, kt_split, partials, tickets);
}
}  // namespace
}  // namespace cuda

int matmul_bf16_rows_per_warp_cuda(int N, int T) {
  // Large N (the unembedding): 4 rows per warp, so each block's copy of x serves 32 rows of
  // weights (the copy is an L2 read of 4 K bytes per token against 64 K bytes of weights); below
  // that, 1 up to 4 tokens, so the QKV and output projections spread over every SM (640 and 360
  // blocks); from 5 tokens 2, the two rows a warp takes at once (320 and 180 blocks, each copying
  // T x K f32 of x from L2 for its 16 rows of weights).
  if (N >= 32768) return 4;
  return cuda::gemv_rows_at_once(T, true);
}

namespace {
void gemv(const MatmulBf16Args& a, const RmsnormFold* n, cudaStream_t stream, int rows_per_warp) {
  using namespace cuda;
  if (a.T < 0 || a.N < 1 || a.K < 1 || a.ldx < a.K || a.ldy < a.N || !a.x || !a.w || !a.y)
    throw invalid_argument("matmul_bf16: need T >= 0, N >= 1, K >= 1, ldx >= K, ldy >= N and non-null x, w, y");
  // The norm's static shared memory (its sums) comes out of the same budget as x.
  const size_t smem_bytes = n ? kSmemBytes - 64 : kSmemBytes;
  if (size_t(a.K) * 4 > smem_bytes)
    throw invalid_argument("matmul_bf16: K " + std::to_string(a.K) + " > " + std::to_string(smem_bytes / 4) +
                           " (x for one token must fit 48 KB of shared memory)");
  if (n && (!n->gain || !n->xn || n->ldxn < a.K || !(n->eps >= 0.f)))
    throw invalid_argument("matmul_bf16 (norm in front): need a gain, xn with ldxn >= K, and eps >= 0");
  if (a.T == 0) return;
  const bool vec = a.K % 8 == 0 && a.ldx % 4 == 0 && aligned(a.x, 16) && aligned(a.w, 16) &&
                   (!n || (n->ldxn % 4 == 0 && aligned(n->xn, 16) && aligned(n->gain, 8)));
  if (rows_per_warp < 0 || rows_per_warp > 64) throw invalid_argument("matmul_bf16: rows_per_warp must be in [0, 64]");
  // The scalar path (odd K or unaligned rows, never gpt-oss's shapes) takes one token a launch;
  // the vector path as many as fit the device's shared memory, up to 8 (gpt-oss: 8 at K 2880 and
  // 4096 on an H100 or A100, 92 and 128 KB).
  const size_t budget = (vec ? smem_optin_bytes() : kSmemBytes) - (n ? 64 : 0);
  const int per_launch = vec ? int(std::min<size_t>(kMaxTokens, budget / (size_t(a.K) * 4))) : 1;
  for (int t0 = 0; t0 < a.T; t0 += per_launch) {
    const int m = std::min(per_launch, a.T - t0);
    const float* x = a.x + int64_t(t0) * a.ldx;
    float* y = a.y + int64_t(t0) * a.ldy;
    float* xn = n ? n->xn + int64_t(t0) * n->ldxn : nullptr;
    const int rpw = rows_per_warp ? rows_per_warp : matmul_bf16_rows_per_warp_cuda(a.N, m);
    if (!vec) launch<1, false>(a, x, y, rpw, n, xn, stream);
    else if (m == 1) launch<1, true>(a, x, y, rpw, n, xn, stream);
    else if (m == 2) launch<2, true>(a, x, y, rpw, n, xn, stream);
    else if (m == 3) launch<3, true>(a, x, y, rpw, n, xn, stream);
    else if (m == 4) launch<4, true>(a, x, y, rpw, n, xn, stream);
    else if (m == 5) launch<5, true>(a, x, y, rpw, n, xn, stream);
    else if (m == 6) launch<6, true>(a, x, y, rpw, n, xn, stream);
    else if (m == 7) launch<7, true>(a, x, y, rpw, n, xn, stream);
    else launch<8, true>(a, x, y, rpw, n, xn, stream);
    check_launch("matmul_bf16");
  }
}
}  // namespace

void matmul_bf16_cuda(const MatmulBf16Args& a, cudaStream_t stream, int rows_per_warp) {
  gemv(a, nullptr, stream, rows_per_warp);
}

void matmul_bf16_norm_cuda(const MatmulBf16Args& a, const RmsnormFold& n, cudaStream_t stream, int rows_per_warp) {
  gemv(a, &n, stream, rows_per_warp);
}

int matmul_bf16_gemm_tile_m_cuda(int T) {
  // Up to 32 tokens, blocks of 32 (one m16 fragment per warp): the weights are read once and
  // no mma works on padding rows past T beyond 31; up to 64 (batched decode), 64 (two per warp),
  // still one token tile; past that, 128 (4 per warp), which halves the shared-memory bytes per
  // mma of the B side (see matmul_bf16_gemm_f32).
  return T <= 32 ? 32 : T <= 64 ? 64 : 128;
}

namespace {
// k tiles per split and the number of splits for at most `want` splits of KT tiles (none empty).
void plan_splits(int KT, int want, int& per, int& splits) {
  per = (KT + std::max(1, want) - 1) / std::max(1, want);
  splits = (KT + per - 1) / per;
}
// Tiles of the grid for token tiles of tm and x split or not (the 128-token tile of the default
// mode is 256 weight rows wide: gemm::block_n).
int64_t gemm_tiles(int T, int N, int tm, bool split_x) {
  const int bn = cuda::gemm::block_n(tm / 32, split_x);
  return int64_t((N + bn - 1) / bn) * ((T + tm - 1) / tm);
}
}  // namespace

int matmul_bf16_gemm_k_splits_cuda(int T, int N, int K, int tile_m, bool split_x, int sms) {
  // Enough blocks to stream the weights from every SM: a grid of at most sms / 2 tiles (66 on an
  // H100's 132 SMs, 54 on an A100's 108; the projections' 23 to 40 at decode sizes) splits k until
  // it has about `sms` blocks, each at least 8 k tiles (256 k) deep. Larger grids (prefill; QKV at
  // 512 tokens: 80 wide tiles) keep one block per tile: their mma, not the weight stream, is the
  // longer part, and the partial sums would cost 4 T N bytes per split. The narrow tiles (two
  // blocks an SM) round the count of splits up (ceil(sms / tiles)); the wide tile (one block an SM:
  // a second round of blocks would take as long as the first) rounds it down, so that all splits
  // run in one round on the device's SMs (QKV at 256 tokens: 40 tiles x 3 splits on an H100, x 2
  // on an A100; the attention output at 256: 24 x 5 and 24 x 4).
  if (T < 1 || N < 1 || K < 1 || sms < 1) return 1;
  const int tm = tile_m ? tile_m : matmul_bf16_gemm_tile_m_cuda(T);
  const int64_t tiles = gemm_tiles(T, N, tm, split_x);
  if (tiles > matmul_bf16_gemm_max_tiles(sms)) return 1;
  const int KT = (K + cuda::gemm::kBK - 1) / cuda::gemm::kBK;
  const bool wide = cuda::gemm::warp_nt(tm / 32, split_x) == 8;
  const int64_t fill = wide ? sms / tiles : (sms + tiles - 1) / tiles;
  const int want = int(std::min<int64_t>(fill, KT / kMatmulBf16GemmMinSplitTiles));
  if (want <= 1) return 1;
  int per, splits;
  plan_splits(KT, want, per, splits);
  return splits;
}

size_t matmul_bf16_gemm_scratch_cuda(int max_T, int N, int K, int sms) {
  // Either mode's rule (the default mode's 128-token tile is wider, so it splits up to larger T).
  size_t most = 0;
  for (int T = 1; T <= max_T; ++T) {
    bool more = false;
    for (bool split_x : {false, true}) {
      const int s = matmul_bf16_gemm_k_splits_cuda(T, N, K, 0, split_x, sms);
      if (s > 1) most = std::max(most, size_t(s) * size_t(T) * size_t(N) * 4);
      more = more || gemm_tiles(T, N, matmul_bf16_gemm_tile_m_cuda(T), split_x) <= matmul_bf16_gemm_max_tiles(sms);
    }
    if (!more) break;  // no split past here (tiles only grow with T)
  }
  return most;
}

void matmul_bf16_gemm_cuda(const MatmulBf16Args& a, const MatmulBf16GemmOptions& o, cudaStream_t stream) {
  using namespace cuda;
  if (a.T < 0 || a.N < 1 || a.K < 1 || a.ldx < a.K || a.ldy < a.N || !a.x || !a.w || !a.y)
    throw invalid_argument("matmul_bf16 (GEMM): need T >= 0, N >= 1, K >= 1, ldx >= K, ldy >= N and non-null x, w, y");
  if (a.K % 8 != 0 || a.ldx % 4 != 0 || !aligned(a.x, 16) || !aligned(a.w, 16))
    throw invalid_argument("matmul_bf16 (GEMM): needs K % 8 == 0 (got " + std::to_string(a.K) + "), ldx % 4 == 0 (got " +
                           std::to_string(a.ldx) + ") and x, w 16-byte aligned");
  if (o.tile_m != 0 && o.tile_m != 32 && o.tile_m != 64 && o.tile_m != 128)
    throw invalid_argument("matmul_bf16 (GEMM): tile_m must be 0, 32, 64 or 128, got " + std::to_string(o.tile_m));
  if (o.k_splits < 0 || o.k_splits > 65535) throw invalid_argument("matmul_bf16 (GEMM): k_splits must be in [0, 65535]");
  if (a.T == 0) return;
  const int tm = o.tile_m ? o.tile_m : matmul_bf16_gemm_tile_m_cuda(a.T);
  if ((int64_t(a.T) + tm - 1) / tm > 65535) throw invalid_argument("matmul_bf16 (GEMM): T " + std::to_string(a.T) + " past the grid's 65535 token tiles");
  const bool have_ws = o.ws.partials && o.ws.tickets;
  if (have_ws && o.ws.sms < 1) throw invalid_argument("matmul_bf16 (GEMM): ws.sms must be at least 1, got " + std::to_string(o.ws.sms));
  const int KT = (a.K + gemm::kBK - 1) / gemm::kBK;
  int per = KT, splits = 1;
  plan_splits(KT, o.k_splits ? o.k_splits : have_ws ? matmul_bf16_gemm_k_splits_cuda(a.T, a.N, a.K, tm, o.split_x, o.ws.sms) : 1, per,
              splits);
  if (splits > 1) {
    if (!have_ws) throw invalid_argument("matmul_bf16 (GEMM): k_splits > 1 needs partials and tickets");
    if (o.ws.partials_bytes < size_t(splits) * a.T * a.N * 4 || !aligned(o.ws.partials, 8))
      throw invalid_argument("matmul_bf16 (GEMM): partials must hold " + std::to_string(size_t(splits) * a.T * a.N * 4) +
                             " bytes (" + std::to_string(splits) + " k splits x T x N f32), 8-byte aligned");
    if (gemm_tiles(a.T, a.N, tm, o.split_x) > matmul_bf16_gemm_max_tiles(o.ws.sms))
      throw invalid_argument("matmul_bf16 (GEMM): k splits take at most " + std::to_string(matmul_bf16_gemm_max_tiles(o.ws.sms)) +
                             " tiles (tickets: ws.sms / 2)");
  }
  float* p = splits > 1 ? o.ws.partials : nullptr;
  unsigned* tk = splits > 1 ? o.ws.tickets : nullptr;
  if (tm == 32) o.split_x ? launch_gemm<1, true>(a, o.x_rows, splits, per, p, tk, stream) : launch_gemm<1, false>(a, o.x_rows, splits, per, p, tk, stream);
  else if (tm == 64) o.split_x ? launch_gemm<2, true>(a, o.x_rows, splits, per, p, tk, stream) : launch_gemm<2, false>(a, o.x_rows, splits, per, p, tk, stream);
  else if (o.split_x) launch_gemm<4, true>(a, o.x_rows, splits, per, p, tk, stream);
  else if (o.ws.wgmma) launch_gemm<4, false, true>(a, o.x_rows, splits, per, p, tk, stream);
  else launch_gemm<4, false>(a, o.x_rows, splits, per, p, tk, stream);
  check_launch("matmul_bf16 (GEMM)");
}

MatmulBf16Kernel matmul_bf16_kernel_cuda(const MatmulBf16Args& a, bool fp32_mode) {
  const bool gemm_shape = a.K % 8 == 0 && a.ldx % 4 == 0 && cuda::aligned(a.x, 16) && cuda::aligned(a.w, 16);
  const int from = a.N >= kMatmulBf16WideN ? kMatmulBf16GemmFromTWide : fp32_mode ? kMatmulBf16GemmFromTExact : kMatmulBf16GemmFromT;
  if (a.T < from || !gemm_shape) return MatmulBf16Kernel::kGemv;
  return fp32_mode ? MatmulBf16Kernel::kGemmSplitBf16 : MatmulBf16Kernel::kGemmBf16;
}

void matmul_bf16_select_cuda(const MatmulBf16Args& a, bool fp32_mode, cudaStream_t stream, const MatmulBf16Workspace& ws) {
  const MatmulBf16Kernel k = matmul_bf16_kernel_cuda(a, fp32_mode);
  if (k == MatmulBf16Kernel::kGemv) return matmul_bf16_cuda(a, stream);
  MatmulBf16GemmOptions o;
  o.split_x = k == MatmulBf16Kernel::kGemmSplitBf16;
  o.ws = ws;
  matmul_bf16_gemm_cuda(a, o, stream);
}
}  // namespace gptoss
