// Shared by the op contracts (kernels/<op>.h), both backends and the N-API layer.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

namespace gptoss {

enum class DType : uint8_t { F32 = 0, BF16 = 1, U8 = 2, I32 = 3 };

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::BF16: return 2;
    case DType::U8: return 1;
    case DType::I32: return 4;
  }
  return 0;
}

// The closed set of error codes that cross into JS (native/DESIGN.md, "Typed errors cross the
// boundary"; lib/errors.ts maps each to its class). Thrown by launchers and the N-API layer; never
// from inside a parallel_for body. ERR_INTERNAL is a bug of ours, not the caller's: any exception
// that is not an Error arrives in JS as one. A checkpoint error names its file and tensor.
struct Error : std::runtime_error {
  std::string code;
  std::string file, tensor;  // ERR_BAD_CHECKPOINT: where ("" when not known)
  Error(std::string c, const std::string& msg) : std::runtime_error(msg), code(std::move(c)) {}
};

inline Error invalid_argument(const std::string& msg) { return Error("ERR_INVALID_ARGUMENT", msg); }
inline Error checkpoint_error(const std::string& file, const std::string& tensor, const std::string& msg) {
  Error e("ERR_BAD_CHECKPOINT", msg);
  e.file = file;
  e.tensor = tensor;
  return e;
}

}  // namespace gptoss
