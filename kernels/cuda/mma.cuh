// Tensor-core and async-copy building blocks for sm_80+ kernels: mma.sync m16n8k16 (bf16 in, f32
// accumulate), ldmatrix (x1/x2/x4, optionally .trans), cp.async (16 bytes, commit/wait groups) and
// discard.global.L2; and for sm_90a, wgmma.mma_async m64nNk16 (bf16 in, f32 accumulate, A from
// registers, B from shared memory through a matrix descriptor) with its fence, commit and wait.
// Under nvcc each is one inline PTX instruction; under the kernel lab's emulator each is a
// warp-collective (mma, ldmatrix) or per-thread (cp.async) emulation with the PTX ISA's fragment
// layouts, checked against CuTe's SM80_16x8x16_F32BF16BF16F32_TN in test/cuda/mma_test.cu.
//
// Fragments (lane = threadIdx.x % 32, g = lane / 4, t = lane % 4), PTX ISA "mma.m16n8k16":
//   a[r]: two bf16 of A (16x16, row-major): a[0] = A[g][2t..2t+1], a[1] = A[g+8][2t..], a[2] =
//         A[g][2t+8..], a[3] = A[g+8][2t+8..]; b[r]: B (16x8, "col": k-major per column) b[0] =
//         B[2t..2t+1][g], b[1] = B[2t+8..2t+9][g]; c/d: c[0..1] = C[g][2t..2t+1], c[2..3] = C[g+8][...].
// ldmatrix: lanes 8i..8i+7 give the 16-byte-aligned shared-memory row addresses of matrix i; lane
// l gets row l/4, columns 2(l%4), 2(l%4)+1 of matrix i in r[i] (of the transpose with .trans).
#pragma once
#include "kernels/cuda/common.cuh"

#if defined(GPTOSS_CUDA_EMU)
#define GPTOSS_SITE_PARAM , EMU_SITE_ARGS
#define GPTOSS_SITE_PARAM_FIRST EMU_SITE_ARGS
#else
#define GPTOSS_SITE_PARAM
#define GPTOSS_SITE_PARAM_FIRST
#endif

namespace gptoss::cuda {

__device__ __forceinline__ void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2],
                                                  const float c[4] GPTOSS_SITE_PARAM) {
#if defined(GPTOSS_CUDA_EMU)
  ::emu::MmaLane l{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}, {c[0], c[1], c[2], c[3]}, {}};
  ::emu::warp_collective(::emu::Op::Mma, &l, EMU_SITE);
  for (int i = 0; i < 4; ++i) d[i] = l.d[i];
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#endif
}

template <int kNum, bool kTrans>
__device__ __forceinline__ void ldmatrix(uint32_t r[kNum], const void* smem_row GPTOSS_SITE_PARAM) {
  static_assert(kNum == 1 || kNum == 2 || kNum == 4, "ldmatrix loads 1, 2 or 4 matrices");
#if defined(GPTOSS_CUDA_EMU)
  ::emu::LdmatrixLane l{smem_row, kNum, kTrans, {}};
  ::emu::warp_collective(::emu::Op::Ldmatrix, &l, EMU_SITE);
  for (int i = 0; i < kNum; ++i) r[i] = l.r[i];
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem_row));
  if constexpr (kNum == 1 && !kTrans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(s));
  else if constexpr (kNum == 1)
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(s));
  else if constexpr (kNum == 2 && !kTrans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(s));
  else if constexpr (kNum == 2)
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(s));
  else if constexpr (!kTrans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
#endif
}

// 16 bytes global -> shared, bypassing L1 (.cg); both addresses 16-byte aligned.
__device__ __forceinline__ void cp_async16(void* smem_dst, const void* gmem_src GPTOSS_SITE_PARAM) {
#if defined(GPTOSS_CUDA_EMU)
  ::emu::cp_async(smem_dst, gmem_src, 16, EMU_SITE);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem_src) : "memory");
#endif
}

// discard.global.L2 (sm_80+): the 128-byte line at p (128-byte aligned, global) may leave L2
// without being written back to DRAM; its contents are undefined from here (the emulator makes
// them NaN). For scratch read for the last time: its bytes then never reach DRAM.
__device__ __forceinline__ void discard_l2(void* p GPTOSS_SITE_PARAM) {
#if defined(GPTOSS_CUDA_EMU)
  ::emu::discard_l2(p, 128, EMU_SITE);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("discard.global.L2 [%0], 128;\n" ::"l"(p) : "memory");
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#if defined(GPTOSS_CUDA_EMU)
  ::emu::cp_async_commit();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Waits until at most kPending of this thread's committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
#if defined(GPTOSS_CUDA_EMU)
  ::emu::cp_async_wait(kPending);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
#endif
}

