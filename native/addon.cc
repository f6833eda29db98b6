// The N-API module: Weights (a model's tensors), Program (a recorded step with its buffers and
// KV cache), and device queries. lib/backend/native.ts types this surface.
#include <napi.h>

#include "native/device.h"
#include "native/program.h"
#include "native/sampler.h"
#include "native/weights.h"

namespace gptoss {
Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new AddonData());
  exports.Set("Weights", Weights::Init(env));
  exports.Set("Program", Program::Init(env));
  device_exports(env, exports);
  sampler_exports(env, exports);
  op_registry_exports(env, exports);
  exports.Set("abiVersion", Napi::Number::New(env, 2));
  return exports;
}
}  // namespace gptoss

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return gptoss::Init(env, exports); }
NODE_API_MODULE(gptoss_addon, InitAddon)
