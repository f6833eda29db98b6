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
#include <type_traits>

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

// fence.proxy.async for shared memory: wgmma reads B through the async proxy, while stores and
// cp.async write through the generic one. Each thread that wrote a B tile fences after its
// writes are done (cp.async waited for) and before the barrier that hands the tile to the
// warpgroups (PTX ISA, "Memory Consistency Model", proxies). The emulator has one proxy: a no-op.
__device__ __forceinline__ void fence_proxy_async() {
#if defined(GPTOSS_HAS_WGMMA) && !defined(GPTOSS_CUDA_EMU)
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

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

// A warpgroup's step of 128 rows x n columns x 32 k: D[t] += A[c][t] B[c] for its two m64 tiles t
// (accumulators d[t], 64 a thread) and two k16 chunks c (A fragments a[c][t]; B by the descriptors
// desc[c]), in the order c, t. n: 16, 32, ..., 128, the same in the whole warpgroup. One inline
// asm: per n a predicate and the 4 wgmma of that width, issued only when it holds. Predicates,
// not branches: ptxas keeps wgmma in flight only where no branch it cannot prove uniform lies
// between them and their wait; one asm for the 4 computes each predicate once (32 predicated
// wgmma and 8 setp a step; as 4 asm they cost 64 PTX instructions). The accumulators are always
// added to (scale-d 1): zero them before a tile's first step.
#define GPTOSS_WG_D(a, b, c, d, e, f, g, h) "%" #a ", %" #b ", %" #c ", %" #d ", %" #e ", %" #f ", %" #g ", %" #h
#define GPTOSS_WG_T0_1 GPTOSS_WG_D(0, 1, 2, 3, 4, 5, 6, 7)
#define GPTOSS_WG_T0_2 GPTOSS_WG_T0_1 ", " GPTOSS_WG_D(8, 9, 10, 11, 12, 13, 14, 15)
#define GPTOSS_WG_T0_3 GPTOSS_WG_T0_2 ", " GPTOSS_WG_D(16, 17, 18, 19, 20, 21, 22, 23)
#define GPTOSS_WG_T0_4 GPTOSS_WG_T0_3 ", " GPTOSS_WG_D(24, 25, 26, 27, 28, 29, 30, 31)
#define GPTOSS_WG_T0_5 GPTOSS_WG_T0_4 ", " GPTOSS_WG_D(32, 33, 34, 35, 36, 37, 38, 39)
#define GPTOSS_WG_T0_6 GPTOSS_WG_T0_5 ", " GPTOSS_WG_D(40, 41, 42, 43, 44, 45, 46, 47)
#define GPTOSS_WG_T0_7 GPTOSS_WG_T0_6 ", " GPTOSS_WG_D(48, 49, 50, 51, 52, 53, 54, 55)
#define GPTOSS_WG_T0_8 GPTOSS_WG_T0_7 ", " GPTOSS_WG_D(56, 57, 58, 59, 60, 61, 62, 63)
#define GPTOSS_WG_T1_1 GPTOSS_WG_D(64, 65, 66, 67, 68, 69, 70, 71)
#define GPTOSS_WG_T1_2 GPTOSS_WG_T1_1 ", " GPTOSS_WG_D(72, 73, 74, 75, 76, 77, 78, 79)
#define GPTOSS_WG_T1_3 GPTOSS_WG_T1_2 ", " GPTOSS_WG_D(80, 81, 82, 83, 84, 85, 86, 87)
#define GPTOSS_WG_T1_4 GPTOSS_WG_T1_3 ", " GPTOSS_WG_D(88, 89, 90, 91, 92, 93, 94, 95)
#define GPTOSS_WG_T1_5 GPTOSS_WG_T1_4 ", " GPTOSS_WG_D(96, 97, 98, 99, 100, 101, 102, 103)
#define GPTOSS_WG_T1_6 GPTOSS_WG_T1_5 ", " GPTOSS_WG_D(104, 105, 106, 107, 108, 109, 110, 111)
#define GPTOSS_WG_T1_7 GPTOSS_WG_T1_6 ", " GPTOSS_WG_D(112, 113, 114, 115, 116, 117, 118, 119)
#define GPTOSS_WG_T1_8 GPTOSS_WG_T1_7 ", " GPTOSS_WG_D(120, 121, 122, 123, 124, 125, 126, 127)
#define GPTOSS_WG_ONE(N, DL, A, DESC) \
  "@q wgmma.mma_async.sync.aligned.m64n" #N "k16.f32.bf16.bf16 {" DL "}, {" A "}, " DESC ", 1, 1, 1, 0;\n"
#define GPTOSS_WG_WIDTH(N, P)                                                  \
  "setp.eq.b32 q, %146, " #N ";\n"                                             \
  GPTOSS_WG_ONE(N, GPTOSS_WG_T0_##P, "%128, %129, %130, %131", "%144")         \
  GPTOSS_WG_ONE(N, GPTOSS_WG_T1_##P, "%132, %133, %134, %135", "%144")         \
  GPTOSS_WG_ONE(N, GPTOSS_WG_T0_##P, "%136, %137, %138, %139", "%145")         \
  GPTOSS_WG_ONE(N, GPTOSS_WG_T1_##P, "%140, %141, %142, %143", "%145")
#define GPTOSS_WG_OUT8(t, i)                                                                                \
  "+f"(d[t][i]), "+f"(d[t][i + 1]), "+f"(d[t][i + 2]), "+f"(d[t][i + 3]), "+f"(d[t][i + 4]), "+f"(d[t][i + 5]), \
      "+f"(d[t][i + 6]), "+f"(d[t][i + 7])
#define GPTOSS_WG_OUT64(t)                                                                                   \
  GPTOSS_WG_OUT8(t, 0), GPTOSS_WG_OUT8(t, 8), GPTOSS_WG_OUT8(t, 16), GPTOSS_WG_OUT8(t, 24), GPTOSS_WG_OUT8(t, 32), \
      GPTOSS_WG_OUT8(t, 40), GPTOSS_WG_OUT8(t, 48), GPTOSS_WG_OUT8(t, 56)
#define GPTOSS_WG_A4(c, t) "r"(a[c][t][0]), "r"(a[c][t][1]), "r"(a[c][t][2]), "r"(a[c][t][3])

__device__ __forceinline__ void wgmma_m128n_k32_rs(float (&d)[2][64], const uint32_t (&a)[2][2][4], const uint64_t (&desc)[2],
                                                   int n GPTOSS_SITE_PARAM) {
#if defined(GPTOSS_CUDA_EMU)
  if (n < 16 || n > 128 || n % 16) ::emu::fail(EMU_SITE, "wgmma_m128n_k32_rs: n must be 16..128 in steps of 16");
  for (int c = 0; c < 2; ++c)
    for (int t = 0; t < 2; ++t) {
      ::emu::WgmmaLane l{{a[c][t][0], a[c][t][1], a[c][t][2], a[c][t][3]}, d[t], n, desc[c], 1};
      ::emu::warpgroup_op(::emu::Op::Wgmma, &l, 0, EMU_SITE);
    }
#elif defined(GPTOSS_HAS_WGMMA)
  asm volatile("{\n.reg .pred q;\n" GPTOSS_WG_WIDTH(16, 1) GPTOSS_WG_WIDTH(32, 2) GPTOSS_WG_WIDTH(48, 3)
                   GPTOSS_WG_WIDTH(64, 4) GPTOSS_WG_WIDTH(80, 5) GPTOSS_WG_WIDTH(96, 6) GPTOSS_WG_WIDTH(112, 7)
                       GPTOSS_WG_WIDTH(128, 8) "}\n"
               : GPTOSS_WG_OUT64(0), GPTOSS_WG_OUT64(1)
               : GPTOSS_WG_A4(0, 0), GPTOSS_WG_A4(0, 1), GPTOSS_WG_A4(1, 0), GPTOSS_WG_A4(1, 1), "l"(desc[0]), "l"(desc[1]),
                 "r"(n));
#else
  (void)d, (void)a, (void)desc, (void)n;
  __trap();
#endif
}

// A warpgroup's step of 64 rows x 256 columns x 32 k: D += A[c] B[c] for its two k16 chunks c (A
// fragments a[c], B by the descriptors desc[c]), in order; 128 accumulators a thread (d[4 j + 2 h +
// v], the layout above). The dense bf16 GEMM's: its 256 columns are all always computed (columns
// past N are copies, not stored), so no width predicate. Accumulates (scale-d 1).
__device__ __forceinline__ void wgmma_m64n256_k32_rs(float (&acc)[128], const uint32_t (&a)[2][4], const uint64_t (&desc)[2]
                                                         GPTOSS_SITE_PARAM) {
#if defined(GPTOSS_CUDA_EMU)
  for (int c = 0; c < 2; ++c) {
    ::emu::WgmmaLane l{{a[c][0], a[c][1], a[c][2], a[c][3]}, acc, 256, desc[c], 1};
    ::emu::warpgroup_op(::emu::Op::Wgmma, &l, 0, EMU_SITE);
  }
#elif defined(GPTOSS_HAS_WGMMA)
#define GPTOSS_WG_N256(A, DESC) \
  "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {" GPTOSS_WG_T0_8 ", " GPTOSS_WG_T1_8 "}, {" A "}, " DESC ", 1, 1, 1, 0;\n"
  float(&d)[2][64] = reinterpret_cast<float(&)[2][64]>(acc);  // %0..%127 as the m128 step's
  asm volatile(GPTOSS_WG_N256("%128, %129, %130, %131", "%136") GPTOSS_WG_N256("%132, %133, %134, %135", "%137")
               : GPTOSS_WG_OUT64(0), GPTOSS_WG_OUT64(1)
               : "r"(a[0][0]), "r"(a[0][1]), "r"(a[0][2]), "r"(a[0][3]), "r"(a[1][0]), "r"(a[1][1]), "r"(a[1][2]), "r"(a[1][3]),
                 "l"(desc[0]), "l"(desc[1]));
#undef GPTOSS_WG_N256
#else
  (void)acc, (void)a, (void)desc;
  __trap();
#endif
}

// Keeps x in its registers, unchanged, up to here in the compiler's view (no instruction): after a
// wgmma_wait, on the A fragments a retired wgmma read, so that the compiler reuses none of their
// registers while the tensor core may still read them; on accumulators before the first wgmma
// and after the last wait (CUTLASS's warpgroup_fence_operand).
template <class T>
__device__ __forceinline__ void wgmma_keep(T& x) {
  static_assert(sizeof(T) == 4, "wgmma_keep: 32-bit registers (f32 accumulators, bf16x2 fragments)");
#if !defined(GPTOSS_CUDA_EMU)
  if constexpr (std::is_same_v<T, float>)
    asm volatile("" : "+f"(x)::"memory");
  else
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
