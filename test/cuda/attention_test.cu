// attention_cuda against the CPU op (kernels/cpu/attention.cc): gpt-oss's heads (64 query, 8 KV,
// head_dim 64: 20b and 120b alike), contexts 1, 127, 128, 129 and 4k, the 128-token sliding window
// (with its ring of pages wrapping) and full layers, f32 and bf16 caches, several sequences in one
// step on fragmented pages (page ids shuffled over the pool), GQA groups of 8 and 1; outputs and
// the split scratch NaN-poisoned before every call.
#include <algorithm>
#include <cstring>
#include <numeric>

#include "kernels/cpu/parallel.h"
#include "kernels/cuda/attention.cuh"
#include "test/cuda/harness.h"

namespace {
// Tolerance: |gpu - cpu| <= kTol * max|v| per element. Both sides compute the same f32 logits
// (64-term dots; the GPU chains them per head in one FMA chain, the CPU in SIMD lanes), softmax
// weights from f32 exp (the CPU's vector exp is within 2 ulp), and sums of at most 128 weighted
// values per split merged over at most 32 splits. With |q|, |k| <= 1 a logit is within 64 u * 8 of
// exact on each side (u = 2^-24) and a weight within ~(2 * 64 * 8 + 8) u relatively, so the output
// is within ~1100 u ~ 7e-5 of the CPU's in the worst case; observed errors are ~1e-6. A key read
// from the wrong row or dropped at a split edge moves an output by ~ its weight, far above this
// with the small contexts (1 to 129 keys).
constexpr double kTol = 7e-5;
// The tensor-core split kernel (mma: default mode) rounds Q and the softmax weights P to bf16 once.
// Its reference is the CPU op on Q rounded to bf16 as the kernel rounds it (the same operand, so
// the logits agree to f32 rounding); what is left is P's rounding, each weight within 2^-8
// relatively, which moves an output by at most 2^-8 sum_j w_j |v_j| <= 2^-8 (|v| <= 1; the
// denominator sums the unrounded P), plus f32 order noise: attention_prefill_test.cu's bound.
constexpr double kTolMma = 1.0 / 256 + 1e-5;

struct Case {
  int q_heads, kv_heads, window;
  gptoss::DType dtype;
  std::vector<int32_t> positions, seq;  // per token
  int page_size, ring;                  // ring pages per sequence (kv_pages.h)
  int64_t max_context;
};

// scratch_tokens: scratch for that many tokens only (0: all T), so the step runs in launches of
// that many; the outputs must then also be bit for bit those of one launch. mma: the tensor-core
// kernel (bf16 caches), against the CPU on Q rounded to bf16, to kTolMma.
void check(const Case& c, uint64_t seed, bool every_schedule = true, int scratch_tokens = 0, bool mma = false) {
  using gptoss::DType;
  lab::Rng r(seed);
  const int D = 64, T = int(c.positions.size()), Hq = c.q_heads, width = c.kv_heads * D;
  const int S = *std::max_element(c.seq.begin(), c.seq.end()) + 1;
  // Fragmented pages: every sequence's ring of pages drawn from a shuffled pool with spare pages.
  const int pool_pages = S * c.ring + 3;
  std::vector<int32_t> ids(pool_pages);
  std::iota(ids.begin(), ids.end(), 0);
  for (int i = pool_pages - 1; i > 0; --i) std::swap(ids[i], ids[r.next() % (i + 1)]);
  std::vector<int32_t> table(ids.begin(), ids.begin() + S * c.ring);
  const int64_t rows = int64_t(pool_pages) * c.page_size;
  const size_t esize = c.dtype == DType::F32 ? 4 : 2;
  std::vector<unsigned char> kc(rows * width * esize), vc(rows * width * esize);
  for (int64_t i = 0; i < rows * width; ++i) {
    const float k = r.uniform(-1.f, 1.f), v = r.uniform(-1.f, 1.f);
    if (c.dtype == DType::F32) {
      reinterpret_cast<float*>(kc.data())[i] = k;
      reinterpret_cast<float*>(vc.data())[i] = v;
    } else {
      reinterpret_cast<uint16_t*>(kc.data())[i] = lab::f32_to_bf16(k);
      reinterpret_cast<uint16_t*>(vc.data())[i] = lab::f32_to_bf16(v);
    }
  }
  // Pool rows no token's sequence has reached hold NaN, as a never-written row may: a kernel that
  // reads past a token's keys (0 * NaN in a product) shows.
  std::vector<char> reached(size_t(rows), 0);
  for (int s = 0; s < S; ++s) {
    int32_t top = -1;
    for (int t = 0; t < T; ++t)
      if (c.seq[t] == s) top = std::max(top, c.positions[t]);
    for (int32_t pos = 0; pos <= top; ++pos)
      reached[size_t(table[size_t(s) * c.ring + (pos / c.page_size) % c.ring]) * c.page_size + pos % c.page_size] = 1;
  }
  for (int64_t row = 0; row < rows; ++row)
    if (!reached[size_t(row)])
      for (int i = 0; i < width; ++i) {
        const int64_t e = row * width + i;
        if (c.dtype == DType::F32) {
          reinterpret_cast<float*>(kc.data())[e] = reinterpret_cast<float*>(vc.data())[e] = NAN;
        } else {
          reinterpret_cast<uint16_t*>(kc.data())[e] = reinterpret_cast<uint16_t*>(vc.data())[e] = 0x7fc0;
        }
      }
  const int64_t ldq = int64_t(Hq) * D + 8 * (r.next() % 2);  // sometimes a wider row (the fused QKV row)
  std::vector<float> q(size_t(T) * ldq);
  for (auto& v : q) v = r.uniform(-1.f, 1.f) * 4.f;  // logits up to ~±32 * 0.125: peaked softmaxes too
  std::vector<uint16_t> sinks(Hq);
  for (auto& v : sinks) v = lab::f32_to_bf16(r.uniform(-3.f, 3.f));
  const float scale = 0.125f;
  const int64_t ldo = int64_t(Hq) * D;

  std::vector<float> want(size_t(T) * ldo, 0.f);
  const int threads = gptoss::cpu::num_threads();
  std::vector<uint8_t> cpu_scratch(gptoss::attention_scratch_cpu(T, c.max_context, Hq, c.kv_heads, D, c.window, threads));
  gptoss::KvPages pages{c.seq.data(), table.data(), c.ring, c.page_size};
  std::vector<float> q_ref = q;
  if (mma)
    for (auto& v : q_ref) v = lab::bf16_to_f32(lab::f32_to_bf16(v));
  gptoss::attention_cpu({q_ref.data(), ldq, c.positions.data(), kc.data(), vc.data(), c.dtype, pages, sinks.data(), want.data(), ldo,
                         T, Hq, c.kv_heads, D, c.window, scale, cpu_scratch.data(), cpu_scratch.size(), threads});

  lab::DeviceBuf<float> dq(q), dout(want.size());
  lab::DeviceBuf<int32_t> dpos(c.positions), dseq(c.seq), dtable(table);
  lab::DeviceBuf<unsigned char> dk(kc), dv(vc);
  lab::DeviceBuf<uint16_t> dsinks(sinks);
  const size_t full = gptoss::attention_scratch_cuda(T, c.max_context, Hq, D, c.window);
  const size_t sbytes = scratch_tokens ? gptoss::attention_scratch_cuda(scratch_tokens, c.max_context, Hq, D, c.window) : full;
  lab::DeviceBuf<uint8_t> dscratch(full);
  auto launch = [&](size_t bytes) {
    cudaMemset(dout.p, 0xff, dout.n * 4);
    cudaMemset(dscratch.p, 0xff, full);
    gptoss::attention_cuda({dq.p, ldq, dpos.p, dk.p, dv.p, c.dtype, {dseq.p, dtable.p, c.ring, c.page_size}, dsinks.p, dout.p,
                            ldo, T, Hq, c.kv_heads, D, c.window, scale, dscratch.p, bytes, 0},
                           c.max_context, nullptr, true, mma);
    return dout.download();
  };
  const std::vector<float> one = scratch_tokens ? launch(full) : std::vector<float>();
  auto run = [&] {
    const std::vector<float> got = launch(sbytes);
    if (scratch_tokens)
      LAB_CHECK(std::memcmp(got.data(), one.data(), got.size() * 4) == 0,
                "launches of %d tokens differ from one launch of %d", scratch_tokens, T);
    for (int t = 0; t < T; ++t)
      for (int i = 0; i < Hq * D; ++i) {
        const size_t j = size_t(t) * ldo + i;
        const double e = std::fabs(double(got[j]) - want[j]), tol = mma ? kTolMma : kTol;
        LAB_CHECK(e <= tol, "token %d (position %d, window %d, %s cache%s): out[head %d][%d] = %.8g, CPU %.8g (error %.3g > %.1g)",
                  t, c.positions[t], c.window, c.dtype == DType::F32 ? "f32" : "bf16", mma ? ", mma" : "", i / D, i % D,
                  got[j], want[j], e, tol);
      }
  };
  if (every_schedule) lab::for_each_schedule(run);
  else run();
}

// With one split planned, attention_cuda folds the merge into the split kernel (one launch): the
// same bits as the split and merge launches, NaN past the planned context included.
void check_folded(int window, gptoss::DType dtype, std::vector<int32_t> positions, int64_t max_context, uint64_t seed,
                  bool mma = false) {
  using gptoss::DType;
  lab::Rng r(seed);
  const int D = 64, Hq = 8, Hkv = 2, width = Hkv * D, T = int(positions.size()), page = 64, ring = 8;
  std::vector<int32_t> seq(static_cast<size_t>(T)), table(static_cast<size_t>(T) * ring);
  for (int t = 0; t < T; ++t) seq[size_t(t)] = t;
  std::iota(table.begin(), table.end(), 0);
  const int64_t rows = int64_t(T) * ring * page;
  const size_t esize = dtype == DType::F32 ? 4 : 2;
  std::vector<unsigned char> kc(size_t(rows) * width * esize), vc(kc.size());
  for (int64_t i = 0; i < rows * width; ++i) {
    const float k = r.uniform(-1.f, 1.f), v = r.uniform(-1.f, 1.f);
    if (dtype == DType::F32) {
      reinterpret_cast<float*>(kc.data())[i] = k;
      reinterpret_cast<float*>(vc.data())[i] = v;
    } else {
      reinterpret_cast<uint16_t*>(kc.data())[i] = lab::f32_to_bf16(k);
      reinterpret_cast<uint16_t*>(vc.data())[i] = lab::f32_to_bf16(v);
    }
  }
  std::vector<float> q(size_t(T) * Hq * D);
  for (auto& v : q) v = r.uniform(-4.f, 4.f);
  std::vector<uint16_t> sinks(Hq);
  for (auto& v : sinks) v = lab::f32_to_bf16(r.uniform(-3.f, 3.f));
  lab::DeviceBuf<float> dq(q), dout(size_t(T) * Hq * D);
  lab::DeviceBuf<int32_t> dpos(positions), dseq(seq), dtable(table);
  lab::DeviceBuf<unsigned char> dk(kc), dv(vc);
  lab::DeviceBuf<uint16_t> dsinks(sinks);
  const size_t sbytes = gptoss::attention_scratch_cuda(T, max_context, Hq, D, window);
  lab::DeviceBuf<uint8_t> dscratch(sbytes);
  const gptoss::AttentionArgs a{dq.p, Hq * D, dpos.p, dk.p, dv.p, dtype, {dseq.p, dtable.p, ring, page}, dsinks.p, dout.p,
                                Hq * D, T, Hq, Hkv, D, window, 0.125f, dscratch.p, sbytes, 0};
  cudaMemset(dout.p, 0xff, dout.n * 4);
  gptoss::attention_cuda(a, max_context, nullptr, false, mma);
  const std::vector<float> want = dout.download();
  lab::for_each_schedule([&] {
    cudaMemset(dout.p, 0xff, dout.n * 4);
    cudaMemset(dscratch.p, 0xff, sbytes);
    gptoss::attention_cuda(a, max_context, nullptr, true, mma);
    const std::vector<float> got = dout.download();
    for (size_t i = 0; i < got.size(); ++i)
      LAB_CHECK(std::memcmp(&got[i], &want[i], 4) == 0 || (std::isnan(got[i]) && std::isnan(want[i])),
                "window %d, max_context %lld, token %zu (position %d): folded %.9g, two launches %.9g", window,
                (long long)max_context, i / (Hq * D), positions[i / (Hq * D)], got[i], want[i]);
  });
}
}  // namespace

