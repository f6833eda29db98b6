// C++ errors -> JS errors carrying the string code lib/errors.ts maps to its classes.
#pragma once
#include <napi.h>

#include <exception>
#include <functional>
#include <new>

#include "kernels/common.h"

namespace gptoss {

Napi::Error make_js_error(Napi::Env env, const std::string& code, const std::string& message);
// The JS error for a native Error: its code, and its file and tensor when it has them.
Napi::Error make_js_error(Napi::Env env, const Error& e);

// What a failure on the worker thread carries back to the JS thread.
struct CaughtError {
  std::string code, message, file, tensor;
  Napi::Error js(Napi::Env env) const;
};
// Classifies the exception being handled (call only inside a catch block).
CaughtError caught();

// Runs fn on the JS thread and turns any C++ exception into a thrown JS error with a code.
template <class Fn>
Napi::Value guarded(Napi::Env env, Fn&& fn) {
  try {
    return fn();
  } catch (const Napi::Error&) {
    throw;
  } catch (...) {
    throw caught().js(env);
  }
}

// A promise settled by work that runs on the libuv pool and touches no JS. `keep` holds JS values
// (typed arrays the work reads or writes) alive until the promise settles.
class PromiseWorker : public Napi::AsyncWorker {
 public:
  using Work = std::function<void()>;
  using Result = std::function<Napi::Value(Napi::Env)>;
  PromiseWorker(Napi::Env env, Work work, Result result, std::vector<Napi::Value> keep = {});
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override;
  void OnOK() override;
  void OnError(const Napi::Error& e) override;

 private:
  Napi::Promise::Deferred deferred_;
  Work work_;
  Result result_;
  std::vector<Napi::Reference<Napi::Value>> keep_;
  CaughtError error_;
};

// Convenience: queue the work and return its promise.
Napi::Promise run_async(Napi::Env env, PromiseWorker::Work work, PromiseWorker::Result result,
                        std::vector<Napi::Value> keep = {});

}  // namespace gptoss
