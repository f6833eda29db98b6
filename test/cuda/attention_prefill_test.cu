// attention_prefill_cuda (the tensor-core prefill kernel) against the CPU op
// (kernels/cpu/attention.cc) on bf16 caches: one token and 33 (not a multiple of the 8-token
// block), gpt-oss's heads (64 query, 8 KV, head_dim 64) on a chunk after a cached prefix, full
// and 128-token sliding layers (the window's ring of pages wrapping), a chunked prefill against
// one piece, two sequences in one step with a block straddling them, GQA groups 8, 3 and 1, pages
// drawn from a shuffled pool (never contiguous); outputs NaN-poisoned before every call. The
// tests are named after the file (attention_prefill: ...) so that test/cuda/mutate.mjs runs them
// for its mutants. The fragment layouts of mma/ldmatrix themselves are test/cuda/mma_test.cu's;
// here every output element of every row is compared, so a wrong fragment, swizzle or
// accumulator-to-operand reuse shows as an error of the order of a weight. Each case runs both
// variants: split (hi + lo halves, fp32 mode) and bf16 (one mma per product, default mode).
#include <algorithm>
#include <numeric>

#include "kernels/cpu/parallel.h"
#include "kernels/cuda/attention_prefill.cuh"
#include "test/cuda/harness.h"