// ---- wgmma (sm_90a: compiled for arch=compute_90a; elsewhere these trap) ----
// A warpgroup (4 consecutive warps, 128 threads) computes D[64 x N] (+)= A[64 x 16] B[16 x N]. A
// comes from registers: warp w of the group holds rows 16 w..16 w + 15 in the layout of
// mma.m16n8k16's A fragment (a[] above). B (K x N, "K-major": each column's 16 k values in two
// 16-byte halves) comes from shared memory in the no-swizzle canonical layout: core matrices of 8
// columns x 16 bytes, 128 contiguous bytes each, the second k half `lbo` bytes after the first,
// the next 8 columns `sbo` bytes on (CuTe's make_gmma_desc, Major::K, INTERLEAVE). D: thread
// (warp w, g, t) holds d[4 j + 2 h + v] = D[16 w + g + 8 h][8 j + 2 t + v], the m16n8 C layout
// repeated over N / 8 column tiles. Asynchronous: the accumulators and B's shared memory must not
// be touched between the wgmma and the wgmma_wait that retires it; each batch of wgmma follows a
// wgmma_fence. The emulator enforces each of these (test/cuda/emu/cuda_emu.h).
#if defined(__CUDA_ARCH_FEAT_SM90_ALL) || defined(GPTOSS_CUDA_EMU)
#define GPTOSS_HAS_WGMMA 1
#endif

// The descriptor of a K-major, no-swizzle B at p (PTX ISA "Matrix Descriptor Format": bits 0-13
// the shared address >> 4, 16-29 lbo >> 4, 32-45 sbo >> 4, swizzle mode 0). Moving the start on by
// b bytes (16-byte multiples, staying under 256 KB) adds b >> 4.
__device__ __forceinline__ uint64_t wgmma_desc(const void* p, uint32_t lbo, uint32_t sbo GPTOSS_SITE_PARAM) {
#if defined(GPTOSS_CUDA_EMU)
  const uint32_t a = ::emu::shared_window(p, EMU_SITE);
#else
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
#endif
  return uint64_t((a & 0x3ffffu) >> 4) | (uint64_t((lbo >> 4) & 0x3fffu) << 16) | (uint64_t((sbo >> 4) & 0x3fffu) << 32);
}

__device__ __forceinline__ void wgmma_fence(GPTOSS_SITE_PARAM_FIRST) {
#if defined(GPTOSS_CUDA_EMU)
  ::emu::warpgroup_op(::emu::Op::WgmmaFence, nullptr, 0, EMU_SITE);
#elif defined(GPTOSS_HAS_WGMMA)
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#else
  __trap();
#endif
}
__device__ __forceinline__ void wgmma_commit(GPTOSS_SITE_PARAM_FIRST) {
#if defined(GPTOSS_CUDA_EMU)
  ::emu::warpgroup_op(::emu::Op::WgmmaCommit, nullptr, 0, EMU_SITE);
#elif defined(GPTOSS_HAS_WGMMA)
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#else
  __trap();
#endif
}
// Waits until at most kPending of the warpgroup's committed groups are in flight.
template <int kPending>
__device__ __forceinline__ void wgmma_wait(GPTOSS_SITE_PARAM_FIRST) {
#if defined(GPTOSS_CUDA_EMU)
  ::emu::warpgroup_op(::emu::Op::WgmmaWait, nullptr, kPending, EMU_SITE);
#elif defined(GPTOSS_HAS_WGMMA)
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
#else
  __trap();
#endif
}

// Accumulator operand lists: the instruction names the first N / 2 of kRegs (32 or 64) operands;
// a, the descriptor and n follow them.
#define GPTOSS_WG_D0 "%0, %1, %2, %3, %4, %5, %6, %7"
#define GPTOSS_WG_D1 GPTOSS_WG_D0 ", %8, %9, %10, %11, %12, %13, %14, %15"
#define GPTOSS_WG_D2 GPTOSS_WG_D1 ", %16, %17, %18, %19, %20, %21, %22, %23"
#define GPTOSS_WG_D3 GPTOSS_WG_D2 ", %24, %25, %26, %27, %28, %29, %30, %31"
#define GPTOSS_WG_D4 GPTOSS_WG_D3 ", %32, %33, %34, %35, %36, %37, %38, %39"
#define GPTOSS_WG_D5 GPTOSS_WG_D4 ", %40, %41, %42, %43, %44, %45, %46, %47"
#define GPTOSS_WG_D6 GPTOSS_WG_D5 ", %48, %49, %50, %51, %52, %53, %54, %55"
#define GPTOSS_WG_D7 GPTOSS_WG_D6 ", %56, %57, %58, %59, %60, %61, %62, %63"
#define GPTOSS_WG_OUT8(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])
#define GPTOSS_WG_OUT32 GPTOSS_WG_OUT8(0), GPTOSS_WG_OUT8(8), GPTOSS_WG_OUT8(16), GPTOSS_WG_OUT8(24)
#define GPTOSS_WG_OUT64 GPTOSS_WG_OUT32, GPTOSS_WG_OUT8(32), GPTOSS_WG_OUT8(40), GPTOSS_WG_OUT8(48), GPTOSS_WG_OUT8(56)
#define GPTOSS_WG_IN "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(n)
// One wgmma of N columns, issued only when n == N (a predicate, not a branch: ptxas keeps wgmma in
// flight only where no branch it cannot prove uniform lies between them and their wait).
#define GPTOSS_WG_RS(N, DL, A0, A1, A2, A3, DS, NN, OUTS)                                                     \
  asm volatile("{\n.reg .pred q;\nsetp.eq.b32 q, %" NN ", " #N ";\n"                                        \
               "@q wgmma.mma_async.sync.aligned.m64n" #N "k16.f32.bf16.bf16 {" DL "}, {%" A0 ", %" A1 ", %" A2 \
               ", %" A3 "}, %" DS ", 1, 1, 1, 0;\n}\n"                                                         \
               : OUTS                                                                                         \
               : GPTOSS_WG_IN)

