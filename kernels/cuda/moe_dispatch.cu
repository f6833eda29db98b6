// moe_dispatch: the expert grouping of one MoE layer's T * k slots and the scatter-combine of the
// experts' weighted outputs (contract in kernels/cuda/moe_dispatch.cuh; the grouping is the CPU
// op's, kernels/cpu/moe_mxfp4.cc: slots grouped by expert, in slot order within an expert).
//
// moe_dispatch_kernel: one block of 1024 threads, no atomics, so the result is a function of idx
// alone (a stable counting sort by (expert, slot)):
//   1. per chunk of 1024 slots (thread tid owns slot chunk + tid): each warp finds, for each of its
//      lanes, the lanes holding the same expert with 8 ballots (one per bit of the 8-bit id: the
//      peers are the lanes agreeing on every bit) and the lane's rank among its lower peers; the
//      highest peer writes the warp's count for that expert (one byte per warp and expert);
//   2. after a barrier, thread e scans expert e's counts over the 32 warps in warp order, adding the
//      running count of the earlier chunks: each warp's base for each expert; it clears the counts
//      for the next chunk; after a second barrier each slot's rank within its expert is the base of
//      its warp plus its rank in the warp;
//   3. warp 0 scans the per-expert totals (shfl_up in 32-expert pieces): offsets, and the number of
//      m-tiles of each expert, whose scan places each expert's tiles in the list;
//   4. after a barrier, thread e writes expert e's tiles and every slot s goes to
//      order[offsets[e] + rank[s]] (each thread the slots it ranked, so no barrier there).
// Cost: S / 1024 chunks of ~8 ballots and a 32-step scan per expert; a few microseconds at S = 8192.
//
// moe_dispatch_combine_f32: as kernels/cuda/moe_combine.cu, thread per element of a token's row, the
// k rows summed in f32 in routing order (the routing weights are already in them).
#include "kernels/cuda/moe_dispatch.cuh"

#include <algorithm>
#include <string>

#include "kernels/op.h"