namespace {
// Tolerance: |gpu - cpu| <= kTol per element (values in [-1, 1]). K and V are exact bf16
// operands; Q and P enter the mma as hi + lo bf16 pairs, within 2^-16 relatively of their f32
// values, so a logit moves by at most 2^-16 * sum |q k| * scale (~5e-4 in the worst case of these
// inputs, ~1e-5 typically) and a weight by as much relatively; the f32 sums differ from the
// CPU's only in order. Observed: ~3e-6. A key from the wrong row or dropped at a tile edge moves
// an output by about its weight (>= 1/300 here), far above this.
constexpr double kTol = 1e-4;
// The bf16 variant rounds Q and P to bf16 once. Its reference is the CPU op on Q rounded to bf16
// as the kernel rounds it (the same operand, so the logits agree to f32 rounding); what is left is
// P's rounding: each weight within 2^-8 relatively (round to nearest), so an output moves by at
// most 2^-8 * sum_j w_j |v_j| <= 2^-8 (|v| <= 1, the weights sum to at most 1; the denominator
// sums the unrounded P), plus f32 order noise. Observed: ~1e-3 at worst. A wrong operand or
// fragment shows as ~0.1 to 1; a key dropped at a tile edge may hide under this bound, but the
// tiles, masks and copies are the split variant's code, held to kTol above.
constexpr double kTolBf16 = 1.0 / 256 + 1e-5;

struct Case {
  int q_heads, kv_heads, window;
  std::vector<int32_t> positions, seq;  // per token
  int page_size, ring;                  // ring pages per sequence (kv_pages.h)
};

struct Data {
  std::vector<int32_t> table;
  std::vector<uint16_t> kc, vc, sinks;
  std::vector<float> q;
  int64_t ldq;
};

Data make_data(const Case& c, uint64_t seed) {
  lab::Rng r(seed);
  const int D = 64, T = int(c.positions.size()), width = c.kv_heads * D;
  const int S = *std::max_element(c.seq.begin(), c.seq.end()) + 1;
  Data d;
  // Fragmented pages: every sequence's ring drawn from a shuffled pool with spare pages.
  const int pool_pages = S * c.ring + 3;
  std::vector<int32_t> ids(pool_pages);
  std::iota(ids.begin(), ids.end(), 0);
  for (int i = pool_pages - 1; i > 0; --i) std::swap(ids[i], ids[r.next() % (i + 1)]);
  d.table.assign(ids.begin(), ids.begin() + S * c.ring);
  const int64_t rows = int64_t(pool_pages) * c.page_size;
  d.kc.resize(rows * width);
  d.vc.resize(rows * width);
  for (int64_t i = 0; i < rows * width; ++i) {
    d.kc[i] = lab::f32_to_bf16(r.uniform(-1.f, 1.f));
    d.vc[i] = lab::f32_to_bf16(r.uniform(-1.f, 1.f));
  }
  d.ldq = int64_t(c.q_heads) * D + 8 * (r.next() % 2);  // sometimes a wider row (the fused QKV row)
  d.q.resize(size_t(T) * d.ldq);
  for (auto& v : d.q) v = r.uniform(-1.f, 1.f) * 4.f;  // logits up to ~±32 * 0.125: peaked softmaxes too
  d.sinks.resize(c.q_heads);
  for (auto& v : d.sinks) v = lab::f32_to_bf16(r.uniform(-3.f, 3.f));
  return d;
}

std::vector<float> run_cpu(const Case& c, const Data& d) {
  const int D = 64, T = int(c.positions.size()), Hq = c.q_heads;
  const int64_t ldo = int64_t(Hq) * D;
  const int64_t max_context = *std::max_element(c.positions.begin(), c.positions.end()) + 1;
  std::vector<float> want(size_t(T) * ldo, 0.f);
  const int threads = gptoss::cpu::num_threads();
  std::vector<uint8_t> scratch(gptoss::attention_scratch_cpu(T, max_context, Hq, c.kv_heads, D, c.window, threads));
  gptoss::KvPages pages{c.seq.data(), d.table.data(), c.ring, c.page_size};
  gptoss::attention_cpu({d.q.data(), d.ldq, c.positions.data(), d.kc.data(), d.vc.data(), gptoss::DType::BF16, pages, d.sinks.data(),
                         want.data(), ldo, T, Hq, c.kv_heads, D, c.window, 0.125f, scratch.data(), scratch.size(), threads});
  return want;
}

// The data with Q rounded to bf16 (round to nearest even, as the bf16 variant stages it).
Data bf16_q(Data d) {
  for (auto& v : d.q) v = lab::bf16_to_f32(lab::f32_to_bf16(v));
  return d;
}

// Tokens [t0, t0 + n) of the case (a chunk: the others' keys are already in the cache).
std::vector<float> run_cuda(const Case& c, const Data& d, int t0, int n, bool split) {
  const int D = 64, Hq = c.q_heads;
  const int64_t ldo = int64_t(Hq) * D;
  std::vector<float> q(d.q.begin() + t0 * d.ldq, d.q.begin() + (t0 + n) * d.ldq);
  std::vector<int32_t> pos(c.positions.begin() + t0, c.positions.begin() + t0 + n), seq(c.seq.begin() + t0, c.seq.begin() + t0 + n);
  lab::DeviceBuf<float> dq(q), dout(size_t(n) * ldo);
  lab::DeviceBuf<int32_t> dpos(pos), dseq(seq), dtable(d.table);
  lab::DeviceBuf<uint16_t> dk(d.kc), dv(d.vc), dsinks(d.sinks);
  cudaMemset(dout.p, 0xff, dout.n * 4);
  gptoss::attention_prefill_cuda({dq.p, d.ldq, dpos.p, dk.p, dv.p, gptoss::DType::BF16, {dseq.p, dtable.p, c.ring, c.page_size}, dsinks.p,
                                  dout.p, ldo, n, Hq, c.kv_heads, D, c.window, 0.125f, nullptr, 0, 0},
                                 nullptr, split);
  return dout.download();
}

void compare(const Case& c, const std::vector<float>& got, const std::vector<float>& want, int t0, int n, double tol,
             const char* what) {
  const int Hq = c.q_heads, D = 64;
  double worst = 0;
  for (int t = 0; t < n; ++t)
    for (int i = 0; i < Hq * D; ++i) {
      const double g = got[size_t(t) * Hq * D + i], w = want[size_t(t0 + t) * Hq * D + i];
      const double e = std::fabs(g - w);
      worst = std::max(worst, e);
      LAB_CHECK(e <= tol, "%s: token %d (position %d, window %d, group %d): out[head %d][%d] = %.8g, want %.8g (error %.3g > %.1g)",
                what, t0 + t, c.positions[t0 + t], c.window, c.q_heads / c.kv_heads, i / D, i % D, g, w, e, tol);
    }
  if (std::getenv("LAB_VERBOSE")) std::fprintf(stderr, "  %s: %d tokens, window %d, group %d: max error %.3g\n", what, n, c.window,
                                               c.q_heads / c.kv_heads, worst);
}

// Both variants against their references (above), under every schedule or one.
void check(const Case& c, uint64_t seed, bool every_schedule = true) {
  const Data d = make_data(c, seed);
  const std::vector<float> want = run_cpu(c, d), want_bf16 = run_cpu(c, bf16_q(d));
  const int T = int(c.positions.size());
  auto run = [&] {
    const std::vector<float> split = run_cuda(c, d, 0, T, true), bf16 = run_cuda(c, d, 0, T, false);
    compare(c, split, want, 0, T, kTol, "split vs CPU");
    compare(c, bf16, want_bf16, 0, T, kTolBf16, "bf16 vs CPU (Q in bf16)");
    // The launcher's flag reaches the kernel: the variants round differently (~1e-3 apart).
    double apart = 0;
    for (size_t i = 0; i < split.size(); ++i) apart = std::max(apart, double(std::fabs(split[i] - bf16[i])));
    LAB_CHECK(apart > 1e-5, "the bf16 variant gave the split one's results (max difference %.3g)", apart);
  };
  if (every_schedule) lab::for_each_schedule(run);
  else run();
}

std::vector<int32_t> iota_from(int32_t p0, int n) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), p0);
  return v;
}
}  // namespace

