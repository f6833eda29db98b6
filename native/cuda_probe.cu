// The CUDA device probe (host code only; no kernels). With the static runtime, a machine without
// a driver gets cudaErrorInsufficientDriver or cudaErrorNoDevice here, reported, not fatal.
#include <cuda_runtime_api.h>

#include <string>

#include "native/device.h"

namespace gptoss {
CudaProbe cuda_probe() {
  CudaProbe p;
  p.built = true;
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    p.error = std::string("cudaGetDeviceCount: ") + cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return p;
  }
  p.count = n;
  if (n == 0) {
    p.error = "no CUDA device found";
    return p;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) {
    p.name = prop.name;
    p.total_memory = prop.totalGlobalMem;
    p.cc_major = prop.major;
    p.cc_minor = prop.minor;
  }
  return p;
}
}  // namespace gptoss
