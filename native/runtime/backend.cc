#include "native/runtime/backend.h"

#include <cstring>

namespace gptoss {

std::shared_ptr<Backend> cpu_backend();  // native/cpu/backend.cc
#ifdef GPTOSS_CUDA_BACKEND
std::shared_ptr<Backend> cuda_backend();  // native/cuda/backend.cc
std::vector<std::string> cuda_ops();
#endif

std::shared_ptr<Backend> backend_for(const std::string& device) {
  if (device == "cpu") return cpu_backend();
  if (device == "cuda") {
#ifdef GPTOSS_CUDA_BACKEND
    return cuda_backend();
#else
    throw Error("ERR_UNSUPPORTED",
                "device 'cuda': this addon was built without CUDA (a CPU-only build: nvcc was not found, or node-gyp built it); "
                "rebuild with the CUDA toolkit installed (npm rebuild node-gpt-oss) or use device 'cpu'");
#endif
  }
  throw invalid_argument("unknown device '" + device + "' (devices: cpu, cuda)");
}

std::vector<std::string> built_devices() {
#ifdef GPTOSS_CUDA_BACKEND
  return {"cpu", "cuda"};
#else
  return {"cpu"};
#endif
}

std::vector<std::string> device_ops(const std::string& device) {
  std::vector<std::string> ops;
  if (device == "cpu") for_each_op([&](const char* name, auto) { ops.push_back(name); });
#ifdef GPTOSS_CUDA_BACKEND
  if (device == "cuda") ops = cuda_ops();
#endif
  return ops;
}

SampleResult Backend::sample(const float* row, int V, const SampleParams& p, uint64_t* rng, uint8_t* scratch) {
  // The draw works on a copy placed after the sampler's own scratch.
  float* copy = reinterpret_cast<float*>(scratch + sample_scratch_bytes(V));
  std::memcpy(copy, row, size_t(V) * 4);
  return sample_cpu(copy, V, p, rng, gptoss::sample_scratch(scratch, V));
}

TokenLogprobs Backend::logprobs(const float* row, int V, int32_t token, int top, uint8_t* scratch) {
  return logprobs_cpu(row, V, token, top, gptoss::sample_scratch(scratch, V));
}

}  // namespace gptoss
