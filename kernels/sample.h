// sample: picks the next token from one row of logits, in this order (vLLM's, which clients
// expect): logit bias -> presence/frequency/repetition penalties -> banned ids and the grammar's
// allow mask -> temperature
// (0 = greedy, ties to the lower id) -> top-k -> top-p -> min-p -> a draw from the seeded RNG.
// Penalties use the counts the caller passes (the tokens generated so far):
//   presence/frequency (OpenAI): l -= frequency * count + presence * (count > 0)
//   repetition (CTRL / HF):      l = l > 0 ? l / r : l * r, for ids with count > 0
// The result is deterministic for a given RNG state; the state advances by one draw.
#pragma once
#include <vector>

#include "kernels/common.h"

namespace gptoss {

struct SampleParams {
  float temperature = 1.f;
  int top_k = 0;            // 0 = off
  float top_p = 1.f;        // 1 = off
  float min_p = 0.f;        // 0 = off
  float presence_penalty = 0.f, frequency_penalty = 0.f, repetition_penalty = 1.f;
  std::vector<int32_t> bias_ids;
  std::vector<float> bias_values;
  std::vector<int32_t> history_ids;     // distinct ids
  std::vector<int32_t> history_counts;  // occurrences of each
  int32_t ban_from = -1;                // ids >= ban_from are never sampled (-1 = none)
  // Constrained decoding: bit (id & 31) of word id >> 5 set = id may be drawn; empty = all may.
  std::vector<uint32_t> allow;
};

struct SampleResult {
  int32_t token;
  float logprob;  // log-probability of the token under the final (processed) distribution
};

// logits [V] are modified in place. rng: 64-bit state (splitmix64), advanced.
SampleResult sample_cpu(float* logits, int V, const SampleParams& p, uint64_t* rng);

// The model's own distribution over one row of raw logits (log-softmax, before any sampling
// setting): the log-probability of `token` and the `top` most likely tokens (top <= 20), in
// descending order, ties to the lower id.
struct TokenLogprobs {
  float logprob = 0.f;
  std::vector<std::pair<int32_t, float>> top;
};
TokenLogprobs logprobs_cpu(const float* logits, int V, int32_t token, int top);

}  // namespace gptoss
