// A recorded step: the list of ops lib/engine/graph.ts built for a model, the activation buffers they
// use and the KV pools they keep. step() replays the whole list on the program's backend in one
// call from the worker thread (native/DESIGN.md, "No per-op crossing in the hot loop"). Plain C++:
// the N-API boundary (native/program.cc) parses into a ProgramSpec and a StepInput and calls here.
//
// Memory: one arena per program, allocated when it is built, holds every activation buffer and
// the largest scratch any op (or the sampler) needs; each KV pool is an allocation of its own.
// Addresses never change after construction (as CUDA graph capture needs).
#pragma once
#include <atomic>
#include <climits>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "kernels/rope.h"
#include "kernels/sample.h"
#include "native/runtime/backend.h"
#include "native/runtime/weights.h"

namespace gptoss {

struct BufferSpec {
  DType dtype;
  int rows, cols;
};

struct ProgramSpec {
  std::string device;
  int max_tokens = 0;
  // Logit rows a step may ask for (0: max_tokens): the device logits' rows in the arena (an
  // engine's steps want one per sequence, however many prompt tokens they carry).
  int max_logit_rows = 0;
  int64_t max_context = 0;  // every position of a step is below this
  bool exact = true;        // precision 'fp32' (ScratchPlan::exact)
  RopeParams rope;
  std::vector<BufferSpec> buffers;
  std::vector<AnyOp> ops;
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
  KvTable tables[2];     // [0] full-attention layers, [1] sliding-window layers
  // [logit_rows, vocab], host memory; null: logits not returned (a backend with device sampling
  // then draws without copying whole rows back; StepRunner::reduce_rows)
  float* out = nullptr;
  size_t out_floats = 0;
  std::vector<std::shared_ptr<SampleParams>> sampling;  // per logit row; null = no draw
  std::vector<uint64_t*> rngs;
  std::vector<int> top_logprobs;  // per logit row: -1 = no logprobs, else how many alternatives
};

// What a step gives back per logit row: a draw, or the error that row's draw raised (the other
// rows keep theirs).
struct RowResult {
  bool sampled = false;
  SampleResult draw{-1, 0.f};
  bool has_logprobs = false;
  TokenLogprobs logprobs;
  std::string error_code, error_message;
};

struct ProgramMemory {
  size_t activations = 0;  // activation buffers in the arena
  size_t scratch = 0;      // the arena's scratch region (the largest op's or the sampler's)
  size_t logits = 0;       // the step's logits in the backend's memory
  size_t kv = 0;           // KV pools
  size_t runner = 0;       // the backend's own buffers beside the arena (CUDA: the device sampler's), at most
  size_t arena() const { return activations + scratch + logits + runner; }
  size_t total() const { return arena() + kv; }
};

// Which buffers of a spec are KV pools: those an op names in a Kv field.
std::vector<bool> kv_pools(const ProgramSpec& spec);
// What a program built from `spec` will hold on `backend`, before anything is allocated (its
// logits have `vocab` columns). The program allocates exactly this.
ProgramMemory plan_memory(const ProgramSpec& spec, const Backend& backend, int vocab);

class ProgramState {
 public:
  // Validates every op against its contract and the backend's limits, then allocates.
  ProgramState(const ProgramSpec& spec, std::shared_ptr<WeightStore> weights, std::shared_ptr<Backend> backend);
  ~ProgramState();
  ProgramState(const ProgramState&) = delete;
  ProgramState& operator=(const ProgramState&) = delete;

  // Checks a step against the program (token ids, positions, page tables, cache capacities):
  // throws a typed error and changes nothing when the step would read or write outside memory.
  void check(const StepInput& in) const;
  // Runs a checked step; one RowResult per logit row.
  std::vector<RowResult> step(const StepInput& in);

  int vocab() const { return vocab_; }
  const ProgramMemory& memory() const { return memory_; }
  // What crossed from the device to the host for sampling (zeros on the CPU).
  StepRunner::Transfers transfers() const { return runner_ ? runner_->transfers() : StepRunner::Transfers{}; }
  const Backend& backend() const { return *backend_; }
  size_t buffer_count() const { return buffers_.size(); }
  const BufferView& buffer(int id) const;
  // Host <-> buffer copies (tests and debugging); the caller ensures no step is running.
  void read(int id, void* dst) const;
  void write(int id, const void* src, size_t bytes);

  std::atomic<bool> running{false};

 private:
  std::shared_ptr<Backend> backend_;
  std::shared_ptr<const DeviceWeights> weights_;
  std::vector<BufferView> buffers_;
  std::vector<AnyOp> ops_;
  std::vector<bool> is_pool_;
  std::vector<bool> logits_only_;  // per op: works on the logit rows only
  std::vector<std::pair<void*, size_t>> pools_;  // KV pools and their bytes
  uint8_t* arena_ = nullptr;
  uint8_t* scratch_ = nullptr;
  float* logits_ = nullptr;  // [max_logit_rows, vocab] on a backend whose memory the host cannot read
  // On such a backend: its runner (stream, step inputs, graphs) and the sampler's host scratch.
  std::unique_ptr<StepRunner> runner_;
  std::unique_ptr<uint8_t, void (*)(void*)> host_scratch_{nullptr, std::free};
  std::vector<float> host_row_;     // a row copied back alone (steps without `out`, off the host)
  std::vector<float> host_logits_;  // the logits of a step without `out` on the host (grows)
  ProgramMemory memory_;
  // Per layer type ([0] full attention, [1] sliding window): whether the model has it and the
  // smallest KV pool among its layers.
  struct KvLayers {
    bool present = false;
    int64_t pool_rows = INT64_MAX;
    int window = 0;
  } kv_layers_[2];
  RopeTable rope_;
  int max_tokens_ = 0, max_logit_rows_ = 0, vocab_ = 0;
  int64_t max_context_ = 0;
  bool exact_ = true;
  // GPTOSS_PROFILE=1: time per op kind, printed to stderr when the program is freed.
  bool profile_enabled_ = std::getenv("GPTOSS_PROFILE") != nullptr;
  int profile_runs_ = 0;
  double profile_seconds_[kOpCount] = {};
};

// How an op's fields are visited (kernels/op.h): FieldKind names the JS-side type of each.
enum class FieldKind { Buffer, Kv, Weight, Int, Float, Flag };
inline const char* field_kind_name(FieldKind k) {
  static const char* names[] = {"buffer", "kv", "weight", "int", "float", "flag"};
  return names[int(k)];
}
template <class T> constexpr FieldKind field_kind();
template <> constexpr FieldKind field_kind<Buf>() { return FieldKind::Buffer; }
template <> constexpr FieldKind field_kind<Kv>() { return FieldKind::Kv; }
template <> constexpr FieldKind field_kind<Weight>() { return FieldKind::Weight; }
template <> constexpr FieldKind field_kind<int>() { return FieldKind::Int; }
template <> constexpr FieldKind field_kind<float>() { return FieldKind::Float; }
template <> constexpr FieldKind field_kind<bool>() { return FieldKind::Flag; }

}  // namespace gptoss