// D += A B for N = n columns, n in {16, 32, ..., 8 kRegs / 4} and the same in the whole warpgroup;
// d holds kRegs accumulators (32 or 64), of which the first n / 2 are this instruction's. The
// accumulators are always added to (scale-d 1): zero them before a tile's first wgmma.
template <int kRegs>
__device__ __forceinline__ void wgmma_m64k16_rs(float* d, const uint32_t a[4], uint64_t desc, int n GPTOSS_SITE_PARAM) {
  static_assert(kRegs == 32 || kRegs == 64, "wgmma_m64k16_rs: 32 or 64 accumulators");
#if defined(GPTOSS_CUDA_EMU)
  if (n < 16 || n > 4 * kRegs || n % 16) ::emu::fail(EMU_SITE, "wgmma_m64k16_rs: n must be 16..4 kRegs in steps of 16");
  ::emu::WgmmaLane l{{a[0], a[1], a[2], a[3]}, d, n, desc, 1};
  ::emu::warpgroup_op(::emu::Op::Wgmma, &l, 0, EMU_SITE);
#elif defined(GPTOSS_HAS_WGMMA)
  if constexpr (kRegs == 32) {
    GPTOSS_WG_RS(16, GPTOSS_WG_D0, "32", "33", "34", "35", "36", "37", GPTOSS_WG_OUT32);
    GPTOSS_WG_RS(32, GPTOSS_WG_D1, "32", "33", "34", "35", "36", "37", GPTOSS_WG_OUT32);
    GPTOSS_WG_RS(48, GPTOSS_WG_D2, "32", "33", "34", "35", "36", "37", GPTOSS_WG_OUT32);
    GPTOSS_WG_RS(64, GPTOSS_WG_D3, "32", "33", "34", "35", "36", "37", GPTOSS_WG_OUT32);
  } else {
    GPTOSS_WG_RS(16, GPTOSS_WG_D0, "64", "65", "66", "67", "68", "69", GPTOSS_WG_OUT64);
    GPTOSS_WG_RS(32, GPTOSS_WG_D1, "64", "65", "66", "67", "68", "69", GPTOSS_WG_OUT64);
    GPTOSS_WG_RS(48, GPTOSS_WG_D2, "64", "65", "66", "67", "68", "69", GPTOSS_WG_OUT64);
    GPTOSS_WG_RS(64, GPTOSS_WG_D3, "64", "65", "66", "67", "68", "69", GPTOSS_WG_OUT64);
    GPTOSS_WG_RS(80, GPTOSS_WG_D4, "64", "65", "66", "67", "68", "69", GPTOSS_WG_OUT64);
    GPTOSS_WG_RS(96, GPTOSS_WG_D5, "64", "65", "66", "67", "68", "69", GPTOSS_WG_OUT64);
    GPTOSS_WG_RS(112, GPTOSS_WG_D6, "64", "65", "66", "67", "68", "69", GPTOSS_WG_OUT64);
    GPTOSS_WG_RS(128, GPTOSS_WG_D7, "64", "65", "66", "67", "68", "69", GPTOSS_WG_OUT64);
  }
#else
  (void)d, (void)a, (void)desc, (void)n;
  __trap();
#endif
}

// Keeps x in its registers, unchanged, up to here in the compiler's view (no instruction): after a
// wgmma_wait, on the A fragments a retired wgmma read, so that the compiler reuses none of their
// registers while the tensor core may still read them; on accumulators before the first wgmma
// and after the last wait (CUTLASS's warpgroup_fence_operand).
__device__ __forceinline__ void wgmma_keep(float& x) {
#if !defined(GPTOSS_CUDA_EMU)
  asm volatile("" : "+f"(x)::"memory");
#else
  (void)x;
#endif
}
__device__ __forceinline__ void wgmma_keep(uint32_t& x) {
#if !defined(GPTOSS_CUDA_EMU)
  asm volatile("" : "+r"(x)::"memory");
#else
  (void)x;
#endif
}
template <class T, size_t N>
__device__ __forceinline__ void wgmma_keep(T (&a)[N]) {
#pragma unroll
  for (size_t i = 0; i < N; ++i) wgmma_keep(a[i]);
}
}  // namespace gptoss::cuda
