// The CUDA backend: device memory through the runtime layer (gpu.h: the CUDA runtime on a GPU, the
// kernel lab's emulator in the emulated build), the weights uploaded once per store through pinned
// staging, each op dispatched to its launcher in kernels/cuda/<op>.cuh on the program's stream,
// and a step of up to kGraphTokens tokens captured once as a graph per shape and replayed.
//
// An op whose kernel is not in this build is refused when the program is built (ERR_UNSUPPORTED
// naming the op): never a silent fallback to the CPU.
//
// Sampling, first version: the step's logit rows are copied back to the host (the caller asked
// for them in `out` anyway) and drawn by the CPU sampler (kernels/cpu/sample.cc) on host scratch.
// A device-side reduction that copies back only what the sampler needs is still to come.
#include <algorithm>
#include <cstdlib>
#include <tuple>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <mutex>

#include "native/device.h"
#include "native/cuda/gpu.h"
#include "native/cuda/gather_rows.cuh"
#include "native/runtime/backend.h"

// The launchers of the kernels this build has (kernels/cuda/<op>.cuh).
#include "kernels/cuda/rmsnorm.cuh"
#if __has_include("kernels/cuda/embed.cuh")
#include "kernels/cuda/embed.cuh"
#define GPTOSS_CUDA_HAS_embed 1
#endif
#if __has_include("kernels/cuda/matmul_bf16.cuh")
#include "kernels/cuda/matmul_bf16.cuh"
#define GPTOSS_CUDA_HAS_matmul_bf16 1
#endif
#if __has_include("kernels/cuda/rope.cuh")
#include "kernels/cuda/rope.cuh"
#define GPTOSS_CUDA_HAS_rope 1
#endif
#if __has_include("kernels/cuda/kv_append.cuh")
#include "kernels/cuda/kv_append.cuh"
#define GPTOSS_CUDA_HAS_kv_append 1
#endif
#if __has_include("kernels/cuda/attention.cuh")
#include "kernels/cuda/attention.cuh"
#define GPTOSS_CUDA_HAS_attention 1
#endif
#if __has_include("kernels/cuda/attention_prefill.cuh")
#include "kernels/cuda/attention_prefill.cuh"
#define GPTOSS_CUDA_HAS_attention_prefill 1
#endif
#if __has_include("kernels/cuda/router_topk.cuh")
#include "kernels/cuda/router_topk.cuh"
#define GPTOSS_CUDA_HAS_router_topk 1
#endif
#if __has_include("kernels/cuda/moe_mxfp4.cuh")
#include "kernels/cuda/moe_mxfp4.cuh"
#define GPTOSS_CUDA_HAS_moe_mxfp4 1
#endif
#if __has_include("kernels/cuda/moe_mxfp4_gemm.cuh")
#include "kernels/cuda/moe_mxfp4_gemm.cuh"
#define GPTOSS_CUDA_HAS_moe_mxfp4_gemm 1
#endif
#include "kernels/cuda/moe_combine.cuh"
#include "kernels/cuda/sample.cuh"
#define GPTOSS_CUDA_HAS_rmsnorm 1
#define GPTOSS_CUDA_HAS_moe_combine 1

