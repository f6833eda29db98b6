// embed: x[t, :] = table[tokens[t], :] (bf16 table [vocab, H] -> f32 rows).
#pragma once
#include "kernels/op.h"

namespace gptoss {
struct EmbedArgs {
  const int32_t* tokens;  // [T], each < vocab (checked by the caller)
  const uint16_t* table;  // [vocab, H] bf16
  float* x;               // [T, ldx]
  int64_t ldx;
  int T, H;
};
void embed_cpu(const EmbedArgs& a);

// In a program: the step's tokens into y. The table's rows are the vocabulary the logits and
// the token ids of every step are checked against.
struct EmbedOp {
  Weight w;  // [vocab, H] bf16
  Buf y;     // [T, H] f32
  int H = 0;
  template <class V> void fields(V& v) {
    v("w", w);
    v("y", y);
    v("H", H);
  }
};
struct EmbedLimits {};
inline void check(const EmbedOp& o, OpCheck& c, const EmbedLimits&) {
  c.positive(o.H, "H");
  const size_t bytes = c.weight_bytes(o.w, "w");
  c.require(bytes % (size_t(o.H) * 2) == 0 && bytes > 0, "w", "the table must be [vocab, H] bf16, got " + std::to_string(bytes) + " bytes");
  c.vocab = int(bytes / (size_t(o.H) * 2));
  c.buffer(o.y, DType::F32, c.max_tokens, o.H, "y");
}
void run_cpu(const EmbedOp& o, const StepContext& s);
}  // namespace gptoss
