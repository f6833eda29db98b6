// sample_cuda + sample_cuda_finish against sample_cpu (kernels/cpu/sample.cc) on the full row: random
// logits with planted ties (at the max, around the k-th), logit bias (a repeated id too), presence /
// frequency / repetition penalties, a ban and a grammar mask, greedy and top-k 1/40/1024 at several
// temperatures, with top-p / min-p after top-k, random RNG states. Each row must give the same token,
// the same logprob bits and the same RNG state as the CPU; rows the host cannot finish exactly must
// say so (FullRow) and leave the RNG alone. Draw rows (no top-k / top-p / min-p) are finished for
// many RNG states from one reduction, and may read one chunk of their raw row. The processed logits of top-k rows are compared bit for
// bit with the CPU's. Outputs, candidates and the scratch start NaN-poisoned.
#include <algorithm>
#include <cstring>

#include "kernels/cpu/simd.h"
#include "kernels/cuda/sample.cuh"
#include "test/cuda/harness.h"

namespace {
struct Case {
  gptoss::SampleParams p;
  uint64_t rng;
};

// head > 0: like a model's row, `head` ids spread over [0, 16] above the rest in [-8, 0] (a flat row
// of 201088 ids puts hundreds in each of take_top's bins, where the host declines).
std::vector<float> random_row(int V, lab::Rng& r, int head = 0) {
  std::vector<float> l(static_cast<size_t>(V));
  for (auto& v : l) v = head ? r.uniform(-8.f, 0.f) : r.uniform(-8.f, 8.f);
  for (int i = 0; i < head; ++i) l[size_t(r.next() % unsigned(V))] = r.uniform(0.f, 16.f);
  // Ties: the max at a low and a high id; a cluster around the top; a few equal values.
  const int a = int(r.next() % unsigned(V)), b = int(r.next() % unsigned(V));
  l[size_t(std::min(a, b))] = l[size_t(std::max(a, b))] = 9.5f;
  for (int i = 0; i < 60 && i < V; ++i) l[size_t(r.next() % unsigned(V))] = 7.f + 0.25f * float(i % 5);
  return l;
}

gptoss::SampleParams params(int V, lab::Rng& r, float temperature, int top_k, bool extras) {
  gptoss::SampleParams p;
  p.temperature = temperature;
  p.top_k = top_k;
  if (!extras) return p;
  p.presence_penalty = 0.3f;
  p.frequency_penalty = 0.17f;
  p.repetition_penalty = 1.3f;
  for (int i = 0; i < 5; ++i) {
    p.bias_ids.push_back(int32_t(r.next() % unsigned(V)));
    p.bias_values.push_back(r.uniform(-3.f, 3.f));
  }
  p.bias_ids.push_back(p.bias_ids[1]);  // a repeated id: both apply, in order
  p.bias_values.push_back(0.37f);
  std::vector<int32_t> h;
  for (int i = 0; i < 40; ++i) h.push_back(int32_t(r.next() % unsigned(V)));
  h.push_back(p.bias_ids[0]);
  std::sort(h.begin(), h.end());
  h.erase(std::unique(h.begin(), h.end()), h.end());
  std::reverse(h.begin(), h.end());
  for (int32_t id : h) p.history_ids.push_back(id), p.history_counts.push_back(int32_t(r.next() % 4));
  if (V > 64) p.ban_from = V - 7;
  p.allow.assign((size_t(V) + 31) / 32, ~0u);
  for (size_t w = 0; w < p.allow.size(); w += 3) p.allow[w] = uint32_t(r.next());
  p.allow[0] |= 1u;
  return p;
}

// order_key of kernels/cuda/sample.cu: larger value, larger key; -0 as +0; NaN lowest (0).
uint32_t key_of(float v) {
  if (v != v) return 0;
  uint32_t u = 0;
  if (v != 0.f) std::memcpy(&u, &v, 4);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
bool same_bits(float a, float b) { return std::memcmp(&a, &b, 4) == 0; }

// What the device must hand the host for row i, worked out here from the CPU's processing of the
// whole row (so a slice's or a merge's error shows as such, not only as a different draw): the
// argmax (larger key, then lower id; every logit NaN: the last id); TopK: exactly the K' best by
// (key, lower id) among the eligible, in id order, and the eligible count; Greedy / Draw: each body
// exp as the CPU's exp_sum computes it (in the scratch row), their sum in exp_sum's order, the
// tail, and Draw's chunk sums in the device's stated order.
void check_outputs(int i, int V, const gptoss::SampleParams& p, const gptoss::SampleCudaRow& row,
                   const std::vector<float>& raw, const gptoss::SampleCudaOut& o, const gptoss::SampleCudaCand* cand,
                   const float* proc, const double* chunks) {
  using gptoss::SamplePath;
  const SamplePath path = SamplePath(row.path);
  if (path == SamplePath::FullRow) return;
  const int n = row.n;
  std::vector<float> P = raw;
  gptoss::sample_process_range(P.data(), 0, V, p);
  int best = 0;
  for (int j = 1; j < n; ++j)
    if (key_of(P[size_t(j)]) > key_of(P[size_t(best)])) best = j;
  if (key_of(P[size_t(best)]) == 0) best = n - 1;
  LAB_CHECK(o.best == best && same_bits(o.max, P[size_t(best)]), "row %d: argmax %d (%g), want %d (%g)", i, o.best,
            o.max, best, P[size_t(best)]);
  if (path == SamplePath::TopK) {
    std::vector<int> ids;
    for (int j = 0; j < n; ++j)
      if (key_of(P[size_t(j)]) > key_of(-INFINITY)) ids.push_back(j);
    LAB_CHECK(o.eligible == int(ids.size()), "row %d: %d eligible, want %zu", i, o.eligible, ids.size());
    const size_t k = std::min(ids.size(), size_t(row.ncand));
    std::stable_sort(ids.begin(), ids.end(), [&](int a, int b) { return key_of(P[size_t(a)]) > key_of(P[size_t(b)]); });
    ids.resize(k);
    std::sort(ids.begin(), ids.end());
    LAB_CHECK(o.count == int(k), "row %d: %d candidates, want %zu", i, o.count, k);
    for (size_t j = 0; j < k; ++j)
      LAB_CHECK(cand[j].id == ids[j] && same_bits(cand[j].logit, P[size_t(ids[j])]),
                "row %d: candidate %zu is id %d (%g), want id %d (%g)", i, j, cand[j].id, cand[j].logit, ids[j],
                P[size_t(ids[j])]);
    return;
  }
  if (!std::isfinite(o.max)) return;  // the host throws sample_cpu's error; the exps are not used
  const int W = row.lanes, nbody = n - n % W;
  LAB_CHECK(o.tail_n == n - nbody, "row %d: tail of %d, want %d", i, o.tail_n, n - nbody);
  for (int j = 0; j < o.tail_n; ++j)
    LAB_CHECK(same_bits(o.tail[j], P[size_t(nbody + j)]), "row %d: tail %d differs", i, j);
  std::vector<float> e(size_t(std::max(1, nbody)));
  gptoss::cpu::simd().exp_sum(P.data(), o.max, row.scale, e.data(), nbody);  // a multiple of W: the vector exps
  for (int j = 0; j < nbody; ++j)
    LAB_CHECK(same_bits(proc[j], e[size_t(j)]), "row %d: exp of id %d is %.9g, the CPU's %.9g", i, j, proc[j],
              e[size_t(j)]);
  // exp_sum's order (kernels/cpu/simd.h), worked out here: per block of kExpSumBlock ids, W f32
  // lanes in id order, into W double lanes in block order, then the lanes 0..W-1; and the same
  // value as exp_sum's own return over the body.
  std::vector<double> dl(size_t(W), 0.0);
  for (int b = 0; b < nbody; b += gptoss::cpu::kExpSumBlock)
    for (int lane = 0; lane < W; ++lane) {
      float acc = 0.f;
      for (int j = b + lane; j < std::min(nbody, b + gptoss::cpu::kExpSumBlock); j += W) acc += e[size_t(j)];
      dl[size_t(lane)] += double(acc);
    }
  double want = 0.0;
  for (int lane = 0; lane < W; ++lane) want += dl[size_t(lane)];
  std::vector<float> e2(size_t(std::max(1, nbody)));
  const double cpu = gptoss::cpu::simd().exp_sum(P.data(), o.max, row.scale, e2.data(), nbody);
  LAB_CHECK(cpu == want, "row %d: exp_sum returns %.17g, its stated order gives %.17g", i, cpu, want);
  LAB_CHECK(o.body == want, "row %d: the body sums to %.17g, want %.17g", i, o.body, want);
  if (path != SamplePath::Draw) return;
  for (int c = 0; c * gptoss::kSampleChunk < nbody; ++c) {
    const int first = c * gptoss::kSampleChunk, end = std::min(nbody, first + gptoss::kSampleChunk);
    double t = 0.0;
    for (int lane = 0; lane < 32; ++lane) {
      double acc = 0.0;
      for (int j = first + lane; j < end; j += 32) acc += double(e[size_t(j)]);
      t += acc;
    }
    LAB_CHECK(chunks[c] == t, "row %d: chunk %d sums to %.17g, want %.17g", i, c, chunks[c], t);
  }
}

// Runs the batch on the device and checks each row against sample_cpu. Returns how many rows the
// host finished (the rest needed the full row).
int check(int V, const std::vector<Case>& cases, const std::vector<std::vector<float>>& rows) {
  const int R = int(cases.size());
  gptoss::SampleCudaBatch batch;
  std::vector<gptoss::SamplePath> paths;
  for (const Case& c : cases) {
    LAB_CHECK(gptoss::sample_params_error(c.p, V).empty(), "bad test params");
    paths.push_back(batch.add(c.p, V));
  }
  std::vector<float> flat;
  for (const auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
  const size_t scratch_bytes = gptoss::sample_cuda_scratch(R, V);
  lab::DeviceBuf<float> dl(flat), dscratch((scratch_bytes + 3) / 4);
  lab::DeviceBuf<gptoss::SampleCudaRow> drow(batch.rows);
  std::vector<gptoss::SampleCudaEntry> ent = batch.entries;
  if (ent.empty()) ent.push_back({});
  std::vector<uint32_t> allow = batch.allow;
  if (allow.empty()) allow.push_back(0);
  lab::DeviceBuf<gptoss::SampleCudaEntry> dent(ent);
  lab::DeviceBuf<uint32_t> dallow(allow);
  lab::DeviceBuf<gptoss::SampleCudaOut> dout(static_cast<size_t>(R));
  lab::DeviceBuf<gptoss::SampleCudaCand> dcand(size_t(R) * gptoss::kSampleMaxCandidates);
  const int nch = gptoss::sample_cuda_chunks(V);
  lab::DeviceBuf<double> dchunks(size_t(R) * nch);
  lab::DeviceBuf<unsigned> dtickets(std::vector<unsigned>(size_t(R), 0u));
  gptoss::sample_cuda(
      {dl.p, V, V, R, drow.p, dent.p, dallow.p, dscratch.p, scratch_bytes, dout.p, dcand.p, dchunks.p, ~0u, dtickets.p},
      nullptr);
  for (unsigned t : dtickets.download()) LAB_CHECK(t == 0u, "a top-k row's slice counter was left at %u, not zero", t);
  const auto out = dout.download();
  const auto cand = dcand.download();
  const auto chunks = dchunks.download();
  const auto proc = dscratch.download();
  int finished = 0;
  gptoss::SampleWork work(V);
  for (int i = 0; i < R; ++i) {
    const Case& c = cases[size_t(i)];
    check_outputs(i, V, c.p, batch.rows[size_t(i)], rows[size_t(i)], out[size_t(i)],
                  cand.data() + size_t(i) * gptoss::kSampleMaxCandidates, proc.data() + size_t(i) * V,
                  chunks.data() + size_t(i) * nch);
    std::vector<float> l = rows[size_t(i)];
    uint64_t want_rng = c.rng;
    const gptoss::SampleResult want = gptoss::sample_cpu(l.data(), V, c.p, &want_rng, work.scratch);
    if (paths[size_t(i)] == gptoss::SamplePath::TopK) {
      const int n = c.p.ban_from > 0 ? c.p.ban_from : V;
      LAB_CHECK(std::memcmp(l.data(), proc.data() + size_t(i) * V, size_t(n) * 4) == 0,
                "row %d: the device's processed logits differ from sample_cpu's", i);
      // Exactly the K' best (or every eligible id): a superset would still let the host finish.
      const gptoss::SampleCudaOut& o = out[size_t(i)];
      const int k = std::min(gptoss::sample_cuda_candidates(c.p.top_k), o.eligible);
      LAB_CHECK(o.count == k, "row %d: %d candidates, want %d (of %d eligible)", i, o.count, k, o.eligible);
    }
    int raw_reads = 0;
    const gptoss::SampleRawLogits raw = [&](int first, int count, float* dst) {
      LAB_CHECK(first >= 0 && count > 0 && first + count <= V && count <= gptoss::kSampleChunk, "raw read [%d, +%d)", first, count);
      std::memcpy(dst, rows[size_t(i)].data() + first, size_t(count) * 4);
      ++raw_reads;
    };
    // Draw rows: the same reduction finished for several RNG states, each against sample_cpu.
    const bool draw = paths[size_t(i)] == gptoss::SamplePath::Draw;
    bool all_done = true;
    for (int d = 0; d < (draw ? 24 : 1); ++d) {
      uint64_t seed_want = c.rng + uint64_t(d) * 0x9e3779b97f4a7c15ull, seed_got = seed_want;
      gptoss::SampleResult w = want;
      if (d > 0) {
        l = rows[size_t(i)];
        w = gptoss::sample_cpu(l.data(), V, c.p, &seed_want, work.scratch);
      } else {
        seed_want = want_rng;
      }
      gptoss::SampleResult got{};
      const bool done = gptoss::sample_cuda_finish(c.p, V, out[size_t(i)], cand.data() + size_t(i) * gptoss::kSampleMaxCandidates,
                                                   &seed_got, &got, chunks.data() + size_t(i) * nch, raw);
      if (!done) {
        LAB_CHECK(seed_got == c.rng + uint64_t(d) * 0x9e3779b97f4a7c15ull, "row %d: declined but advanced the RNG", i);
        all_done = false;
        continue;
      }
      LAB_CHECK(got.token == w.token && std::memcmp(&got.logprob, &w.logprob, 4) == 0 && seed_got == seed_want,
                "V %d row %d draw %d (T %g, top_k %d, top_p %g, min_p %g): device %d / %.9g, cpu %d / %.9g, rng %s", V, i, d,
                c.p.temperature, c.p.top_k, c.p.top_p, c.p.min_p, got.token, got.logprob, w.token, w.logprob,
                seed_got == seed_want ? "same" : "differs");
    }
    LAB_CHECK(raw_reads <= (draw ? 24 : 0), "row %d: %d raw reads (one chunk per Draw finish at most)", i, raw_reads);
    if (all_done) ++finished;
  }
  return finished;
}

std::vector<Case> cases_for(int V, lab::Rng& r) {
  std::vector<Case> cs;
  const float temps[] = {0.f, 0.5f, 1.f, 1.7f};
  const int ks[] = {1, 40, 1024};
  for (float t : temps)
    for (int k : ks)
      for (int extras = 0; extras < 2; ++extras) {
        if (t == 0.f && k != 40) continue;
        Case c{params(V, r, t, k, extras != 0), r.next()};
        if (extras && k == 40) c.p.top_p = 0.9f, c.p.min_p = 0.01f;
        cs.push_back(c);
      }
  // Draws from the whole distribution: top_k 0 (and top_k >= n) at several temperatures.
  for (float t : {0.5f, 1.f, 1.7f})
    for (int extras = 0; extras < 2; ++extras) cs.push_back({params(V, r, t, extras ? V : 0, extras != 0), r.next()});
  return cs;
}
}  // namespace

// V 12 is below one vector of the CPU's 16 lanes: a greedy or draw row with no body (its sum is
// the tail's alone), finished by sample_exp's block 0 all the same.
LAB_TEST("sample: small vocabularies (V 12, 33, 1000) under every schedule: greedy, top-k 1/40/1024, penalties, mask, ban, no body") {
  for (int V : {12, 33, 1000}) {
    lab::Rng r(uint64_t(V) * 7 + 1);
    const std::vector<Case> cs = cases_for(V, r);
    std::vector<std::vector<float>> rows;
    for (size_t i = 0; i < cs.size(); ++i) rows.push_back(random_row(V, r));
    lab::for_each_schedule([&] {
      const int done = check(V, cs, rows);
      int expect = 0;
      for (const Case& c : cs) expect += gptoss::sample_cuda_path(c.p, V) != gptoss::SamplePath::FullRow;
      LAB_CHECK(done == expect, "V %d: the host finished %d of the %d greedy / top-k rows", V, done, expect);
    });
  }
}

LAB_TEST("sample: gpt-oss vocabulary (V 201088), 6 rows: greedy with penalties, top-k 40 at T 0.8, top-k 1024 at T 1.3, a flat row declined, draws at T 1 (flat and with a head) [real shapes]") {
  if (lab::quick()) return;
  const int V = 201088;
  lab::Rng r(99);
  std::vector<Case> cs = {{params(V, r, 0.f, 0, true), r.next()},   {params(V, r, 0.8f, 40, true), r.next()},
                          {params(V, r, 1.3f, 1024, false), r.next()}, {params(V, r, 1.f, 40, false), r.next()},
                          {params(V, r, 1.f, 0, true), r.next()},   {params(V, r, 1.f, 0, false), r.next()}};
  std::vector<std::vector<float>> rows;
  for (size_t i = 0; i < 3; ++i) rows.push_back(random_row(V, r, 4000));
  rows.push_back(random_row(V, r));  // flat: the host must decline top-k (and leave the RNG alone)
  rows.push_back(random_row(V, r, 4000));
  rows.push_back(random_row(V, r));  // a draw is finished from one chunk even on a flat row
  const int done = check(V, cs, rows);
  LAB_CHECK(done == 5, "the host finished %d of 6 rows (5 expected: all but the flat top-k row)", done);
}

// More ids than candidate slots (2,048), so the device's radix selection must be right: with every
// eligible id fitting, a wrong cut would still hand the host a superset it can finish from.
LAB_TEST("sample: V 6000 (more ids than candidate slots) under every schedule: top-k 40 and 1024 rows with a head, finished exactly") {
  const int V = 6000;
  lab::Rng r(6000);
  const std::vector<Case> cs = {{params(V, r, 0.8f, 40, true), r.next()},
                                {params(V, r, 1.3f, 1024, false), r.next()},
                                {params(V, r, 1.f, 40, false), r.next()}};
  std::vector<std::vector<float>> rows;
  for (size_t i = 0; i < cs.size(); ++i) rows.push_back(random_row(V, r, 2500));
  lab::for_each_schedule([&] {
    const int done = check(V, cs, rows);
    LAB_CHECK(done == 3, "V %d: the host finished %d of the 3 top-k rows", V, done);
  });
}

// Greedy and draw rows sum their exps a chunk (one of exp_sum's blocks, kSampleChunk ids) a block:
// V 12000 is 11 whole chunks and a partial one, so under every schedule the f32 lane sums restart
// at each chunk edge and the double fold runs over 12 chunks, the last one short.
LAB_TEST("sample: V 12000 (12 exp chunks, the last partial) under every schedule: greedy and draws, finished exactly") {
  const int V = 12000;
  lab::Rng r(12000);
  const std::vector<Case> cs = {{params(V, r, 0.f, 0, true), r.next()},
                                {params(V, r, 1.f, 0, false), r.next()},
                                {params(V, r, 0.7f, 0, true), r.next()}};
  std::vector<std::vector<float>> rows;
  for (size_t i = 0; i < cs.size(); ++i) rows.push_back(random_row(V, r, 600));
  lab::for_each_schedule([&] {
    const int done = check(V, cs, rows);
    LAB_CHECK(done == 3, "V %d: the host finished %d of the 3 greedy / draw rows", V, done);
  });
}

// Rows of several slices (kSampleSlice ids a block, merged per row): V 20000 is 8192 + 8192 + 3616
// ids, so the last slice is partial. Maxima tied across a slice edge (the lower id wins) and in
// other slices; a top-k cut inside a tie group spread over every slice (the lowest ids of the group
// go); every one of K' = 2048 best ids in one slice (that slice lists its whole 2,048, the others
// their own 2,048 below them); fewer eligible ids than K', spread over the slices; a ban that
// empties the last slice and part of the middle one, with the row's largest logit banned; draws and
// greedy rows whose exps, lane sums and chunk sums span the slices. check() compares every output
// the host reads with what the CPU's processing of the whole row implies.
LAB_TEST("sample: rows of several slices (V 20000) under every schedule: argmax and top-k cuts across slice edges, K' of 2048 in one slice, few eligible, a ban past a slice") {
  const int V = 20000, S0 = gptoss::kSampleSlice;
  LAB_CHECK(gptoss::sample_cuda_slices(V) == 3, "V 20000 should be 3 slices of %d", S0);
  lab::Rng r(20000);
  const auto low_row = [&] {
    std::vector<float> l(static_cast<size_t>(V));
    for (auto& v : l) v = r.uniform(-8.f, 0.f);
    return l;
  };
  std::vector<Case> cs;
  std::vector<std::vector<float>> rows;
  // 0: greedy, the max tied at S0 - 1 and S0 (and at the last id).
  rows.push_back(low_row());
  rows.back()[size_t(S0 - 1)] = rows.back()[size_t(S0)] = rows.back()[size_t(V - 1)] = 20.f;
  cs.push_back({params(V, r, 0.f, 0, false), r.next()});
  // 1: greedy with penalties, the max in the partial last slice, a near-max in slice 0.
  rows.push_back(low_row());
  rows.back()[size_t(V - 3)] = 19.f;
  rows.back()[5] = 18.5f;
  cs.push_back({params(V, r, 0.f, 0, true), r.next()});
  // 2: top-k 40 (K' 144): 100 ids at 7 and 300 ids at 6 spread over the slices: the cut takes the
  // 44 lowest of the 6s.
  rows.push_back(low_row());
  for (int j = 0; j < 400; ++j) rows.back()[size_t((j * 7919 + 13) % V)] = j < 100 ? 7.f : 6.f;
  cs.push_back({params(V, r, 0.9f, 40, false), r.next()});
  // 3: top-k 1024 (K' 2048): 3000 ids of slice 1 above every other id.
  rows.push_back(low_row());
  for (int j = 0; j < 3000; ++j) rows.back()[size_t(S0 + (j * 37) % S0)] = r.uniform(2.f, 12.f);
  cs.push_back({params(V, r, 1.1f, 1024, false), r.next()});
  // 4: top-k 1024 with a mask leaving 700 eligible ids over the three slices: all of them go.
  rows.push_back(low_row());
  {
    gptoss::SampleParams p = params(V, r, 0.8f, 1024, false);
    p.allow.assign((size_t(V) + 31) / 32, 0u);
    for (int j = 0; j < 700; ++j) {
      const int id = int(r.next() % unsigned(V));
      p.allow[size_t(id) >> 5] |= 1u << (id & 31);
    }
    cs.push_back({p, r.next()});
  }
  // 5: top-k 40 with a ban from 9001: the last slice is empty, slice 1 holds 809 ids; the row's
  // largest logit (banned) must not be the argmax or a candidate.
  rows.push_back(low_row());
  rows.back()[9500] = 30.f;
  rows.back()[9000] = 11.f;
  rows.back()[100] = 11.f;
  {
    gptoss::SampleParams p = params(V, r, 1.f, 40, false);
    p.ban_from = 9001;
    cs.push_back({p, r.next()});
  }
  // 6, 7: draws with a head spread over the slices, one with penalties, a mask and a tail.
  rows.push_back(random_row(V, r, 800));
  cs.push_back({params(V, r, 1.f, 0, false), r.next()});
  rows.push_back(random_row(V, r, 800));
  cs.push_back({params(V, r, 0.7f, 0, true), r.next()});
  lab::for_each_schedule([&] {
    const int done = check(V, cs, rows);
    LAB_CHECK(done >= 6, "V %d: the host finished %d of the 8 rows", V, done);
  });
}

// Rows with nothing to choose, over several slices: every logit NaN (the argmax is the last id, as
// the CPU's scan ends there; the host throws sample_cpu's error), every allowed logit -inf, and NaN
// in two slices with the finite max in the third.
LAB_TEST("sample: NaN and -inf rows over several slices (V 20000): the argmax rules and the CPU's errors") {
  const int V = 20000;
  lab::Rng r(7);
  const auto run = [&](std::vector<float> row, gptoss::SampleParams p) {
    std::string err;
    try {
      check(V, {{p, 1}}, {row});
    } catch (const gptoss::Error& e) {
      err = e.what();
    }
    return err;
  };
  gptoss::SampleParams greedy = params(V, r, 0.f, 0, false), topk = params(V, r, 1.f, 40, false);
  for (const gptoss::SampleParams& p : {greedy, topk}) {
    std::string err = run(std::vector<float>(size_t(V), NAN), p);
    LAB_CHECK(err.find("every logit is NaN") != std::string::npos, "all NaN: got '%s'", err.c_str());
    gptoss::SampleParams masked = p;
    masked.allow.assign((size_t(V) + 31) / 32, 0u);
    err = run(random_row(V, r), masked);
    LAB_CHECK(err.find("every allowed logit is -inf") != std::string::npos, "all masked: got '%s'", err.c_str());
    std::vector<float> mixed(size_t(V), NAN);
    for (int j = 16384; j < V; ++j) mixed[size_t(j)] = r.uniform(-4.f, 4.f);
    mixed[19000] = 9.f;
    err = run(mixed, p);
    LAB_CHECK(err.empty(), "NaN in two slices: got '%s'", err.c_str());
  }
}

LAB_TEST("sample: top-p or min-p without top-k needs the full row; every logit masked is the CPU's error") {
  const int V = 100;
  gptoss::SampleParams p;
  p.temperature = 0.7f;
  LAB_CHECK(gptoss::sample_cuda_path(p, V) == gptoss::SamplePath::Draw, "top_k 0 at T 0.7 is not a Draw");
  p.top_p = 0.9f;
  LAB_CHECK(gptoss::sample_cuda_path(p, V) == gptoss::SamplePath::FullRow, "top_p 0.9 without top-k is not FullRow");
  p.top_p = 1.f;
  p.min_p = 0.05f;
  LAB_CHECK(gptoss::sample_cuda_path(p, V) == gptoss::SamplePath::FullRow, "min_p without top-k is not FullRow");
  p.min_p = 0.f;
  p.top_k = 2000;
  LAB_CHECK(gptoss::sample_cuda_path(p, 5000) == gptoss::SamplePath::FullRow, "top_k past the device limit is not FullRow");
  p.top_k = 5;
  p.allow.assign(4, 0u);
  lab::Rng r(5);
  std::string err;
  try {
    check(V, {{p, 1}}, {random_row(V, r)});
  } catch (const gptoss::Error& e) {
    err = e.what();
  }
  LAB_CHECK(err.find("every allowed logit is -inf") != std::string::npos, "got '%s'", err.c_str());
}
