#include "native/program.h"

#include <cstring>
#include <string>
#include <tuple>

#include "native/errors.h"
#include "native/js.h"
#include "native/sampler.h"
#include "native/weights.h"

namespace gptoss {
namespace {

// Reads an op's fields from its JS object (kernels/op.h): required fields must be there,
// optional ones may be absent, and keys the op does not have are refused (a misspelled field
// must not fall back to a default).
struct OpReader {
  Napi::Object o;
  std::string where;  // "op 3 (rmsnorm)"
  std::vector<std::string> seen{"op"};

  Napi::Value get(const char* name, bool required) {
    seen.push_back(name);
    Napi::Value v = o.Get(name);
    if (required && v.IsUndefined()) throw invalid_argument(where + ": missing field " + name);
    return v;
  }
  std::string path(const char* name) const { return where + ": " + name; }
  void read(const char* name, Buf& b, bool req) {
    Napi::Value v = get(name, req);
    if (!v.IsUndefined()) b.id = id(v, name);
  }
  void read(const char* name, Kv& b, bool req) {
    Napi::Value v = get(name, req);
    if (!v.IsUndefined()) b.id = id(v, name);
  }
  void read(const char* name, Weight& b, bool req) {
    Napi::Value v = get(name, req);
    if (!v.IsUndefined()) b.id = id(v, name);
  }
  void read(const char* name, int& x, bool req) {
    Napi::Value v = get(name, req);
    if (!v.IsUndefined()) x = js::int32(v, path(name));
  }
  void read(const char* name, float& x, bool req) {
    Napi::Value v = get(name, req);
    if (!v.IsUndefined()) x = js::float32(v, path(name));
  }
  void read(const char* name, bool& x, bool req) {
    Napi::Value v = get(name, req);
    if (!v.IsUndefined()) x = js::boolean(v, path(name));
  }
  int id(const Napi::Value& v, const char* name) {
    const int i = js::int32(v, path(name));
    if (i < 0) throw invalid_argument(path(name) + " must be a buffer or weight id (>= 0), got " + std::to_string(i));
    return i;
  }
  template <class T> void operator()(const char* name, T& x) { read(name, x, true); }
  template <class T> void opt(const char* name, T& x) { read(name, x, false); }
};

AnyOp parse_op(const Napi::Value& v, uint32_t index) {
  const std::string at = "op " + std::to_string(index);
  Napi::Object o = js::object(v, at);
  const std::string name = js::string(o.Get("op"), at + ": op");
  AnyOp op = make_op(name);
  if (std::holds_alternative<std::monostate>(op)) throw invalid_argument(at + ": unknown op '" + name + "'");
  OpReader r{o, at + " (" + name + ")"};
  std::visit([&](auto& x) {
    if constexpr (!std::is_same_v<std::decay_t<decltype(x)>, std::monostate>) x.fields(r);
  }, op);
  const std::string extra = js::unknown_keys(o, r.seen);
  if (!extra.empty()) throw invalid_argument(r.where + ": unknown field(s) " + extra);
  return op;
}

DType parse_dtype(const std::string& s, const std::string& what) {
  if (s == "f32") return DType::F32;
  if (s == "bf16") return DType::BF16;
  if (s == "i32") return DType::I32;
  throw invalid_argument(what + " must be f32, bf16 or i32, got '" + s + "'");
}

// {device, precision, maxTokens, maxLogitRows?, maxContext, rope: {...}, buffers: [{dtype, rows, cols}], ops: [...]}
ProgramSpec parse_spec(const Napi::Value& v) {
  Napi::Object spec = js::object(v, "Program(weights, spec): spec");
  const std::string extra =
      js::unknown_keys(spec, {"device", "precision", "maxTokens", "maxLogitRows", "maxContext", "rope", "buffers", "ops"});
  if (!extra.empty()) throw invalid_argument("Program spec: unknown key(s) " + extra);
  ProgramSpec p;
  p.device = js::string(spec.Get("device"), "spec.device");
  const std::string precision = js::string(spec.Get("precision"), "spec.precision");
  if (precision != "default" && precision != "fp32")
    throw invalid_argument("spec.precision must be 'default' or 'fp32', got '" + precision + "'");
  p.exact = precision == "fp32";
  p.max_tokens = js::int32(spec.Get("maxTokens"), "spec.maxTokens");
  if (!spec.Get("maxLogitRows").IsUndefined()) {
    p.max_logit_rows = js::int32(spec.Get("maxLogitRows"), "spec.maxLogitRows");
    if (p.max_logit_rows < 1 || p.max_logit_rows > p.max_tokens)
      throw invalid_argument("spec.maxLogitRows must lie in [1, maxTokens], got " + std::to_string(p.max_logit_rows));
  }
  p.max_context = js::int32(spec.Get("maxContext"), "spec.maxContext");
  Napi::Object rope = js::object(spec.Get("rope"), "spec.rope");
  p.rope.theta = js::number(rope.Get("theta"), "spec.rope.theta");
  p.rope.factor = js::number(rope.Get("factor"), "spec.rope.factor");
  p.rope.ntk_alpha = js::number(rope.Get("ntkAlpha"), "spec.rope.ntkAlpha");
  p.rope.ntk_beta = js::number(rope.Get("ntkBeta"), "spec.rope.ntkBeta");
  p.rope.initial_context = js::int32(rope.Get("initialContext"), "spec.rope.initialContext");
  p.rope.head_dim = js::int32(rope.Get("headDim"), "spec.rope.headDim");
  if (!(p.rope.theta > 1) || !(p.rope.factor >= 1) || p.rope.initial_context < 1 || p.rope.head_dim < 2 || p.rope.head_dim % 2)
    throw invalid_argument("spec.rope: theta > 1, factor >= 1, initialContext >= 1 and an even headDim >= 2 are needed");
  Napi::Array bufs = js::array(spec.Get("buffers"), "spec.buffers");
  for (uint32_t i = 0; i < bufs.Length(); ++i) {
    const std::string at = "spec.buffers[" + std::to_string(i) + "]";
    Napi::Object b = js::object(bufs.Get(i), at);
    p.buffers.push_back({parse_dtype(js::string(b.Get("dtype"), at + ".dtype"), at + ".dtype"), js::int32(b.Get("rows"), at + ".rows"),
                         js::int32(b.Get("cols"), at + ".cols")});
  }
  Napi::Array ops = js::array(spec.Get("ops"), "spec.ops");
  for (uint32_t i = 0; i < ops.Length(); ++i) p.ops.push_back(parse_op(ops.Get(i), i));
  return p;
}

// {params..., rng: BigUint64Array(1)} -> parsed params and the state to advance.
std::pair<std::shared_ptr<SampleParams>, uint64_t*> sampling_of(Napi::Object so, int vocab, std::vector<Napi::Value>& keep) {
  auto params = std::make_shared<SampleParams>(parse_sample_params(so, vocab));
  Napi::Value r = so.Get("rng");
  if (!r.IsTypedArray() || r.As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array ||
      r.As<Napi::TypedArray>().ElementLength() < 1)
    throw invalid_argument("sampling.rng must be a BigUint64Array holding one 64-bit state");
  keep.push_back(r);
  return {params, r.As<Napi::TypedArrayOf<uint64_t>>().Data()};
}

// sampling.topLogprobs: -1 (or absent) for none, else 0..20 alternatives with the model's logprob.
int top_logprobs_of(Napi::Object so) {
  Napi::Value v = so.Get("topLogprobs");
  if (v.IsUndefined()) return -1;
  const int n = js::int32(v, "sampling.topLogprobs");
  if (n < -1 || n > 20) throw invalid_argument("sampling.topLogprobs must lie in [-1, 20]");
  return n;
}

Napi::Value row_value(Napi::Env e, const RowResult& r) {
  if (!r.error_code.empty()) {
    Napi::Object o = Napi::Object::New(e);
    o.Set("error", make_js_error(e, r.error_code, r.error_message).Value());
    return o;
  }
  if (!r.sampled) return e.Null();
  Napi::Object o = Napi::Object::New(e);
  o.Set("token", r.draw.token);
  o.Set("logprob", r.draw.logprob);
  if (r.has_logprobs) {
    o.Set("modelLogprob", r.logprobs.logprob);
    Napi::Array top = Napi::Array::New(e, r.logprobs.top.size());
    for (size_t j = 0; j < r.logprobs.top.size(); ++j) {
      Napi::Object t = Napi::Object::New(e);
      t.Set("token", r.logprobs.top[j].first);
      t.Set("logprob", r.logprobs.top[j].second);
      top.Set(uint32_t(j), t);
    }
    o.Set("top", top);
  }
  return o;
}

}  // namespace

Napi::Function Program::Init(Napi::Env env) {
  Napi::Function f = DefineClass(env, "Program", {
      InstanceMethod("step", &Program::Step),
      InstanceMethod("readBuffer", &Program::ReadBuffer),
      InstanceMethod("writeBuffer", &Program::WriteBuffer),
      InstanceMethod("dispose", &Program::Dispose),
      InstanceAccessor("disposed", &Program::Disposed, nullptr),
      InstanceAccessor("vocab", &Program::Vocab, nullptr),
      InstanceAccessor("memory", &Program::Memory, nullptr),
      InstanceAccessor("transfers", &Program::Transfers, nullptr),
  });
  env.GetInstanceData<AddonData>()->program_ctor = Napi::Persistent(f);
  return f;
}

// new Program(weights, spec): validates every op against its contract and the device's limits,
// then allocates the arena and the KV pools on the device.
Program::Program(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Program>(info) {
  Napi::Env env = info.Env();
  guarded(env, [&]() -> Napi::Value {
    Weights* w = Weights::Unwrap(info[0]);
    if (!w->store()) throw Error("ERR_DISPOSED", "the model's weights were disposed");
    const ProgramSpec spec = parse_spec(info[1]);
    state_ = std::make_shared<ProgramState>(spec, w->store(), backend_for(spec.device));
    reported_ = int64_t(state_->memory().total());
    Napi::MemoryManagement::AdjustExternalMemory(env, reported_);
    return env.Undefined();
  });
}

ProgramState& Program::live() {
  if (!state_) throw Error("ERR_DISPOSED", "this program was disposed");
  return *state_;
}

ProgramState& Program::idle() {
  ProgramState& st = live();
  if (st.running) throw Error("ERR_BUSY", "a step is running on this program");
  return st;
}

// step({tokens, positions, seqs, full: {table, ring, pageSize}, sliding: {...}, logitRows, out,
//       sampling: [({params..., rng}|null) per logit row]}) -> Promise<(draw|{error}|null)[]>
// The tokens of one or many sequences in one forward pass, each sequence's KV in pages; the
// logits of logitRows into out (null: not returned, and a device backend samples without copying
// whole rows back); a draw per sampled row on the worker thread. A row's sampling
// failure fails that row alone (its {error}); the other rows keep their draws.
Napi::Value Program::Step(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    ProgramState& st = live();
    Napi::Object o = js::object(info[0], "step(args): args");
    const std::string extra = js::unknown_keys(o, {"tokens", "positions", "seqs", "full", "sliding", "logitRows", "out", "sampling"});
    if (!extra.empty()) throw invalid_argument("step: unknown key(s) " + extra);
    auto in = std::make_shared<StepInput>();
    std::vector<Napi::Value> keep;
    in->tokens = js::int32s(o.Get("tokens"), "step: tokens");
    in->positions = js::int32s(o.Get("positions"), "step: positions");
    in->seqs = js::int32s(o.Get("seqs"), "step: seqs");
    const char* names[2] = {"full", "sliding"};
    for (int i = 0; i < 2; ++i) {
      const std::string at = std::string("step: ") + names[i];
      Napi::Object to = js::object(o.Get(names[i]), at);
      in->tables[i].table = js::int32s(to.Get("table"), at + ".table");
      in->tables[i].ring = js::int32(to.Get("ring"), at + ".ring");
      in->tables[i].page_size = js::int32(to.Get("pageSize"), at + ".pageSize");
    }
    in->logit_rows = js::int32s(o.Get("logitRows"), "step: logitRows");
    Napi::Value out = o.Get("out");
    if (!out.IsNull() && !out.IsUndefined()) {
      if (!out.IsTypedArray() || out.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
        throw invalid_argument("step: out must be a Float32Array or null, got " + js::type_of(out));
      auto f = out.As<Napi::Float32Array>();
      in->out = f.Data();
      in->out_floats = f.ElementLength();
      keep.push_back(f);
    }
    Napi::Value sv = o.Get("sampling");
    if (!sv.IsUndefined()) {
      Napi::Array arr = js::array(sv, "step: sampling");
      if (arr.Length() != in->logit_rows.size()) throw invalid_argument("step: sampling needs one entry per logit row");
      in->sampling.assign(arr.Length(), nullptr);
      in->rngs.assign(arr.Length(), nullptr);
      in->top_logprobs.assign(arr.Length(), -1);
      for (uint32_t i = 0; i < arr.Length(); ++i) {
        Napi::Value s = arr.Get(i);
        if (s.IsNull()) continue;
        Napi::Object so = js::object(s, "step: sampling[" + std::to_string(i) + "]");
        std::tie(in->sampling[i], in->rngs[i]) = sampling_of(so, st.vocab(), keep);
        in->top_logprobs[i] = top_logprobs_of(so);
      }
    }
    st.check(*in);

    if (st.running.exchange(true)) throw Error("ERR_BUSY", "a step is already running on this program");
    struct Unbusy {  // until the work is queued, a throw must clear the flag again
      ProgramState* s;
      ~Unbusy() {
        if (s) s->running.store(false);
      }
    } unbusy{&st};
    auto state = state_;
    auto results = std::make_shared<std::vector<RowResult>>();
    Napi::Value promise = run_async(
        env,
        [state, in, results]() {
          struct Clear {
            ProgramState& s;
            ~Clear() { s.running.store(false); }
          } clear{*state};
          *results = state->step(*in);
        },
        [results](Napi::Env e) -> Napi::Value {
          Napi::Array arr = Napi::Array::New(e, results->size());
          for (size_t i = 0; i < results->size(); ++i) arr.Set(uint32_t(i), row_value(e, (*results)[i]));
          return arr;
        },
        std::move(keep));
    unbusy.s = nullptr;  // queued: the worker clears the flag
    return promise;
  });
}

// readBuffer(id) -> Uint8Array copy; writeBuffer(id, bytes). For op tests and debugging.
Napi::Value Program::ReadBuffer(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    ProgramState& st = idle();
    const int id = js::int32(info[0], "readBuffer(id): id");
    const BufferView& b = st.buffer(id);
    Napi::Uint8Array out = Napi::Uint8Array::New(info.Env(), b.bytes());
    st.read(id, out.Data());
    return out;
  });
}

