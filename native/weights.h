// The weights of one model in host memory: tensors that point into memory-mapped checkpoint
// files, or that the store owns (synthetic weights). Programs hold a shared_ptr to the store, so
// a model disposed while a step is in flight is freed when that step ends.
#pragma once
#include <napi.h>

#include <memory>
#include <string>
#include <vector>

#include "kernels/common.h"

namespace gptoss {

struct TensorRef {
  const uint8_t* data = nullptr;
  size_t bytes = 0;
  std::string name;
};

// Per-environment data (main thread and each worker thread that loads the addon).
struct AddonData {
  Napi::FunctionReference weights_ctor;
  Napi::FunctionReference program_ctor;
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

class Weights : public Napi::ObjectWrap<Weights> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit Weights(const Napi::CallbackInfo& info);
  ~Weights() override;
  std::shared_ptr<WeightStore> store() const { return store_; }
  static Weights* Unwrap(const Napi::Value& v);

 private:
  Napi::Value MapFile(const Napi::CallbackInfo& info);
  Napi::Value AddMapped(const Napi::CallbackInfo& info);
  Napi::Value AddSynthetic(const Napi::CallbackInfo& info);
  Napi::Value AddBytes(const Napi::CallbackInfo& info);
  Napi::Value Prefetch(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  Napi::Value OwnedBytes(const Napi::CallbackInfo& info);
  WeightStore& live(Napi::Env env);
  uint8_t* own(Napi::Env env, size_t bytes, const std::string& what);

  std::shared_ptr<WeightStore> store_;
  int64_t reported_ = 0;
};

}  // namespace gptoss
