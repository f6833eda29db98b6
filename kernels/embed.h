// embed: x[t, :] = table[tokens[t], :] (bf16 table [vocab, H] -> f32 rows).
#pragma once
#include "kernels/common.h"

namespace gptoss {
struct EmbedArgs {
  const int32_t* tokens;  // [T], each < vocab (checked by the caller)
  const uint16_t* table;  // [vocab, H] bf16
  float* x;               // [T, ldx]
  int64_t ldx;
  int T, H;
};
void embed_cpu(const EmbedArgs& a);
}  // namespace gptoss
