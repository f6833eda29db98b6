// kv_append: writes the K and V heads of T tokens (of one or many sequences) into a layer's KV
// pool at the rows their sequence's pages give their positions (kv_pages.h).
#pragma once
#include "kernels/common.h"
#include "kernels/kv_pages.h"

namespace gptoss {
struct KvAppendArgs {
  const float* k;           // [T, ld] K heads (kv_heads * D wide)
  const float* v;           // [T, ld] V heads
  int64_t ld;
  const int32_t* positions; // [T]
  void* k_cache;            // [pool rows, kv_heads * D] in cache_dtype
  void* v_cache;
  DType cache_dtype;        // F32 or BF16
  KvPages pages;
  int T, width;
};
void kv_append_cpu(const KvAppendArgs& a);
}  // namespace gptoss