namespace gptoss {
namespace {

// Whether kernels/cuda has each op, as constants (the #if above, one per op).
#ifdef GPTOSS_CUDA_HAS_embed
constexpr bool kHas_embed = true;
#else
constexpr bool kHas_embed = false;
#endif
#ifdef GPTOSS_CUDA_HAS_matmul_bf16
constexpr bool kHas_matmul_bf16 = true;
#else
constexpr bool kHas_matmul_bf16 = false;
#endif
#ifdef GPTOSS_CUDA_HAS_rope
constexpr bool kHas_rope = true;
#else
constexpr bool kHas_rope = false;
#endif
#ifdef GPTOSS_CUDA_HAS_kv_append
constexpr bool kHas_kv_append = true;
#else
constexpr bool kHas_kv_append = false;
#endif
#ifdef GPTOSS_CUDA_HAS_attention
constexpr bool kHas_attention = true;
#else
constexpr bool kHas_attention = false;
#endif
#ifdef GPTOSS_CUDA_HAS_router_topk
constexpr bool kHas_router_topk = true;
#else
constexpr bool kHas_router_topk = false;
#endif
#ifdef GPTOSS_CUDA_HAS_moe_mxfp4
constexpr bool kHas_moe_mxfp4 = true;
#else
constexpr bool kHas_moe_mxfp4 = false;
#endif
constexpr bool kHas_rmsnorm = true;
constexpr bool kHas_moe_combine = true;

bool op_has_kernel(OpKind k) {
  switch (k) {
#define GPTOSS_X(name, Prefix) \
  case OpKind::Prefix: return kHas_##name;
    GPTOSS_OPS(GPTOSS_X)
#undef GPTOSS_X
  }
  return false;
}

// Steps of at most this many tokens (decode, and small batches of it) run as a captured graph.
constexpr int kGraphTokens = 64;
// Graphs kept per program (one per step shape seen); the oldest goes when a new one is needed.
constexpr size_t kMaxGraphs = 32;
// Pinned staging for the weight upload: two buffers, so one fills while the other copies.
constexpr size_t kStagingBytes = size_t(32) << 20;

// What one op's launch needs besides its fields: the step's device-side context and stream.
struct Launch {
  const StepContext& c;  // device pointers throughout
  cudaStream_t s;
  const ScratchPlan& plan;
  int sm_count;
  int gemm_sms;  // the split-k GEMM's target (gemm_sms(props)): its scratch and tickets were sized for it
  bool prompt;  // the step is mostly prompt chunks (prefill_step): the tensor-core kernels pay
  bool wgmma;   // the grouped MoE GEMM's and the bf16 GEMM's 128-row tiles on wgmma (moe_mxfp4_gemm_mma_for: an sm_90 device)
  unsigned* tickets;  // [ticket_count(plan, gemm_sms)] zeros, for router_topk_gemv_cuda and the split-k GEMM (left zero by each launch)
};

// The SMs the split-k GEMM fills (matmul_bf16_gemm_k_splits_cuda's target): the device's own
// (132 on an H100, 108 on an A100), so that a wide-tile grid's splits run in one round there. The
// emulator reports 4 SMs (its persistent grids' idle CTAs cost it time) but a compute capability
// of 9.0: it plans the GEMM as an H100 would, so the emulated runs split k (and round) as there.
// One backend per process, one device (gpu::open_device): the scratch plan, the runner's tickets
// and every launch read the same count.
constexpr int kEmulatedGemmSms = 132;  // an H100 SXM's
int gemm_sms(const gpu::DeviceProps& p) { return p.emulated ? kEmulatedGemmSms : std::max(1, p.sm_count); }

// Whether the grouped MoE GEMM and the bf16 GEMM run their 128-row tiles on wgmma here
// (moe_mxfp4_gemm_mma_for; the emulator reports compute capability 9.0, so its runs take wgmma too).
bool use_wgmma(const gpu::DeviceProps& p) {
#ifdef GPTOSS_CUDA_HAS_moe_mxfp4_gemm
  return moe_mxfp4_gemm_mma_for(p.cc_major, p.cc_minor) == MoeGemmMma::Wgmma;
#else
  (void)p;
  return false;
#endif
}

// The runner's zeroed tickets: one per token for the router; from the first step size that can take
// the GEMM (9 tokens), at least one per tile of the split-k GEMM (matmul_bf16_gemm_max_tiles(sms),
// kernels/cuda/matmul_bf16.cuh).
int ticket_count(const ScratchPlan& p, int sms) {
  const int t = std::max(1, p.max_tokens);
#ifdef GPTOSS_CUDA_HAS_matmul_bf16
  if (t >= kMatmulBf16GemmFromT) return std::max(t, matmul_bf16_gemm_max_tiles(sms));
#else
  (void)sms;
#endif
  return t;
}

// Whether a step is prefill-shaped: at least 16 tokens, in runs of one sequence 8 or more long on
// average (a prompt chunk, or a few beside some decode tokens). Decided on the host from the
// step's inputs, and part of a graph's key, so a replay never switches kernels.
bool prefill_step(const StepContext& host) {
  if (host.T < 16) return false;
  int32_t seqs = 0, last = -1;
  for (int t = 0; t < host.T; ++t)
    if (host.pages[0].seq[t] != last) ++seqs, last = host.pages[0].seq[t];
  return host.T >= 8 * seqs;
}

[[noreturn]] void no_kernel(const char* op) {
  throw Error("ERR_UNSUPPORTED", std::string("device 'cuda': op ") + op + " has no CUDA kernel in this build yet (kernels/cuda/" + op +
                                     ".cu); run it on device 'cpu'");
}

void launch_op(const EmbedOp& o, const Launch& l) {
#ifdef GPTOSS_CUDA_HAS_embed
  embed_cuda({l.c.tokens, l.c.bf16(o.w), l.c.f32(o.y), l.c.ld(o.y), l.c.T, o.H}, l.s);
#else
  (void)o, (void)l;
  no_kernel("embed");
#endif
}

void launch_op(const RmsnormOp& o, const Launch& l) {
  const StepContext& c = l.c;
  if (!o.logits_rows) {
    rmsnorm_cuda({c.f32(o.x), c.ld(o.x), c.bf16(o.w), c.f32(o.y), c.ld(o.y), c.T, o.H, o.eps}, l.s);
    return;
  }
  // The final norm: the logit rows gathered into rows [0, L) of y, then normalised in place.
  if (o.x.id == o.y.id) throw invalid_argument("rmsnorm: on device 'cuda' the logits-rows norm needs y apart from x");
  gather_rows_cuda(c.f32(o.x), c.ld(o.x), c.logit_rows, c.L, o.H, c.f32(o.y), c.ld(o.y), l.s);
  rmsnorm_cuda({c.f32(o.y), c.ld(o.y), c.bf16(o.w), c.f32(o.y), c.ld(o.y), c.L, o.H, o.eps}, l.s);
}

void launch_op(const MatmulBf16Op& o, const Launch& l) {
#ifdef GPTOSS_CUDA_HAS_matmul_bf16
  const StepContext& c = l.c;
  float* y = o.y.present() ? c.f32(o.y) + o.ycol : c.logits;
  const int64_t ldy = o.y.present() ? c.ld(o.y) : o.N;
  // The GEMV up to 8 rows, or the tensor-core GEMM (from 16 rows in fp32 mode, split into hi + lo
  // bf16 halves; from 8 for the unembedding), k split over the op's scratch when its grid is small
  // (kernels/cuda/matmul_bf16.cuh has the rules).
  matmul_bf16_select_cuda({c.f32(o.x) + o.xcol, c.ld(o.x), c.bf16(o.w), c.bf16(o.b), y, ldy, o.logits_rows ? c.L : c.T, o.N, o.K,
                           o.accumulate, nullptr},
                          l.plan.exact, l.s,
                          {reinterpret_cast<float*>(c.scratch), c.scratch_bytes,
                           ticket_count(l.plan, l.gemm_sms) >= matmul_bf16_gemm_max_tiles(l.gemm_sms) ? l.tickets : nullptr, l.gemm_sms,
                           l.wgmma});
#else
  (void)o, (void)l;
  no_kernel("matmul_bf16");
#endif
}

// Each op's launcher arguments from its fields and the step, written once: the op's own launch and
// launch_fused both read them.
RopeArgs rope_args(const RopeOp& o, const StepContext& c) {
  return {c.f32(o.x), c.ld(o.x), c.positions, c.T, o.q_heads, o.kv_heads, o.head_dim, c.rope};
}
KvAppendArgs kv_append_args(const KvAppendOp& o, const StepContext& c) {
  const BufferView& kc = c.pool(o.kc);
  return {c.f32(o.x) + o.xcol, c.f32(o.x) + o.vcol, c.ld(o.x), c.positions, kc.data, c.pool(o.vc).data, kc.dtype,
          c.pages_for(o.window), c.T, o.kv_heads * o.head_dim};
}
MoeMxfp4Args moe_mxfp4_args(const MoeMxfp4Op& o, const StepContext& c) {
  return {c.f32(o.x), c.ld(o.x), c.i32(o.idx), c.bytes(o.w1b), c.bytes(o.w1s), c.bf16(o.b1), c.bytes(o.w2b), c.bytes(o.w2s),
          c.bf16(o.b2), c.f32(o.y), c.T, o.k, o.E, o.H, o.I, o.limit, o.alpha, c.scratch, c.scratch_bytes, 1};
}

void launch_op(const RopeOp& o, const Launch& l) {
#ifdef GPTOSS_CUDA_HAS_rope
  rope_cuda(rope_args(o, l.c), l.s);
#else
  (void)o, (void)l;
  no_kernel("rope");
#endif
}

void launch_op(const KvAppendOp& o, const Launch& l) {
#ifdef GPTOSS_CUDA_HAS_kv_append
  kv_append_cuda(kv_append_args(o, l.c), l.s);
#else
  (void)o, (void)l;
  no_kernel("kv_append");
#endif
}

void launch_op(const AttentionOp& o, const Launch& l) {
#ifdef GPTOSS_CUDA_HAS_attention
  const StepContext& c = l.c;
  const BufferView& kc = c.pool(o.kc);
  const AttentionArgs a{c.f32(o.x), c.ld(o.x), c.positions, kc.data, c.pool(o.vc).data, kc.dtype, c.pages_for(o.window), c.bf16(o.w),
                        c.f32(o.y), c.ld(o.y), c.T, o.q_heads, o.kv_heads, o.head_dim, o.window, o.scale, c.scratch, c.scratch_bytes, 1};
#ifdef GPTOSS_CUDA_HAS_attention_prefill
  // Prompt chunks on the tensor cores (a bf16 cache; the f32 cache of fp32 mode stays exact in f32):
  // bf16 products in default mode, hi + lo halves (two mma per product) in an exact program.
  if (l.prompt && kc.dtype == DType::BF16) return attention_prefill_cuda(a, l.s, l.plan.exact);
#endif
  // Decode: the split kernel, on the tensor cores in default mode (bf16 Q and softmax weights, as
  // prefill's), f32 CUDA-core products in an exact program or on an f32 cache.
  attention_cuda(a, l.plan.max_context, l.s, true, !l.plan.exact && kc.dtype == DType::BF16);
#else
  (void)o, (void)l;
  no_kernel("attention");
#endif
}

void launch_op(const RouterTopkOp& o, const Launch& l) {
#ifdef GPTOSS_CUDA_HAS_router_topk
  const StepContext& c = l.c;
  router_topk_cuda({c.f32(o.x), c.ld(o.x), c.i32(o.idx), c.f32(o.wt), c.T, o.E, o.k}, l.s);
#else
  (void)o, (void)l;
  no_kernel("router_topk");
#endif
}

void launch_op(const MoeMxfp4Op& o, const Launch& l) {
#ifdef GPTOSS_CUDA_HAS_moe_mxfp4
  const StepContext& c = l.c;
  const MoeMxfp4Args a = moe_mxfp4_args(o, c);
#ifdef GPTOSS_CUDA_HAS_moe_mxfp4_gemm
  // Many tokens per expert: the grouped GEMM on the tensor cores (bf16 activations, so default mode
  // only); the rule reads the step's shape alone, which is part of a graph's key.
  if (!l.plan.exact && moe_mxfp4_use_gemm(c.T, o.k, o.E))
    return moe_mxfp4_gemm_cuda(a, l.sm_count, l.s, 0, l.wgmma ? MoeGemmMma::Wgmma : MoeGemmMma::Sync);
#endif
  moe_mxfp4_cuda(a, l.s, l.plan.exact ? MoeMxfp4Products::F32 : MoeMxfp4Products::F16);
#else
  (void)o, (void)l;
  no_kernel("moe_mxfp4");
#endif
}

void launch_op(const MoeCombineOp& o, const Launch& l) {
  const StepContext& c = l.c;
  moe_combine_cuda({c.f32(o.x), c.ld(o.x), c.f32(o.y), c.f32(o.wt), c.T, o.k, o.H, nullptr}, l.s);
}

#ifdef GPTOSS_CUDA_HAS_matmul_bf16
// The matmul's arguments when it reads exactly what the norm before it wrote (so the norm can be
// folded into it); null otherwise.
std::optional<MatmulBf16Args> reads_norm(const RmsnormOp& n, const MatmulBf16Op& m, const StepContext& c) {
  if (n.logits_rows || m.logits_rows || n.x.id == n.y.id || m.x.id != n.y.id || m.xcol != 0 || m.K != n.H || !m.y.present())
    return std::nullopt;
  return MatmulBf16Args{c.f32(m.x), c.ld(m.x), c.bf16(m.w), c.bf16(m.b), c.f32(m.y) + m.ycol, c.ld(m.y), c.T, m.N, m.K,
                        m.accumulate, nullptr};
}
#endif

// Ops in a row that one launch does (the fused launchers of kernels/cuda), given the next n ops
// that will run: how many it took (0: none). The MLP's norm, router GEMV and top-k (below the
// step size router_topk_use_gemm gives to the GEMM, kernels/cuda/router_topk.cuh); a norm and the
// GEMV that reads it (the attention's QKV, decode-sized steps); rope then the KV
// append of the K heads it rotated and the V heads beside them; the experts then their combine
// into the residual. Fewer graph nodes per decode step, and the rotated K and the per-slot expert
// outputs are not written and read back. Each gives what its ops give one by one, bit for bit in
// decode-sized steps (from 16 tokens the router's f32 GEMV and the grouped GEMM's combine round
// otherwise than the unfused GEMMs).
size_t launch_fused(const AnyOp* ops, size_t n, const Launch& l) {
  if (n < 2) return 0;
  const AnyOp &first = ops[0], &second = ops[1];
  const StepContext& c = l.c;
#if defined(GPTOSS_CUDA_HAS_matmul_bf16) && defined(GPTOSS_CUDA_HAS_router_topk)
  if (const auto* nm = std::get_if<RmsnormOp>(&first)) {
    const auto* mm = std::get_if<MatmulBf16Op>(&second);
    const auto a = mm ? reads_norm(*nm, *mm, c) : std::nullopt;
    if (!a) return 0;
    const RmsnormFold fold{c.bf16(nm->w), nm->eps, c.f32(nm->y), c.ld(nm->y)};
    // The MLP's norm, router and top-k: one launch (E / 4 CTAs per token, f32 products), until the
    // router_topk_use_gemm rule gives many tokens to the router's own GEMM (each op its launch: the
    // norm, the GEMM, the top-k on its logits), which reads the weights once, not once per token.
    const auto* rt = n >= 3 ? std::get_if<RouterTopkOp>(&ops[2]) : nullptr;
    if (rt && rt->x.id == mm->y.id && mm->ycol == 0 && !mm->accumulate && rt->E == mm->N && rt->E <= 256 &&
        !router_topk_use_gemm(c.T, rt->E, l.plan.exact)) {
      router_topk_gemv_cuda({a->y, a->ldy, c.i32(rt->idx), c.f32(rt->wt), c.T, rt->E, rt->k},
                            {c.f32(nm->x), c.ld(nm->x), a->w, a->b, a->K}, l.tickets, l.s, &fold);
      return 3;
    }
    // A norm and the GEMV that reads it (decode-sized steps; the GEMM takes its input as it is).
    if (matmul_bf16_kernel_cuda(*a, l.plan.exact) != MatmulBf16Kernel::kGemv) return 0;
    matmul_bf16_norm_cuda({c.f32(nm->x), c.ld(nm->x), a->w, a->b, a->y, a->ldy, a->T, a->N, a->K, a->accumulate, nullptr},
                          fold, l.s);
    return 2;
  }
#endif
#if defined(GPTOSS_CUDA_HAS_rope) && defined(GPTOSS_CUDA_HAS_kv_append)
  if (const auto* r = std::get_if<RopeOp>(&first)) {
    const auto* kv = std::get_if<KvAppendOp>(&second);
    if (!kv || kv->x.id != r->x.id || kv->head_dim != r->head_dim || kv->kv_heads != r->kv_heads ||
        kv->xcol != r->q_heads * r->head_dim || kv->vcol != kv->xcol + kv->kv_heads * kv->head_dim)
      return 0;
    rope_kv_append_cuda(rope_args(*r, c), kv_append_args(*kv, c), l.s);
    return 2;
  }
#endif
#ifdef GPTOSS_CUDA_HAS_moe_mxfp4
  if (const auto* m = std::get_if<MoeMxfp4Op>(&first)) {
    const auto* cb = std::get_if<MoeCombineOp>(&second);
    if (!cb || cb->y.id != m->y.id || cb->k != m->k || cb->H != m->H) return 0;
    const MoeMxfp4Args a = moe_mxfp4_args(*m, c);
    const MoeCombineFused f{c.f32(cb->wt), c.f32(cb->x), c.ld(cb->x), true};
#ifdef GPTOSS_CUDA_HAS_moe_mxfp4_gemm
    if (!l.plan.exact && moe_mxfp4_use_gemm(c.T, m->k, m->E)) {
      moe_mxfp4_gemm_combine_cuda(a, f, l.sm_count, l.s, 0, l.wgmma ? MoeGemmMma::Wgmma : MoeGemmMma::Sync);
      return 2;
    }
#endif
    moe_mxfp4_combine_cuda(a, f, l.s, l.plan.exact ? MoeMxfp4Products::F32 : MoeMxfp4Products::F16);
    return 2;
  }
#endif
  (void)first, (void)second, (void)c;
  return 0;
}

// Device scratch of each op's CUDA kernel.
template <class Op>
size_t cuda_scratch(const Op&, const ScratchPlan&) {
  return 0;
}
#ifdef GPTOSS_CUDA_HAS_matmul_bf16
// The split-k GEMM's partial sums (batched decode's projections), for the device's SMs (gemm_sms).
size_t cuda_scratch(const MatmulBf16Op& o, const ScratchPlan& p, int sms) {
  return matmul_bf16_gemm_scratch_cuda(p.max_tokens, o.N, o.K, sms);
}
#endif
#ifdef GPTOSS_CUDA_HAS_attention
// The decode kernel's partials, capped (kAttentionScratchCapBytes): a longer step runs in launches
// of as many tokens as they hold. The prefill kernel needs none.
size_t cuda_scratch(const AttentionOp& o, const ScratchPlan& p) {
  return attention_scratch_plan_cuda(p.max_tokens, p.max_context, o.q_heads, o.head_dim, o.window);
}
#endif
#ifdef GPTOSS_CUDA_HAS_moe_mxfp4
size_t cuda_scratch(const MoeMxfp4Op& o, const ScratchPlan& p) {
  // The GEMV path's dispatch, activations and per-slot outputs at the step's T (sizes grow with T).
  size_t bytes = moe_mxfp4_scratch_cuda(p.max_tokens, o.k, o.E, o.H, o.I);
#ifdef GPTOSS_CUDA_HAS_moe_mxfp4_gemm
  if (!p.exact && moe_mxfp4_use_gemm(p.max_tokens, o.k, o.E))
    bytes = std::max(bytes, moe_mxfp4_gemm_scratch_cuda(p.max_tokens, o.k, o.E, o.H, o.I));
#endif
  return bytes;
}
#endif

// A device allocation freed with its last owner.
std::shared_ptr<void> device_block(size_t bytes, const std::string& what) {
  return std::shared_ptr<void>(gpu::device_alloc(bytes, what), [](void* p) { gpu::device_free(p); });
}

// The copies of one weight store on the device: one allocation per tensor, shared between
// snapshots (a store that grew keeps the tensors already uploaded).
struct DeviceCopies {
  std::vector<std::shared_ptr<void>> tensors;
};

class CudaBackend;

// One program's stream, step inputs on the device, and graphs.
class CudaRunner final : public StepRunner {
 public:
  CudaRunner(const ScratchPlan& plan, int sm_count, int gemm_sms, bool wgmma)
      : plan_(plan), sm_count_(sm_count), gemm_sms_(gemm_sms), wgmma_(wgmma) {
    stream_ = gpu::stream_create();
  }
  ~CudaRunner() override {
    for (auto& [key, g] : graphs_) gpu::graph_destroy(g);
    if (pinned_) gpu::pinned_free(pinned_);
    if (params_pinned_) gpu::pinned_free(params_pinned_);
    gpu::stream_destroy(stream_);
  }

