// A small test harness shared by the kernel lab's tests: the same test sources run under the
// emulator (built by test/cuda/run.sh, every test under several schedules) and natively on a GPU
// (built by test/cuda/build-native.sh). Each test prints one "ok"/"FAIL" line; main returns 1 if
// any failed.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/common.cuh"

namespace lab {

struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Test {
  const char* name;
  std::function<void()> fn;
  bool emu_only;
};
std::vector<Test>& registry();
struct Register {
  Register(const char* n, std::function<void()> f, bool emu_only = false) { registry().push_back({n, std::move(f), emu_only}); }
};

#define LAB_CAT2(a, b) a##b
#define LAB_CAT(a, b) LAB_CAT2(a, b)
#define LAB_TEST(name) \
  static void LAB_CAT(lab_test_, __LINE__)(); \
  static ::lab::Register LAB_CAT(lab_reg_, __LINE__)(name, LAB_CAT(lab_test_, __LINE__)); \
  static void LAB_CAT(lab_test_, __LINE__)()

#define LAB_CHECK(cond, ...) \
  do { \
    if (!(cond)) throw ::lab::Failure(::lab::format("%s:%d: ", __FILE__, __LINE__) + ::lab::format(__VA_ARGS__)); \
  } while (0)

std::string format(const char* f, ...);

// Deterministic inputs (splitmix64).
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed) {}
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  float uniform(float lo, float hi) { return lo + (hi - lo) * float(next() >> 40) / float(1ull << 24); }
};
uint16_t f32_to_bf16(float f);
float bf16_to_f32(uint16_t b);

// Device buffer filled from / read back to host vectors; fresh device memory is NaN-filled first.
template <class T>
struct DeviceBuf {
  T* p = nullptr;
  size_t n = 0;
  explicit DeviceBuf(size_t count) : n(count) {
    if (cudaMalloc(&p, std::max<size_t>(1, n) * sizeof(T)) != cudaSuccess) throw Failure("cudaMalloc failed");
    cudaMemset(p, 0xff, n * sizeof(T));
  }
  explicit DeviceBuf(const std::vector<T>& h) : DeviceBuf(h.size()) { upload(h); }
  ~DeviceBuf() { cudaFree(p); }
  DeviceBuf(const DeviceBuf&) = delete;
  void upload(const std::vector<T>& h) { cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice); }
  std::vector<T> download() const {
    std::vector<T> h(n);
    cudaDeviceSynchronize();
    cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost);
    return h;
  }
};

// Runs fn once per schedule under the emulator (forward, reverse, tickets, random with two seeds;
// LAB_SEEDS=N: N seeds, from LAB_SEED_FROM or 1), once natively. The schedule's name is added to any failure.
void for_each_schedule(const std::function<void()>& fn);

// Whether wgmma (sm_90a) runs here: under the emulator always; natively on compute capability 9.0
// (elsewhere the wgmma kernels trap, and tests skip that instruction).
inline bool has_wgmma() {
#if defined(GPTOSS_CUDA_EMU)
  return true;
#else
  int dev = 0, major = 0, minor = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
  return major == 9 && minor == 0;
#endif
}

// LAB_QUICK set (the mutation script sets it): tests may skip their real-shape cases, whose
// small-shape siblings run the same code paths under every schedule.
inline bool quick() { return std::getenv("LAB_QUICK") != nullptr; }

// Largest |got - want| / (|want| + abs_floor) over the elements; NaN counts as infinite.
double max_rel_err(const float* got, const float* want, size_t n, double abs_floor);

}  // namespace lab
