// attention: grouped-query attention with learned sinks and an optional sliding window over a
// layer's KV cache (gpt-oss-spec.md §2.6). Query t at position p sees keys at positions
// [max(0, p - window + 1), p] (window 0 = all of [0, p]); logits are (q . k) * scale; the sink
// S[h] joins the softmax as a raw logit and its mass is dropped. f32 scores and softmax.
#pragma once
#include "kernels/common.h"
#include "kernels/kv_pages.h"

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
};
void attention_cpu(const AttentionArgs& a);
}  // namespace gptoss
