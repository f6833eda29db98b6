// The N-API face of a program (native/runtime/program.h): parses a ProgramSpec from lib/engine/graph.ts's
// spec and a StepInput from each step's arguments with checked accessors, queues the step on the
// libuv pool, and turns its results into JS values. No arithmetic here.
#pragma once
#include <napi.h>

#include <memory>

#include "native/runtime/program.h"

namespace gptoss {

class Program : public Napi::ObjectWrap<Program> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit Program(const Napi::CallbackInfo& info);

 private:
  Napi::Value Step(const Napi::CallbackInfo& info);
  Napi::Value ReadBuffer(const Napi::CallbackInfo& info);
  Napi::Value WriteBuffer(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  Napi::Value Vocab(const Napi::CallbackInfo& info);
  Napi::Value Memory(const Napi::CallbackInfo& info);
  Napi::Value Transfers(const Napi::CallbackInfo& info);
  ProgramState& live();
  ProgramState& idle();

  std::shared_ptr<ProgramState> state_;
  int64_t reported_ = 0;
};

// The op registry as JS sees it: {name: [{name, kind, optional}]} (lib/backend/ops.ts is tested against it).
Napi::Object op_registry_exports(Napi::Env env, Napi::Object exports);

}  // namespace gptoss
