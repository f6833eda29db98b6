// The tile geometry of matmul_bf16's tensor-core GEMM (kernels/cuda/matmul_bf16.cu): sizes, the
// swizzled shared-memory layout of a bf16 tile and the row address each lane hands ldmatrix for
// an mma.m16n8k16 fragment. Pure functions, shared by the kernel and by the test that checks every
// fragment position through the swizzle (test/cuda/matmul_bf16_gemm_test.cu).
//
// A tile is [rows][kBK = 32] bf16: rows of 64 bytes, four 16-byte chunks (8 k each). Chunk c of
// row r is stored at chunk c ^ ((r >> 1) & 3) of that row. ldmatrix serves one 8x8 matrix (8 row
// addresses of 16 bytes, 128 bytes) per shared-memory wavefront when the 8 rows fall in distinct
// 16-byte bank groups of a 128-byte line; the 8 rows of a fragment are 8 consecutive rows at one
// logical chunk: (r & 1) picks the half of the line and (r >> 1) & 3 permutes the chunk within it,
// so the 8 rows land on 8 distinct bank groups (no conflict). Unswizzled, rows r and r + 2 would
// share banks (4-way conflicts). The stores that fill a tile (16 bytes per thread, 4 consecutive
// threads per row) put two whole rows in each 8-thread phase: conflict-free too. (The XOR swizzle
// is the usual technique of CUTLASS's sm80 tile iterators; this one is written for a 64-byte row.)
#pragma once
#include <cstdint>

#include "kernels/cuda/common.cuh"

namespace gptoss::cuda::gemm {
constexpr int kThreads = 256;  // 8 warps: 2 along M (tokens) x 4 along N (weight rows)
constexpr int kWarpsM = 2, kWarpsN = 4;
constexpr int kBN = 128;             // weight rows (output columns) per block of the narrow tile
constexpr int kBK = 32;              // k per tile: two m16n8k16 steps
// The weight tiles' cp.async ring: mma.sync 4 stages, loads 3 tiles ahead; wgmma 8, 6 ahead (a
// stage is refilled only once every warpgroup has retired the wgmma that read it, a step after
// its own).
__host__ __device__ constexpr int w_stages(bool wgmma) { return wgmma ? 8 : 4; }
__host__ __device__ constexpr int w_ahead(bool wgmma) { return wgmma ? 6 : 3; }
constexpr int kWarpN = kBN / kWarpsN;  // 32 columns per warp: 4 n8 fragments (narrow tile)
constexpr int kNT = kWarpN / 8;
constexpr int kRowBytes = kBK * 2;     // 64
constexpr int kWTileBytes = kBN * kRowBytes;  // 8 KB
// Block rows (tokens) for MT m16 fragments per warp.
__host__ __device__ constexpr int block_m(int mt) { return kWarpsM * 16 * mt; }
// n8 fragments per warp: 4 (warp tile 16 MT tokens x 32 rows), except the default mode's
// 128-token tile (MT 4, x not split), whose warps own 64 tokens x 64 rows (8 fragments; "wide"):
// the prefill's tile, 128 tokens x 256 weight rows a block.
__host__ __device__ constexpr int warp_nt(int mt, bool split) { return mt == 4 && !split ? 8 : 4; }
// Weight rows per block: 128, or 256 for the wide tile.
__host__ __device__ constexpr int block_n(int mt, bool split) { return kWarpsN * 8 * warp_nt(mt, split); }
constexpr int kBNMax = 256;
// Dynamic shared memory of a block: the W ring and two x tiles (hi and lo with split x).
__host__ __device__ constexpr int gemm_smem_bytes(int mt, bool split, bool wgmma) {
  return w_stages(wgmma) * block_n(mt, split) * kRowBytes + 2 * (split ? 2 : 1) * block_m(mt) * kRowBytes;
}

// Byte offset of 16-byte chunk c (0..3) of row r in a swizzled tile.
__host__ __device__ constexpr uint32_t swizzle(int r, int c) { return uint32_t(r) * kRowBytes + (uint32_t(c ^ ((r >> 1) & 3)) << 4); }

// The wgmma tile's W stage (kWg): wgmma's no-swizzle K-major core-matrix layout, row r's 16-byte
// piece c (k 8c..8c+7) at (r / 8) 512 + 128 c + 16 (r % 8): a 16-k chunk is a descriptor with the
// two k halves 128 bytes apart (LBO) and 8-row groups 512 apart (SBO). The fill's 16-byte copy id
// (0..1023) takes row w_row(id), piece w_piece(id), whose place is 16 id: 8 consecutive copies
// fill 128 contiguous bytes (no bank conflict).
__host__ __device__ constexpr uint32_t w_core(int r, int c) { return uint32_t(r >> 3) * 512 + uint32_t(c) * 128 + uint32_t(r & 7) * 16; }
__host__ __device__ constexpr int w_row(int id) { return (id & 7) + 8 * (id >> 5); }
__host__ __device__ constexpr int w_piece(int id) { return (id >> 3) & 3; }

// ldmatrix.x4 row address of `lane` for the A fragment (16 rows from r0, k16 step kk of the tile):
// matrices 0..3 = (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15),
// which are registers a[0..3] of mma.m16n8k16's A operand (kernels/cuda/mma.cuh).
__host__ __device__ constexpr uint32_t a_fragment(int r0, int kk, int lane) {
  return swizzle(r0 + (lane & 7) + ((lane >> 3) & 1) * 8, kk * 2 + (lane >> 4));
}
// ldmatrix.x4 (not .trans) row address of `lane` for two B fragments: weight rows n0..n0+15 of a
// [N, K] tile (B's columns, k-contiguous: the "col" operand as stored), k16 step kk. Matrices 0..3
// = (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15): registers b[0], b[1] of
// the n8 fragment at n0, then of the one at n0 + 8.
__host__ __device__ constexpr uint32_t b_fragment(int n0, int kk, int lane) {
  return swizzle(n0 + (lane & 7) + (lane >> 4) * 8, kk * 2 + ((lane >> 3) & 1));
}
}  // namespace gptoss::cuda::gemm
