// Checked reads of JS values at the N-API boundary (sharp's AttrAs* habit): each names what it
// read in its ERR_INVALID_ARGUMENT, so no unchecked As<>() reaches a cast. `what` is the path
// the caller would write ("op 3 (rmsnorm): eps", "step: full.ring").
#pragma once
#include <napi.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "kernels/common.h"

namespace gptoss::js {

inline std::string type_of(const Napi::Value& v) {
  switch (v.Type()) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_boolean: return "a boolean";
    case napi_number: return "a number";
    case napi_string: return "a string";
    case napi_object: return v.IsArray() ? "an array" : v.IsTypedArray() ? "a typed array" : "an object";
    default: return "a value of another type";
  }
}

inline Napi::Object object(const Napi::Value& v, const std::string& what) {
  if (!v.IsObject() || v.IsArray()) throw invalid_argument(what + " must be an object, got " + type_of(v));
  return v.As<Napi::Object>();
}

inline Napi::Array array(const Napi::Value& v, const std::string& what) {
  if (!v.IsArray()) throw invalid_argument(what + " must be an array, got " + type_of(v));
  return v.As<Napi::Array>();
}

inline double number(const Napi::Value& v, const std::string& what) {
  if (!v.IsNumber()) throw invalid_argument(what + " must be a number, got " + type_of(v));
  return v.As<Napi::Number>().DoubleValue();
}

inline int32_t int32(const Napi::Value& v, const std::string& what) {
  const double d = number(v, what);
  if (!(d >= std::numeric_limits<int32_t>::min() && d <= std::numeric_limits<int32_t>::max()) || d != std::floor(d))
    throw invalid_argument(what + " must be a 32-bit integer, got " + std::to_string(d));
  return int32_t(d);
}

inline float float32(const Napi::Value& v, const std::string& what) {
  const double d = number(v, what);
  if (!std::isfinite(d) || std::fabs(d) > std::numeric_limits<float>::max())
    throw invalid_argument(what + " must be a finite float32, got " + std::to_string(d));
  return float(d);
}

inline bool boolean(const Napi::Value& v, const std::string& what) {
  if (!v.IsBoolean()) throw invalid_argument(what + " must be a boolean, got " + type_of(v));
  return v.As<Napi::Boolean>().Value();
}

inline std::string string(const Napi::Value& v, const std::string& what) {
  if (!v.IsString()) throw invalid_argument(what + " must be a string, got " + type_of(v));
  return v.As<Napi::String>().Utf8Value();
}

inline std::vector<int32_t> int32s(const Napi::Value& v, const std::string& what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throw invalid_argument(what + " must be an Int32Array, got " + type_of(v));
  auto a = v.As<Napi::Int32Array>();
  return std::vector<int32_t>(a.Data(), a.Data() + a.ElementLength());
}

// The keys of an object that are not in `known` (misspelled options), comma-separated.
inline std::string unknown_keys(const Napi::Object& o, const std::vector<std::string>& known) {
  std::string out;
  Napi::Array names = o.GetPropertyNames();
  for (uint32_t i = 0; i < names.Length(); ++i) {
    const std::string k = names.Get(i).ToString().Utf8Value();
    bool found = false;
    for (const auto& n : known) found = found || n == k;
    if (!found) out += (out.empty() ? "" : ", ") + k;
  }
  return out;
}

}  // namespace gptoss::js