Napi::Value Program::WriteBuffer(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    ProgramState& st = idle();
    const int id = js::int32(info[0], "writeBuffer(id, bytes): id");
    if (!info[1].IsTypedArray()) throw invalid_argument("writeBuffer(id, bytes): bytes must be a typed array");
    Napi::TypedArray src = info[1].As<Napi::TypedArray>();
    st.write(id, static_cast<uint8_t*>(src.ArrayBuffer().Data()) + src.ByteOffset(), src.ByteLength());
    return info.Env().Undefined();
  });
}

Napi::Value Program::Dispose(const Napi::CallbackInfo& info) {
  if (state_) {
    state_.reset();  // an in-flight step keeps its own reference and frees the memory when done
    Napi::MemoryManagement::AdjustExternalMemory(info.Env(), -reported_);
    reported_ = 0;
  }
  return info.Env().Undefined();
}

Napi::Value Program::Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !state_); }

Napi::Value Program::Vocab(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), state_ ? state_->vocab() : 0);
}

namespace {
Napi::Object memory_value(Napi::Env env, const std::string& device, const ProgramMemory& m) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("device", device);
  o.Set("activations", double(m.activations));
  o.Set("scratch", double(m.scratch));
  o.Set("logits", double(m.logits));
  o.Set("kv", double(m.kv));
  o.Set("runner", double(m.runner));
  o.Set("arena", double(m.arena()));
  o.Set("total", double(m.total()));
  return o;
}

