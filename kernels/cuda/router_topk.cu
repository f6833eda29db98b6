// router_topk: per token, the k largest router logits, ties to the lower expert index, and a
// softmax over those k only (kernels/MODEL.md, "Router"; reference kernels/cpu/router_topk.cc).
// Two entry points, one kernel template:
//   router_topk_cuda:      grid (1, T): warp 0 of token t's CTA loads its E logits into shared
//                          memory (each lane the experts it scans) and selects.
//   router_topk_gemv_cuda: grid (E / 4, T): the router GEMV fused in front. Warp w of CTA c owns
//                          expert row c * 4 + w: its lanes stream the bf16 row with 16-byte loads
//                          (ld.global.nc.v4) against x (f32, from L1), an xor-shuffle sum gives
//                          the logit, thread 0 adds the bias and stores the CTA's 4 logits, then
//                          takes a ticket (atomicAdd on tickets[t]); the CTA that takes the last
//                          ticket selects, from the logits all CTAs stored, and resets the ticket
//                          to 0 for the next launch (and for CUDA graph replay). The atomic only
//                          decides which CTA selects, never what it computes: results do not
//                          depend on timing. Optionally with the RMSNorm folded in front (below).
// Selection (warp 0): each lane keeps the experts lane, lane + 32, ... and a bit per expert already
// taken; per round its best candidate (largest logit, lower index on a tie, as the CPU op's
// strict > over ascending indices) meets the others in an xor-shuffle argmax with the same order,
// so the k rounds give the CPU op's indices, in descending logit order. The softmax is f32
// (the CPU op's is double: a few ulp, tolerance in test/cuda/router_topk_test.cu).
// NaN logits give an unspecified selection. Limits (checked by the launchers): 1 <= k <= E <= 256,
// T < 65536, H >= 1; the fused path needs a.logits (where the CTAs meet) and tickets [T], zero
// before the first launch and left zero by every launch.
#include "kernels/cuda/router_topk.cuh"

#include <string>

#include "kernels/cuda/rmsnorm_row.cuh"

