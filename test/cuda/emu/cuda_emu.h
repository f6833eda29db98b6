// The kernel lab's CUDA emulator: what a .cu file in kernels/cuda/ sees when it is compiled by the
// host compiler (-DGPTOSS_CUDA_EMU -x c++) instead of nvcc. The same source, unchanged, runs on the
// CPU: each CUDA thread is a fiber (ucontext), only one fiber runs at a time, and the fibers of a
// block run in a chosen order (forward, reverse, seeded random) between rendezvous points (barriers
// and warp collectives). Under the random and tickets schedules a grid's blocks interleave: after an
// atomic on global memory another block may run. CUDA's rules are checked at every rendezvous and a broken
// one stops the launch with an emu::Error naming kernel, block, thread and source line. Shared
// memory (static, dynamic, cp.async destinations) reads NaN (all bits set) until written; dynamic
// shared memory is exactly the size launched with, followed by a canary (and ASan poison in
// sanitizer builds).
//
// Only the subset of CUDA the project's kernels use is here; a kernel that needs more adds it here
// with its semantics from the PTX ISA. Implementation: emu.cc. Tensor-core wrappers:
// kernels/cuda/mma.cuh (their warp-collective emulation is emu::mma_m16n8k16_bf16 and
// emu::ldmatrix below).
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define __align__(n) __attribute__((aligned(n)))
// Static shared memory lives in one linker section so that every block can find it and fill it
// with NaN before it starts (the linker defines __start_emu_shared/__stop_emu_shared). GCC 12
// ignores this attribute on statics inside template functions (native/DESIGN.md, "CUDA emulator
// facts"): the lab builds with clang where it can, and test/cuda/run.sh says which compiler it
// used.
#define __shared__ static __attribute__((section("emu_shared"), aligned(16)))

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
namespace emu {
// A vector access (ld/st.v2, .v4) at an address its size does not divide faults on a GPU. The
// vector types below check every copy: UBSan reports the misaligned reference with its source
// line, and without UBSan this breaks the launch with a rule error.
void misaligned_vector(const void* p, unsigned bytes);
inline void check_vector(const void* p, unsigned bytes) {
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  asm volatile("" : "+r"(a));  // the compiler may assume the type's alignment; the check must not
  if (a % bytes) misaligned_vector(p, bytes);
}
}  // namespace emu
#define EMU_VECTOR(T, E, N, A, ...)                                                     \
  struct alignas(A) T {                                                                 \
    E __VA_ARGS__;                                                                      \
    T() = default;                                                                      \
    T(const T& o) { ::emu::check_vector(&o, A), ::emu::check_vector(this, A), std::memcpy(this, &o, N * sizeof(E)); } \
    T& operator=(const T& o) {                                                          \
      ::emu::check_vector(&o, A), ::emu::check_vector(this, A), std::memcpy(this, &o, N * sizeof(E)); \
      return *this;                                                                     \
    }                                                                                   \
  };
