// attention on the device for prefill: the tensor-core flash-attention kernel of the op in
// kernels/attention.h (same arguments and result as attention_cuda and attention_cpu) for steps
// whose tokens come in runs of one sequence (prompt chunks). The keys and values of the step's own
// tokens must already be in the cache (rope_kv_append_cuda runs first; fusing the append would
// save re-reading T rows out of the T + context read here, so it does not pay).
// q, positions, the caches, the page table (pages.seq, pages.table), sinks and out are device
// memory; `threads`, `scratch` and `scratch_bytes` are not used (no scratch: one block owns its
// tokens' whole softmax). Unlike attention_cuda there is no planned max_context: any position is
// computed in full.
// Precondition (true of prompt chunks): for each sequence in the step, every position from its
// tokens' lowest window start to its highest position holds a key and value written once (a
// block reads that whole range and masks what a token may not see; a never-written pool row
// holding NaN would leak through 0 * NaN).
// Throws ERR_INVALID_ARGUMENT before launching on bad shapes (head_dim must be 64, at most 8 query
// heads per KV head, a bf16 cache: an f32 cache is the fp32 reference mode, which attention_cuda
// computes in f32) and ERR_DEVICE when a launch fails.
//
// split: Q and P enter the mma as hi + lo bf16 halves, two mma per product, within ~1e-5 of the
// CPU op (fp32 mode, or any exact program); false: rounded once to bf16, one mma per product (the
// default mode's bf16 products: half the tensor work, P and Q within 2^-8 relatively).
//
// Which to launch (the backend's choice; both compute the op): attention_prefill_cuda for a bf16
// cache when the step holds a prompt chunk of 16 or more tokens of one sequence; attention_cuda
// for decode steps (one token per sequence: this kernel would run a block per 8 tokens with one
// busy warp per sequence) and for f32 caches.
#pragma once
#include "kernels/attention.h"
#include "kernels/cuda/common.cuh"

namespace gptoss {
void attention_prefill_cuda(const AttentionArgs& a, cudaStream_t stream, bool split);
}  // namespace gptoss
