// libFuzzer harness for the sampler: the native code that takes bytes from outside (a row of
// logits from sampleMany or a model, and the sampling parameters of a request). Checkpoint
// headers, configs and indexes are parsed in TypeScript and fuzzed there (test/properties.test.ts).
//
// Input: a 44-byte header, then bias and history entries, an allow mask, and the logits as raw
// float32 (NaN and infinities included). Parameters outside the contract are refused exactly as
// the addon refuses them (sample_params_error); what is accepted must either sample a token that
// obeys every filter, identically on a second run, or raise the typed invalid-argument error.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels/sample.h"

namespace {
struct Reader {
  const uint8_t* p;
  size_t n;
  template <class T>
  T get() {
    T v{};
    const size_t k = n < sizeof(T) ? n : sizeof(T);
    std::memcpy(&v, p, k);
    p += k;
    n -= k;
    return v;
  }
};

[[noreturn]] void fail(const char* what, int token) {
  std::fprintf(stderr, "sample_fuzz: %s (token %d)\n", what, token);
  std::abort();
}

// The addon refuses non-finite numbers and those beyond the float32 range (native/sampler.cc).
bool finite(float x) { return std::isfinite(x); }

// The first index of the largest logit in [0, n), NaN never winning: sample_cpu's greedy choice.
int argmax(const std::vector<float>& l, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (l[i] > l[best] || std::isnan(l[best])) best = i;
  return best;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Reader r{data, size};
  const int V = 1 + r.get<uint16_t>() % 1200;
  const uint8_t flags = r.get<uint8_t>();
  gptoss::SampleParams p;
  p.temperature = r.get<float>();
  p.top_k = r.get<int32_t>();
  p.top_p = r.get<float>();
  p.min_p = r.get<float>();
  p.presence_penalty = r.get<float>();
  p.frequency_penalty = r.get<float>();
  p.repetition_penalty = r.get<float>();
  p.ban_from = r.get<int32_t>();
  const int n_bias = r.get<uint8_t>() % 16, n_hist = r.get<uint8_t>() % 16;
  const int top = r.get<uint8_t>() % 21;
  const int token = r.get<uint16_t>() % V;
  r.get<uint32_t>();  // reserved
  if (flags & 4) {    // small, ordinary settings half the time, so the filters are reached
    p.temperature = std::fabs(std::fmod(p.temperature, 4.f));
    p.top_k = int(uint32_t(p.top_k) % uint32_t(V + 2));
    p.top_p = std::isfinite(p.top_p) ? 0.01f + std::fabs(std::fmod(p.top_p, 0.99f)) : 1.f;
    p.min_p = std::isfinite(p.min_p) ? std::fabs(std::fmod(p.min_p, 1.f)) : 0.f;
    p.repetition_penalty = 1.f;
    p.ban_from = p.ban_from % 3 == 0 ? -1 : 1 + int(uint32_t(p.ban_from) % uint32_t(V + 4));
  }
  for (float x : {p.temperature, p.top_p, p.min_p, p.presence_penalty, p.frequency_penalty, p.repetition_penalty})
    if (!finite(x)) return 0;
  for (int i = 0; i < n_bias; ++i) {
    p.bias_ids.push_back(r.get<uint16_t>() % (V + 2));  // an id past the row is refused
    p.bias_values.push_back(r.get<float>());           // a Float32Array may hold NaN and infinities
  }
  for (int i = 0; i < n_hist; ++i) {
    p.history_ids.push_back(r.get<uint16_t>() % V);
    p.history_counts.push_back(r.get<int16_t>());
  }
  if (flags & 1)
    for (int w = 0; w < (V + 31) / 32; ++w) p.allow.push_back(r.get<uint32_t>());
  if (!gptoss::sample_params_error(p, V).empty()) return 0;

  std::vector<float> logits(static_cast<size_t>(V));
  for (int i = 0; i < V; ++i) {
    // Past the input's end, a plain pattern; with flag 2, bytes become small logits (more ties).
    if (r.n == 0) logits[i] = float((i * 37) % 11) - 5.f;
    else if (flags & 2) logits[i] = float(int(r.get<uint8_t>()) - 128) / 16.f;
    else logits[i] = r.get<float>();
  }

  // The model's distribution: any row, any token in it, up to 20 alternatives.
  gptoss::SampleWork work(V);
  const gptoss::TokenLogprobs lp = gptoss::logprobs_cpu(logits.data(), V, token, top, work.scratch);
  if (int(lp.top.size()) != (top < V ? top : V)) fail("logprobs: wrong number of alternatives", token);
  bool all_finite = true;
  for (float x : logits) all_finite = all_finite && std::isfinite(x);
  for (size_t i = 0; i < lp.top.size(); ++i) {
    if (lp.top[i].first < 0 || lp.top[i].first >= V) fail("logprobs: alternative outside the row", lp.top[i].first);
    if (all_finite && i > 0 && logits[size_t(lp.top[i].first)] > logits[size_t(lp.top[i - 1].first)])
      fail("logprobs: alternatives out of order", lp.top[i].first);
  }

  std::vector<float> a = logits, b = logits;
  uint64_t rng_a = 0x9e3779b97f4a7c15ull ^ size, rng_b = rng_a;
  gptoss::SampleResult ra{}, rb{};
  bool threw = false;
  try {
    ra = gptoss::sample_cpu(a.data(), V, p, &rng_a, work.scratch);
  } catch (const gptoss::Error& e) {
    if (e.code != "ERR_INVALID_ARGUMENT") fail("sample: an error other than invalid-argument", -1);
    threw = true;
  }
  try {
    rb = gptoss::sample_cpu(b.data(), V, p, &rng_b, work.scratch);
    if (threw) fail("sample: threw once, then succeeded on the same input", rb.token);
  } catch (const gptoss::Error&) {
    if (!threw) fail("sample: succeeded once, then threw on the same input", ra.token);
    return 0;
  }
  if (ra.token != rb.token || rng_a != rng_b || std::memcmp(&ra.logprob, &rb.logprob, sizeof(float)) != 0)
    fail("sample: not deterministic for one RNG state", ra.token);

  const int t = ra.token;
  const int n = p.ban_from > 0 && p.ban_from < V ? p.ban_from : V;
  if (t < 0 || t >= n) fail("sample: token banned or outside the row", t);
  if (!p.allow.empty() && !((p.allow[size_t(t) >> 5] >> (t & 31)) & 1u)) fail("sample: token outside the allow mask", t);
  // `a` now holds the processed logits (bias, penalties, mask): the pick must be a live one.
  if (std::isnan(a[size_t(t)]) || a[size_t(t)] == -INFINITY) fail("sample: drew a NaN or -inf logit", t);
  if (p.temperature < 1e-4f && t != argmax(a, n)) fail("sample: greedy did not take the argmax", t);
  if (std::isnan(ra.logprob) || ra.logprob > 1e-4f) fail("sample: log-probability NaN or above 0", t);
  return 0;
}