  void step(const std::vector<AnyOp>& ops, const std::vector<bool>& logits_only, const StepContext& host, int vocab, float* out) override {
    gpu::DeviceLock lock;
    const int T = host.T;
    const size_t table0 = table_entries(host.pages[0], T), table1 = table_entries(host.pages[1], T);
    ensure_inputs(table0, table1);
    if (!tickets_) {  // zeroed once, before any capture; every launch leaves them zero
      const size_t bytes = size_t(ticket_count(plan_, gemm_sms_)) * sizeof(unsigned);
      tickets_ = device_block(bytes, "the router's and the GEMM's tickets");
      gpu::fill_zero(tickets_.get(), bytes, stream_);
    }
    // The step's inputs, packed into the pinned mirror and copied in one transfer.
    int32_t* m = pinned_;
    std::memcpy(m + tokens_at(), host.tokens, size_t(T) * 4);
    std::memcpy(m + positions_at(), host.positions, size_t(T) * 4);
    std::memcpy(m + seqs_at(), host.pages[0].seq, size_t(T) * 4);
    if (host.L) std::memcpy(m + rows_at(), host.logit_rows, size_t(host.L) * 4);
    std::memcpy(m + table0_at(), host.pages[0].table, table0 * 4);
    std::memcpy(m + table1_at(), host.pages[1].table, table1 * 4);
    gpu::copy_h2d(inputs_.get(), pinned_, input_bytes(), stream_);

    StepContext c = host;
    int32_t* d = static_cast<int32_t*>(inputs_.get());
    c.tokens = d + tokens_at();
    c.positions = d + positions_at();
    c.logit_rows = d + rows_at();
    for (int t = 0; t < 2; ++t) c.pages[t] = KvPages{d + seqs_at(), d + (t ? table1_at() : table0_at()), host.pages[t].ring, host.pages[t].page_size};
    c.rope = host.rope;

    const bool prompt = prefill_step(host);
    auto run_all = [&] {
      const Launch l{c, stream_, plan_, sm_count_, gemm_sms_, prompt, wgmma_, static_cast<unsigned*>(tickets_.get())};
      launches_ = 0;
      for (size_t i = 0; i < ops.size(); ++i) {
        if (c.L == 0 && logits_only[i]) continue;
        ++launches_;
        size_t next = 1;  // the ops from i on that will run, up to 3 (the longest fusion)
        while (next < 3 && i + next < ops.size() && !(c.L == 0 && logits_only[i + next])) ++next;
        if (const size_t used = fuse_ ? launch_fused(&ops[i], next, l) : 0) {
          i += used - 1;
          continue;
        }
        std::visit([&](const auto& o) {
          if constexpr (!std::is_same_v<std::decay_t<decltype(o)>, std::monostate>) launch_op(o, l);
        }, ops[i]);
      }
    };
    gpu::guarded_launch("device 'cuda'", [&] {
      if (T <= kGraphTokens && graphs_enabled()) {
        const Key key{T, host.L, host.pages[0].ring, host.pages[0].page_size, host.pages[1].ring, host.pages[1].page_size, prompt};
        auto it = graphs_.find(key);
        if (it == graphs_.end()) {
          if (graphs_.size() >= kMaxGraphs) {
            gpu::graph_destroy(graphs_.begin()->second);
            graph_launches_.erase(graphs_.begin()->first);
            graphs_.erase(graphs_.begin());
          }
          gpu::capture_begin(stream_);
          try {
            run_all();
          } catch (...) {
            gpu::capture_abort(stream_);
            throw;
          }
          it = graphs_.emplace(key, gpu::capture_end(stream_)).first;
          graph_launches_[key] = launches_;
          ++captured_;
        }
        launches_ = graph_launches_[key];
        gpu::graph_launch(it->second, stream_);
        ++replayed_;
      } else {
        run_all();
      }
    });
    if (out && host.L) {
      gpu::copy_d2h(out, c.logits, size_t(host.L) * size_t(vocab) * 4, stream_);
      transfers_.logit_bytes += uint64_t(host.L) * uint64_t(vocab) * 4;
    }
    gpu::stream_sync(stream_);
    logits_ = c.logits;
    L_ = host.L;
  }

