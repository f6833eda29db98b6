// kv_append: writes the K and V heads of T tokens (of one or many sequences) into a layer's KV
// pool at the rows their sequence's pages give their positions (kv_pages.h).
#pragma once
#include "kernels/op.h"

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

// In a program: K heads from column xcol of x, V heads from column vcol, into the pools kc and
// vc of a layer whose sliding window is `window` (0: full attention), which picks the step's
// page table.
struct KvAppendOp {
  Buf x;      // [T, max(xcol, vcol) + kvHeads * headDim] f32
  Kv kc, vc;  // [pool rows, kvHeads * headDim], f32 or bf16, alike
  int xcol = 0, vcol = 0, kv_heads = 0, head_dim = 0, window = 0;
  template <class V> void fields(V& v) {
    v("x", x);
    v("kc", kc);
    v("vc", vc);
    v("xcol", xcol);
    v("vcol", vcol);
    v("kvHeads", kv_heads);
    v("headDim", head_dim);
    v("window", window);
  }
};
struct KvAppendLimits {};
inline void check(const KvAppendOp& o, OpCheck& c, const KvAppendLimits&) {
  c.positive(o.kv_heads, "kvHeads");
  c.positive(o.head_dim, "headDim");
  c.non_negative(o.xcol, "xcol");
  c.non_negative(o.vcol, "vcol");
  c.non_negative(o.window, "window");
  const int64_t width = int64_t(o.kv_heads) * o.head_dim;
  c.buffer(o.x, DType::F32, c.max_tokens, std::max<int64_t>(o.xcol, o.vcol) + width, "x");
  const BufferView& k = c.pool(o.kc, "kc");
  const BufferView& v = c.pool(o.vc, "vc");
  c.require(k.dtype == DType::F32 || k.dtype == DType::BF16, "kc", "a KV pool is f32 or bf16");
  c.require(k.cols == width, "kc", "must be kvHeads * headDim = " + std::to_string(width) + " wide");
  c.require(v.dtype == k.dtype && v.rows == k.rows && v.cols == k.cols, "vc", "must match kc in dtype and shape");
}
void run_cpu(const KvAppendOp& o, const StepContext& s);
}  // namespace gptoss