namespace gptoss {
namespace cuda {
namespace {
constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxE = 256;

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

// Warp 0 only: top-k of lg[0..E) and the softmax over it into idx[0..k), wt[0..k).
__device__ void select_topk(const float* lg, int E, int k, int32_t* idx, float* wt) {
  __shared__ float selv[kMaxE];
  const int lane = threadIdx.x & 31;
  uint32_t taken = 0;  // bit i: expert lane + 32 i
  for (int j = 0; j < k; ++j) {
    float v = 0.f;
    int i = -1;
    for (int b = 0; b * 32 + lane < E; ++b) {
      const int e = b * 32 + lane;
      if (!(taken >> b & 1u) && (i < 0 || lg[e] > v)) {
        v = lg[e];
        i = e;
      }
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(kFullMask, v, o);
      const int oi = __shfl_xor_sync(kFullMask, i, o);
      if (oi >= 0 && (i < 0 || ov > v || (ov == v && oi < i))) {
        v = ov;
        i = oi;
      }
    }
    if ((i & 31) == lane) taken |= 1u << (i >> 5);
    if (lane == 0) {
      idx[j] = i;
      selv[j] = v;
    }
  }
  __syncwarp();
  const float m = selv[0];
  float s = 0.f;
  for (int j = lane; j < k; j += 32) s += expf(selv[j] - m);
  s = warp_sum(s);
  for (int j = lane; j < k; j += 32) wt[j] = expf(selv[j] - m) / s;
}

// The RMSNorm folded in front of the fused GEMV (gain not null): every CTA computes token t's 1/rms
// itself (kernels/cuda/rmsnorm_row.cuh: rmsnorm_cuda's sums) and scales x as it streams it, and
// CTA 0 stores the normalised row to xn for the experts, so the launch is bit for bit rmsnorm_cuda
// into xn, then router_topk_gemv_cuda on xn.
template <bool kGemv>
__global__ void __launch_bounds__(kThreads)
    router_topk_kernel(float* logits, int64_t ldl, const float* __restrict__ x, int64_t ldx,
                       const uint16_t* __restrict__ w, const uint16_t* __restrict__ b, unsigned* tickets,
                       int32_t* __restrict__ idx, float* __restrict__ wt, int E, int H, int k, bool vec,
                       const uint16_t* __restrict__ gain, float eps, float* __restrict__ xn, int64_t ldxn) {
  __shared__ float lg[kMaxE];
  __shared__ float part[kWarps];
  __shared__ int last;
  const int t = blockIdx.y, tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  float* lrow = logits + int64_t(t) * ldl;
  if (kGemv) {
    const int e = blockIdx.x * kWarps + warp;
    const float* xr = x + int64_t(t) * ldx;
    float inv = 1.f;
    if (gain) {
      __shared__ float red[norm::kRedFloats];
      inv = vec ? norm::inv_rms<kThreads, true>(xr, H, eps, red) : norm::inv_rms<kThreads, false>(xr, H, eps, red);
      if (blockIdx.x == 0) {
        float* xo = xn + int64_t(t) * ldxn;
        if (vec) {
          for (int i = tid; i < H / 4; i += kThreads) {
            const uint2 g = reinterpret_cast<const uint2*>(gain)[i];
            reinterpret_cast<float4*>(xo)[i] = norm::scale4(reinterpret_cast<const float4*>(xr)[i], inv, g.x, g.y);
          }
        } else {
          for (int i = tid; i < H; i += kThreads) xo[i] = norm::scale(xr[i], inv, gain[i]);
        }
      }
    }
    float acc = 0.f;
    if (e < E) {
      const uint16_t* wr = w + int64_t(e) * H;
      if (vec) {
        for (int c = lane; c < H / 8; c += 32) {
          const uint4 q = __ldg(reinterpret_cast<const uint4*>(wr) + c);
          float4 xa = __ldg(reinterpret_cast<const float4*>(xr) + 2 * c);
          float4 xb = __ldg(reinterpret_cast<const float4*>(xr) + 2 * c + 1);
          if (gain) {
            const uint4 g = __ldg(reinterpret_cast<const uint4*>(gain) + c);
            xa = norm::scale4(xa, inv, g.x, g.y);
            xb = norm::scale4(xb, inv, g.z, g.w);
          }
          acc = fmaf(__uint_as_float(q.x << 16), xa.x, acc);
          acc = fmaf(__uint_as_float(q.x & 0xffff0000u), xa.y, acc);
          acc = fmaf(__uint_as_float(q.y << 16), xa.z, acc);
          acc = fmaf(__uint_as_float(q.y & 0xffff0000u), xa.w, acc);
          acc = fmaf(__uint_as_float(q.z << 16), xb.x, acc);
          acc = fmaf(__uint_as_float(q.z & 0xffff0000u), xb.y, acc);
          acc = fmaf(__uint_as_float(q.w << 16), xb.z, acc);
          acc = fmaf(__uint_as_float(q.w & 0xffff0000u), xb.w, acc);
        }
      } else {
        for (int i = lane; i < H; i += 32)
          acc = fmaf(bf16_bits_to_f32(wr[i]), gain ? norm::scale(xr[i], inv, gain[i]) : xr[i], acc);
      }
    }
    acc = warp_sum(acc);
    if (lane == 0) part[warp] = acc;
    __syncthreads();
    if (tid == 0) {
      for (int i = 0; i < kWarps && blockIdx.x * kWarps + i < E; ++i) {
        const int r = blockIdx.x * kWarps + i;
        lrow[r] = part[i] + (b ? bf16_bits_to_f32(b[r]) : 0.f);
      }
      __threadfence();  // the logits are visible device-wide before the ticket is
      last = atomicAdd(&tickets[t], 1u) == gridDim.x - 1 ? 1 : 0;
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    if (tid == 0) tickets[t] = 0;
  }
  if (warp != 0) return;
  // Warp 0 loads the logits, each lane exactly the experts it will scan (lane, lane + 32, ...),
  // so no barrier is needed; the other CTAs' logits are read past L1 (volatile: ld.volatile).
  const volatile float* vrow = lrow;
  for (int e = lane; e < E; e += 32) lg[e] = kGemv ? vrow[e] : lrow[e];
  select_topk(lg, E, k, idx + int64_t(t) * k, wt + int64_t(t) * k);
}

void check_args(const RouterTopkArgs& a) {
  if (a.T < 0 || a.T > 65535 || a.E < 1 || a.E > kMaxE || a.k < 1 || a.k > a.E || a.ldl < a.E)
    throw invalid_argument("router_topk: need 0 <= T < 65536, 1 <= k <= E <= 256, ldl >= E");
  if (!a.idx || !a.weight) throw invalid_argument("router_topk: null pointer idx or weight");
}
}  // namespace
}  // namespace cuda

void router_topk_cuda(const RouterTopkArgs& a, cudaStream_t stream) {
  using namespace cuda;
  check_args(a);
  if (!a.logits) throw invalid_argument("router_topk: null pointer logits");
  if (a.T == 0) return;
  GPTOSS_LAUNCH(router_topk_kernel<false>, dim3(1, unsigned(a.T)), dim3(kThreads), 0, stream, const_cast<float*>(a.logits),
                a.ldl, static_cast<const float*>(nullptr), int64_t(0), static_cast<const uint16_t*>(nullptr),
                static_cast<const uint16_t*>(nullptr), static_cast<unsigned*>(nullptr), a.idx, a.weight, a.E, 0, a.k, false,
                static_cast<const uint16_t*>(nullptr), 0.f, static_cast<float*>(nullptr), int64_t(0));
  check_launch("router_topk");
}

void router_topk_gemv_cuda(const RouterTopkArgs& a, const RouterGemv& g, unsigned* tickets, cudaStream_t stream,
                           const RmsnormFold* n) {
  using namespace cuda;
  check_args(a);
  if (!a.logits || !g.x || !g.w || !tickets || g.H < 1 || g.ldx < g.H)
    throw invalid_argument("router_topk: the fused GEMV needs logits, x, w, tickets, H >= 1 and ldx >= H");
  if (n && (!n->gain || !n->xn || n->ldxn < g.H || !(n->eps >= 0.f)))
    throw invalid_argument("router_topk: the norm in front needs a gain, xn with ldxn >= H, and eps >= 0");
  if (a.T == 0) return;
  const bool vec = g.H % 8 == 0 && g.ldx % 4 == 0 && aligned(g.x, 16) && aligned(g.w, 16) &&
                   (!n || (n->ldxn % 4 == 0 && aligned(n->xn, 16) && aligned(n->gain, 16)));
  GPTOSS_LAUNCH(router_topk_kernel<true>, dim3(unsigned((a.E + kWarps - 1) / kWarps), unsigned(a.T)), dim3(kThreads), 0,
                stream, const_cast<float*>(a.logits), a.ldl, g.x, g.ldx, g.w, g.b, tickets, a.idx, a.weight, a.E, g.H, a.k,
                vec, n ? n->gain : nullptr, n ? n->eps : 0.f, n ? n->xn : nullptr, n ? n->ldxn : int64_t(0));
  check_launch("router_topk (gemv)");
}
}  // namespace gptoss