  // Sampling on the device (issue #17), for a step whose logits the caller did not ask for. The
  // rows whose parameters take the Greedy, TopK or Draw path of kernels/cuda/sample.cuh are reduced by
  // sample_cuda, launched eagerly on this stream after the step (never captured: a graph's key does
  // not hold sampling parameters), over chunks of kSampleRows rows so that its scratch stays
  // small; only each row's SampleCudaOut (104 bytes) and, for top-k, its K' candidates (for a draw,
  // its chunk sums, 1.6 KB at gpt-oss's vocabulary, then one 4 KB chunk of the row) come back.
  // finish_row() completes the draw on the host with sample_cuda_finish, which is the CPU
  // sampler's result bit for bit; a row it declines (and a FullRow row, or one the program did not
  // hand over) is copied back alone and sampled on the host as before. Buffers are allocated on
  // first use and grow only (the parameters' block with the bias, history and mask lists);
  // GPTOSS_CUDA_DEVICE_SAMPLING=0 (read when the runner is made) copies every row instead.
  void reduce_rows(const std::vector<const SampleParams*>& params, int vocab) override {
    const int L = int(params.size());
    reduced_.assign(size_t(L), 0);
    if (!device_sampling_ || L == 0 || L > L_) return;
    SampleCudaBatch batch;
    bool any = false;
    for (int i = 0; i < L; ++i) {
      const SampleParams* p = params[size_t(i)];
      if (p && sample_cuda_path(*p, vocab) != SamplePath::FullRow) {
        batch.add(*p, vocab);
        reduced_[size_t(i)] = 1;
        any = true;
      } else {
        SampleCudaRow r{};  // the kernels skip it
        r.n = vocab;
        r.path = int32_t(SamplePath::FullRow);
        r.allow_off = -1;
        batch.rows.push_back(r);
      }
    }
    if (!any) return;
    gpu::DeviceLock lock;
    const int chunk = sample_rows(plan_);
    if (!sample_scratch_) {
      sample_scratch_ = device_block(sample_cuda_scratch(chunk, vocab), "the sampler's scratch");
      sample_out_ = device_block(sizeof(SampleCudaOut) * size_t(chunk), "the sampler's results");
      sample_cand_ = device_block(sizeof(SampleCudaCand) * size_t(chunk) * kSampleMaxCandidates, "the sampler's candidates");
      sample_chunks_ = device_block(sizeof(double) * size_t(chunk) * size_t(sample_cuda_chunks(vocab)), "the sampler's chunk sums");
      // Zeroed once; every launch leaves them zero (each top-k row's count of its slices wraps).
      sample_tickets_ = device_block(sizeof(unsigned) * size_t(chunk), "the sampler's tickets");
      gpu::fill_zero(sample_tickets_.get(), sizeof(unsigned) * size_t(chunk), stream_);
    }
    // The rows, entries and mask words packed into one block, uploaded in one copy.
    auto round = [](size_t b) { return (b + 255) / 256 * 256; };
    const size_t rows_b = round(batch.rows.size() * sizeof(SampleCudaRow));
    const size_t ent_b = round(std::max<size_t>(1, batch.entries.size()) * sizeof(SampleCudaEntry));
    const size_t allow_b = round(std::max<size_t>(1, batch.allow.size()) * 4);
    const size_t bytes = rows_b + ent_b + allow_b;
    if (bytes > params_cap_) {
      params_dev_.reset();
      if (params_pinned_) gpu::pinned_free(params_pinned_);
      params_pinned_ = nullptr;
      params_cap_ = std::max(bytes, 2 * params_cap_);
      params_dev_ = device_block(params_cap_, "the sampler's parameters");
      params_pinned_ = static_cast<uint8_t*>(gpu::pinned_alloc(params_cap_));
    }
    std::memcpy(params_pinned_, batch.rows.data(), batch.rows.size() * sizeof(SampleCudaRow));
    std::memcpy(params_pinned_ + rows_b, batch.entries.data(), batch.entries.size() * sizeof(SampleCudaEntry));
    std::memcpy(params_pinned_ + rows_b + ent_b, batch.allow.data(), batch.allow.size() * 4);
    uint8_t* dp = static_cast<uint8_t*>(params_dev_.get());
    const auto* drows = reinterpret_cast<const SampleCudaRow*>(dp);
    const auto* dent = reinterpret_cast<const SampleCudaEntry*>(dp + rows_b);
    const auto* dallow = reinterpret_cast<const uint32_t*>(dp + rows_b + ent_b);
    if (outs_.size() < size_t(L)) outs_.resize(size_t(L));
    if (cands_.size() < size_t(L) * kSampleMaxCandidates) cands_.resize(size_t(L) * kSampleMaxCandidates);
    const size_t nch = size_t(sample_cuda_chunks(vocab));
    if (chunks_.size() < size_t(L) * nch) chunks_.resize(size_t(L) * nch);
    auto* dout = static_cast<SampleCudaOut*>(sample_out_.get());
    auto* dcand = static_cast<SampleCudaCand*>(sample_cand_.get());
    auto* dchunks = static_cast<double*>(sample_chunks_.get());
    gpu::guarded_launch("device 'cuda' (sampling)", [&] {
      gpu::copy_h2d(dp, params_pinned_, bytes, stream_);
      for (int at = 0; at < L; at += chunk) {
        const int n = std::min(chunk, L - at);
        bool some = false;
        for (int i = at; i < at + n; ++i) some = some || reduced_[size_t(i)];
        if (!some) continue;
        sample_cuda({logits_ + size_t(at) * size_t(vocab), vocab, vocab, n, drows + at, dent, dallow,
                     static_cast<float*>(sample_scratch_.get()), sample_cuda_scratch(chunk, vocab), dout, dcand, dchunks,
                     batch.paths, static_cast<unsigned*>(sample_tickets_.get())},
                    stream_);
        // The next chunk reuses the device buffers: these copies are queued before its launches.
        gpu::copy_d2h(outs_.data() + at, dout, sizeof(SampleCudaOut) * size_t(n), stream_);
        transfers_.result_bytes += sizeof(SampleCudaOut) * size_t(n);
        for (int i = at; i < at + n; ++i) {
          const SampleCudaRow& r = batch.rows[size_t(i)];
          if (reduced_[size_t(i)] && r.path == int32_t(SamplePath::Draw)) {
            gpu::copy_d2h(chunks_.data() + size_t(i) * nch, dchunks + size_t(i - at) * nch, sizeof(double) * nch, stream_);
            transfers_.result_bytes += sizeof(double) * nch;
          }
          if (!reduced_[size_t(i)] || r.path != int32_t(SamplePath::TopK)) continue;
          gpu::copy_d2h(cands_.data() + size_t(i) * kSampleMaxCandidates, dcand + size_t(i - at) * kSampleMaxCandidates,
                        sizeof(SampleCudaCand) * size_t(r.ncand), stream_);
          transfers_.result_bytes += sizeof(SampleCudaCand) * size_t(r.ncand);
        }
      }
    });
    gpu::stream_sync(stream_);
  }

