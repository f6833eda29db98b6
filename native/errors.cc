#include "native/errors.h"

namespace gptoss {

Napi::Error make_js_error(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, code));
  return err;
}

Napi::Error make_js_error(Napi::Env env, const Error& e) {
  Napi::Error err = make_js_error(env, e.code, e.what());
  if (!e.file.empty()) err.Set("file", Napi::String::New(env, e.file));
  if (!e.tensor.empty()) err.Set("tensor", Napi::String::New(env, e.tensor));
  return err;
}

Napi::Error CaughtError::js(Napi::Env env) const {
  Error e(code, message);
  e.file = file;
  e.tensor = tensor;
  return make_js_error(env, e);
}

CaughtError caught() {
  try {
    throw;
  } catch (const Error& e) {
    return {e.code, e.what(), e.file, e.tensor};
  } catch (const std::bad_alloc&) {
    return {"ERR_OUT_OF_MEMORY", "host memory allocation failed", "", ""};
  } catch (const std::exception& e) {
    // Not one of ours: a bug (or a library's failure), never the caller's argument.
    return {"ERR_INTERNAL", std::string("internal error: ") + e.what(), "", ""};
  } catch (...) {
    return {"ERR_INTERNAL", "internal error: an unknown native exception", "", ""};
  }
}

PromiseWorker::PromiseWorker(Napi::Env env, Work work, Result result, std::vector<Napi::Value> keep)
    : Napi::AsyncWorker(env, "gptoss"), deferred_(Napi::Promise::Deferred::New(env)),
      work_(std::move(work)), result_(std::move(result)) {
  for (auto& v : keep) keep_.push_back(Napi::Persistent(v));
}

void PromiseWorker::Execute() {
  try {
    work_();
  } catch (...) {
    error_ = caught();
    SetError(error_.message);
  }
}

void PromiseWorker::OnOK() {
  Napi::Env env = Env();
  try {
    deferred_.Resolve(result_ ? result_(env) : env.Undefined());
  } catch (const Napi::Error& e) {
    deferred_.Reject(e.Value());
  } catch (...) {
    deferred_.Reject(caught().js(env).Value());
  }
}

void PromiseWorker::OnError(const Napi::Error& /*carried in error_*/) {
  deferred_.Reject(error_.js(Env()).Value());
}

Napi::Promise run_async(Napi::Env env, PromiseWorker::Work work, PromiseWorker::Result result,
                        std::vector<Napi::Value> keep) {
  auto* w = new PromiseWorker(env, std::move(work), std::move(result), std::move(keep));
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

}  // namespace gptoss
