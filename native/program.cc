#include "native/program.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <tuple>
#include <climits>

#include "kernels/attention.h"
#include "kernels/embed.h"
#include "kernels/kv_append.h"
#include "kernels/matmul_bf16.h"
#include "kernels/moe_combine.h"
#include "kernels/moe_mxfp4.h"
#include "kernels/rmsnorm.h"
#include "kernels/router_topk.h"
#include "native/errors.h"
#include "native/sampler.h"
#include "native/host_alloc.h"

namespace gptoss {
namespace {

int geti(Napi::Object o, const char* key, int def) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return def;
  if (!v.IsNumber()) throw invalid_argument(std::string("op field ") + key + " must be a number");
  return v.As<Napi::Number>().Int32Value();
}
float getf(Napi::Object o, const char* key, float def) {
  Napi::Value v = o.Get(key);
  return v.IsNumber() ? v.As<Napi::Number>().FloatValue() : def;
}

OpKind parse_kind(const std::string& s) {
  if (s == "embed") return OpKind::Embed;
  if (s == "rmsnorm") return OpKind::Rmsnorm;
  if (s == "matmul_bf16") return OpKind::MatmulBf16;
  if (s == "rope") return OpKind::Rope;
  if (s == "kv_append") return OpKind::KvAppend;
  if (s == "attention") return OpKind::Attention;
  if (s == "router_topk") return OpKind::RouterTopk;
  if (s == "moe_mxfp4") return OpKind::MoeMxfp4;
  if (s == "moe_combine") return OpKind::MoeCombine;
  throw invalid_argument("unknown op " + s);
}

DType parse_dtype(const std::string& s) {
  if (s == "f32") return DType::F32;
  if (s == "bf16") return DType::BF16;
  if (s == "i32") return DType::I32;
  throw invalid_argument("unknown buffer dtype " + s);
}

struct Checker {
  const ProgramState& st;
  int op_index;
  [[noreturn]] void fail(const std::string& what) const {
    throw invalid_argument("op " + std::to_string(op_index) + ": " + what);
  }
  const Buffer& buf(int id, DType dt, int64_t min_rows, int64_t min_cols, const char* role) const {
    if (id < 0 || size_t(id) >= st.buffers.size()) fail(std::string(role) + " buffer missing");
    const Buffer& b = st.buffers[size_t(id)];
    if (b.dtype != dt) fail(std::string(role) + " buffer has the wrong dtype");
    if (b.rows < min_rows || b.cols < min_cols)
      fail(std::string(role) + " buffer is " + std::to_string(b.rows) + "x" + std::to_string(b.cols) + ", needs " +
           std::to_string(min_rows) + "x" + std::to_string(min_cols));
    return b;
  }
  void weight(int id, size_t bytes, const char* role) const {
    const TensorRef& t = st.weights->at(id);
    if (t.bytes != bytes)
      fail(std::string(role) + " weight " + t.name + " has " + std::to_string(t.bytes) + " bytes, expected " +
           std::to_string(bytes));
  }
};

// Everything a step could read or write is checked here once, so run() needs only the
// per-step checks (token ids, positions against the cache capacities).
void validate(ProgramState& st) {
  const int M = st.max_tokens;
  for (size_t i = 0; i < st.ops.size(); ++i) {
    Op& o = st.ops[i];
    Checker c{st, int(i)};
    if (o.N < 0 || o.K < 0 || o.H < 0 || o.I < 0 || o.E < 0 || o.k < 0 || o.xcol < 0 || o.ycol < 0 || o.vcol < 0)
      c.fail("negative size");
    switch (o.kind) {
      case OpKind::Embed: {
        const TensorRef& t = st.weights->at(o.w);
        if (o.H <= 0 || t.bytes % (size_t(o.H) * 2) != 0) c.fail("embedding table size is not a multiple of H");
        st.vocab = int(t.bytes / (size_t(o.H) * 2));
        c.buf(o.y, DType::F32, M, o.H, "output");
        break;
      }
      case OpKind::Rmsnorm:
        c.buf(o.x, DType::F32, M, o.H, "input");
        c.buf(o.y, DType::F32, M, o.H, "output");
        c.weight(o.w, size_t(o.H) * 2, "gain");
        break;
      case OpKind::MatmulBf16:
        c.buf(o.x, DType::F32, M, int64_t(o.xcol) + o.K, "input");
        if (o.y >= 0) c.buf(o.y, DType::F32, M, int64_t(o.ycol) + o.N, "output");
        else if (o.N != st.vocab || !o.logits_rows) c.fail("the logits matmul must produce vocab columns for the logits rows");
        c.weight(o.w, size_t(o.N) * o.K * 2, "matrix");
        if (o.b >= 0) c.weight(o.b, size_t(o.N) * 2, "bias");
        break;
      case OpKind::Rope:
        if (o.head_dim <= 0 || o.head_dim % 2 || o.head_dim != int(st.rope.omega.size()) * 2) c.fail("bad head_dim");
        c.buf(o.x, DType::F32, M, (o.q_heads + o.kv_heads) * o.head_dim, "qkv");
        break;
      case OpKind::KvAppend: {
        const int width = o.kv_heads * o.head_dim;
        c.buf(o.x, DType::F32, M, int64_t(std::max(o.xcol, o.vcol)) + width, "qkv");
        const Buffer& kc = st.buffers.at(size_t(std::max(o.kc, 0)));
        if (kc.dtype != DType::F32 && kc.dtype != DType::BF16) c.fail("cache dtype must be f32 or bf16");
        c.buf(o.kc, kc.dtype, 1, width, "k cache");
        c.buf(o.vc, kc.dtype, kc.rows, width, "v cache");
        if (st.buffers[size_t(o.kc)].cols != width || st.buffers[size_t(o.vc)].cols != width) c.fail("cache width");
        break;
      }
      case OpKind::Attention: {
        if (o.kv_heads <= 0 || o.q_heads % o.kv_heads) c.fail("q heads must be a multiple of kv heads");
        c.buf(o.x, DType::F32, M, o.q_heads * o.head_dim, "q");
        c.buf(o.y, DType::F32, M, o.q_heads * o.head_dim, "output");
        if (o.kc < 0 || size_t(o.kc) >= st.buffers.size()) c.fail("k cache missing");
        const Buffer& kc = st.buffers[size_t(o.kc)];
        c.buf(o.vc, kc.dtype, kc.rows, kc.cols, "v cache");
        if (kc.cols != o.kv_heads * o.head_dim) c.fail("cache width");
        c.weight(o.w, size_t(o.q_heads) * 2, "sinks");
        break;
      }
      case OpKind::RouterTopk:
        if (o.E <= 0 || o.E > 256 || o.k <= 0 || o.k > o.E) c.fail("need 0 < k <= E <= 256");
        c.buf(o.x, DType::F32, M, o.E, "router logits");
        c.buf(o.idx, DType::I32, M, o.k, "expert index");
        c.buf(o.wt, DType::F32, M, o.k, "expert weight");
        break;
      case OpKind::MoeMxfp4: {
        if (o.H % 32 || o.I % 32 || o.H <= 0 || o.I <= 0) c.fail("H and I must be multiples of 32");
        c.buf(o.x, DType::F32, M, o.H, "input");
        c.buf(o.idx, DType::I32, M, o.k, "expert index");
        c.buf(o.y, DType::F32, int64_t(M) * o.k, o.H, "slots");
        const size_t E = size_t(o.E), H = size_t(o.H), I = size_t(o.I);
        c.weight(o.w1b, E * 2 * I * H / 2, "mlp1 blocks");
        c.weight(o.w1s, E * 2 * I * H / 32, "mlp1 scales");
        c.weight(o.b1, E * 2 * I * 2, "mlp1 bias");
        c.weight(o.w2b, E * H * I / 2, "mlp2 blocks");
        c.weight(o.w2s, E * H * I / 32, "mlp2 scales");
        c.weight(o.b2, E * H * 2, "mlp2 bias");
        break;
      }
      case OpKind::MoeCombine:
        c.buf(o.x, DType::F32, M, o.H, "residual");
        c.buf(o.y, DType::F32, int64_t(M) * o.k, o.H, "slots");
        c.buf(o.wt, DType::F32, M, o.k, "expert weight");
        break;
    }
  }
}

inline float* fbuf(ProgramState& st, int id) { return static_cast<float*>(st.buffers[size_t(id)].data); }
// From the snapshot taken at construction: the store's tensor table may grow (another model
// registration on the JS thread) while a step runs; the tensors' bytes never move.
inline const uint8_t* wptr(ProgramState& st, int id) { return id >= 0 ? st.weight_ptrs[size_t(id)] : nullptr; }
inline const uint16_t* wbf(ProgramState& st, int id) { return reinterpret_cast<const uint16_t*>(wptr(st, id)); }

}  // namespace

