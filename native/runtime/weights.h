// The weights of one model in host memory: tensors that point into memory-mapped checkpoint
// files, or that the store owns (synthetic weights). Programs hold a shared_ptr to the store, so
// a model disposed while a step is in flight is freed when that step ends. A backend makes its
// own copy of what it needs from here (Backend::upload_weights); the CPU backend reads these
// bytes in place.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace gptoss {

struct TensorRef {
  const uint8_t* data = nullptr;
  size_t bytes = 0;
  std::string name;
};

struct WeightStore {
  struct Mapping {
    void* addr = nullptr;
    size_t size = 0;
    std::string path;
  };
  std::vector<Mapping> maps;
  std::vector<TensorRef> tensors;
  std::vector<void*> owned;  // 64-byte aligned allocations
  size_t owned_bytes = 0;
  ~WeightStore();

  const TensorRef& at(int id) const;
};

}  // namespace gptoss