// planMemory(spec, vocab) -> what new Program(weights, spec) would hold, without allocating
// (lib/engine/memory.ts's estimate; `gptoss inspect`).
Napi::Value PlanMemory(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const ProgramSpec spec = parse_spec(info[0]);
    const int vocab = js::int32(info[1], "planMemory(spec, vocab): vocab");
    const auto backend = backend_for(spec.device);
    return memory_value(info.Env(), spec.device, plan_memory(spec, *backend, vocab));
  });
}
}  // namespace

// memory -> {device, activations, scratch, logits, kv, runner, arena, total} in bytes (0s once disposed).
Napi::Value Program::Memory(const Napi::CallbackInfo& info) {
  return memory_value(info.Env(), state_ ? state_->backend().name() : "", state_ ? state_->memory() : ProgramMemory{});
}

// transfers -> {logitBytes, resultBytes, deviceRows, stepLaunches}: what crossed from the device to
// the host for sampling over the program's steps, and the kernel launches (graph nodes) of the last
// step (zeros on the CPU and once disposed).
Napi::Value Program::Transfers(const Napi::CallbackInfo& info) {
  const StepRunner::Transfers t = state_ ? state_->transfers() : StepRunner::Transfers{};
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("logitBytes", double(t.logit_bytes));
  o.Set("resultBytes", double(t.result_bytes));
  o.Set("deviceRows", double(t.device_rows));
  o.Set("stepLaunches", double(t.step_launches));
  return o;
}