const char* op_name(OpKind k) {
  static const char* names[] = {"embed", "rmsnorm", "matmul_bf16", "rope", "kv_append", "attention",
                                "router_topk", "moe_mxfp4", "moe_combine"};
  return names[int(k)];
}

ProgramState::~ProgramState() {
  for (auto& b : buffers) std::free(b.data);
  if (profile_runs) {
    double total = 0;
    for (double t : profile_seconds) total += t;
    std::fprintf(stderr, "gptoss profile: %d steps, %.1f ms/step\n", profile_runs, 1e3 * total / profile_runs);
    for (size_t k = 0; k < profile_seconds.size(); ++k)
      if (profile_seconds[k] > 0)
        std::fprintf(stderr, "  %-12s %8.2f ms/step %5.1f%%\n", op_name(OpKind(k)), 1e3 * profile_seconds[k] / profile_runs,
                     100 * profile_seconds[k] / total);
  }
}

void ProgramState::check(const StepInput& in, size_t out_floats) const {
  const int T = int(in.tokens.size());
  if (T < 1 || T > max_tokens)
    throw invalid_argument("a step takes 1 to " + std::to_string(max_tokens) + " tokens, got " + std::to_string(T));
  if (int(in.positions.size()) != T || int(in.seqs.size()) != T)
    throw invalid_argument("positions and sequence ids must have one entry per token");
  for (int t = 0; t < T; ++t) {
    if (vocab > 0 && (in.tokens[size_t(t)] < 0 || in.tokens[size_t(t)] >= vocab))
      throw invalid_argument("token " + std::to_string(in.tokens[size_t(t)]) + " at index " + std::to_string(t) +
                             " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
    if (in.positions[size_t(t)] < 0) throw invalid_argument("negative position at index " + std::to_string(t));
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
    const KvLayers& kl = kv_layers[type];
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
  for (int32_t r : in.logit_rows)
    if (r < 0 || r >= T) throw invalid_argument("logit row " + std::to_string(r) + " is outside the step's tokens");
  if (!in.logit_rows.empty() && (!in.out || out_floats < in.logit_rows.size() * size_t(vocab)))
    throw invalid_argument("the logits output is missing or too small");
  if (!in.sampling.empty() && in.sampling.size() != in.logit_rows.size())
    throw invalid_argument("sampling must have one entry per logit row");
}

void ProgramState::run(const StepInput& in) {
  const int T = int(in.tokens.size());
  const int L = int(in.logit_rows.size());
  const int32_t* pos = in.positions.data();
  auto pages = [&](const Op& o) {
    const KvTable& k = in.tables[o.window > 0 ? 1 : 0];
    return KvPages{in.seqs.data(), k.table.data(), k.ring, k.page_size};
  };
  const bool profile = profile_enabled;
  if (profile) ++profile_runs;
  for (const Op& o : ops) {
    const auto t0 = profile ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
    // The final norm gathers the logit rows into rows [0, L); the unembedding reads those.
    if (o.logits_rows && L == 0) continue;
    switch (o.kind) {
      case OpKind::Embed: {
        const Buffer& y = buffers[size_t(o.y)];
        embed_cpu({in.tokens.data(), wbf(*this, o.w), fbuf(*this, o.y), y.cols, T, o.H});
        break;
      }
      case OpKind::Rmsnorm: {
        const int64_t ldx = buffers[size_t(o.x)].cols, ldy = buffers[size_t(o.y)].cols;
        if (!o.logits_rows) {
          rmsnorm_cpu({fbuf(*this, o.x), ldx, wbf(*this, o.w), fbuf(*this, o.y), ldy, T, o.H, o.eps});
        } else {
          for (int i = 0; i < L; ++i)
            rmsnorm_cpu({fbuf(*this, o.x) + size_t(in.logit_rows[size_t(i)]) * ldx, ldx, wbf(*this, o.w),
                         fbuf(*this, o.y) + size_t(i) * ldy, ldy, 1, o.H, o.eps});
        }
        break;
      }
      case OpKind::MatmulBf16: {
        const int64_t ldx = buffers[size_t(o.x)].cols;
        float* y = o.y >= 0 ? fbuf(*this, o.y) + o.ycol : in.out;
        const int64_t ldy = o.y >= 0 ? buffers[size_t(o.y)].cols : o.N;
        matmul_bf16_cpu({fbuf(*this, o.x) + o.xcol, ldx, wbf(*this, o.w), wbf(*this, o.b), y, ldy,
                         o.logits_rows ? L : T, o.N, o.K, o.accumulate});
        break;
      }
      case OpKind::Rope:
        rope_cpu({fbuf(*this, o.x), buffers[size_t(o.x)].cols, pos, T, o.q_heads, o.kv_heads, o.head_dim, &rope});
        break;
      case OpKind::KvAppend: {
        const Buffer& x = buffers[size_t(o.x)];
        const Buffer& kc = buffers[size_t(o.kc)];
        kv_append_cpu({fbuf(*this, o.x) + o.xcol, fbuf(*this, o.x) + o.vcol, x.cols, pos, kc.data,
                       buffers[size_t(o.vc)].data, kc.dtype, pages(o), T, kc.cols});
        break;
      }
      case OpKind::Attention: {
        const Buffer& kc = buffers[size_t(o.kc)];
        attention_cpu({fbuf(*this, o.x), buffers[size_t(o.x)].cols, pos, kc.data, buffers[size_t(o.vc)].data,
                       kc.dtype, pages(o), wbf(*this, o.w), fbuf(*this, o.y), buffers[size_t(o.y)].cols, T,
                       o.q_heads, o.kv_heads, o.head_dim, o.window, o.scale});
        break;
      }
      case OpKind::RouterTopk:
        router_topk_cpu({fbuf(*this, o.x), buffers[size_t(o.x)].cols,
                         static_cast<int32_t*>(buffers[size_t(o.idx)].data), fbuf(*this, o.wt), T, o.E, o.k});
        break;
      case OpKind::MoeMxfp4:
        moe_mxfp4_cpu({fbuf(*this, o.x), buffers[size_t(o.x)].cols,
                       static_cast<const int32_t*>(buffers[size_t(o.idx)].data), wptr(*this, o.w1b),
                       wptr(*this, o.w1s), wbf(*this, o.b1), wptr(*this, o.w2b), wptr(*this, o.w2s),
                       wbf(*this, o.b2), fbuf(*this, o.y), T, o.k, o.E, o.H, o.I, o.limit, o.alpha});
        break;
      case OpKind::MoeCombine:
        moe_combine_cpu({fbuf(*this, o.x), buffers[size_t(o.x)].cols, fbuf(*this, o.y), fbuf(*this, o.wt), T, o.k,
                         o.H});
        break;
    }
    if (profile) profile_seconds[size_t(o.kind)] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
}

Napi::Function Program::Init(Napi::Env env) {
  Napi::Function f = DefineClass(env, "Program", {
      InstanceMethod("run", &Program::Run),
      InstanceMethod("step", &Program::Step),
      InstanceMethod("readBuffer", &Program::ReadBuffer),
      InstanceMethod("writeBuffer", &Program::WriteBuffer),
      InstanceMethod("dispose", &Program::Dispose),
      InstanceAccessor("disposed", &Program::Disposed, nullptr),
      InstanceAccessor("vocab", &Program::Vocab, nullptr),
  });
  env.GetInstanceData<AddonData>()->program_ctor = Napi::Persistent(f);
  return f;
}

// new Program(weights, {maxTokens, rope, buffers: [{dtype, rows, cols}], ops: [...]})
Program::Program(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Program>(info) {
  Napi::Env env = info.Env();
  guarded(env, [&]() -> Napi::Value {
    Weights* w = Weights::Unwrap(info[0]);
    if (!w->store()) throw Error("ERR_DISPOSED", "the model's weights were disposed");
    if (!info[1].IsObject()) throw invalid_argument("Program(weights, spec): spec must be an object");
    Napi::Object spec = info[1].As<Napi::Object>();
    auto st = std::make_shared<ProgramState>();
    st->weights = w->store();
    st->max_tokens = geti(spec, "maxTokens", 0);
    if (st->max_tokens <= 0) throw invalid_argument("maxTokens must be positive");
    Napi::Object rope = spec.Get("rope").As<Napi::Object>();
    RopeParams rp;
    rp.theta = getf(rope, "theta", 150000);
    rp.factor = getf(rope, "factor", 32);
    rp.ntk_alpha = getf(rope, "ntkAlpha", 1);
    rp.ntk_beta = getf(rope, "ntkBeta", 32);
    rp.initial_context = geti(rope, "initialContext", 4096);
    rp.head_dim = geti(rope, "headDim", 64);
    st->rope = rope_table(rp);

    Napi::Array bufs = spec.Get("buffers").As<Napi::Array>();
    size_t total = 0;
    for (uint32_t i = 0; i < bufs.Length(); ++i) {
      Napi::Object b = bufs.Get(i).As<Napi::Object>();
      Buffer buf{parse_dtype(b.Get("dtype").As<Napi::String>()), geti(b, "rows", 0), geti(b, "cols", 0)};
      if (buf.rows <= 0 || buf.cols <= 0) throw invalid_argument("buffer " + std::to_string(i) + " has no size");
      const size_t bytes = (buf.bytes() + 63) / 64 * 64;
      buf.data = host_alloc(bytes);
      if (!buf.data)
        throw Error("ERR_OUT_OF_MEMORY", "cannot allocate " + std::to_string(bytes) + " bytes for buffer " + std::to_string(i));
      std::memset(buf.data, 0, bytes);
      total += bytes;
      st->buffers.push_back(buf);
    }
    Napi::Array ops = spec.Get("ops").As<Napi::Array>();
    for (uint32_t i = 0; i < ops.Length(); ++i) {
      Napi::Object o = ops.Get(i).As<Napi::Object>();
      Op op{parse_kind(o.Get("op").As<Napi::String>())};
      op.x = geti(o, "x", -1); op.y = geti(o, "y", -1); op.xcol = geti(o, "xcol", 0); op.ycol = geti(o, "ycol", 0);
      op.w = geti(o, "w", -1); op.b = geti(o, "b", -1);
      op.w1b = geti(o, "w1b", -1); op.w1s = geti(o, "w1s", -1); op.b1 = geti(o, "b1", -1);
      op.w2b = geti(o, "w2b", -1); op.w2s = geti(o, "w2s", -1); op.b2 = geti(o, "b2", -1);
      op.kc = geti(o, "kc", -1); op.vc = geti(o, "vc", -1); op.idx = geti(o, "idx", -1); op.wt = geti(o, "wt", -1);
      op.logits_rows = geti(o, "logitsRows", 0) != 0;
      op.accumulate = geti(o, "accumulate", 0) != 0;
      op.N = geti(o, "N", 0); op.K = geti(o, "K", 0); op.H = geti(o, "H", 0); op.I = geti(o, "I", 0);
      op.E = geti(o, "E", 0); op.k = geti(o, "k", 0);
      op.q_heads = geti(o, "qHeads", 0); op.kv_heads = geti(o, "kvHeads", 0); op.head_dim = geti(o, "headDim", 0);
      op.window = geti(o, "window", 0); op.vcol = geti(o, "vcol", 0);
      op.eps = getf(o, "eps", 1e-5f); op.limit = getf(o, "limit", 7.f); op.alpha = getf(o, "alpha", 1.702f);
      op.scale = getf(o, "scale", 0.125f);
      if (op.kind == OpKind::MatmulBf16 && op.w < 0) throw invalid_argument("matmul without a matrix");
      st->ops.push_back(op);
    }
    validate(*st);
    for (const TensorRef& t : st->weights->tensors) st->weight_ptrs.push_back(t.data);
    for (const Op& o : st->ops)
      if (o.kind == OpKind::KvAppend || o.kind == OpKind::Attention) {
        auto& kl = st->kv_layers[o.window > 0 ? 1 : 0];
        kl.present = true;
        kl.pool_rows = std::min<int64_t>(kl.pool_rows, st->buffers[size_t(o.kc)].rows);
        kl.window = std::max(kl.window, o.window);
      }
    for (int type = 0; type < 2; ++type) {
      const auto& kl = st->kv_layers[type];
      // A session's cache is one page per layer: the whole pool (all layers of a type are sized alike).
      st->session_tables[type] = kl.present ? KvTable{{0}, 1, int(kl.pool_rows)} : KvTable{{0}, 1, 1};
    }
    state_ = st;
    reported_ = int64_t(total);
    Napi::MemoryManagement::AdjustExternalMemory(env, reported_);
    return env.Undefined();
  });
}

ProgramState& Program::live() {
  if (!state_) throw Error("ERR_DISPOSED", "this session was disposed");
  return *state_;
}

namespace {
std::vector<int32_t> int32s(const Napi::Value& v, const char* what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throw invalid_argument(std::string(what) + " must be an Int32Array");
  auto a = v.As<Napi::Int32Array>();
  return std::vector<int32_t>(a.Data(), a.Data() + a.ElementLength());
}

// {params..., rng: BigUint64Array(1)} -> parsed params and the state to advance.
// sampling.topLogprobs: -1 (or absent) for none, else 0..20 alternatives with the model's logprob.
int top_logprobs_of(Napi::Object so) {
  Napi::Value v = so.Get("topLogprobs");
  if (v.IsUndefined()) return -1;
  const int n = v.As<Napi::Number>().Int32Value();
  if (n < -1 || n > 20) throw invalid_argument("sampling.topLogprobs must lie in [-1, 20]");
  return n;
}

std::pair<std::shared_ptr<SampleParams>, uint64_t*> sampling_of(Napi::Object so, int vocab, std::vector<Napi::Value>& keep) {
  auto params = std::make_shared<SampleParams>(parse_sample_params(so, vocab));
  Napi::Value r = so.Get("rng");
  if (!r.IsTypedArray() || r.As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array ||
      r.As<Napi::TypedArray>().ElementLength() < 1)
    throw invalid_argument("sampling.rng must be a BigUint64Array holding one 64-bit state");
  keep.push_back(r);
  return {params, r.As<Napi::TypedArrayOf<uint64_t>>().Data()};
}

float* out_of(const Napi::Value& v, size_t& floats, std::vector<Napi::Value>& keep) {
  if (v.IsNull() || v.IsUndefined()) return nullptr;
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw invalid_argument("out must be a Float32Array");
  auto o = v.As<Napi::Float32Array>();
  floats = o.ElementLength();
  keep.push_back(o);
  return o.Data();
}
}  // namespace

// Runs a checked step on the worker pool. `single`: resolve with the last row's draw (or
// undefined) rather than an array of draws.
Napi::Value Program::Queue(Napi::Env env, std::shared_ptr<StepInput> in, std::vector<Napi::Value> keep, bool single) {
  ProgramState& st = live();
  if (st.running.exchange(true)) throw Error("ERR_BUSY", "a step is already running on this session");
  struct Unbusy {  // until the work is queued, a throw must clear the flag again
    ProgramState* s;
    ~Unbusy() {
      if (s) s->running.store(false);
    }
  } unbusy{&st};
  auto state = state_;
  auto results = std::make_shared<std::vector<SampleResult>>(in->logit_rows.size(), SampleResult{-1, 0.f});
  auto lps = std::make_shared<std::vector<TokenLogprobs>>(in->logit_rows.size());
  // A row's sampling failure (say, a mask that allows no token) fails that row alone: the other
  // sequences of the step still get their tokens. The session form (single) rejects as before.
  auto row_errors = std::make_shared<std::vector<std::pair<std::string, std::string>>>(in->logit_rows.size());
  Napi::Value promise = run_async(
      env,
      [state, in, results, lps, row_errors, single]() {
        struct Clear {
          ProgramState& s;
          ~Clear() { s.running.store(false); }
        } clear{*state};
        state->run(*in);
        for (size_t i = 0; i < in->sampling.size(); ++i) {
          if (!in->sampling[i]) continue;
          // Sample a copy: the caller gets the model's logits unchanged.
          const float* row = in->out + i * size_t(state->vocab);
          thread_local std::vector<float> work;
          work.assign(row, row + state->vocab);
          try {
            (*results)[i] = sample_cpu(work.data(), state->vocab, *in->sampling[i], in->rngs[i]);
            if (i < in->top_logprobs.size() && in->top_logprobs[i] >= 0)
              (*lps)[i] = logprobs_cpu(row, state->vocab, (*results)[i].token, in->top_logprobs[i]);
          } catch (const Error& err) {
            if (single) throw;
            (*row_errors)[i] = {err.code, err.what()};
          }
        }
      },
      [results, lps, row_errors, in, single](Napi::Env e) -> Napi::Value {
        auto one = [&](size_t i) -> Napi::Value {
          if (!(*row_errors)[i].first.empty()) {
            Napi::Object o = Napi::Object::New(e);
            o.Set("error", make_js_error(e, (*row_errors)[i].first, (*row_errors)[i].second).Value());
            return o;
          }
          const SampleResult& r = (*results)[i];
          if (r.token < 0) return e.Null();
          Napi::Object o = Napi::Object::New(e);
          o.Set("token", r.token);
          o.Set("logprob", r.logprob);
          if (i < in->top_logprobs.size() && in->top_logprobs[i] >= 0) {
            const TokenLogprobs& lp = (*lps)[i];
            o.Set("modelLogprob", lp.logprob);
            Napi::Array top = Napi::Array::New(e, lp.top.size());
            for (size_t j = 0; j < lp.top.size(); ++j) {
              Napi::Object t = Napi::Object::New(e);
              t.Set("token", lp.top[j].first);
              t.Set("logprob", lp.top[j].second);
              top.Set(uint32_t(j), t);
            }
            o.Set("top", top);
          }
          return o;
        };
        if (single) return results->empty() || results->back().token < 0 ? e.Undefined() : one(results->size() - 1);
        Napi::Array arr = Napi::Array::New(e, results->size());
        for (size_t i = 0; i < results->size(); ++i) arr.Set(uint32_t(i), one(i));
        return arr;
      },
      std::move(keep));
  unbusy.s = nullptr;  // queued: the worker clears the flag
  return promise;
}

// run(tokens Int32Array, positions Int32Array, logitsStart, out Float32Array|null,
//     sampling {params..., rng}|null) -> Promise<{token, logprob}|undefined>
// The session form: one sequence, each layer's cache one contiguous page; logits for rows
// [logitsStart, T); with sampling, the last row is drawn from on the worker thread.
Napi::Value Program::Run(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    ProgramState& st = live();
    auto in = std::make_shared<StepInput>();
    std::vector<Napi::Value> keep;
    in->tokens = int32s(info[0], "run: tokens");
    in->positions = int32s(info[1], "run: positions");
    const int T = int(in->tokens.size());
    in->seqs.assign(size_t(T), 0);
    in->tables[0] = st.session_tables[0];
    in->tables[1] = st.session_tables[1];
    const int logits_start = info[2].IsNumber() ? info[2].As<Napi::Number>().Int32Value() : T;
    if (logits_start < 0 || logits_start > T) throw invalid_argument("logitsStart must lie in [0, tokens]");
    for (int r = logits_start; r < T; ++r) in->logit_rows.push_back(r);
    size_t floats = 0;
    in->out = out_of(info[3], floats, keep);
    if (info.Length() > 4 && info[4].IsObject()) {
      if (in->logit_rows.empty()) throw invalid_argument("run: sampling needs the logits of the last token (logitsStart < tokens)");
      in->sampling.assign(in->logit_rows.size(), nullptr);
      in->rngs.assign(in->logit_rows.size(), nullptr);
      std::tie(in->sampling.back(), in->rngs.back()) = sampling_of(info[4].As<Napi::Object>(), st.vocab, keep);
      in->top_logprobs.assign(in->logit_rows.size(), -1);
      in->top_logprobs.back() = top_logprobs_of(info[4].As<Napi::Object>());
    }
    st.check(*in, floats);
    return Queue(env, in, std::move(keep), true);
  });
}

// step({tokens, positions, seqs, full: {table, ring, pageSize}, sliding: {...}, logitRows, out,
//       sampling: [({params..., rng}|null) per logit row]}) -> Promise<({token, logprob}|null)[]>
// The engine form: tokens of many sequences in one forward pass, each sequence's KV in pages.
Napi::Value Program::Step(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    ProgramState& st = live();
    if (!info[0].IsObject()) throw invalid_argument("step(args): args must be an object");
    Napi::Object o = info[0].As<Napi::Object>();
    auto in = std::make_shared<StepInput>();
    std::vector<Napi::Value> keep;
    in->tokens = int32s(o.Get("tokens"), "step: tokens");
    in->positions = int32s(o.Get("positions"), "step: positions");
    in->seqs = int32s(o.Get("seqs"), "step: seqs");
    const char* names[2] = {"full", "sliding"};
    for (int i = 0; i < 2; ++i) {
      Napi::Value t = o.Get(names[i]);
      if (!t.IsObject()) throw invalid_argument(std::string("step: ") + names[i] + " page table missing");
      Napi::Object to = t.As<Napi::Object>();
      in->tables[i].table = int32s(to.Get("table"), "step: page table");
      in->tables[i].ring = to.Get("ring").As<Napi::Number>().Int32Value();
      in->tables[i].page_size = to.Get("pageSize").As<Napi::Number>().Int32Value();
    }
    if (!o.Get("logitRows").IsUndefined()) in->logit_rows = int32s(o.Get("logitRows"), "step: logitRows");
    size_t floats = 0;
    in->out = out_of(o.Get("out"), floats, keep);
    Napi::Value sv = o.Get("sampling");
    if (sv.IsArray()) {
      Napi::Array arr = sv.As<Napi::Array>();
      if (arr.Length() != in->logit_rows.size()) throw invalid_argument("step: sampling needs one entry per logit row");
      in->sampling.assign(arr.Length(), nullptr);
      in->rngs.assign(arr.Length(), nullptr);
      in->top_logprobs.assign(arr.Length(), -1);
      for (uint32_t i = 0; i < arr.Length(); ++i)
        if (arr.Get(i).IsObject()) {
          std::tie(in->sampling[i], in->rngs[i]) = sampling_of(arr.Get(i).As<Napi::Object>(), st.vocab, keep);
          in->top_logprobs[i] = top_logprobs_of(arr.Get(i).As<Napi::Object>());
        }
    }
    st.check(*in, floats);
    return Queue(env, in, std::move(keep), false);
  });
}

