// The N-API face of a model's weights (native/runtime/weights.h): map checkpoint files, register
// their tensors, generate synthetic ones.
#pragma once
#include <napi.h>

#include <memory>
#include <string>
#include <vector>

#include "kernels/common.h"
#include "native/runtime/backend.h"
#include "native/runtime/weights.h"

namespace gptoss {

// Per-environment data (main thread and each worker thread that loads the addon).
struct AddonData {
  Napi::FunctionReference weights_ctor;
  Napi::FunctionReference program_ctor;
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
  Napi::Value MappedState(const Napi::CallbackInfo& info);
  Napi::Value Evict(const Napi::CallbackInfo& info);
  Napi::Value Upload(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  Napi::Value OwnedBytes(const Napi::CallbackInfo& info);
  WeightStore& live(Napi::Env env);
  uint8_t* own(Napi::Env env, size_t bytes, const std::string& what);

  std::shared_ptr<WeightStore> store_;
  // Device copies made by upload(), held until dispose (they hold the store: released there, or
  // they would keep each other alive).
  std::vector<std::shared_ptr<const DeviceWeights>> uploaded_;
  int64_t reported_ = 0;
};

}  // namespace gptoss