  bool finish_row(int i, const SampleParams* p, uint64_t* rng, SampleResult* res, float* row, int vocab) override {
    if (i < 0 || i >= L_) throw Error("ERR_INTERNAL", "device 'cuda': no logit row " + std::to_string(i));
    if (p && size_t(i) < reduced_.size() && reduced_[size_t(i)]) {
      reduced_[size_t(i)] = 0;  // once
      // A draw reads one chunk of its raw row (4 KB), the rest of the row stays on the device.
      const SampleRawLogits raw = [&](int first, int count, float* dst) {
        gpu::DeviceLock lock;
        gpu::copy_d2h(dst, logits_ + size_t(i) * size_t(vocab) + size_t(first), size_t(count) * 4, stream_);
        gpu::stream_sync(stream_);
        transfers_.logit_bytes += uint64_t(count) * 4;
      };
      const double* chunks = chunks_.data() + size_t(i) * size_t(sample_cuda_chunks(vocab));
      if (sample_cuda_finish(*p, vocab, outs_[size_t(i)], cands_.data() + size_t(i) * kSampleMaxCandidates, rng, res, chunks,
                             raw)) {
        ++transfers_.device_rows;
        return true;
      }
    }
    gpu::DeviceLock lock;
    gpu::copy_d2h(row, logits_ + size_t(i) * size_t(vocab), size_t(vocab) * 4, stream_);
    gpu::stream_sync(stream_);
    transfers_.logit_bytes += uint64_t(vocab) * 4;
    return false;
  }

