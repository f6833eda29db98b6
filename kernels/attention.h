// attention: grouped-query attention with learned sinks and an optional sliding window over a
// layer's KV cache (kernels/MODEL.md, "Attention"). Query t at position p sees keys at positions
// [max(0, p - window + 1), p] (window 0 = all of [0, p]); logits are (q . k) * scale; the sink
// S[h] joins the softmax as a raw logit and its mass is dropped. f32 scores and softmax.
#pragma once
#include "kernels/op.h"

namespace gptoss {
struct AttentionArgs {
  const float* q;            // [T, ldq] Q heads (q_heads * D), RoPE applied
  int64_t ldq;
  const int32_t* positions;  // [T]
  const void* k_cache;       // [pool rows, kv_heads * D], cache_dtype
  const void* v_cache;
  DType cache_dtype;
  KvPages pages;             // the token's own sequence's keys only
  const uint16_t* sinks;     // [q_heads] bf16
  float* out;                // [T, ldo] (q_heads * D)
  int64_t ldo;
  int T, q_heads, kv_heads, head_dim, window;
  float scale;
  uint8_t* scratch;          // attention_scratch_cpu(...) bytes
  size_t scratch_bytes;
  int threads;               // worker threads that may run its tasks
};
void attention_cpu(const AttentionArgs& a);
// Scratch for up to T tokens at positions below max_context; a slice per worker thread.
size_t attention_scratch_cpu(int T, int64_t max_context, int q_heads, int kv_heads, int head_dim, int window, int threads);

// In a program: queries from x (columns [0, qHeads * headDim)), into y.
struct AttentionOp {
  Buf x;     // [T, qHeads * headDim] f32, or wider (the fused QKV row)
  Buf y;     // [T, qHeads * headDim] f32
  Kv kc, vc; // the layer's pools (kv_append.h)
  Weight w;  // [qHeads] bf16 sinks
  int q_heads = 0, kv_heads = 0, head_dim = 0, window = 0;
  float scale = 0;
  template <class V> void fields(V& v) {
    v("x", x);
    v("y", y);
    v("kc", kc);
    v("vc", vc);
    v("w", w);
    v("qHeads", q_heads);
    v("kvHeads", kv_heads);
    v("headDim", head_dim);
    v("window", window);
    v("scale", scale);
  }
};
struct AttentionLimits {};
inline void check(const AttentionOp& o, OpCheck& c, const AttentionLimits&) {
  c.positive(o.kv_heads, "kvHeads");
  c.positive(o.head_dim, "headDim");
  c.non_negative(o.window, "window");
  c.require(o.q_heads > 0 && o.q_heads % o.kv_heads == 0, "qHeads", "must be a positive multiple of kvHeads");
  c.require(o.scale > 0, "scale", "must be positive");
  c.buffer(o.x, DType::F32, c.max_tokens, int64_t(o.q_heads) * o.head_dim, "x");
  c.buffer(o.y, DType::F32, c.max_tokens, int64_t(o.q_heads) * o.head_dim, "y");
  const BufferView& k = c.pool(o.kc, "kc");
  const BufferView& v = c.pool(o.vc, "vc");
  c.require(k.dtype == DType::F32 || k.dtype == DType::BF16, "kc", "a KV pool is f32 or bf16");
  c.require(k.cols == o.kv_heads * o.head_dim, "kc", "must be kvHeads * headDim = " + std::to_string(o.kv_heads * o.head_dim) + " wide");
  c.require(v.dtype == k.dtype && v.rows == k.rows && v.cols == k.cols, "vc", "must match kc in dtype and shape");
  c.weight(o.w, size_t(o.q_heads) * 2, "w");
}
void run_cpu(const AttentionOp& o, const StepContext& s);
size_t scratch_bytes_cpu(const AttentionOp& o, const ScratchPlan& p);
}  // namespace gptoss
