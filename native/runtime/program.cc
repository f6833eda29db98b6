#include "native/runtime/program.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

namespace gptoss {
namespace {

// OpCheck over a program being built: errors name the op by index and name, and the argument.
class ProgramCheck final : public OpCheck {
 public:
  ProgramCheck(const std::vector<BufferView>& buffers, const std::vector<bool>& is_pool, const WeightStore& weights)
      : buffers_(buffers), is_pool_(is_pool), weights_(weights) {}
  int index = 0;
  const char* name = "";

  [[noreturn]] void fail(const char* arg, const std::string& rule) override {
    throw invalid_argument("op " + std::to_string(index) + " (" + name + "): " + arg + " " + rule);
  }
  void buffer(Buf b, DType dtype, int64_t rows, int64_t cols, const char* arg) override {
    const BufferView& v = view(b.id, arg);
    if (is_pool_[size_t(b.id)]) fail(arg, "is a KV pool, not an activation buffer");
    if (v.dtype != dtype) fail(arg, std::string("must be ") + dtype_name(dtype) + ", got " + dtype_name(v.dtype));
    if (v.rows < rows || v.cols < cols)
      fail(arg, "is " + std::to_string(v.rows) + "x" + std::to_string(v.cols) + ", needs at least " + std::to_string(rows) + "x" +
                    std::to_string(cols));
  }
  const BufferView& pool(Kv k, const char* arg) override {
    const BufferView& v = view(k.id, arg);
    if (!is_pool_[size_t(k.id)]) fail(arg, "is an activation buffer, not a KV pool");
    return v;
  }
  void weight(Weight w, size_t bytes, const char* arg) override {
    const size_t got = weight_bytes(w, arg);
    if (got != bytes)
      fail(arg, "(" + weights_.tensors[size_t(w.id)].name + ") has " + std::to_string(got) + " bytes, expected " + std::to_string(bytes));
  }
  size_t weight_bytes(Weight w, const char* arg) override {
    if (w.id < 0 || size_t(w.id) >= weights_.tensors.size()) fail(arg, "names no weight (id " + std::to_string(w.id) + ")");
    return weights_.tensors[size_t(w.id)].bytes;
  }