EMU_VECTOR(float2, float, 2, 8, x, y)
EMU_VECTOR(float4, float, 4, 16, x, y, z, w)
EMU_VECTOR(uint2, unsigned, 2, 8, x, y)
EMU_VECTOR(uint4, unsigned, 4, 16, x, y, z, w)
EMU_VECTOR(int4, int, 4, 16, x, y, z, w)
#undef EMU_VECTOR
inline float2 make_float2(float x, float y) { float2 v; v.x = x; v.y = y; return v; }
inline float4 make_float4(float x, float y, float z, float w) { float4 v; v.x = x; v.y = y; v.z = z; v.w = w; return v; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { uint4 v; v.x = x; v.y = y; v.z = z; v.w = w; return v; }
constexpr int warpSize = 32;

namespace emu {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Site {
  const char* file;
  int line;
};
#define EMU_SITE_ARGS int emu_line = __builtin_LINE(), const char *emu_file = __builtin_FILE()
#define EMU_SITE (::emu::Site{emu_file, emu_line})

// The fiber of the CUDA thread running now (nullptr on the host).
struct ThreadRegs {
  uint3 tid, bid, bdim, gdim;
};
extern ThreadRegs* g_regs;
inline const ThreadRegs& regs() {
  if (!g_regs) throw Error("cuda-emu: threadIdx/blockIdx read outside a kernel");
  return *g_regs;
}

enum class Schedule { Forward, Reverse, Random, Tickets };
// Order of the fibers between rendezvous points and of the blocks in a grid, for the launches
// that follow. Random draws a fresh permutation at every rendezvous from `seed`. Random and Tickets
// let a grid's blocks interleave (up to 16 resident): a block may hand the emulator to another
// after an atomic on global memory. Tickets is the adversary of the last-block pattern: lane 0 of
// every warp runs first, each block stops after its last atomic, and the last stopped goes on
// first (emu.cc, launch).
// Blocks interleave only where every static __shared__ is in the emu_shared section, which the
// emulator swaps between blocks: a clang build. GCC 12 leaves a template kernel's statics out of it
// (one copy for every block), so a GCC build runs one block at a time under every schedule.
bool blocks_interleave();
void set_schedule(Schedule s, uint64_t seed = 0);
Schedule schedule();
const char* schedule_name(Schedule s);

// Runs every block of the grid (one at a time, or interleaved as above); throws Error when a rule is
// broken.
void launch(const char* kernel, Site site, dim3 grid, dim3 block, size_t dynamic_smem, std::function<void()> body);

// Graph capture for the emulated runtime (native/cuda/runtime_emu.cc): while a hook is set, each
// launch is handed to it as a closure that runs the launch later (on replay), instead of running.
using CaptureHook = std::function<void(std::function<void()> replay)>;
void set_capture_hook(CaptureHook hook);

// The launch syntax's emulation: the arguments are evaluated once, on the host, as with <<<>>>.
template <class K, class... A>
void launch_kernel(const char* name, Site s, dim3 grid, dim3 block, size_t smem, K kernel, A... args) {
  launch(name, s, grid, block, smem, [=] { kernel(args...); });
}

// Warp collectives. `val` carries up to 8 bytes; `arg` is the lane/offset/predicate.
enum class Op : int {
  ShflIdx, ShflUp, ShflDown, ShflXor, Ballot, Any, All, ReduceAddU, ReduceAddI, ReduceMinU, ReduceMinI,
  ReduceMaxU, ReduceMaxI, ReduceAnd, ReduceOr, ReduceXor, SyncWarp, Mma, Ldmatrix,
  // warpgroup collectives (sm_90a wgmma: all 128 threads of a warpgroup, warps 4i..4i+3)
  WgmmaFence, Wgmma, WgmmaCommit, WgmmaWait,
  // block barriers
  SyncThreads, SyncThreadsCount, SyncThreadsAnd, SyncThreadsOr,
};
uint64_t warp_op(Op op, unsigned mask, uint64_t val, int arg, int width, Site site);
// Collectives whose lanes hand over a struct (mma, ldmatrix); all 32 lanes, full mask.
void warp_collective(Op op, void* lane_data, Site site);
int barrier(Op op, int pred, Site site);
[[noreturn]] void fail(Site site, const std::string& what);

void* dynamic_shared();
bool is_shared(const void* p, size_t n);

// cp.async: the destination reads NaN from issue until the group holding it is waited for.
void cp_async(void* smem_dst, const void* gmem_src, int bytes, Site site);
void cp_async_commit();
void cp_async_wait(int groups_left_pending);
// discard.global.L2: the 128-byte line at p (128-byte aligned, global memory) reads NaN (all bits
// set) from here on, as PTX leaves it undefined; a read of it before it is written again is wrong.
void discard_l2(void* p, int bytes, Site site);

// wgmma (sm_90a), emulated as the asynchronous instruction it is: wgmma.mma_async records the
// operation (A from each thread's registers as given, B by its shared-memory descriptor) and
// makes the accumulators read NaN; wgmma.wait_group runs the retired groups in order, reading B
// from shared memory then, and writes the accumulators back. So a kernel that reads or writes the
// accumulators, or overwrites B's shared memory, before waiting computes something else. Each
// batch of wgmma.mma_async must follow a wgmma.fence (since the last commit); a block must not end
// with one in flight. Only the descriptor's no-swizzle (interleave) layout is emulated.
struct WgmmaLane {
  uint32_t a[4];  // A (m64 x k16, bf16) in registers, the m16n8k16 A fragment of this warp's 16 rows
  float* d;       // this thread's n / 2 accumulators
  int n;          // N: 8..256, a multiple of 8
  uint64_t desc;  // B's matrix descriptor (K-major)
  int scale_d;    // 0: D = A B; 1: D = A B + D
};
void warpgroup_op(Op op, WgmmaLane* lane, int arg, Site site);
// The descriptor's address of p (dynamic shared memory), as __cvta_generic_to_shared gives on a GPU.
uint32_t shared_window(const void* p, Site site);

struct MmaLane {
  uint32_t a[4], b[2];
  float c[4], d[4];
};
struct LdmatrixLane {
  const void* addr;
  int num;  // 1, 2, 4
  bool trans;
  uint32_t r[4];
  uint16_t row[8];  // the row at addr, read when this lane reaches the ldmatrix (emu.cc)
};

template <class T>
inline uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8, "shuffles carry at most 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T>
inline T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}
}  // namespace emu

