// A recorded step: the list of ops lib/graph.ts built for a model, the activation buffers they
// use and the session's KV cache buffers. run() replays the whole list on the worker pool in one
// N-API call (DESIGN.md, "No per-op crossing in the hot loop").
#pragma once
#include <napi.h>

#include <atomic>
#include <climits>
#include <cstdlib>
#include <memory>
#include <vector>

#include "kernels/common.h"
#include "kernels/rope.h"
#include "kernels/sample.h"
#include "native/weights.h"

namespace gptoss {

enum class OpKind { Embed, Rmsnorm, MatmulBf16, Rope, KvAppend, Attention, RouterTopk, MoeMxfp4, MoeCombine };

struct Op {
  OpKind kind;
  int x = -1, y = -1, xcol = 0, ycol = 0;         // buffers; y = -1 on a matmul: the logits output
  int w = -1, b = -1;                             // weights
  int w1b = -1, w1s = -1, b1 = -1, w2b = -1, w2s = -1, b2 = -1;
  int kc = -1, vc = -1, idx = -1, wt = -1;        // buffers
  bool logits_rows = false;                       // only rows [logitsStart, T)
  bool accumulate = false;
  int N = 0, K = 0, H = 0, I = 0, E = 0, k = 0, q_heads = 0, kv_heads = 0, head_dim = 0, window = 0;
  int vcol = 0;
  float eps = 1e-5f, limit = 7.f, alpha = 1.702f, scale = 0.125f;
};

struct Buffer {
  DType dtype;
  int rows, cols;
  void* data = nullptr;
  size_t bytes() const { return size_t(rows) * cols * dtype_size(dtype); }
};

// A layer type's page table for one step (kv_pages.h).
struct KvTable {
  std::vector<int32_t> table;  // [S, ring]
  int ring = 1, page_size = 0;
};

// Everything one step reads besides the program: the tokens of one or many sequences, where each
// sequence's KV pages are, which rows want logits, and how to sample each of those.
struct StepInput {
  std::vector<int32_t> tokens, positions, seqs, logit_rows;
  KvTable tables[2];  // [0] full-attention layers, [1] sliding-window layers
  float* out = nullptr;  // [logit_rows, vocab]
  std::vector<std::shared_ptr<SampleParams>> sampling;  // per logit row; null = no draw
  std::vector<uint64_t*> rngs;
  std::vector<int> top_logprobs;  // per logit row: -1 = no logprobs, else how many alternatives
};

struct ProgramState {
  std::shared_ptr<WeightStore> weights;
  std::vector<Buffer> buffers;
  std::vector<Op> ops;
  std::vector<const uint8_t*> weight_ptrs;  // tensor id -> bytes, fixed at construction
  // Per layer type ([0] full attention, [1] sliding window), fixed at construction: whether the
  // model has it, the smallest KV pool among its layers, its widest window, and the page tables a
  // session (one sequence, one contiguous page per layer) steps with.
  struct KvLayers {
    bool present = false;
    int64_t pool_rows = INT64_MAX;
    int window = 0;
  } kv_layers[2];
  KvTable session_tables[2];
  RopeTable rope;
  int max_tokens = 0, vocab = 0;
  std::atomic<bool> running{false};
  // GPTOSS_PROFILE=1: time per op kind, printed to stderr when the session is freed.
  bool profile_enabled = std::getenv("GPTOSS_PROFILE") != nullptr;
  int profile_runs = 0;
  std::vector<double> profile_seconds = std::vector<double>(9, 0.0);
  ~ProgramState();
  // Checks a step against the program (token ids, page tables, cache capacities): throws a typed
  // error and changes nothing when the step would read or write outside its memory.
  void check(const StepInput& in, size_t out_floats) const;
  void run(const StepInput& in);
};

class Program : public Napi::ObjectWrap<Program> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit Program(const Napi::CallbackInfo& info);

 private:
  Napi::Value Run(const Napi::CallbackInfo& info);
  Napi::Value Step(const Napi::CallbackInfo& info);
  Napi::Value Queue(Napi::Env env, std::shared_ptr<StepInput> in, std::vector<Napi::Value> keep, bool single);
  Napi::Value ReadBuffer(const Napi::CallbackInfo& info);
  Napi::Value WriteBuffer(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  Napi::Value Vocab(const Napi::CallbackInfo& info);
  ProgramState& live();

  std::shared_ptr<ProgramState> state_;
  int64_t reported_ = 0;
};

}  // namespace gptoss
