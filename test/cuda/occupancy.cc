// Occupancy without a driver, for test/cuda/static.mjs: NVIDIA's header-only cuda_occupancy.h
// with the published limits of sm_80 (A100) and sm_90 (H100).
// usage: occupancy <80|90> <registers> <static smem bytes> <block threads> <dynamic smem bytes>
// prints: <blocks per SM> <warps per SM> <max warps per SM>
#include <cstdio>
#include <cstdlib>

#include "cuda_occupancy.h"

int main(int argc, char** argv) {
  if (argc != 6) return 2;
  const int arch = std::atoi(argv[1]);
  cudaOccDeviceProp p{};
  p.computeMajor = arch / 10;
  p.computeMinor = arch % 10;
  p.maxThreadsPerBlock = 1024;
  p.maxThreadsPerMultiprocessor = 2048;
  p.regsPerBlock = 65536;
  p.regsPerMultiprocessor = 65536;
  p.warpSize = 32;
  p.sharedMemPerBlock = 48 * 1024;
  p.sharedMemPerMultiprocessor = arch >= 90 ? 233472 : 167936;  // 228 KiB / 164 KiB
  p.numSms = arch >= 90 ? 132 : 108;
  p.sharedMemPerBlockOptin = arch >= 90 ? 232448 : 166912;
  p.reservedSharedMemPerBlock = 1024;
  cudaOccFuncAttributes a{};
  a.maxThreadsPerBlock = 1024;
  a.numRegs = std::atoi(argv[2]);
  a.sharedSizeBytes = size_t(std::atol(argv[3]));
  a.maxDynamicSharedSizeBytes = p.sharedMemPerBlockOptin;
  // Launchers that need more than 48 KB of dynamic shared memory opt in (cudaFuncSetAttribute);
  // with the default limit cuda_occupancy.h reports 0 blocks for any such kernel.
  a.shmemLimitConfig = FUNC_SHMEM_LIMIT_OPTIN;
  a.numBlockBarriers = 1;
  cudaOccDeviceState s{};
  cudaOccResult r{};
  const int block = std::atoi(argv[4]);
  if (cudaOccMaxActiveBlocksPerMultiprocessor(&r, &p, &a, &s, block, size_t(std::atol(argv[5]))) != CUDA_OCC_SUCCESS) return 1;
  std::printf("%d %d %d\n", r.activeBlocksPerMultiprocessor, r.activeBlocksPerMultiprocessor * ((block + 31) / 32),
              p.maxThreadsPerMultiprocessor / 32);
  return 0;
}
