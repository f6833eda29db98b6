#include "native/errors.h"

namespace gptoss {

Napi::Error make_js_error(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, code));
  return err;
}

PromiseWorker::PromiseWorker(Napi::Env env, Work work, Result result, std::vector<Napi::Value> keep)
    : Napi::AsyncWorker(env, "gptoss"), deferred_(Napi::Promise::Deferred::New(env)),
      work_(std::move(work)), result_(std::move(result)) {
  for (auto& v : keep) keep_.push_back(Napi::Persistent(v));
}

void PromiseWorker::Execute() {
  try {
    work_();
  } catch (const Error& e) {
    code_ = e.code;
    SetError(e.what());
  } catch (const std::bad_alloc&) {
    code_ = "ERR_OUT_OF_MEMORY";
    SetError("host memory allocation failed");
  } catch (const std::exception& e) {
    SetError(e.what());
  } catch (...) {
    SetError("unknown native error");
  }
}

void PromiseWorker::OnOK() {
  Napi::Env env = Env();
  try {
    deferred_.Resolve(result_ ? result_(env) : env.Undefined());
  } catch (const Napi::Error& e) {
    deferred_.Reject(e.Value());
  } catch (const Error& e) {
    deferred_.Reject(make_js_error(env, e.code, e.what()).Value());
  } catch (const std::bad_alloc&) {
    deferred_.Reject(make_js_error(env, "ERR_OUT_OF_MEMORY", "host memory allocation failed").Value());
  } catch (const std::exception& e) {
    deferred_.Reject(make_js_error(env, "ERR_INVALID_ARGUMENT", e.what()).Value());
  }
}

void PromiseWorker::OnError(const Napi::Error& e) {
  deferred_.Reject(make_js_error(Env(), code_, e.Message()).Value());
}

Napi::Promise run_async(Napi::Env env, PromiseWorker::Work work, PromiseWorker::Result result,
                        std::vector<Napi::Value> keep) {
  auto* w = new PromiseWorker(env, std::move(work), std::move(result), std::move(keep));
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

}  // namespace gptoss