namespace gptoss {
namespace cuda {
namespace {
constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxExperts = 256;  // the ballot match compares 8 bits

// Dynamic shared memory: counts [32][E] u8, base [32][E] i32, running [E], off [E + 1], tile base [E].
size_t dispatch_smem(int E) { return size_t(kWarps) * E + size_t(kWarps) * E * 4 + (size_t(3) * E + 1) * 4; }

__global__ void __launch_bounds__(kThreads)
    moe_dispatch_kernel(const int32_t* __restrict__ idx, int S, int E, int tile_rows, MoeDispatchPlan p) {
  uint8_t* cnt = dynamic_shared<uint8_t>();
  int32_t* base = reinterpret_cast<int32_t*>(cnt + size_t(kWarps) * E);  // 32 E bytes: 4-byte aligned
  int32_t* running = base + size_t(kWarps) * E;
  int32_t* off = running + E;
  int32_t* tbase = off + E + 1;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  // Each warp clears its own counts; thread e alone touches running[e] in step 2.
  for (int e = lane; e < E; e += 32) cnt[warp * E + e] = 0;
  for (int e = tid; e < E; e += kThreads) running[e] = 0;
  __syncwarp();  // mutate: beyond the emulator (its ballot orders memory; CUDA's below need not)
  for (int chunk = 0; chunk < S; chunk += kThreads) {
    const int s = chunk + tid;
    const int e = s < S ? idx[s] : -1;
    const bool valid = e >= 0 && e < E;
    unsigned peers = __ballot_sync(kFullMask, valid);
    for (int b = 0; b < 8; ++b) {
      const bool bit = (e >> b) & 1;
      const unsigned m = __ballot_sync(kFullMask, valid && bit);
      peers &= bit ? m : ~m;
    }
    const int below = __popc(peers & ((1u << lane) - 1u));
    if (valid && (peers >> lane) == 1u) cnt[warp * E + e] = uint8_t(below + 1);  // the highest peer
    __syncthreads();
    for (int x = tid; x < E; x += kThreads) {
      int run = running[x];
      for (int w = 0; w < kWarps; ++w) {
        base[w * E + x] = run;
        run += cnt[w * E + x];
        cnt[w * E + x] = 0;
      }
      running[x] = run;
    }
    __syncthreads();
    if (valid) p.rank[s] = base[warp * E + e] + below;
  }
  if (warp == 0) {
    int carry = 0, tcarry = 0;
    for (int b = 0; b < E; b += 32) {
      const int e = b + lane;
      const int c = e < E ? running[e] : 0;
      const int nt = (c + tile_rows - 1) / tile_rows;
      int inc = c, tinc = nt;
      for (int o = 1; o < 32; o <<= 1) {
        const int u = __shfl_up_sync(kFullMask, inc, o);
        const int tu = __shfl_up_sync(kFullMask, tinc, o);
        if (lane >= o) inc += u, tinc += tu;
      }
      if (e < E) {
        off[e] = carry + inc - c;
        tbase[e] = tcarry + tinc - nt;
        p.offsets[e] = carry + inc - c;
      }
      carry += __shfl_sync(kFullMask, inc, 31);
      tcarry += __shfl_sync(kFullMask, tinc, 31);
    }
    if (lane == 0) {
      off[E] = carry;
      p.offsets[E] = carry;
      *p.ntiles = tcarry;
    }
  }
  __syncthreads();
  for (int e = tid; e < E; e += kThreads)
    for (int r = off[e], t = tbase[e]; r < off[e + 1]; r += tile_rows, ++t) {
      p.tile_expert[t] = e;
      p.tile_row0[t] = r;
    }
  for (int s = tid; s < S; s += kThreads) {
    const int e = idx[s];
    if (e >= 0 && e < E) p.order[off[e] + p.rank[s]] = s;
  }
}

constexpr int kCombineThreads = 256;
__global__ void __launch_bounds__(kCombineThreads)
    moe_dispatch_combine_f32(const float* __restrict__ yw, const int32_t* __restrict__ idx, int k, int E, int H,
                             float* __restrict__ out, int64_t ldo, bool accumulate) {
  const int i = blockIdx.x * kCombineThreads + threadIdx.x;
  if (i >= H) return;
  const int t = blockIdx.y;
  float sum = 0.f;
  for (int j = 0; j < k; ++j) {
    const int e = idx[t * k + j];
    sum += (e >= 0 && e < E) ? yw[(int64_t(t) * k + j) * H + i] : NAN;
  }
  float* o = out + int64_t(t) * ldo + i;
  *o = accumulate ? *o + sum : sum;
}
}  // namespace
}  // namespace cuda

namespace {
struct Carved {
  MoeDispatchPlan p;
  size_t bytes;
};
Carved carve(uint8_t* base, int T, int k, int E, int tile_rows) {
  const size_t S = size_t(T) * size_t(k);
  ScratchCarver c{base, 0, SIZE_MAX};
  MoeDispatchPlan p;
  p.offsets = c.take<int32_t>(size_t(E) + 1);
  p.order = c.take<int32_t>(S);
  const size_t tiles = size_t(moe_dispatch_max_tiles(int(S), E, tile_rows));
  p.tile_expert = c.take<int32_t>(tiles);
  p.tile_row0 = c.take<int32_t>(tiles);
  p.ntiles = c.take<int32_t>(1);
  p.rank = c.take<int32_t>(S);
  return {p, c.used};
}
}  // namespace

size_t moe_dispatch_scratch_cuda(int T, int k, int E, int tile_rows) { return carve(nullptr, T, k, E, tile_rows).bytes; }
MoeDispatchPlan moe_dispatch_carve(uint8_t* scratch, int T, int k, int E, int tile_rows) {
  return carve(scratch, T, k, E, tile_rows).p;
}

void moe_dispatch_cuda(const int32_t* idx, int T, int k, int E, int tile_rows, uint8_t* scratch, size_t scratch_bytes,
                       cudaStream_t stream) {
  using namespace cuda;
  if (T < 0 || k < 1 || E < 1 || E > kMaxExperts || tile_rows < 1 || int64_t(T) * k > (int64_t(1) << 24))
    throw invalid_argument("moe_dispatch: need T >= 0, k >= 1, 1 <= E <= 256, tile_rows >= 1, T * k <= 2^24");
  if (!idx || !scratch) throw invalid_argument("moe_dispatch: null pointer");
  if (!aligned(scratch, 16)) throw invalid_argument("moe_dispatch: scratch must be 16-byte aligned");
  if (scratch_bytes < moe_dispatch_scratch_cuda(T, k, E, tile_rows))
    throw invalid_argument("moe_dispatch: scratch must hold moe_dispatch_scratch_cuda(T, k, E, tile_rows) bytes");
  if (T == 0) return;
  const MoeDispatchPlan p = moe_dispatch_carve(scratch, T, k, E, tile_rows);
  GPTOSS_LAUNCH(moe_dispatch_kernel, dim3(1), dim3(kThreads), dispatch_smem(E), stream, idx, T * k, E, tile_rows, p);
  check_launch("moe_dispatch");
}

void moe_dispatch_combine_cuda(const float* yw, const int32_t* idx, int T, int k, int E, int H, float* out, int64_t ldo,
                               bool accumulate, cudaStream_t stream) {
  using namespace cuda;
  if (T < 0 || T > 65535 || k < 1 || E < 1 || H < 1 || ldo < H || !yw || !idx || !out)
    throw invalid_argument("moe_dispatch_combine: need 0 <= T <= 65535, k >= 1, E >= 1, H >= 1, ldo >= H, non-null pointers");
  if (T == 0) return;
  GPTOSS_LAUNCH(moe_dispatch_combine_f32, dim3(unsigned((H + kCombineThreads - 1) / kCombineThreads), unsigned(T)),
                dim3(kCombineThreads), 0, stream, yw, idx, k, E, H, out, ldo, accumulate);
  check_launch("moe_dispatch (combine)");
}
}  // namespace gptoss
