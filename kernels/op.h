// What every op contract (kernels/<op>.h) builds on, besides its kernel arguments:
//   - the ids an op names in a program: activation buffers (Buf), KV pools (Kv), weights (Weight);
//   - the op's fields, listed once by its `fields(v)` member: the addon parses a program with it,
//     exports it (lib/backend/ops.ts is checked against that export), and finds the op's KV pools with it;
//   - OpCheck, through which an op's shape rules and limits are checked once, when a program is
//     built (native/runtime/program.cc implements it);
//   - StepContext, what an op's backend entry point sees when a step runs.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/common.h"
#include "kernels/kv_pages.h"

namespace gptoss {

struct RopeTable;  // kernels/rope.h

// An activation buffer of the program (in the program's arena). Optional fields hold id -1 when
// the program leaves them out (lib/backend/ops.ts: an absent key, never a sentinel).
struct Buf {
  int id = -1;
  bool present() const { return id >= 0; }
};
// A KV pool: a buffer that keeps its contents between steps (allocated apart from the arena).
struct Kv {
  int id = -1;
};
// A tensor of the model's weights, in the backend's memory and layout.
struct Weight {
  int id = -1;
  bool present() const { return id >= 0; }
};

struct BufferView {
  DType dtype;
  int rows, cols;
  void* data;
  size_t bytes() const { return size_t(rows) * size_t(cols) * dtype_size(dtype); }
};

// Build-time checks of one op against its program. Each check names the op (by index and name),
// the argument and the rule or limit it broke, as ERR_INVALID_ARGUMENT.
class OpCheck {
 public:
  virtual ~OpCheck() = default;
  int max_tokens = 0;     // rows every activation buffer needs
  int rope_head_dim = 0;  // of the program's rotary table
  // The buffer has `dtype` and at least rows x cols.
  virtual void buffer(Buf b, DType dtype, int64_t rows, int64_t cols, const char* arg) = 0;
  virtual const BufferView& pool(Kv k, const char* arg) = 0;
  // The tensor has exactly `bytes` bytes.
  virtual void weight(Weight w, size_t bytes, const char* arg) = 0;
  virtual size_t weight_bytes(Weight w, const char* arg) = 0;
  // The rows of the logits output (the embedding table's rows, set by embed).
  int vocab = 0;
  [[noreturn]] virtual void fail(const char* arg, const std::string& rule) = 0;
  void require(bool ok, const char* arg, const std::string& rule) {
    if (!ok) fail(arg, rule);
  }
  void positive(int v, const char* arg) { require(v > 0, arg, "must be positive, got " + std::to_string(v)); }
  void non_negative(int v, const char* arg) { require(v >= 0, arg, "must be >= 0, got " + std::to_string(v)); }
};

// What a step gives each op: pointers in the backend's memory, the step's tokens and page
// tables, and this op's scratch (a slice of the program's arena, sized by the op's
// scratch_bytes_<backend>; `threads` equal parts at its end belong one to each worker thread).
struct StepContext {
  const BufferView* buffers;
  const uint8_t* const* weights;  // weight id -> bytes
  int T;
  const int32_t* tokens;      // [T]
  const int32_t* positions;   // [T]
  int L;                      // rows that want logits
  const int32_t* logit_rows;  // [L], indices into [0, T)
  float* logits;              // [L, vocab] or null
  KvPages pages[2];           // [0] full-attention layers, [1] sliding-window layers
  const RopeTable* rope;
  uint8_t* scratch;
  size_t scratch_bytes;
  bool exact = true;          // the program's precision is 'fp32' (ScratchPlan::exact)

  float* f32(Buf b) const { return static_cast<float*>(buffers[b.id].data); }
  int32_t* i32(Buf b) const { return static_cast<int32_t*>(buffers[b.id].data); }
  int64_t ld(Buf b) const { return buffers[b.id].cols; }
  const BufferView& pool(Kv k) const { return buffers[k.id]; }
  const uint8_t* bytes(Weight w) const { return w.id >= 0 ? weights[w.id] : nullptr; }
  const uint16_t* bf16(Weight w) const { return reinterpret_cast<const uint16_t*>(bytes(w)); }
  const KvPages& pages_for(int window) const { return pages[window > 0 ? 1 : 0]; }
};

// What an op's scratch size may depend on, fixed when the program is built.
struct ScratchPlan {
  int max_tokens;
  int64_t max_context;  // positions a step may use are below this
  int threads;          // worker threads of the backend, the caller included
  // The precision mode's contract (lib/backend/device.ts): true in 'fp32' mode, where every product
  // is f32 (the reference); false in 'default', where a backend may take f16/bf16 products that
  // stay within 1e-3 of it (the CUDA MXFP4 GEMV's f16 HFMA2, the tensor-core kernels).
  bool exact = true;
};

inline size_t align64(size_t n) { return (n + 63) / 64 * 64; }

// Carves 64-byte aligned pieces out of a scratch region in order; sizing and running use the
// same sequence of take() calls, so the size computed at build time is the size used.
struct ScratchCarver {
  uint8_t* base = nullptr;  // null: only count
  size_t used = 0, limit = SIZE_MAX;
  template <class T>
  T* take(size_t count) {
    const size_t at = used;
    used += align64(count * sizeof(T));
    if (base && used > limit) throw Error("ERR_INTERNAL", "an op's scratch exceeds what its program reserved");
    return base ? reinterpret_cast<T*>(base + at) : nullptr;
  }
};

}  // namespace gptoss
