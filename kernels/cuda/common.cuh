// What every kernel in kernels/cuda/ shares, and the one place where nvcc and the kernel lab's
// emulator (test/cuda/emu/cuda_emu.h, built with -DGPTOSS_CUDA_EMU) differ: the launch syntax,
// dynamic shared memory, and the launch-status check. Kernel bodies are the same source for both.
#pragma once
#include <cstdint>
#include <string>

#include "kernels/common.h"

#if defined(GPTOSS_CUDA_EMU)
#include "cuda_emu.h"
// The emulator runs the launch to completion before returning (a rule broken throws emu::Error).
#define GPTOSS_LAUNCH(kernel, grid, block, smem, stream, ...) \
  ::emu::launch_kernel(#kernel, ::emu::Site{__FILE__, __LINE__}, grid, block, smem, kernel, __VA_ARGS__)
#else
#include <cuda_runtime.h>
#define GPTOSS_LAUNCH(kernel, grid, block, smem, stream, ...) kernel<<<grid, block, smem, stream>>>(__VA_ARGS__)
#endif

namespace gptoss::cuda {

constexpr unsigned kFullMask = 0xffffffffu;

// The block's dynamic shared memory (the size given at launch; the emulator makes it exactly that
// and fills it with NaN).
template <class T>
__device__ __forceinline__ T* dynamic_shared() {
#if defined(GPTOSS_CUDA_EMU)
  return static_cast<T*>(::emu::dynamic_shared());
#else
  extern __shared__ __align__(16) unsigned char gptoss_dynamic_smem[];
  return reinterpret_cast<T*>(gptoss_dynamic_smem);
#endif
}

// bf16 bits to f32: exact (bf16 is the top half of an f32).
__device__ __forceinline__ float bf16_bits_to_f32(uint32_t b) { return __uint_as_float(b << 16); }

// v, kept in a register (a move the compiler cannot see through): without it the MoE GEMM's down
// kernel recomputed the ldmatrix addresses from the lane index inside the k loop (14 instructions
// per ldmatrix in its PTX), and the wgmma kernels rebuilt their descriptors (5 instructions a step).
template <class T>
__device__ __forceinline__ T opaque(T v) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "opaque: 32 or 64 bits");
#if defined(GPTOSS_CUDA_EMU)
  return v;
#else
  T r;
  if constexpr (sizeof(T) == 8)
    asm volatile("mov.b64 %0, %1;" : "=l"(r) : "l"(v));
  else
    asm volatile("mov.b32 %0, %1;" : "=r"(r) : "r"(v));
  return r;
#endif
}

__host__ inline bool aligned(const void* p, unsigned bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// After a launch: a launch failure becomes ERR_DEVICE naming the op and CUDA's text
// (native/DESIGN.md, "Typed errors cross the boundary").
__host__ inline void check_launch(const char* op) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw Error("ERR_DEVICE", std::string(op) + ": kernel launch failed: " + cudaGetErrorString(e));
}

}  // namespace gptoss::cuda