 private:
  const BufferView& view(int id, const char* arg) {
    if (id < 0 || size_t(id) >= buffers_.size()) fail(arg, "names no buffer (id " + std::to_string(id) + ")");
    return buffers_[size_t(id)];
  }
  static const char* dtype_name(DType t) {
    switch (t) {
      case DType::F32: return "f32";
      case DType::BF16: return "bf16";
      case DType::U8: return "u8";
      case DType::I32: return "i32";
    }
    return "?";
  }
  const std::vector<BufferView>& buffers_;
  const std::vector<bool>& is_pool_;
  const WeightStore& weights_;
};

// Collects an op's KV pools and its layer's window from its fields (kernels/op.h).
struct KvFields {
  std::vector<int> pools;
  int window = 0;
  void operator()(const char*, Kv& k) { pools.push_back(k.id); }
  void operator()(const char* name, int& v) {
    if (std::string(name) == "window") window = v;
  }
  template <class T> void operator()(const char*, T&) {}
  template <class T> void opt(const char* name, T& v) { (*this)(name, v); }
};

// Whether an op works on the logit rows only (its logitsRows flag).
struct LogitsRowsField {
  bool set = false;
  void operator()(const char* name, bool& v) {
    if (std::string(name) == "logitsRows") set = v;
  }
  template <class T> void operator()(const char*, T&) {}
  template <class T> void opt(const char* name, T& v) { (*this)(name, v); }
};

}  // namespace

std::vector<bool> kv_pools(const ProgramSpec& spec) {
  std::vector<bool> pool(spec.buffers.size(), false);
  for (AnyOp op : spec.ops) {
    std::visit([&](auto& o) {
      if constexpr (!std::is_same_v<std::decay_t<decltype(o)>, std::monostate>) {
        KvFields f;
        o.fields(f);
        for (int id : f.pools)
          if (id >= 0 && size_t(id) < pool.size()) pool[size_t(id)] = true;
      }
    }, op);
  }
  return pool;
}

namespace {
size_t align128(size_t n) { return (n + 127) / 128 * 128; }
}  // namespace

ProgramMemory plan_memory(const ProgramSpec& spec, const Backend& backend, int vocab) {
  // The arena: activation buffers, then (on a backend the host cannot read) the logits, then
  // the largest scratch of any op or of the sampler (ops run one after another, so they share it).
  const std::vector<bool> pool = kv_pools(spec);
  ProgramMemory m;
  for (size_t i = 0; i < spec.buffers.size(); ++i) {
    const BufferSpec& b = spec.buffers[i];
    const size_t bytes = align64(size_t(std::max(b.rows, 0)) * size_t(std::max(b.cols, 0)) * dtype_size(b.dtype));
    (pool[i] ? m.kv : m.activations) += bytes;
  }
  const ScratchPlan plan{spec.max_tokens, spec.max_context, backend.threads(), spec.exact};
  size_t scratch = vocab > 0 ? Backend::sample_scratch(vocab) : 0;
  for (const AnyOp& op : spec.ops) scratch = std::max(scratch, backend.scratch_bytes(op, plan));
  m.scratch = align64(scratch);
  // The logits and the scratch start on 128-byte lines of the arena (which the device allocates
  // 256-byte aligned): the split-k GEMM drops its partials from L2 a line at a time.
  m.activations = align128(m.activations);
  const int logit_rows = spec.max_logit_rows > 0 ? spec.max_logit_rows : spec.max_tokens;
  m.logits = backend.host_memory() ? 0 : align128(size_t(logit_rows) * size_t(vocab) * 4);
  m.runner = align64(backend.runner_bytes(plan, vocab));
  return m;
}

ProgramState::ProgramState(const ProgramSpec& spec, std::shared_ptr<WeightStore> weights, std::shared_ptr<Backend> backend)
    : backend_(std::move(backend)),
      ops_(spec.ops),
      max_tokens_(spec.max_tokens),
      max_logit_rows_(spec.max_logit_rows > 0 ? spec.max_logit_rows : spec.max_tokens),
      max_context_(spec.max_context),
      exact_(spec.exact) {
  if (max_tokens_ <= 0) throw invalid_argument("maxTokens must be positive");
  if (max_logit_rows_ > max_tokens_) throw invalid_argument("maxLogitRows must not exceed maxTokens");
  if (max_context_ <= 0) throw invalid_argument("maxContext must be positive");
  rope_ = rope_table(spec.rope);
  is_pool_ = kv_pools(spec);
  for (size_t i = 0; i < spec.buffers.size(); ++i) {
    const BufferSpec& b = spec.buffers[i];
    if (b.rows <= 0 || b.cols <= 0) throw invalid_argument("buffer " + std::to_string(i) + " has no size");
    buffers_.push_back(BufferView{b.dtype, b.rows, b.cols, nullptr});
  }

  // Every op against its contract and this backend's limits, before anything is allocated.
  ProgramCheck c(buffers_, is_pool_, *weights);
  c.max_tokens = max_tokens_;
  c.rope_head_dim = spec.rope.head_dim;
  const OpLimits& limits = backend_->limits();
  for (size_t i = 0; i < ops_.size(); ++i) {
    c.index = int(i);
    std::visit([&](auto& o) {
      if constexpr (std::is_same_v<std::decay_t<decltype(o)>, std::monostate>) {
        throw invalid_argument("op " + std::to_string(i) + " was not parsed");
      } else {
        c.name = op_name(op_kind(ops_[i]));
        gptoss::check(o, c, limits_of(o, limits));  // the op's rules (kernels/<op>.h)
        backend_->check_supported(ops_[i]);
        LogitsRowsField lr;
        o.fields(lr);
        logits_only_.push_back(lr.set);
        KvFields f;
        o.fields(f);
        if (!f.pools.empty()) {
          auto& kl = kv_layers_[f.window > 0 ? 1 : 0];
          kl.present = true;
          for (int id : f.pools) kl.pool_rows = std::min<int64_t>(kl.pool_rows, buffers_[size_t(id)].rows);
          kl.window = std::max(kl.window, f.window);
        }
      }
    }, ops_[i]);
  }
  vocab_ = c.vocab;

  memory_ = plan_memory(spec, *backend_, vocab_);
  weights_ = backend_->upload_weights(weights);
  struct Release {  // frees what was allocated if a later allocation throws
    ProgramState* p;
    ~Release() {
      if (!p) return;
      for (const auto& [ptr, bytes] : p->pools_) p->backend_->release(ptr, bytes);
      if (p->arena_) p->backend_->release(p->arena_, p->memory_.arena());
    }
  } release{this};
  if (memory_.arena() > 0) arena_ = static_cast<uint8_t*>(backend_->allocate(memory_.arena(), "the program's arena"));
  size_t at = 0;
  for (size_t i = 0; i < buffers_.size(); ++i) {
    const size_t bytes = align64(buffers_[i].bytes());
    if (is_pool_[i]) {
      buffers_[i].data = backend_->allocate(bytes, "KV pool buffer " + std::to_string(i));
      pools_.emplace_back(buffers_[i].data, bytes);
    } else {
      buffers_[i].data = arena_ + at;
      at += bytes;
    }
    backend_->zero(buffers_[i].data, bytes);
  }
  at = align128(at);  // as plan_memory counted the activations
  if (memory_.logits) logits_ = reinterpret_cast<float*>(arena_ + at);
  at += memory_.logits;
  scratch_ = arena_ ? arena_ + at : nullptr;
  if (!backend_->host_memory()) {
    runner_ = backend_->runner(ScratchPlan{max_tokens_, max_context_, backend_->threads(), exact_}, memory_.logits);
    if (vocab_ > 0) {
      host_scratch_.reset(static_cast<uint8_t*>(std::aligned_alloc(64, align64(Backend::sample_scratch(vocab_)))));
      if (!host_scratch_) throw Error("ERR_OUT_OF_MEMORY", "cannot allocate the sampler's host scratch");
      host_row_.resize(size_t(vocab_));
    }
  }
  release.p = nullptr;
}

ProgramState::~ProgramState() {
  for (const auto& [ptr, bytes] : pools_) backend_->release(ptr, bytes);
  if (arena_) backend_->release(arena_, memory_.arena());
  if (profile_runs_) {
    double total = 0;
    for (double t : profile_seconds_) total += t;
    std::fprintf(stderr, "gptoss profile: %d steps, %.1f ms/step\n", profile_runs_, 1e3 * total / profile_runs_);
    for (int k = 0; k < kOpCount; ++k)
      if (profile_seconds_[k] > 0)
        std::fprintf(stderr, "  %-12s %8.2f ms/step %5.1f%%\n", op_name(OpKind(k)), 1e3 * profile_seconds_[k] / profile_runs_,
                     100 * profile_seconds_[k] / total);
  }
}

const BufferView& ProgramState::buffer(int id) const {
  if (id < 0 || size_t(id) >= buffers_.size()) throw invalid_argument("no buffer " + std::to_string(id));
  return buffers_[size_t(id)];
}

void ProgramState::read(int id, void* dst) const {
  const BufferView& b = buffer(id);
  backend_->download(dst, b.data, b.bytes());
}

void ProgramState::write(int id, const void* src, size_t bytes) {
  const BufferView& b = buffer(id);
  if (bytes != b.bytes())
    throw invalid_argument("buffer " + std::to_string(id) + " holds " + std::to_string(b.bytes()) + " bytes, got " + std::to_string(bytes));
  backend_->upload(b.data, src, bytes);
}

void ProgramState::check(const StepInput& in) const {
  const int T = int(in.tokens.size());
  if (T < 1 || T > max_tokens_)
    throw invalid_argument("a step takes 1 to " + std::to_string(max_tokens_) + " tokens, got " + std::to_string(T));
  if (int(in.positions.size()) != T || int(in.seqs.size()) != T)
    throw invalid_argument("positions and sequence ids must have one entry per token");
  for (int t = 0; t < T; ++t) {
    if (vocab_ > 0 && (in.tokens[size_t(t)] < 0 || in.tokens[size_t(t)] >= vocab_))
      throw invalid_argument("token " + std::to_string(in.tokens[size_t(t)]) + " at index " + std::to_string(t) +
                             " is outside the vocabulary [0, " + std::to_string(vocab_) + ")");
    if (in.positions[size_t(t)] < 0) throw invalid_argument("negative position at index " + std::to_string(t));
    if (in.positions[size_t(t)] >= max_context_)
      throw Error("ERR_CONTEXT_OVERFLOW", "position " + std::to_string(in.positions[size_t(t)]) + " is past the program's maxContext of " +
                                              std::to_string(max_context_));
  }
  int S = -1;
  for (const KvTable& k : in.tables) {
    if (k.ring < 1 || k.page_size < 1 || k.table.size() % size_t(k.ring))
      throw invalid_argument("a KV page table needs ring >= 1, page size >= 1 and S x ring entries");
    const int s = int(k.table.size() / size_t(k.ring));
    if (S >= 0 && s != S) throw invalid_argument("the two KV page tables list different numbers of sequences");
    S = s;
  }
  for (int t = 0; t < T; ++t)
    if (in.seqs[size_t(t)] < 0 || in.seqs[size_t(t)] >= S)
      throw invalid_argument("sequence id " + std::to_string(in.seqs[size_t(t)]) + " at index " + std::to_string(t) + " has no page table row");
  // Per sequence: the span of positions this step touches.
  std::vector<int64_t> lo(size_t(S), INT64_MAX), hi(size_t(S), -1);
  for (int t = 0; t < T; ++t) {
    const size_t s = size_t(in.seqs[size_t(t)]);
    lo[s] = std::min<int64_t>(lo[s], in.positions[size_t(t)]);
    hi[s] = std::max<int64_t>(hi[s], in.positions[size_t(t)]);
  }
  // Once per layer type (not per layer): the pages exist in every pool of that type, and each
  // sequence's positions fit its pages.
  for (int type = 0; type < 2; ++type) {
    const KvLayers& kl = kv_layers_[type];
    if (!kl.present) continue;
    const KvTable& k = in.tables[type];
    const int64_t pool_pages = kl.pool_rows / k.page_size;
    for (int32_t page : k.table)
      if (page < 0 || page >= pool_pages)
        throw invalid_argument("KV page " + std::to_string(page) + " is outside the pool's " + std::to_string(pool_pages) + " pages");
    const int64_t span = int64_t(k.ring) * k.page_size;
    for (int s = 0; s < S; ++s) {
      if (hi[size_t(s)] < 0) continue;
      if (type == 0 && hi[size_t(s)] >= span)
        throw Error("ERR_CONTEXT_OVERFLOW", "position " + std::to_string(hi[size_t(s)]) + " is past the " + std::to_string(span) +
                                                " positions of the sequence's KV pages");
      // A sliding window must see window keys before the step's first token and all of the step
      // (unless the ring has never wrapped).
      if (type == 1 && hi[size_t(s)] >= span && hi[size_t(s)] - lo[size_t(s)] + kl.window > span)
        throw invalid_argument("the sliding-window KV ring (" + std::to_string(span) + " rows) is too small for this step");
    }
  }
  if (in.logit_rows.size() > size_t(max_logit_rows_))
    throw invalid_argument("a step of this program asks for at most " + std::to_string(max_logit_rows_) + " logit rows, got " +
                           std::to_string(in.logit_rows.size()));
  for (int32_t r : in.logit_rows)
    if (r < 0 || r >= T) throw invalid_argument("logit row " + std::to_string(r) + " is outside the step's tokens");
  if (!in.logit_rows.empty() && in.out && in.out_floats < in.logit_rows.size() * size_t(vocab_))
    throw invalid_argument("the logits output is too small");
  if (!in.sampling.empty() && (in.sampling.size() != in.logit_rows.size() || in.rngs.size() != in.sampling.size()))
    throw invalid_argument("sampling must have one entry per logit row");
}

std::vector<RowResult> ProgramState::step(const StepInput& in) {
  const int T = int(in.tokens.size());
  const int L = int(in.logit_rows.size());
  // Without `out`, a host backend writes the logits into the program's own buffer.
  float* out = in.out;
  if (!out && L > 0 && (backend_->host_memory() || !runner_)) {
    if (host_logits_.size() < size_t(L) * size_t(vocab_)) host_logits_.resize(size_t(L) * size_t(vocab_));
    out = host_logits_.data();
  }
  float* logits = backend_->host_memory() ? out : logits_;
  StepContext ctx{buffers_.data(), weights_->ptrs.data(), T, in.tokens.data(), in.positions.data(), L, in.logit_rows.data(),
                  logits, {}, &rope_, scratch_, memory_.scratch, exact_};
  for (int type = 0; type < 2; ++type)
    ctx.pages[type] = KvPages{in.seqs.data(), in.tables[type].table.data(), in.tables[type].ring, in.tables[type].page_size};
  const bool profile = profile_enabled_ && !runner_;
  if (profile) ++profile_runs_;
  if (runner_) runner_->step(ops_, logits_only_, ctx, vocab_, out);
  else for (const AnyOp& op : ops_) {
    const auto t0 = profile ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
    // Ops on the logit rows only have nothing to do when no row wants logits.
    if (L == 0 && logits_only_[size_t(&op - ops_.data())]) continue;
    backend_->run(op, ctx);
    if (profile) {
      backend_->synchronize();
      profile_seconds_[int(op_kind(op))] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
  }
  backend_->synchronize();
  if (L > 0 && !backend_->host_memory() && !runner_) backend_->download(out, logits_, size_t(L) * size_t(vocab_) * 4);
  // Off the host, the rows are sampled from their copy in `out` with host scratch; with no `out`,
  // the runner draws them (device reductions, or each row copied back alone).
  const bool by_row = runner_ && !out;
  if (!backend_->host_memory()) logits = out;
  uint8_t* draw_scratch = backend_->host_memory() ? scratch_ : host_scratch_.get();
  if (by_row && !in.sampling.empty()) {
    std::vector<const SampleParams*> device(in.sampling.size(), nullptr);
    for (size_t i = 0; i < in.sampling.size(); ++i)
      if (in.sampling[i] && !(i < in.top_logprobs.size() && in.top_logprobs[i] >= 0)) device[i] = in.sampling[i].get();
    runner_->reduce_rows(device, vocab_);
  }

  std::vector<RowResult> results(static_cast<size_t>(L));
  for (size_t i = 0; i < in.sampling.size(); ++i) {
    if (!in.sampling[i]) continue;
    // The caller gets the model's logits unchanged: the backend samples a copy.
    const float* row = by_row ? host_row_.data() : logits + i * size_t(vocab_);
    RowResult& r = results[i];
    try {
      if (!by_row || !runner_->finish_row(int(i), in.sampling[i].get(), in.rngs[i], &r.draw, host_row_.data(), vocab_))
        r.draw = backend_->sample(row, vocab_, *in.sampling[i], in.rngs[i], draw_scratch);
      r.sampled = true;
      if (i < in.top_logprobs.size() && in.top_logprobs[i] >= 0) {
        r.logprobs = backend_->logprobs(row, vocab_, r.draw.token, in.top_logprobs[i], draw_scratch);
        r.has_logprobs = true;
      }
    } catch (const Error& err) {
      // A row's sampling failure (say, a mask that allows no token) fails that row alone.
      r = RowResult{};
      r.error_code = err.code;
      r.error_message = err.what();
    }
  }
  return results;
}

}  // namespace gptoss