  Transfers transfers() const override {
    Transfers t = transfers_;
    t.step_launches = uint64_t(launches_);
    return t;
  }

 private:
  struct Key {
    int T, L, ring0, page0, ring1, page1;
    bool prompt;
    bool operator<(const Key& o) const {
      return std::tie(T, L, ring0, page0, ring1, page1, prompt) < std::tie(o.T, o.L, o.ring0, o.page0, o.ring1, o.page1, o.prompt);
    }
  };
  static bool graphs_enabled() {
    const char* e = std::getenv("GPTOSS_CUDA_GRAPHS");
    return !(e && std::strcmp(e, "0") == 0);
  }
  // The page-table entries the step's kernels may read: the rows of the sequences it names.
  static size_t table_entries(const KvPages& p, int T) {
    int32_t S = 0;
    for (int t = 0; t < T; ++t) S = std::max(S, p.seq[t] + 1);
    return size_t(p.ring) * size_t(S);
  }
  // Offsets (in int32s) of each input in the packed region.
  size_t tokens_at() const { return 0; }
  size_t positions_at() const { return size_t(plan_.max_tokens); }
  size_t seqs_at() const { return 2 * size_t(plan_.max_tokens); }
  size_t rows_at() const { return 3 * size_t(plan_.max_tokens); }
  size_t table0_at() const { return 4 * size_t(plan_.max_tokens); }
  size_t table1_at() const { return table0_at() + cap0_; }
  size_t input_bytes() const { return (table1_at() + cap1_) * 4; }

