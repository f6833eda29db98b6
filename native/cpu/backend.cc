// The CPU backend: host memory, the weights read in place from the store (memory-mapped files or
// synthetic tensors: no copy, no repacking, since kernels/cpu reads the checkpoint's layouts),
// ops run in line on the calling worker thread with kernels/cpu's thread pool, sampling on the
// calling thread. The reference every other backend is tested against.
#include <cstdlib>
#include <cstring>

#include "kernels/cpu/parallel.h"
#include "native/host_alloc.h"
#include "native/runtime/backend.h"

namespace gptoss {
namespace {

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }
  const OpLimits& limits() const override {
    static const OpLimits l{};  // the contract headers' defaults are the CPU kernels' limits
    return l;
  }
  bool host_memory() const override { return true; }
  int threads() const override { return cpu::num_threads(); }

  void* allocate(size_t bytes, const std::string& what) override {
    void* p = host_alloc(bytes);
    if (!p) throw Error("ERR_OUT_OF_MEMORY", "cannot allocate " + std::to_string(bytes) + " bytes for " + what);
    allocated_ += bytes;
    return p;
  }
  void release(void* p, size_t bytes) override {
    std::free(p);
    allocated_ -= bytes;
  }
  void zero(void* p, size_t bytes) override { std::memset(p, 0, bytes); }
  void upload(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void download(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }

  std::shared_ptr<const DeviceWeights> upload_weights(const std::shared_ptr<WeightStore>& store) override {
    auto w = std::make_shared<DeviceWeights>();
    w->host = store;
    for (const TensorRef& t : store->tensors) w->ptrs.push_back(t.data);
    return w;
  }

  size_t scratch_bytes(const AnyOp& op, const ScratchPlan& plan) const override {
    return std::visit([&](const auto& o) -> size_t {
      if constexpr (std::is_same_v<std::decay_t<decltype(o)>, std::monostate>) return 0;
      else return scratch_bytes_cpu(o, plan);
    }, op);
  }
  void run(const AnyOp& op, const StepContext& ctx) override {
    std::visit([&](const auto& o) {
      if constexpr (!std::is_same_v<std::decay_t<decltype(o)>, std::monostate>) run_cpu(o, ctx);
    }, op);
  }
  void synchronize() override {}

  MemoryReport memory() const override { return {size_t(allocated_.load()), 0}; }

 private:
  std::atomic<int64_t> allocated_{0};
};

}  // namespace

std::shared_ptr<Backend> cpu_backend() {
  static std::shared_ptr<Backend> b = std::make_shared<CpuBackend>();
  return b;
}

}  // namespace gptoss
