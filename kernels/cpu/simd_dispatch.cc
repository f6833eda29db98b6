// Picks the SIMD variant once, from what the CPU reports (and GPTOSS_SIMD, for tests).
#include <cstdlib>
#include <cstring>

#include "kernels/cpu/simd.h"

namespace gptoss::cpu {

namespace {
struct E8m0Table {
  float v[256];
};
constexpr E8m0Table make_e8m0() {
  E8m0Table t{};
  for (int s = 0; s < 255; ++s) {
    double p = 1.0;
    for (int i = s; i < 128; ++i) p *= 0.5;
    for (int i = 128; i < s; ++i) p *= 2.0;
    t.v[s] = float(p);  // 2^(s-128), exact: every 2^k for k in [-128, 126] is a float
  }
  t.v[255] = __builtin_inff();
  return t;
}
constexpr E8m0Table kTable = make_e8m0();

bool cpu_has(const char* isa) {
#if defined(__x86_64__) || defined(__i386__)
  if (!std::strcmp(isa, "avx512"))
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  if (!std::strcmp(isa, "avx2"))
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  return !std::strcmp(isa, "generic");
}

const SimdKernels* pick() {
  const char* want = std::getenv("GPTOSS_SIMD");
  const SimdKernels* all[] = {&kSimdAvx512, &kSimdAvx2, &kSimdGeneric};
  if (want)
    for (auto* k : all)
      if (!std::strcmp(k->name, want) && cpu_has(want)) return k;
  for (auto* k : all)
    if (cpu_has(k->name)) return k;
  return &kSimdGeneric;
}
}  // namespace

// Defined from the constexpr table so every SIMD variant sees it filled before any static init.
extern const float kE8m0Half[256];
const float kE8m0Half[256] = {
#define R(i) kTable.v[i], kTable.v[i + 1], kTable.v[i + 2], kTable.v[i + 3]
#define R16(i) R(i), R(i + 4), R(i + 8), R(i + 12)
    R16(0), R16(16), R16(32), R16(48), R16(64), R16(80), R16(96), R16(112),
    R16(128), R16(144), R16(160), R16(176), R16(192), R16(208), R16(224), R16(240)
#undef R16
#undef R
};

const SimdKernels& simd() {
  static const SimdKernels* chosen = pick();
  return *chosen;
}

const Bf16Kernels* simd_bf16() {
  static const Bf16Kernels* chosen = [] {
    const char* off = std::getenv("GPTOSS_BF16");
#if defined(__x86_64__) || defined(__i386__)
    if (&simd() == &kSimdAvx512 && __builtin_cpu_supports("avx512bf16") && !(off && !std::strcmp(off, "0")))
      return &kBf16Avx512;
#endif
    (void)off;
    return static_cast<const Bf16Kernels*>(nullptr);
  }();
  return chosen;
}

}  // namespace gptoss::cpu