  // Grows the packed region to hold the page tables (their addresses change: graphs recorded
  // against the old ones are dropped).
  void ensure_inputs(size_t t0, size_t t1) {
    if (inputs_ && t0 <= cap0_ && t1 <= cap1_) return;
    for (auto& [key, g] : graphs_) gpu::graph_destroy(g);
    graphs_.clear();
    cap0_ = std::max(cap0_, std::max<size_t>(t0, 64) * 2);
    cap1_ = std::max(cap1_, std::max<size_t>(t1, 64) * 2);
    inputs_.reset();
    if (pinned_) gpu::pinned_free(pinned_);
    pinned_ = nullptr;
    inputs_ = device_block(input_bytes(), "a step's inputs");
    pinned_ = static_cast<int32_t*>(gpu::pinned_alloc(input_bytes()));
  }

  // Rows per sample_cuda launch, and the device memory a runner holds besides the arena: the
  // router's tickets and, once a step samples on the device, the sampler's buffers (the
  // parameters' block, a few KB that grows with the bias and history lists, is not counted).
  static int sample_rows(const ScratchPlan& plan) { return std::min(kSampleRows, std::max(1, plan.max_tokens)); }

 public:
  static size_t device_bytes(const ScratchPlan& plan, int vocab, int gemm_sms) {
    const size_t rows = size_t(sample_rows(plan));
    const size_t sampler = vocab > 0 ? sample_cuda_scratch(int(rows), vocab) + rows * sizeof(SampleCudaOut) +
                                           rows * kSampleMaxCandidates * sizeof(SampleCudaCand) +
                                           rows * size_t(sample_cuda_chunks(vocab)) * sizeof(double) +
                                           rows * sizeof(unsigned)
                                     : 0;
    return size_t(ticket_count(plan, gemm_sms)) * sizeof(unsigned) + sampler;
  }

 private:
  static bool device_sampling_enabled() {
    const char* e = std::getenv("GPTOSS_CUDA_DEVICE_SAMPLING");
    return !(e && std::strcmp(e, "0") == 0);
  }
  static constexpr int kSampleRows = 32;  // rows per sample_cuda launch (its scratch: sample_cuda_scratch(32, vocab))

  ScratchPlan plan_;
  int sm_count_;
  int gemm_sms_;  // gemm_sms(the device's props)
  bool wgmma_;    // use_wgmma(the device's props)
  // GPTOSS_CUDA_FUSE=0: every op on its own launch (to compare with the fused launches).
  bool fuse_ = [] {
    const char* e = std::getenv("GPTOSS_CUDA_FUSE");
    return !(e && std::strcmp(e, "0") == 0);
  }();
  // The last step's logits on the device (valid until the next step) and its logit rows.
  float* logits_ = nullptr;
  int L_ = 0;
  // Device sampling: per logit row, whether its reduction ran; what came back; the buffers.
  bool device_sampling_ = device_sampling_enabled();
  std::vector<uint8_t> reduced_;
  std::vector<SampleCudaOut> outs_;
  std::vector<SampleCudaCand> cands_;
  std::vector<double> chunks_;
  std::shared_ptr<void> sample_scratch_, sample_out_, sample_cand_, sample_chunks_, sample_tickets_, params_dev_;
  uint8_t* params_pinned_ = nullptr;
  size_t params_cap_ = 0;
  Transfers transfers_;
  cudaStream_t stream_ = nullptr;
  std::shared_ptr<void> inputs_, tickets_;
  int32_t* pinned_ = nullptr;
  size_t cap0_ = 0, cap1_ = 0;
  std::map<Key, gpu::Graph> graphs_;
  std::map<Key, int> graph_launches_;  // per graph, the launches it recorded
  int launches_ = 0;                   // the last step's

 public:
  int captured_ = 0, replayed_ = 0;
};

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const gpu::DeviceProps& props) : props_(props) {}
  const char* name() const override { return "cuda"; }
  const OpLimits& limits() const override {
    static const OpLimits l{};  // the CUDA kernels' own bounds are checked in check_supported
    return l;
  }
  bool host_memory() const override { return false; }
  int threads() const override { return 1; }

  void* allocate(size_t bytes, const std::string& what) override {
    void* p = gpu::device_alloc(bytes, what);
    allocated_ += int64_t(bytes);
    return p;
  }
  void release(void* p, size_t bytes) override {
    gpu::device_free(p);
    allocated_ -= int64_t(bytes);
  }
  // Plain synchronous copies (program construction, tests): on the default stream.
  void zero(void* p, size_t bytes) override {
    gpu::DeviceLock lock;
    gpu::fill_zero(p, bytes, nullptr);
    gpu::stream_sync(nullptr);
  }
  void upload(void* dst, const void* src, size_t bytes) override {
    gpu::DeviceLock lock;
    gpu::copy_h2d(dst, src, bytes, nullptr);
    gpu::stream_sync(nullptr);
  }
  void download(void* dst, const void* src, size_t bytes) override {
    gpu::DeviceLock lock;
    gpu::copy_d2h(dst, src, bytes, nullptr);
    gpu::stream_sync(nullptr);
  }

  std::shared_ptr<const DeviceWeights> upload_weights(const std::shared_ptr<WeightStore>& store) override {
    std::lock_guard<std::mutex> g(upload_mu_);
    auto& slot = cache_[store.get()];
    std::shared_ptr<const DeviceWeights> have = slot.lock();
    if (have && have->ptrs.size() == store->tensors.size()) return have;
    auto copies = std::make_shared<DeviceCopies>();
    if (have) *copies = *static_cast<const DeviceCopies*>(have->device.get());
    upload_tensors(*store, *copies);
    auto w = std::make_shared<DeviceWeights>();
    w->host = store;
    size_t bytes = 0;
    for (size_t i = 0; i < copies->tensors.size(); ++i) {
      w->ptrs.push_back(static_cast<const uint8_t*>(copies->tensors[i].get()));
      bytes += store->tensors[i].bytes;
    }
    w->device_bytes = bytes;
    w->device = copies;
    slot = w;
    return w;
  }

