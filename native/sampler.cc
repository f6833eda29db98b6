#include "native/sampler.h"

#include <cmath>
#include <memory>
#include <vector>

#include "native/errors.h"
#include "native/js.h"

namespace gptoss {
namespace {
template <class T, napi_typedarray_type kType>
std::vector<T> typed(Napi::Object o, const char* key) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return {};
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != kType)
    throw invalid_argument(std::string("sampling.") + key + " must be a typed array of the right type");
  auto a = v.As<Napi::TypedArrayOf<T>>();
  return std::vector<T>(a.Data(), a.Data() + a.ElementLength());
}
double number(Napi::Object o, const char* key, double def) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return def;
  if (!v.IsNumber()) throw invalid_argument(std::string("sampling.") + key + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) throw invalid_argument(std::string("sampling.") + key + " must be finite");
  return d;
}
// Casting a double beyond a float's or an int's range is undefined behaviour: refuse it first.
float num(Napi::Object o, const char* key, float def) {
  const double d = number(o, key, def);
  if (std::fabs(d) > 3.4e38) throw invalid_argument(std::string("sampling.") + key + " is outside the float32 range");
  return float(d);
}
int integer(Napi::Object o, const char* key, int def) {
  const double d = number(o, key, def);
  if (d != std::trunc(d) || d < -2147483648.0 || d > 2147483647.0)
    throw invalid_argument(std::string("sampling.") + key + " must be a 32-bit integer");
  return int(d);
}
}  // namespace

SampleParams parse_sample_params(Napi::Object o, int V) {
  SampleParams p;
  p.temperature = num(o, "temperature", 1.f);
  p.top_k = integer(o, "topK", 0);
  p.top_p = num(o, "topP", 1.f);
  p.min_p = num(o, "minP", 0.f);
  p.presence_penalty = num(o, "presencePenalty", 0.f);
  p.frequency_penalty = num(o, "frequencyPenalty", 0.f);
  p.repetition_penalty = num(o, "repetitionPenalty", 1.f);
  p.ban_from = integer(o, "banFrom", -1);
  p.bias_ids = typed<int32_t, napi_int32_array>(o, "biasIds");
  p.bias_values = typed<float, napi_float32_array>(o, "biasValues");
  p.history_ids = typed<int32_t, napi_int32_array>(o, "historyIds");
  p.history_counts = typed<int32_t, napi_int32_array>(o, "historyCounts");
  Napi::Value mask = o.Get("allowMask");
  if (!mask.IsUndefined() && !mask.IsNull()) {
    const auto words = typed<int32_t, napi_int32_array>(o, "allowMask");
    // An empty mask would read as "no mask": the length check must see it.
    if (words.empty()) throw invalid_argument("sampling.allowMask must hold ceil(V / 32) = " + std::to_string((V + 31) / 32) + " words, got 0");
    p.allow.assign(words.begin(), words.end());
  }
  const std::string why = sample_params_error(p, V);
  if (!why.empty()) throw invalid_argument(why);
  return p;
}

namespace {
// sampleMany(logits Float32Array, params, rng BigUint64Array(1), count) -> Promise<Int32Array>:
// `count` draws from the same logits (the RNG advances). For tests and for logits from elsewhere.
Napi::Value SampleMany(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      throw invalid_argument("sampleMany(logits, ...): logits must be a Float32Array");
    auto logits = info[0].As<Napi::Float32Array>();
    const int V = int(logits.ElementLength());
    if (V < 1) throw invalid_argument("sampleMany: empty logits");
    SampleParams params = parse_sample_params(js::object(info[1], "sampleMany: params"), V);
    if (!info[2].IsTypedArray() || info[2].As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array)
      throw invalid_argument("sampleMany: rng must be a BigUint64Array(1)");
    auto rng = info[2].As<Napi::TypedArrayOf<uint64_t>>();
    if (rng.ElementLength() < 1) throw invalid_argument("sampleMany: rng must hold one 64-bit state");
    const int count = js::int32(info[3], "sampleMany: count");
    if (count < 1) throw invalid_argument("sampleMany: count must be positive");
    auto src = std::make_shared<std::vector<float>>(logits.Data(), logits.Data() + V);
    auto out = std::make_shared<std::vector<int32_t>>(size_t(count));
    uint64_t* state = rng.Data();
    return run_async(
        env,
        [=]() {
          // This call's own working memory (no program, so no arena), reused across its draws.
          SampleWork work(V);
          for (int i = 0; i < count; ++i) {
            std::copy(src->begin(), src->end(), work.row);
            (*out)[size_t(i)] = sample_cpu(work.row, V, params, state, work.scratch).token;
          }
        },
        [out](Napi::Env e) -> Napi::Value {
          auto arr = Napi::Int32Array::New(e, out->size());
          std::copy(out->begin(), out->end(), arr.Data());
          return arr;
        },
        {rng});
  });
}
}  // namespace

Napi::Object sampler_exports(Napi::Env env, Napi::Object exports) {
  exports.Set("sampleMany", Napi::Function::New(env, SampleMany));
  return exports;
}

}  // namespace gptoss