#define threadIdx (::emu::regs().tid)
#define blockIdx (::emu::regs().bid)
#define blockDim (::emu::regs().bdim)
#define gridDim (::emu::regs().gdim)

// ---- barriers and warp intrinsics (CUDA C++ Programming Guide, "Warp Shuffle Functions" etc.) ----
inline void __syncthreads(EMU_SITE_ARGS) { ::emu::barrier(::emu::Op::SyncThreads, 1, EMU_SITE); }
inline int __syncthreads_count(int p, EMU_SITE_ARGS) { return ::emu::barrier(::emu::Op::SyncThreadsCount, p != 0, EMU_SITE); }
inline int __syncthreads_and(int p, EMU_SITE_ARGS) { return ::emu::barrier(::emu::Op::SyncThreadsAnd, p != 0, EMU_SITE); }
inline int __syncthreads_or(int p, EMU_SITE_ARGS) { return ::emu::barrier(::emu::Op::SyncThreadsOr, p != 0, EMU_SITE); }
inline void __syncwarp(unsigned mask = 0xffffffffu, EMU_SITE_ARGS) { ::emu::warp_op(::emu::Op::SyncWarp, mask, 0, 0, 32, EMU_SITE); }

template <class T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32, EMU_SITE_ARGS) {
  return ::emu::from_bits<T>(::emu::warp_op(::emu::Op::ShflIdx, mask, ::emu::to_bits(v), src, width, EMU_SITE));
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32, EMU_SITE_ARGS) {
  return ::emu::from_bits<T>(::emu::warp_op(::emu::Op::ShflUp, mask, ::emu::to_bits(v), int(delta), width, EMU_SITE));
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32, EMU_SITE_ARGS) {
  return ::emu::from_bits<T>(::emu::warp_op(::emu::Op::ShflDown, mask, ::emu::to_bits(v), int(delta), width, EMU_SITE));
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32, EMU_SITE_ARGS) {
  return ::emu::from_bits<T>(::emu::warp_op(::emu::Op::ShflXor, mask, ::emu::to_bits(v), lane_mask, width, EMU_SITE));
}
inline unsigned __ballot_sync(unsigned mask, int p, EMU_SITE_ARGS) { return unsigned(::emu::warp_op(::emu::Op::Ballot, mask, 0, p != 0, 32, EMU_SITE)); }
inline int __any_sync(unsigned mask, int p, EMU_SITE_ARGS) { return int(::emu::warp_op(::emu::Op::Any, mask, 0, p != 0, 32, EMU_SITE)); }
inline int __all_sync(unsigned mask, int p, EMU_SITE_ARGS) { return int(::emu::warp_op(::emu::Op::All, mask, 0, p != 0, 32, EMU_SITE)); }
inline unsigned __reduce_add_sync(unsigned mask, unsigned v, EMU_SITE_ARGS) { return unsigned(::emu::warp_op(::emu::Op::ReduceAddU, mask, v, 0, 32, EMU_SITE)); }
inline int __reduce_add_sync(unsigned mask, int v, EMU_SITE_ARGS) { return int(::emu::warp_op(::emu::Op::ReduceAddI, mask, uint32_t(v), 0, 32, EMU_SITE)); }
inline unsigned __reduce_min_sync(unsigned mask, unsigned v, EMU_SITE_ARGS) { return unsigned(::emu::warp_op(::emu::Op::ReduceMinU, mask, v, 0, 32, EMU_SITE)); }
inline int __reduce_min_sync(unsigned mask, int v, EMU_SITE_ARGS) { return int(::emu::warp_op(::emu::Op::ReduceMinI, mask, uint32_t(v), 0, 32, EMU_SITE)); }
inline unsigned __reduce_max_sync(unsigned mask, unsigned v, EMU_SITE_ARGS) { return unsigned(::emu::warp_op(::emu::Op::ReduceMaxU, mask, v, 0, 32, EMU_SITE)); }
inline int __reduce_max_sync(unsigned mask, int v, EMU_SITE_ARGS) { return int(::emu::warp_op(::emu::Op::ReduceMaxI, mask, uint32_t(v), 0, 32, EMU_SITE)); }
inline unsigned __reduce_and_sync(unsigned mask, unsigned v, EMU_SITE_ARGS) { return unsigned(::emu::warp_op(::emu::Op::ReduceAnd, mask, v, 0, 32, EMU_SITE)); }
inline unsigned __reduce_or_sync(unsigned mask, unsigned v, EMU_SITE_ARGS) { return unsigned(::emu::warp_op(::emu::Op::ReduceOr, mask, v, 0, 32, EMU_SITE)); }
inline unsigned __reduce_xor_sync(unsigned mask, unsigned v, EMU_SITE_ARGS) { return unsigned(::emu::warp_op(::emu::Op::ReduceXor, mask, v, 0, 32, EMU_SITE)); }
inline void __threadfence() {}
inline void __threadfence_block() {}

