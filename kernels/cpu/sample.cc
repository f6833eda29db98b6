// Work over the whole vocabulary is a few vectorised or branch-light passes (the max, the
// exponentials and their sum, a histogram); bias and penalties touch listed ids only. Sorting is
// limited to one histogram bin: probabilities are binned by their float exponent and top 4
// mantissa bits (1/16 of an octave), the bin where top-k's count or top-p's mass is reached is
// found from the histogram, everything in higher bins is kept as is, and only the cut bin is
// sorted. Without top-k / top-p the draw scans the exponentials in id order.
#include "kernels/sample.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "kernels/cpu/simd.h"

namespace gptoss {
namespace {
inline uint64_t next(uint64_t* s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
// Uniform in [0, 1) with 53 bits.
inline double uniform(uint64_t* s) { return double(next(s) >> 11) * (1.0 / 9007199254740992.0); }

// Bin of a relative probability e in (0, 1]: 0 holds e = 1, larger bins smaller e, 16 per octave.
constexpr int kBins = 2048;
inline int bin_of(float e) {
  uint32_t bits;
  std::memcpy(&bits, &e, 4);
  return 2032 - int(bits >> 19);  // 0x3f800000 >> 19 = 2032
}

// The ids of the largest e, from bins below the cut bin in id order, then the cut bin sorted by
// descending e (ties to the lower id) until `enough(count, mass)` says stop. Appends them to
// keep[0, *nk). Working memory is the caller's SampleScratch (reused across draws: fresh 800 KB
// vectors per draw cost more in page faults than the sampling itself).
template <class Enough>
void take_top(const float* e, int n, Enough enough, const SampleScratch& sc, int64_t* nk) {
  int32_t* count = sc.count;
  double* mass = sc.mass;
  std::fill(count, count + kBins, 0);
  std::fill(mass, mass + kBins, 0.0);
  for (int i = 0; i < n; ++i)
    if (e[i] > 0) {
      const int b = bin_of(e[i]);
      count[b]++;
      mass[b] += e[i];
    }
  int cut = 0;
  int64_t c = 0;  // ids in the bins above the cut (they are all kept)
  double m = 0;   // and their mass; both grow as ids are kept below
  for (; cut < kBins - 1; ++cut) {
    if (enough(c + count[cut], m + mass[cut])) break;
    c += count[cut];
    m += mass[cut];
  }
  int32_t* keep = sc.keep;
  int32_t* edge = sc.edge;
  int64_t k = 0;
  size_t ne = 0;
  for (int i = 0; i < n; ++i)
    if (e[i] > 0) {
      const int b = bin_of(e[i]);
      if (b < cut) keep[k++] = i;
      else if (b == cut) edge[ne++] = i;
    }
  // Within the cut bin, a quickselect by mass narrows the range that has to be sorted: parts
  // wholly above the answer are kept unsorted, parts wholly below dropped.
  auto greater = [&](int32_t a, int32_t b) { return e[a] > e[b] || (e[a] == e[b] && a < b); };
  size_t lo = 0, hi = ne;
  while (hi - lo > 256) {
    const float pivot = std::max(std::min(e[edge[lo]], e[edge[hi - 1]]),
                                 std::min(std::max(e[edge[lo]], e[edge[hi - 1]]), e[edge[(lo + hi) / 2]]));
    int32_t* mid = std::partition(edge + lo, edge + hi, [&](int32_t id) { return e[id] > pivot; });
    const size_t a = size_t(mid - edge);
    const int64_t c2 = k + int64_t(a - lo);
    double m2 = m;
    for (size_t i = lo; i < a; ++i) m2 += e[edge[i]];
    if (a > lo && enough(c2, m2)) {
      hi = a;  // the answer lies in the part above the pivot
    } else if (a == lo && a < hi) {
      break;   // everything left ties at or under the pivot: sort what remains
    } else {
      for (size_t i = lo; i < a; ++i) keep[k++] = edge[i];
      m = m2;
      lo = a;
    }
  }
  std::sort(edge + lo, edge + hi, greater);
  for (size_t i = lo; i < hi; ++i) {
    const int32_t id = edge[i];
    keep[k++] = id;
    m += e[id];
    if (enough(k, m)) break;
  }
  *nk = k;
}
}  // namespace

size_t sample_scratch_bytes(int V) {
  return 3 * align64(size_t(V) * 4) + align64(size_t(kBins) * 4) + align64(size_t(kBins) * 8);
}

SampleScratch sample_scratch(uint8_t* base, int V) {
  ScratchCarver c{base, 0, sample_scratch_bytes(V)};
  SampleScratch s;
  s.e = c.take<float>(size_t(V));
  s.keep = c.take<int32_t>(size_t(V));
  s.edge = c.take<int32_t>(size_t(V));
  s.count = c.take<int32_t>(kBins);
  s.mass = c.take<double>(kBins);
  return s;
}

SampleWork::SampleWork(int V)
    : bytes(new uint8_t[sample_scratch_bytes(V) + align64(size_t(V) * 4)]),
      scratch(sample_scratch(bytes.get(), V)),
      row(reinterpret_cast<float*>(bytes.get() + sample_scratch_bytes(V))) {}

double sample_uniform(uint64_t* rng) { return uniform(rng); }

void sample_process_range(float* l, int first, int count, const SampleParams& p) {
  const int last = first + count;
  for (size_t i = 0; i < p.bias_ids.size(); ++i) {
    const int32_t id = p.bias_ids[i];
    if (id >= first && id < last) l[id - first] += p.bias_values[i];
  }
  for (size_t i = 0; i < p.history_ids.size(); ++i) {
    const int32_t id = p.history_ids[i], c = p.history_counts[i];
    if (c <= 0 || id < first || id >= last) continue;
    float& x = l[id - first];
    if (p.repetition_penalty != 1.f) x = x > 0 ? x / p.repetition_penalty : x * p.repetition_penalty;
    x -= p.frequency_penalty * float(c) + p.presence_penalty;
  }
  // A grammar's mask: disallowed ids can never win (words of all ones are skipped).
  for (size_t w = size_t(first / 32); w < p.allow.size() && int(w) * 32 < last; ++w) {
    const uint32_t bits = p.allow[w];
    if (bits == ~0u) continue;
    const int base = int(w) * 32, lo = std::max(first, base), hi = std::min(last, base + 32);
    for (int i = lo; i < hi; ++i)
      if (!((bits >> (i - base)) & 1u)) l[i - first] = -std::numeric_limits<float>::infinity();
  }
}

SampleResult sample_cpu(float* l, int V, const SampleParams& p, uint64_t* rng, const SampleScratch& sc) {
  sample_process_range(l, 0, V, p);
  // Banned ids are simply outside [0, n).
  const int n = p.ban_from > 0 && p.ban_from < V ? p.ban_from : V;

  int best = 0;
  for (int i = 1; i < n; ++i)
    if (l[i] > l[best] || std::isnan(l[best])) best = i;  // strict: ties keep the lower id; NaN never wins
  const float m = l[best];
  if (!std::isfinite(m))
    throw invalid_argument(std::isnan(m) ? "sample: every logit is NaN" : m > 0 ? "sample: a logit is +inf" : "sample: every allowed logit is -inf");
  float* e = sc.e;
  // Below 1e-4 the scaled logits overflow float; such a temperature is greedy in all but name.
  if (p.temperature < 1e-4f) {
    const double z = cpu::simd().exp_sum(l, m, 1.f, e, n);
    return {best, float(-std::log(z))};
  }
  const double z = cpu::simd().exp_sum(l, m, 1.f / p.temperature, e, n);

  // The kept set: all ids (keep_all) or a list, always in a fixed order so a seed reproduces.
  bool keep_all = true;
  int32_t* keep = sc.keep;
  int64_t nk = 0;
  if (p.top_k > 0 && p.top_k < n) {
    take_top(e, n, [&](int64_t count, double) { return count >= p.top_k; }, sc, &nk);
    keep_all = false;
  }
  if (p.top_p < 1.f) {
    if (keep_all) {
      const double target = double(p.top_p) * z;
      take_top(e, n, [&](int64_t, double mass) { return mass >= target; }, sc, &nk);
      keep_all = false;
    } else {
      // After top-k: at most k ids, sorted outright.
      std::sort(keep, keep + nk, [&](int32_t a, int32_t b) { return e[a] > e[b] || (e[a] == e[b] && a < b); });
      double mass = 0;
      for (int64_t i = 0; i < nk; ++i) mass += e[keep[i]];
      const double target = double(p.top_p) * mass;
      double acc = 0;
      int64_t count = 0;
      while (count < nk) {
        acc += e[keep[count++]];
        if (acc >= target) break;
      }
      nk = count;
    }
  }
  if (p.min_p > 0.f) {
    // Relative to the most likely token, which every filter above keeps (its e is 1).
    if (keep_all) {
      for (int i = 0; i < n; ++i)
        if (e[i] >= p.min_p) keep[nk++] = i;
      keep_all = false;
    } else {
      nk = std::remove_if(keep, keep + nk, [&](int32_t id) { return e[id] < p.min_p; }) - keep;
    }
  }

  double total = keep_all ? z : 0;
  if (!keep_all)
    for (int64_t i = 0; i < nk; ++i) total += e[keep[i]];
  double u = uniform(rng) * total;
  // The float sum in exp_sum can exceed the double running sum by a few ulp; a draw that runs
  // off the end takes the most likely token rather than whichever came last.
  int32_t pick = best;
  if (keep_all) {
    for (int i = 0; i < n; ++i)
      if (e[i] > 0 && (u -= e[i]) < 0) {
        pick = i;
        break;
      }
  } else {
    for (int64_t i = 0; i < nk; ++i)
      if ((u -= e[keep[i]]) < 0) {
        pick = keep[i];
        break;
      }
  }
  return {pick, float(std::log(e[pick] / total))};
}

TokenLogprobs logprobs_cpu(const float* l, int V, int32_t token, int top, const SampleScratch& sc) {
  int best = 0;
  for (int i = 1; i < V; ++i)
    if (l[i] > l[best] || std::isnan(l[best])) best = i;
  const double log_z = double(l[best]) + std::log(cpu::simd().exp_sum(l, l[best], 1.f, sc.e, V));
  TokenLogprobs out;
  out.logprob = float(double(l[token]) - log_z);
  // The k largest by insertion into a short sorted list: k <= 20, one pass over the row.
  std::vector<int32_t> ids;
  for (int i = 0; i < V && top > 0; ++i) {
    if (int(ids.size()) == top && !(l[i] > l[ids.back()])) continue;
    auto at = std::upper_bound(ids.begin(), ids.end(), i, [&](int32_t a, int32_t b) { return l[a] > l[b]; });
    ids.insert(at, i);
    if (int(ids.size()) > top) ids.pop_back();
  }
  for (int32_t id : ids) out.top.emplace_back(id, float(double(l[id]) - log_z));
  return out;
}

}  // namespace gptoss