// readBuffer(id) -> Uint8Array copy; writeBuffer(id, Uint8Array). For op tests and debugging.
Napi::Value Program::ReadBuffer(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    ProgramState& st = live();
    if (st.running) throw Error("ERR_BUSY", "a step is running on this session");
    const int id = info[0].As<Napi::Number>().Int32Value();
    if (id < 0 || size_t(id) >= st.buffers.size()) throw invalid_argument("no such buffer");
    const Buffer& b = st.buffers[size_t(id)];
    Napi::Uint8Array out = Napi::Uint8Array::New(info.Env(), b.bytes());
    std::memcpy(out.Data(), b.data, b.bytes());
    return out;
  });
}

Napi::Value Program::WriteBuffer(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    ProgramState& st = live();
    if (st.running) throw Error("ERR_BUSY", "a step is running on this session");
    const int id = info[0].As<Napi::Number>().Int32Value();
    if (id < 0 || size_t(id) >= st.buffers.size()) throw invalid_argument("no such buffer");
    if (!info[1].IsTypedArray()) throw invalid_argument("writeBuffer(id, bytes): bytes must be a typed array");
    Napi::TypedArray src = info[1].As<Napi::TypedArray>();
    const Buffer& b = st.buffers[size_t(id)];
    if (src.ByteLength() != b.bytes()) throw invalid_argument("writeBuffer: size mismatch");
    std::memcpy(b.data, static_cast<uint8_t*>(src.ArrayBuffer().Data()) + src.ByteOffset(), b.bytes());
    return info.Env().Undefined();
  });
}

Napi::Value Program::Dispose(const Napi::CallbackInfo& info) {
  if (state_) {
    state_.reset();  // an in-flight step keeps its own reference and frees the buffers when done
    Napi::MemoryManagement::AdjustExternalMemory(info.Env(), -reported_);
    reported_ = 0;
  }
  return info.Env().Undefined();
}

Napi::Value Program::Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !state_); }

Napi::Value Program::Vocab(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), state_ ? state_->vocab : 0);
}

}  // namespace gptoss