// ---- atomics: no two fibers ever run at the same time, so plain read-modify-write is atomic ----
// After one on global memory, under the random schedule, the fiber may hand the emulator to
// another block of its grid (emu.cc, launch): what the atomic publishes can then be seen by a
// block that runs before the rest of this one.
namespace emu {
void atomic_point(const void* p);
}
template <class T>
inline T atomicAdd(T* p, T v) { T o = *p; *p = o + v; ::emu::atomic_point(p); return o; }
template <class T>
inline T atomicSub(T* p, T v) { T o = *p; *p = o - v; ::emu::atomic_point(p); return o; }
template <class T>
inline T atomicMax(T* p, T v) { T o = *p; *p = o < v ? v : o; ::emu::atomic_point(p); return o; }
template <class T>
inline T atomicMin(T* p, T v) { T o = *p; *p = v < o ? v : o; ::emu::atomic_point(p); return o; }
template <class T>
inline T atomicExch(T* p, T v) { T o = *p; *p = v; ::emu::atomic_point(p); return o; }
template <class T>
inline T atomicCAS(T* p, T cmp, T v) { T o = *p; if (o == cmp) *p = v; ::emu::atomic_point(p); return o; }
template <class T>
inline T atomicOr(T* p, T v) { T o = *p; *p = o | v; ::emu::atomic_point(p); return o; }
template <class T>
inline T atomicAnd(T* p, T v) { T o = *p; *p = o & v; ::emu::atomic_point(p); return o; }

