// kv_append: writes the K and V heads of T tokens into a layer's cache at row (position % capacity).
// Full-attention layers get capacity >= the context, so the row is the position; sliding-window
// layers keep a ring of window + max_tokens - 1 rows, enough for every query of a step to see its
// whole window after the step's own keys are written.
#pragma once
#include "kernels/common.h"

namespace gptoss {
struct KvAppendArgs {
  const float* k;           // [T, ld] K heads (kv_heads * D wide)
  const float* v;           // [T, ld] V heads
  int64_t ld;
  const int32_t* positions; // [T]
  void* k_cache;            // [capacity, kv_heads * D] in cache_dtype
  void* v_cache;
  DType cache_dtype;        // F32 or BF16
  int T, width, capacity;
};
void kv_append_cpu(const KvAppendArgs& a);
}  // namespace gptoss