LAB_TEST("attention: one split planned (sliding window, or a full layer up to 128 positions): the merge folded into one launch gives the same bits") {
  check_folded(128, gptoss::DType::BF16, {0, 5, 127, 128, 300}, 4096, 31);
  check_folded(128, gptoss::DType::F32, {1, 200}, 512, 32);
  check_folded(0, gptoss::DType::BF16, {0, 64, 127, 200}, 128, 33);  // 200: past the planned context, NaN
}

LAB_TEST("attention: the tensor-core split kernel (default mode) folds the merge with the same bits as two launches") {
  check_folded(128, gptoss::DType::BF16, {0, 5, 127, 128, 300}, 4096, 34, true);
  check_folded(0, gptoss::DType::BF16, {0, 31, 32, 33, 64, 127, 200}, 128, 35, true);  // 200: past the planned context
}
LAB_TEST("attention: the tensor-core split kernel matches the CPU on Q in bf16: contexts 1 to 129, sliding and full, groups 8, 3, 1") {
  for (int window : {0, 128})
    check({64, 8, window, gptoss::DType::BF16, {0, 7, 31, 32, 33, 95, 126, 127, 128}, {0, 1, 2, 3, 4, 5, 6, 7, 8}, 16, 9, 144},
          36 + window, window == 0, 0, true);
  check({3, 3, 0, gptoss::DType::BF16, {5, 6, 7, 300}, {0, 0, 0, 1}, 8, 40, 320}, 37, true, 0, true);
  check({24, 8, 0, gptoss::DType::BF16, {40, 129}, {0, 1}, 32, 5, 160}, 38, true, 0, true);
}
LAB_TEST("attention: the tensor-core split kernel at context 4k (32 splits) and on a wrapping window ring, in launches of 3 tokens") {
  if (!lab::quick()) check({8, 1, 0, gptoss::DType::BF16, {4095}, {0}, 64, 64, 4096}, 39, false, 0, true);
  check({16, 2, 128, gptoss::DType::BF16, {4095, 4000}, {0, 1}, 16, 9, 4096}, 40, true, 0, true);
  check({16, 2, 0, gptoss::DType::BF16, {0, 5, 130, 299, 7, 8, 200}, {0, 0, 0, 0, 1, 1, 1}, 16, 19, 300}, 56, true, 3, true);
}
LAB_TEST("attention: CUDA matches CPU at gpt-oss's heads (64 query, 8 KV) decoding at context 129 on a full layer") {
  check({64, 8, 0, gptoss::DType::F32, {128}, {0}, 16, 9, 160}, 31);
}
LAB_TEST("attention: CUDA matches CPU at contexts 1, 127, 128, 129 on sliding and full layers, f32 and bf16, fragmented pages") {
  for (int window : {0, 128})
    for (auto dt : {gptoss::DType::F32, gptoss::DType::BF16})
      check({16, 2, window, dt, {0, 126, 127, 128}, {0, 1, 2, 3}, 16, 9, 144}, 32 + window + int(dt));
}
LAB_TEST("attention: CUDA matches CPU at context 4k, full layer (32 splits) and sliding window on a wrapping ring of pages") {
  if (!lab::quick()) check({8, 1, 0, gptoss::DType::BF16, {4095}, {0}, 64, 64, 4096}, 41, false);
  // The window's ring: 9 pages of 16 rows hold positions p - 127 .. p (kv_pages.h), wrapping.
  check({16, 2, 128, gptoss::DType::F32, {4095, 4000}, {0, 1}, 16, 9, 4096}, 42);
}
LAB_TEST("attention: CUDA matches CPU with one query head per KV head (group 1) and several tokens of one sequence") {
  check({3, 3, 0, gptoss::DType::BF16, {5, 6, 7, 300}, {0, 0, 0, 1}, 8, 40, 320}, 43);
}
LAB_TEST("attention: a step longer than the scratch holds runs in launches of as many tokens, the same bits as one launch") {
  // 7 tokens of two sequences (3 splits at context 300; the sliding window's one split, folded),
  // scratch for 3 (launches of 3, 3, 1) and for 1 token.
  for (int window : {0, 128})
    for (int tokens : {3, 1})
      check({16, 2, window, gptoss::DType::BF16, {0, 5, 130, 299, 7, 8, 200}, {0, 0, 0, 0, 1, 1, 1}, 16, 19, 300},
            51 + window + tokens, tokens == 3, tokens);
  // The plan: a step's worth up to the cap, at least one token's.
  const size_t one = gptoss::attention_scratch_cuda(1, 4096, 64, 64, 0);
  LAB_CHECK(gptoss::attention_scratch_plan_cuda(8, 4096, 64, 64, 0) == 8 * one, "plan for 8 tokens");
  LAB_CHECK(gptoss::attention_scratch_plan_cuda(2048, 4096, 64, 64, 0) == gptoss::kAttentionScratchCapBytes / one * one,
            "plan for 2048 tokens at 4k is not capped");
  LAB_CHECK(gptoss::attention_scratch_plan_cuda(4, int64_t(1) << 26, 64, 64, 0) ==
                gptoss::attention_scratch_cuda(1, int64_t(1) << 26, 64, 64, 0),
            "a token's scratch above the cap is not planned");
}
LAB_TEST("attention: a token's output is bit-identical alone and in a batch") {
  Case c{16, 2, 0, gptoss::DType::F32, {200, 129}, {0, 1}, 16, 16, 256};
  lab::Rng r(44);
  (void)r;
  // Run the batch and each token alone through the same data: build once via check's pieces.
  const int D = 64, Hq = c.q_heads, width = c.kv_heads * D, T = 2;
  std::vector<int32_t> table(2 * c.ring);
  std::iota(table.begin(), table.end(), 0);
  const int64_t rows = int64_t(table.size()) * c.page_size;
  std::vector<float> kc(rows * width), vc(rows * width), q(size_t(T) * Hq * D);
  lab::Rng g(45);
  for (auto& v : kc) v = g.uniform(-1.f, 1.f);
  for (auto& v : vc) v = g.uniform(-1.f, 1.f);
  for (auto& v : q) v = g.uniform(-4.f, 4.f);
  std::vector<uint16_t> sinks(Hq, lab::f32_to_bf16(0.5f));
  lab::DeviceBuf<float> dq(q), dk(kc), dv(vc), dall(size_t(T) * Hq * D), done(size_t(Hq) * D);
  lab::DeviceBuf<int32_t> dpos(c.positions), dseq(c.seq), dtable(table);
  lab::DeviceBuf<uint16_t> dsinks(sinks);
  const size_t sbytes = gptoss::attention_scratch_cuda(T, c.max_context, Hq, D, 0);
  lab::DeviceBuf<uint8_t> dscratch(sbytes);
  gptoss::attention_cuda({dq.p, Hq * D, dpos.p, dk.p, dv.p, gptoss::DType::F32, {dseq.p, dtable.p, c.ring, c.page_size}, dsinks.p,
                          dall.p, Hq * D, T, Hq, c.kv_heads, D, 0, 0.125f, dscratch.p, sbytes, 0},
                         c.max_context, nullptr);
  const std::vector<float> all = dall.download();
  for (int t = 0; t < T; ++t) {
    gptoss::attention_cuda({dq.p + t * Hq * D, Hq * D, dpos.p + t, dk.p, dv.p, gptoss::DType::F32,
                            {dseq.p + t, dtable.p, c.ring, c.page_size}, dsinks.p, done.p, Hq * D, 1, Hq, c.kv_heads, D, 0,
                            0.125f, dscratch.p, sbytes, 0},
                           c.max_context, nullptr);
    const std::vector<float> one = done.download();
    LAB_CHECK(std::memcmp(one.data(), all.data() + t * Hq * D, one.size() * 4) == 0, "token %d differs alone and batched", t);
  }
}
LAB_TEST("attention: a position past the planned context gives NaN, and bad shapes are ERR_INVALID_ARGUMENT") {
  const int D = 64, Hq = 8;
  std::vector<int32_t> pos{300}, seq{0}, table{0, 1, 2};
  std::vector<float> kc(3 * 128 * D, 0.5f), q(Hq * D, 0.1f);
  std::vector<uint16_t> sinks(Hq, 0);
  lab::DeviceBuf<float> dq(q), dk(kc), dv(kc), dout(size_t(Hq) * D);
  lab::DeviceBuf<int32_t> dpos(pos), dseq(seq), dtable(table);
  lab::DeviceBuf<uint16_t> dsinks(sinks);
  const size_t sbytes = gptoss::attention_scratch_cuda(1, 256, Hq, D, 0);
  lab::DeviceBuf<uint8_t> dscratch(sbytes);
  gptoss::AttentionArgs a{dq.p, Hq * D, dpos.p, dk.p, dv.p, gptoss::DType::F32, {dseq.p, dtable.p, 3, 128}, dsinks.p, dout.p,
                          Hq * D, 1, Hq, 1, D, 0, 0.125f, dscratch.p, sbytes, 0};
  gptoss::attention_cuda(a, 256, nullptr);  // planned for positions below 256; position 300 needs 3 splits
  for (float v : dout.download()) LAB_CHECK(std::isnan(v), "a position past max_context gave %g, not NaN", v);
  auto code = [&](gptoss::AttentionArgs b, int64_t mc) {
    try {
      gptoss::attention_cuda(b, mc, nullptr);
    } catch (const gptoss::Error& e) {
      return e.code;
    }
    return std::string("none");
  };
  gptoss::AttentionArgs b = a;
  b.head_dim = 32;
  LAB_CHECK(code(b, 256) == "ERR_INVALID_ARGUMENT", "head_dim 32 accepted");
  b = a;
  b.q_heads = 16;  // group 16 > 8
  LAB_CHECK(code(b, 256) == "ERR_INVALID_ARGUMENT", "a group of 16 accepted");
  LAB_CHECK(code(a, 100000) == "ERR_INVALID_ARGUMENT", "scratch too small accepted");
  try {
    gptoss::attention_cuda(a, 256, nullptr, true, true);  // an f32 cache
    LAB_CHECK(false, "the tensor-core kernel accepted an f32 cache");
  } catch (const gptoss::Error& e) {
    LAB_CHECK(e.code == "ERR_INVALID_ARGUMENT", "the tensor-core kernel on an f32 cache: %s", e.code.c_str());
  }
}
