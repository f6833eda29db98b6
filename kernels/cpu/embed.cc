#include "kernels/embed.h"

#include "kernels/cpu/simd.h"

namespace gptoss {
void embed_cpu(const EmbedArgs& a) {
  for (int t = 0; t < a.T; ++t)
    cpu::simd().bf16_to_f32(a.table + int64_t(a.tokens[t]) * a.H, a.x + t * a.ldx, size_t(a.H));
}

void run_cpu(const EmbedOp& o, const StepContext& s) {
  embed_cpu({s.tokens, s.bf16(o.w), s.f32(o.y), s.ld(o.y), s.T, o.H});
}

}  // namespace gptoss
