// moe_dispatch on the device: groups the T * k (token, expert) slots of one MoE layer by expert for
// the grouped MXFP4 GEMM (kernels/cuda/moe_mxfp4_gemm.cu), and sums the experts' weighted outputs
// back per token. Part of the moe_mxfp4 / moe_combine ops of the forward pass (kernels/MODEL.md,
// "Experts" and "Combine"); the CPU op groups slots the same way (kernels/cpu/moe_mxfp4.cc).
// Every result is fixed by the inputs alone: no atomics, no order that depends on timing, so runs
// repeat bit for bit (checked under every emulator schedule by test/cuda/moe_dispatch_test.cu).
// Launchers throw ERR_INVALID_ARGUMENT before launching on bad shapes, ERR_DEVICE when a launch
// fails; every pointer is device memory.
#pragma once
#include <algorithm>

#include "kernels/cuda/common.cuh"

namespace gptoss {
// The dispatch of S = T * k slots over E experts in m-tiles of `tile_rows` rows:
//   offsets [E + 1]    exclusive prefix sums of the slots per expert (offsets[E] = valid slots)
//   order   [S]        slot ids (t * k + j) grouped by expert, in slot order within an expert
//                      (a stable sort by (expert, slot)); position p of the sorted order is the
//                      GEMM's row p
//   tile_expert, tile_row0 [max_tiles]  one entry per non-empty m-tile, experts in order: the
//                      expert and its first sorted row (the tile has min(tile_rows, offsets[e + 1]
//                      - row0) rows)
//   ntiles  [1]        the number of m-tiles written
// A slot whose index lies outside [0, E) is in no group (the GEMM launchers make its outputs NaN).
struct MoeDispatchPlan {
  int32_t* offsets;
  int32_t* order;
  int32_t* tile_expert;
  int32_t* tile_row0;
  int32_t* ntiles;
  int32_t* rank;  // [S] working memory: a slot's rank within its expert
};

// The most m-tiles S slots can make over E experts: floor(S / tile_rows) full tiles plus at most
// one partial tile per non-empty expert.
inline int moe_dispatch_max_tiles(int S, int E, int tile_rows) { return S / tile_rows + std::min(S, E); }

// Device scratch moe_dispatch_cuda needs, and its carving (the same in both).
size_t moe_dispatch_scratch_cuda(int T, int k, int E, int tile_rows);
MoeDispatchPlan moe_dispatch_carve(uint8_t* scratch, int T, int k, int E, int tile_rows);

// One block of 1024 threads: per 1024-slot chunk, warps rank their slots per expert with ballots
// (8 ballots match an 8-bit expert id), a per-expert scan over the 32 warps gives each slot its
// rank among earlier slots of its expert; then offsets by a warp scan over experts, the m-tile list,
// and order[offsets[e] + rank] = slot. Limits: 1 <= E <= 256, T * k <= 2^24, 1 <= tile_rows.
// idx [T, k] i32 (router_topk).
void moe_dispatch_cuda(const int32_t* idx, int T, int k, int E, int tile_rows, uint8_t* scratch, size_t scratch_bytes,
                       cudaStream_t stream);

// The scatter-combine: out[t] (+)= sum_j yw[t * k + j], j = 0..k-1 in this order, in f32, where yw
// rows are the experts' outputs already scaled by their routing weights (the GEMM's down pass
// writes them per slot). A slot whose expert index lies outside [0, E) makes its token's row NaN.
// yw [T * k, H], out [T, ldo]; accumulate: add to out (the MoE residual add), else overwrite.
// Limits: 1 <= T <= 65535 (grid.y), H >= 1, ldo >= H.
void moe_dispatch_combine_cuda(const float* yw, const int32_t* idx, int T, int k, int E, int H, float* out, int64_t ldo,
                               bool accumulate, cudaStream_t stream);
}  // namespace gptoss
