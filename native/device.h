#pragma once
#include <napi.h>

namespace gptoss {
Napi::Object device_exports(Napi::Env env, Napi::Object exports);

// Implemented in cuda_probe.cu when the addon is built with CUDA; reports count 0 and the
// runtime's message when there is no driver or no device, and never aborts.
struct CudaProbe {
  bool built = false;
  bool emulated = false;  // the emulated build (npm run build:cuda-emu): the CPU plays the GPU
  int count = 0;
  std::string error;
  std::string name;
  size_t total_memory = 0;
  int cc_major = 0, cc_minor = 0;
};
CudaProbe cuda_probe();
}  // namespace gptoss