LAB_TEST("attention_prefill: CUDA matches CPU for 1 token and for 33 (not a multiple of the block), full and sliding, fragmented pages") {
  for (int window : {0, 128}) {
    check({16, 2, window, {0}, {0}, 16, 12}, 51 + window);
    check({16, 2, window, {150}, {0}, 16, 12}, 52 + window);
    // 33 tokens after 100 cached: the window's block spans 3 key tiles, the full layer's 3.
    check({16, 2, window, iota_from(100, 33), std::vector<int32_t>(33, 0), 16, 12}, 53 + window);
  }
}
LAB_TEST("attention_prefill: CUDA matches CPU at gpt-oss's heads (64 query, 8 KV, d 64) on a 24-token chunk after 90 cached") {
  if (lab::quick()) return;  // the small-head cases run the same paths under every schedule
  for (int window : {0, 128}) check({64, 8, window, iota_from(90, 24), std::vector<int32_t>(24, 0), 16, 9}, 61 + window, false);
}
LAB_TEST("attention_prefill: a chunked prefill equals one piece (bit for bit on a full layer) and the CPU") {
  // 170 tokens, chunks [0, 141) and [141, 170): the second starts mid-block, and past the window,
  // so a sliding layer's blocks start their key tiles elsewhere than in one piece. One schedule:
  // the other tests run these paths under every schedule.
  for (bool split : {true, false})
    for (int window : {0, 128}) {
      const Case c{8, 1, window, iota_from(0, 170), std::vector<int32_t>(170, 0), 16, 12};
      const Data d = make_data(c, 71 + window);
      const std::vector<float> want = run_cpu(c, split ? d : bf16_q(d));
      const double tol = split ? kTol : kTolBf16;
      const std::vector<float> whole = run_cuda(c, d, 0, 170, split);
      compare(c, whole, want, 0, 170, tol, split ? "split, one piece vs CPU" : "bf16, one piece vs CPU");
      for (int t0 : {0, 141}) {
        const int n = t0 == 0 ? 141 : 29;
        const std::vector<float> part = run_cuda(c, d, t0, n, split);
        compare(c, part, want, t0, n, tol, split ? "split, chunk vs CPU" : "bf16, chunk vs CPU");
        // A full layer's key tiles start at key 0 whatever the block, so each row sees the same
        // tiles; a sliding layer's start at its block's lowest window start, so they shift and
        // only the rounding of the online softmax differs (and, in bf16, where P is rounded:
        // each piece within kTolBf16 of the CPU).
        compare(c, part, whole, t0, n, window ? (split ? 1e-5 : 2 * kTolBf16) : 0.0,
                split ? "split, chunk vs one piece" : "bf16, chunk vs one piece");
      }
    }
}
LAB_TEST("attention_prefill: two sequences in one step (a block straddling them), GQA groups 3 and 1, sliding window on a wrapping ring") {
  // Sequence 0: positions 0..19; sequence 1: positions 200..230. Sliding: a ring of 7 pages of
  // 24 rows (>= window + 31 - 1 rows: positions 63..230 held, earlier ones overwritten, kv_pages.h).
  std::vector<int32_t> pos = iota_from(0, 20), seq(20, 0);
  for (int p = 200; p <= 230; ++p) pos.push_back(p), seq.push_back(1);
  check({9, 3, 128, pos, seq, 24, 7}, 81);  // group 3: 21 tokens a block, a padding row in warp 3; pages of 24 rows
  check({2, 2, 0, pos, seq, 5, 47}, 82);    // group 1: 64 tokens a block (both sequences in one); pages of 5 rows
}
LAB_TEST("attention_prefill: bad shapes and an f32 cache are ERR_INVALID_ARGUMENT") {
  const int D = 64, Hq = 8;
  std::vector<int32_t> pos{3}, seq{0}, table{0};
  std::vector<uint16_t> kc(16 * D, 0), sinks(Hq, 0);
  std::vector<float> q(Hq * D, 0.1f);
  lab::DeviceBuf<float> dq(q), dout(size_t(Hq) * D);
  lab::DeviceBuf<int32_t> dpos(pos), dseq(seq), dtable(table);
  lab::DeviceBuf<uint16_t> dk(kc), dsinks(sinks);
  const gptoss::AttentionArgs a{dq.p, Hq * D, dpos.p, dk.p, dk.p, gptoss::DType::BF16, {dseq.p, dtable.p, 1, 16}, dsinks.p, dout.p,
                                Hq * D, 1, Hq, 1, D, 0, 0.125f, nullptr, 0, 0};
  auto code = [&](gptoss::AttentionArgs b) {
    try {
      gptoss::attention_prefill_cuda(b, nullptr, false);
    } catch (const gptoss::Error& e) {
      return e.code;
    }
    return std::string("none");
  };
  LAB_CHECK(code(a) == "none", "a valid call refused");
  gptoss::AttentionArgs b = a;
  b.head_dim = 32;
  LAB_CHECK(code(b) == "ERR_INVALID_ARGUMENT", "head_dim 32 accepted");
  b = a;
  b.q_heads = 16;  // a group of 16 > 8
  LAB_CHECK(code(b) == "ERR_INVALID_ARGUMENT", "a group of 16 accepted");
  b = a;
  b.cache_dtype = gptoss::DType::F32;
  LAB_CHECK(code(b) == "ERR_INVALID_ARGUMENT", "an f32 cache accepted");
  b = a;
  b.ldq = Hq * D + 1;
  LAB_CHECK(code(b) == "ERR_INVALID_ARGUMENT", "an odd ldq accepted");
}
