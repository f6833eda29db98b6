// sample: picks the next token from one row of logits, in this order (vLLM's, which clients
// expect): logit bias -> presence/frequency/repetition penalties -> banned ids and the grammar's
// allow mask -> temperature
// (0 = greedy, ties to the lower id) -> top-k -> top-p -> min-p -> a draw from the seeded RNG.
// Penalties use the counts the caller passes (the tokens generated so far):
//   presence/frequency (OpenAI): l -= frequency * count + presence * (count > 0)
//   repetition (CTRL / HF):      l = l > 0 ? l / r : l * r, for ids with count > 0
// The result is deterministic for a given RNG state; the state advances by one draw.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "kernels/op.h"

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

// Why parameters fall outside the contract for a row of V logits ("" when they are within it).
// Every caller that takes parameters from outside (the addon) checks this first.
inline std::string sample_params_error(const SampleParams& p, int V) {
  if (V < 1) return "empty logits";
  if (!(p.temperature >= 0) || p.top_k < 0 || !(p.top_p > 0 && p.top_p <= 1) || !(p.min_p >= 0 && p.min_p <= 1) ||
      !(p.repetition_penalty > 0) || p.ban_from == 0)
    return "sampling parameters out of range";
  if (p.bias_ids.size() != p.bias_values.size() || p.history_ids.size() != p.history_counts.size())
    return "sampling: id and value lists differ in length";
  if (!p.allow.empty() && p.allow.size() != (size_t(V) + 31) / 32)
    return "sampling.allowMask must hold ceil(V / 32) = " + std::to_string((V + 31) / 32) + " words, got " + std::to_string(p.allow.size());
  for (int32_t id : p.bias_ids)
    if (id < 0 || id >= V) return "sampling: logit bias for token " + std::to_string(id) + " outside the vocabulary";
  for (int32_t id : p.history_ids)
    if (id < 0 || id >= V) return "sampling: history token " + std::to_string(id) + " outside the vocabulary";
  return "";
}

struct SampleResult {
  int32_t token;
  float logprob;  // log-probability of the token under the final (processed) distribution
};

// Working memory of one draw over V logits, from the caller (a program's arena), so that no
// draw allocates: the exponentials, two id lists and a histogram.
struct SampleScratch {
  float* e;        // [V]
  int32_t* keep;   // [V]
  int32_t* edge;   // [V]
  int32_t* count;  // [bins]
  double* mass;    // [bins]
};
size_t sample_scratch_bytes(int V);
// Lays a SampleScratch out over sample_scratch_bytes(V) bytes at base (64-byte aligned).
SampleScratch sample_scratch(uint8_t* base, int V);
// A scratch of its own, for callers without an arena (sampleMany, tests), with room for a copy
// of the row to draw from. Not zero-filled: every draw writes what it reads.
struct SampleWork {
  explicit SampleWork(int V);
  std::unique_ptr<uint8_t[]> bytes;  // new[] aligns for max_align_t; the pieces are 64-byte offsets from it
  SampleScratch scratch;
  float* row;  // [V]
};

// logits [V] are modified in place. rng: 64-bit state (splitmix64), advanced.
SampleResult sample_cpu(float* logits, int V, const SampleParams& p, uint64_t* rng, const SampleScratch& scratch);

// Pieces of sample_cpu, for a caller that finishes a draw from part of a row (the CUDA sampler):
// the processing (bias, penalties, mask) of ids [first, first + count), l holding those ids' raw
// logits (l[0] is id first), exactly as sample_cpu applies it to the whole row; and the uniform
// draw in [0, 1) sample_cpu makes from rng (53 bits; rng advanced).
void sample_process_range(float* l, int first, int count, const SampleParams& p);
double sample_uniform(uint64_t* rng);

// The model's own distribution over one row of raw logits (log-softmax, before any sampling
// setting): the log-probability of `token` and the `top` most likely tokens (top <= 20), in
// descending order, ties to the lower id.
struct TokenLogprobs {
  float logprob = 0.f;
  std::vector<std::pair<int32_t, float>> top;
};
TokenLogprobs logprobs_cpu(const float* logits, int V, int32_t token, int top, const SampleScratch& scratch);

}  // namespace gptoss