namespace {
// Describes an op's fields for JS: [{name, kind, optional}].
struct FieldLister {
  Napi::Env env;
  Napi::Array out;
  template <class T> void add(const char* name, bool optional) {
    Napi::Object f = Napi::Object::New(env);
    f.Set("name", name);
    f.Set("kind", field_kind_name(field_kind<T>()));
    f.Set("optional", optional);
    out.Set(out.Length(), f);
  }
  template <class T> void operator()(const char* name, T&) { add<T>(name, false); }
  template <class T> void opt(const char* name, T&) { add<T>(name, true); }
};
}  // namespace

Napi::Object op_registry_exports(Napi::Env env, Napi::Object exports) {
  Napi::Object ops = Napi::Object::New(env);
  for_each_op([&](const char* name, auto op) {
    FieldLister l{env, Napi::Array::New(env)};
    op.fields(l);
    ops.Set(name, l.out);
  });
  exports.Set("ops", ops);
  exports.Set("planMemory", Napi::Function::New(env, PlanMemory));
  Napi::Array devices = Napi::Array::New(env);
  Napi::Object device_ops = Napi::Object::New(env);
  for (const std::string& d : built_devices()) {
    devices.Set(devices.Length(), d);
    Napi::Array ops = Napi::Array::New(env);
    for (const std::string& op : gptoss::device_ops(d)) ops.Set(ops.Length(), op);
    device_ops.Set(d, ops);
  }
  exports.Set("devices", devices);
  exports.Set("deviceOps", device_ops);
  return exports;
}

}  // namespace gptoss
