// C++ errors -> JS errors carrying the string code lib/errors.ts maps to its classes.
#pragma once
#include <napi.h>

#include <exception>
#include <functional>
#include <new>

#include "kernels/common.h"

namespace gptoss {

Napi::Error make_js_error(Napi::Env env, const std::string& code, const std::string& message);

// Runs fn on the JS thread and turns any C++ exception into a thrown JS error with a code.
template <class Fn>
Napi::Value guarded(Napi::Env env, Fn&& fn) {
  try {
    return fn();
  } catch (const Napi::Error&) {
    throw;
  } catch (const Error& e) {
    throw make_js_error(env, e.code, e.what());
  } catch (const std::bad_alloc&) {
    throw make_js_error(env, "ERR_OUT_OF_MEMORY", "host memory allocation failed");
  } catch (const std::exception& e) {
    throw make_js_error(env, "ERR_INVALID_ARGUMENT", e.what());
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
  std::string code_ = "ERR_INVALID_ARGUMENT";
};

// Convenience: queue the work and return its promise.
Napi::Promise run_async(Napi::Env env, PromiseWorker::Work work, PromiseWorker::Result result,
                        std::vector<Napi::Value> keep = {});

}  // namespace gptoss