  size_t scratch_bytes(const AnyOp& op, const ScratchPlan& plan) const override {
    return std::visit([&](const auto& o) -> size_t {
      if constexpr (std::is_same_v<std::decay_t<decltype(o)>, std::monostate>) return 0;
#ifdef GPTOSS_CUDA_HAS_matmul_bf16
      else if constexpr (std::is_same_v<std::decay_t<decltype(o)>, MatmulBf16Op>) return cuda_scratch(o, plan, gemm_sms(props_));
#endif
      else return cuda_scratch(o, plan);
    }, op);
  }
  void run(const AnyOp&, const StepContext&) override {
    throw Error("ERR_INTERNAL", "device 'cuda' runs steps through its StepRunner, not op by op");
  }
  void synchronize() override {}

  MemoryReport memory() const override {
    std::lock_guard<std::mutex> g(upload_mu_);
    size_t weights = 0;
    for (const auto& [store, w] : cache_)
      if (auto live = w.lock()) weights += live->device_bytes;
    return {size_t(allocated_.load()), weights};
  }

  void check_supported(const AnyOp& op) const override {
    const OpKind k = op_kind(op);
    if (!op_has_kernel(k)) no_kernel(op_name(k));
#ifdef GPTOSS_CUDA_HAS_attention
    if (auto* a = std::get_if<AttentionOp>(&op))
      if (a->head_dim != 64 || a->q_heads / a->kv_heads > 8)
        throw Error("ERR_UNSUPPORTED", "device 'cuda': attention's kernel takes headDim 64 and at most 8 query heads per KV head, got headDim " +
                                           std::to_string(a->head_dim) + " and " + std::to_string(a->q_heads / a->kv_heads));
#endif
#ifdef GPTOSS_CUDA_HAS_matmul_bf16
    if (auto* m = std::get_if<MatmulBf16Op>(&op))
      if (m->K > kMatmulBf16MaxKCuda)
        throw Error("ERR_UNSUPPORTED", "device 'cuda': matmul_bf16's kernel takes K up to " + std::to_string(kMatmulBf16MaxKCuda) + ", got " +
                                           std::to_string(m->K));
#endif
  }

  std::unique_ptr<StepRunner> runner(const ScratchPlan& plan, size_t) override {
    return std::make_unique<CudaRunner>(plan, props_.sm_count, gemm_sms(props_), use_wgmma(props_));
  }
  size_t runner_bytes(const ScratchPlan& plan, int vocab) const override { return CudaRunner::device_bytes(plan, vocab, gemm_sms(props_)); }

 private:
  // Each tensor not yet on the device: allocated, then streamed through two pinned staging
  // buffers (one fills from the mapped file while the other copies), with progress on stderr for
  // checkpoints over 1 GB. Where a kernel wants its own layout, this is where it is repacked
  // (none does yet: moe_mxfp4 and matmul_bf16 read the checkpoint's layouts).
  void upload_tensors(const WeightStore& store, DeviceCopies& copies) {
    size_t total = 0;
    for (size_t i = copies.tensors.size(); i < store.tensors.size(); ++i) total += store.tensors[i].bytes;
    gpu::DeviceLock lock;
    cudaStream_t s = gpu::stream_create();
    void* stage[2] = {nullptr, nullptr};
    gpu::Event done[2] = {nullptr, nullptr};
    struct Cleanup {
      cudaStream_t s;
      void** stage;
      gpu::Event* done;
      ~Cleanup() {
        try {
          gpu::stream_sync(s);
        } catch (...) {
        }
        for (int b = 0; b < 2; ++b) {
          gpu::pinned_free(stage[b]);
          gpu::event_destroy(done[b]);
        }
        gpu::stream_destroy(s);
      }
    } cleanup{s, stage, done};
    const size_t chunk = std::min(kStagingBytes, std::max<size_t>(total, 1));
    for (int b = 0; b < 2; ++b) {
      stage[b] = gpu::pinned_alloc(chunk);
      done[b] = gpu::event_create();
    }
    const bool report = total >= size_t(1) << 30;
    size_t sent = 0, next_report = total / 10;
    int b = 0;
    bool used[2] = {false, false};
    for (size_t i = copies.tensors.size(); i < store.tensors.size(); ++i) {
      const TensorRef& t = store.tensors[i];
      std::shared_ptr<void> dev = device_block(t.bytes, "weight " + t.name);
      for (size_t off = 0; off < t.bytes; off += chunk) {
        const size_t n = std::min(chunk, t.bytes - off);
        if (used[b]) gpu::event_sync(done[b]);
        std::memcpy(stage[b], t.data + off, n);
        gpu::copy_h2d(static_cast<uint8_t*>(dev.get()) + off, stage[b], n, s);
        gpu::event_record(done[b], s);
        used[b] = true;
        b ^= 1;
        sent += n;
        if (report && sent >= next_report) {
          std::fprintf(stderr, "gptoss: uploading weights to %s: %.1f / %.1f GB\n", props_.name.c_str(), sent / 1e9, total / 1e9);
          next_report += total / 10;
        }
      }
      copies.tensors.push_back(std::move(dev));
    }
    gpu::stream_sync(s);
  }

  gpu::DeviceProps props_;
  std::atomic<int64_t> allocated_{0};
  mutable std::mutex upload_mu_;
  std::map<const WeightStore*, std::weak_ptr<const DeviceWeights>> cache_;
};

}  // namespace

std::shared_ptr<Backend> cuda_backend() {
  // Opened on first use; a failure (no driver, no device, busy) is reported and retried next time.
  static std::mutex mu;
  static std::shared_ptr<Backend> b;
  std::lock_guard<std::mutex> g(mu);
  if (!b) b = std::make_shared<CudaBackend>(gpu::open_device());
  return b;
}

std::vector<std::string> cuda_ops() {
  std::vector<std::string> ops;
  for_each_op([&](const char* name, const auto& op) {
    if (op_has_kernel(op_kind(AnyOp(op)))) ops.push_back(name);
  });
  return ops;
}

#ifdef GPTOSS_CUDA_EMU
// deviceInfo() in the emulated build: CUDA is "available", and says it is emulated.
CudaProbe cuda_probe() {
  CudaProbe p;
  p.built = true;
  p.emulated = true;
  gpu::DeviceProps d;
  try {
    d = gpu::open_device();
  } catch (const std::exception& e) {  // a bad GPTOSS_CUDA_EMU_SCHEDULE: reported, not thrown
    p.error = e.what();
    return p;
  }
  p.count = 1;
  p.name = d.name;
  p.total_memory = d.total_memory;
  p.cc_major = d.cc_major;
  p.cc_minor = d.cc_minor;
  return p;
}
#endif

}  // namespace gptoss
