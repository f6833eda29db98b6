// Tensor-core and async-copy building blocks for sm_80+ kernels: mma.sync m16n8k16 (bf16 in, f32
// accumulate), ldmatrix (x1/x2/x4, optionally .trans), cp.async (16 bytes, commit/wait groups) and
// discard.global.L2.
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
#else
#define GPTOSS_SITE_PARAM
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

}  // namespace gptoss::cuda
