// The seam between a program and the hardware it runs on. A program (program.h) owns no device
// memory of its own and calls no kernel directly: it asks its backend to allocate its arena and
// KV pools, to make the model's weights available in the backend's memory and layouts, to run
// each op, to sample, and to synchronise. The CPU backend (native/cpu/backend.cc) is the first
// implementation and the reference; a CUDA backend is another folder beside it.
//
// Threading: one program step at a time per program (the program's busy flag); a backend may
// serve several programs, each from its own libuv thread.
#pragma once
#include <atomic>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "kernels/sample.h"
#include "native/runtime/weights.h"

namespace gptoss {

// The model's tensors as one backend reads them: a pointer per weight id, in the backend's
// memory, repacked into its layouts where it has its own. Keeps the host store alive (the CPU
// backend points into it).
struct DeviceWeights {
  std::shared_ptr<WeightStore> host;
  std::vector<const uint8_t*> ptrs;  // weight id -> bytes
  size_t device_bytes = 0;           // copies this backend made (0 on the CPU: host views)
  std::shared_ptr<void> device;      // owns those copies (null on the CPU)
};

// A program's state on a backend whose ops run off the host (a GPU): its stream, the step's
// inputs in device memory, captured graphs. The CPU has none (ProgramState runs its ops in line).
class StepRunner {
 public:
  virtual ~StepRunner() = default;
  // Runs one step's ops in order, skipping those marked logits-only when ctx.L == 0. In `ctx`,
  // tokens, positions, logit_rows and the page tables are host memory (the runner copies them to
  // the device); buffers, weights, logits and scratch are the backend's memory. The L logit rows
  // end in `out` (host, [L, vocab]) when it is given.
  virtual void step(const std::vector<AnyOp>& ops, const std::vector<bool>& logits_only, const StepContext& ctx, int vocab, float* out) = 0;

  // Sampling without the whole logits (issue #17). After a step() given no `out` (the caller did
  // not ask for the logits), the program draws its rows through these two calls instead of copying
  // all L rows back: reduce_rows() once, with per logit row the parameters of a draw the runner may
  // do on the device (null: not drawn there, e.g. no draw or top logprobs wanted, which read the
  // full row); then finish_row() for each row to draw, which either completes the draw from what
  // the device reduction copied back (true: *res and *rng exactly as the host sampler on the full
  // row) or copies that row alone into `row` (host, vocab floats; false: the caller samples it on
  // the host, rng untouched). The default reduces nothing; a runner must still copy rows.
  virtual void reduce_rows(const std::vector<const SampleParams*>& /*params*/, int /*vocab*/) {}
  virtual bool finish_row(int i, const SampleParams* p, uint64_t* rng, SampleResult* res, float* row, int vocab) = 0;
  // What crossed back to the host for sampling, in total over the runner's steps.
  struct Transfers {
    uint64_t logit_bytes = 0;   // raw logit rows (the whole step's with `out`, single rows otherwise)
    uint64_t result_bytes = 0;  // the device reductions' results (per row outputs, candidates)
    uint64_t device_rows = 0;   // rows drawn from a device reduction
    uint64_t step_launches = 0;  // kernel launches of the last step (a fused launch counts once)
  };
  virtual Transfers transfers() const { return {}; }
};

struct MemoryReport {
  size_t allocated = 0;  // bytes this backend holds for programs (arenas, KV pools)
  size_t weights = 0;    // bytes of weight copies it made
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  // The limits of this backend's implementation of each op (kernels/<op>.h).
  virtual const OpLimits& limits() const = 0;
  // Whether the host reads this backend's memory directly (the CPU): the logits are then
  // written straight into the caller's output.
  virtual bool host_memory() const = 0;
  // Worker threads an op may use, the caller included (sizes per-thread scratch).
  virtual int threads() const = 0;

  // Device memory, 2 MiB or 64-byte aligned; throws ERR_OUT_OF_MEMORY naming `what`.
  virtual void* allocate(size_t bytes, const std::string& what) = 0;
  virtual void release(void* p, size_t bytes) = 0;
  virtual void zero(void* p, size_t bytes) = 0;
  // Copies between host memory and this backend's memory (plain copies on the CPU).
  virtual void upload(void* dst, const void* src, size_t bytes) = 0;
  virtual void download(void* dst, const void* src, size_t bytes) = 0;

  // The weights of a store in this backend's memory, repacked into its layouts; the tensor
  // table is snapshotted (the store may grow later; tensors never move).
  virtual std::shared_ptr<const DeviceWeights> upload_weights(const std::shared_ptr<WeightStore>& store) = 0;

  // Scratch an op needs from the arena when it runs under `plan` on this backend.
  virtual size_t scratch_bytes(const AnyOp& op, const ScratchPlan& plan) const = 0;
  // Runs one op of a step (on a GPU: enqueues it on the program's stream).
  virtual void run(const AnyOp& op, const StepContext& ctx) = 0;
  // Waits until every op queued so far has finished (a no-op on the CPU, which runs them in line).
  virtual void synchronize() = 0;

  // Draws from one row of logits (row is not modified); with top >= 0 also the model's own
  // log-probabilities. Scratch: sample_scratch_bytes(V) + V floats. By default the row is in host
  // memory and the CPU sampler draws (both backends today: the CUDA one copies its rows back).
  virtual SampleResult sample(const float* row, int V, const SampleParams& p, uint64_t* rng, uint8_t* scratch);
  virtual TokenLogprobs logprobs(const float* row, int V, int32_t token, int top, uint8_t* scratch);
  static size_t sample_scratch(int V) { return sample_scratch_bytes(V) + align64(size_t(V) * 4); }

  virtual MemoryReport memory() const = 0;

  // ERR_UNSUPPORTED naming the op when this backend has no implementation of it (checked when a
  // program is built, never a silent fallback to another device).
  virtual void check_supported(const AnyOp&) const {}
  // The program's runner on a backend that has one (null: ops run in line through run()).
  virtual std::unique_ptr<StepRunner> runner(const ScratchPlan&, size_t /*logits_bytes*/) { return nullptr; }
  // The most device memory a program's runner holds besides its arena (for logits of `vocab`
  // columns): counted in the program's memory plan, so a model that cannot hold it is refused.
  virtual size_t runner_bytes(const ScratchPlan&, int /*vocab*/) const { return 0; }
};

// The backend for a device name ("cpu", "cuda"); ERR_UNSUPPORTED naming what this build lacks
// for a device it was built without, ERR_INVALID_ARGUMENT for a name that is no device.
std::shared_ptr<Backend> backend_for(const std::string& device);
// Devices this build has a backend for.
std::vector<std::string> built_devices();
// The ops a device's backend implements in this build (without opening the device).
std::vector<std::string> device_ops(const std::string& device);

}  // namespace gptoss
