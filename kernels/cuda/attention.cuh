// attention on the device: the CUDA entry point of the op in kernels/attention.h (same arguments;
// q, positions, the caches, the page table (pages.seq, pages.table), sinks, out and scratch are
// device memory; `threads` is not used). The positions live on the device and the grid must not
// depend on them (a decode step is replayed as a CUDA graph), so the bound on each token's keys
// comes from the host: max_context, the context the program's scratch was planned for
// (attention_scratch_cuda). A token whose position is at or past it gets NaN outputs, never a
// silently truncated attention. Throws ERR_INVALID_ARGUMENT before launching on bad shapes
// (head_dim must be 64, at most 8 query heads per KV head, scratch too small) and ERR_DEVICE when
// a launch fails.
#pragma once
#include "kernels/attention.h"
#include "kernels/cuda/common.cuh"

namespace gptoss {
// Bytes of device scratch attention_cuda needs to take T tokens below max_context in one launch.
size_t attention_scratch_cuda(int T, int64_t max_context, int q_heads, int head_dim, int window);
// The scratch a program plans for steps of up to max_T tokens: T tokens' worth, but no more than
// kAttentionScratchCapBytes (at least one token's): a longer step runs in launches of as many
// tokens as that holds (at gpt-oss's 64 query heads, 497 tokens at a 4,096-position context, 15
// at 131,072), so the scratch does not grow with the step budget times the context.
constexpr size_t kAttentionScratchCapBytes = size_t(256) << 20;
size_t attention_scratch_plan_cuda(int max_T, int64_t max_context, int q_heads, int head_dim, int window);
// fold_merge: with one split planned, the split kernel writes the output itself (one launch; the
// same bits as the two-launch path, which tests ask for with false). a.scratch must hold at least
// one token's (attention_scratch_cuda(1, ...)); the tokens go in launches of as many as it holds,
// each token's result the same whatever the launch it is in.
// mma: the split kernel on the tensor cores (a bf16 cache only; default mode's bf16 products: Q
// and the softmax weights rounded to bf16 once, f32 sums), the same splits, partials and merge;
// else the CUDA-core kernel, f32 products (every mode, both cache types).
void attention_cuda(const AttentionArgs& a, int64_t max_context, cudaStream_t stream, bool fold_merge = true,
                    bool mma = false);
}  // namespace gptoss
