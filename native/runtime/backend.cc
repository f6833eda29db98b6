#include "native/runtime/backend.h"

namespace gptoss {

std::shared_ptr<Backend> cpu_backend();  // native/cpu/backend.cc

std::shared_ptr<Backend> backend_for(const std::string& device) {
  if (device == "cpu") return cpu_backend();
  if (device == "cuda") {
#ifdef GPTOSS_WITH_CUDA
    throw Error("ERR_UNSUPPORTED", "device 'cuda': this build has the CUDA device probe but no CUDA backend yet (kernels/cuda); use device 'cpu'");
#else
    throw Error("ERR_UNSUPPORTED",
                "device 'cuda': this addon was built without CUDA (a CPU-only build: nvcc was not found, or node-gyp built it); "
                "rebuild with the CUDA toolkit installed (npm rebuild node-gpt-oss) or use device 'cpu'");
#endif
  }
  throw invalid_argument("unknown device '" + device + "' (devices: cpu, cuda)");
}

std::vector<std::string> built_devices() { return {"cpu"}; }

}  // namespace gptoss