// ---- bit intrinsics (CUDA Math API, "Integer Intrinsics") ----
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(unsigned(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
// PTX prmt (default mode): byte i of the result is byte (s >> 4i) & 7 of {y, x}, or that byte's
// sign replicated when bit 3 of the selector nibble is set.
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
  const uint64_t xy = (uint64_t(y) << 32) | x;
  unsigned r = 0;
  for (int i = 0; i < 4; ++i) {
    const unsigned sel = (s >> (4 * i)) & 0xf;
    unsigned b = unsigned(xy >> (8 * (sel & 7))) & 0xff;
    if (sel & 8) b = (b & 0x80) ? 0xff : 0;
    r |= b << (8 * i);
  }
  return r;
}
inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned sh) {
  sh &= 31;
  return sh ? (hi << sh) | (lo >> (32 - sh)) : hi;
}
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned sh) {
  sh &= 31;
  return sh ? (lo >> sh) | (hi << (32 - sh)) : lo;
}
inline unsigned __umulhi(unsigned a, unsigned b) { return unsigned((uint64_t(a) * b) >> 32); }
inline float __int_as_float(int x) { float f; std::memcpy(&f, &x, 4); return f; }
inline int __float_as_int(float f) { int x; std::memcpy(&x, &f, 4); return x; }
inline float __uint_as_float(unsigned x) { float f; std::memcpy(&f, &x, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned x; std::memcpy(&x, &f, 4); return x; }

// ---- float math the kernels use ----
inline float rsqrtf(float x) { return 1.f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline int __float2int_rn(float x) { return int(std::nearbyint(x)); }
// Round-to-nearest products and sums that nvcc never contracts into an FMA (a host build without
// FMA instructions computes them the same way).
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
// sin(pi x) and cos(pi x) in double (CUDA Math API): the reduction modulo 2 is exact, so no
// Payne-Hanek slow path (which would put a table in local memory on the GPU).
inline void sincospi(double x, double* s, double* c) {
  const double r = std::remainder(x, 2.0);
  *s = std::sin(M_PI * r);
  *c = std::cos(M_PI * r);
}
template <class T>
inline T __ldg(const T* p) { return *p; }
inline int max(int a, int b) { return a > b ? a : b; }
inline int min(int a, int b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }

// ---- bf16 and half (cuda_bf16.h / cuda_fp16.h), conversions only ----
struct __nv_bfloat16 { uint16_t __x; };
struct __nv_bfloat162 { __nv_bfloat16 x, y; };
struct __half { uint16_t __x; };
inline float __bfloat162float(__nv_bfloat16 b) { return __uint_as_float(unsigned(b.__x) << 16); }
inline __nv_bfloat16 __float2bfloat16(float f) {  // round to nearest even, NaN kept quiet
  unsigned u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return {uint16_t((u >> 16) | 0x40)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return {uint16_t(u >> 16)};
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __float2bfloat16(f); }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return {__float2bfloat16(a), __float2bfloat16(b)}; }
inline float2 __bfloat1622float2(__nv_bfloat162 v) { return make_float2(__bfloat162float(v.x), __bfloat162float(v.y)); }
float __half2float(__half h);
__half __float2half(float f);

// ---- the runtime API subset the tests use (host side); device memory is host memory ----
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2 };
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice, cudaMemcpyDefault };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
typedef struct CUstream_st* cudaStream_t;
// Fresh allocations read NaN (all bits set) until written, like shared memory.
cudaError_t cudaMalloc(void** p, size_t n);
template <class T>
inline cudaError_t cudaMalloc(T** p, size_t n) { return cudaMalloc(reinterpret_cast<void**>(p), n); }
cudaError_t cudaFree(void* p);
inline cudaError_t cudaMemcpy(void* d, const void* s, size_t n, cudaMemcpyKind) { std::memcpy(d, s, n); return cudaSuccess; }
inline cudaError_t cudaMemset(void* d, int v, size_t n) { std::memset(d, v, n); return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaPeekAtLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "emulated error"; }
template <class F>
inline cudaError_t cudaFuncSetAttribute(F, cudaFuncAttribute, int) { return cudaSuccess; }
