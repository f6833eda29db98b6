#include "native/runtime/weights.h"

#include <sys/mman.h>

#include <cstdlib>

#include "kernels/common.h"

namespace gptoss {

WeightStore::~WeightStore() {
  for (auto& m : maps)
    if (m.addr) munmap(m.addr, m.size);
  for (void* p : owned) std::free(p);
}

const TensorRef& WeightStore::at(int id) const {
  if (id < 0 || size_t(id) >= tensors.size())
    throw invalid_argument("weight id " + std::to_string(id) + " does not exist");
  return tensors[size_t(id)];
}

}  // namespace gptoss
