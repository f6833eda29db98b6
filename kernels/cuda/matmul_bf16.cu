// matmul_bf16_f32 (GEMV for decode): y[t, n] (+)= sum_k x[t, k] * W[n, k] + b[n] for the QKV
// projection (5120 x 2880), the attention output (2880 x 4096, accumulate: the residual add), the
// router (E x 2880) and the unembedding (201088 x 2880). W is bf16 [N, K] as in the checkpoint,
// x and y f32; the reference is kernels/cpu/matmul_bf16.cc.
//
// A block is 8 warps and owns 8 * rows_per_warp consecutive rows; each warp owns whole rows, one
// at a time. The block first copies the launch's tokens of x (up to 4 x K f32) into shared memory
// with float4 loads, then each lane streams the row's weights with 16-byte read-only loads (8 bf16
// per load, lanes adjacent in memory: one 512-byte coalesced request per warp) and keeps one f32
// accumulator per token; the 32 lanes meet with xor shuffles. Decode is bandwidth-bound: each
// weight byte is read once per launch, the x reread comes from shared memory (LDS.128, broadcast-
// free: lanes read consecutive 32-byte spans). The sum order depends only on K, never on T, on the
// other tokens or on the grid, so a token's output is bit-identical alone or batched, and runs
// repeat bit for bit. f32 accumulation as the CPU op (gpt-oss-spec.md §8); the tolerance against
// it is argued in test/cuda/matmul_bf16_test.cu.
// Limits (checked by the launcher): T >= 0, N >= 1, 1 <= K <= 12288, ldx >= K, ldy >= N; the
// vector path needs K % 8 == 0, W and x 16-byte aligned and ldx % 4 == 0 (else a scalar path).
#include "kernels/cuda/matmul_bf16.cuh"

#include <algorithm>

namespace gptoss {
namespace cuda {
namespace {
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxTokens = 4;  // accumulators per lane; more tokens go in further launches
constexpr size_t kSmemBytes = 48 * 1024;

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

template <int T, bool kVec>
__global__ void __launch_bounds__(kThreads)
    matmul_bf16_f32(const float* __restrict__ x, int64_t ldx, const uint16_t* __restrict__ w,
                    const uint16_t* __restrict__ bias, float* __restrict__ y, int64_t ldy, int N, int K,
                    int rows_per_warp, bool accumulate) {
  float* xs = dynamic_shared<float>();  // [T, K]
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  if (kVec) {
    const int k4 = K / 4;
    for (int i = tid; i < T * k4; i += kThreads) {
      const int t = i / k4;
      reinterpret_cast<float4*>(xs)[i] = reinterpret_cast<const float4*>(x + t * ldx)[i - t * k4];
    }
  } else {
    for (int i = tid; i < T * K; i += kThreads) {
      const int t = i / K;
      xs[i] = x[t * ldx + (i - t * K)];
    }
  }
  __syncthreads();

  for (int r = 0; r < rows_per_warp; ++r) {
    const int n = (blockIdx.x * rows_per_warp + r) * kWarps + warp;
    if (n >= N) break;  // no barrier follows: a warp past N simply stops
    const uint16_t* wr = w + int64_t(n) * K;
    float acc[T];
#pragma unroll
    for (int t = 0; t < T; ++t) acc[t] = 0.f;
    if (kVec) {
      const uint4* w8 = reinterpret_cast<const uint4*>(wr);
      const float4* x4 = reinterpret_cast<const float4*>(xs);
      const int k8 = K / 8;
#pragma unroll 4
      for (int c = lane; c < k8; c += 32) {
        const uint4 q = __ldg(w8 + c);
        const float w0 = bf16_bits_to_f32(q.x & 0xffffu), w1 = bf16_bits_to_f32(q.x >> 16);
        const float w2 = bf16_bits_to_f32(q.y & 0xffffu), w3 = bf16_bits_to_f32(q.y >> 16);
        const float w4 = bf16_bits_to_f32(q.z & 0xffffu), w5 = bf16_bits_to_f32(q.z >> 16);
        const float w6 = bf16_bits_to_f32(q.w & 0xffffu), w7 = bf16_bits_to_f32(q.w >> 16);
#pragma unroll
        for (int t = 0; t < T; ++t) {
          const float4 a = x4[t * (K / 4) + 2 * c], b = x4[t * (K / 4) + 2 * c + 1];
          float s = acc[t];
          s = fmaf(w0, a.x, s);
          s = fmaf(w1, a.y, s);
          s = fmaf(w2, a.z, s);
          s = fmaf(w3, a.w, s);
          s = fmaf(w4, b.x, s);
          s = fmaf(w5, b.y, s);
          s = fmaf(w6, b.z, s);
          s = fmaf(w7, b.w, s);
          acc[t] = s;
        }
      }
    } else {
      for (int k = lane; k < K; k += 32) {
        const float wk = bf16_bits_to_f32(wr[k]);
#pragma unroll
        for (int t = 0; t < T; ++t) acc[t] = fmaf(wk, xs[t * K + k], acc[t]);
      }
    }
    const float b = bias ? bf16_bits_to_f32(bias[n]) : 0.f;
#pragma unroll
    for (int t = 0; t < T; ++t) {
      const float v = warp_sum(acc[t]) + b;
      // Lane t writes token t (static indices only: acc stays in registers).
      if (lane == t) {
        float* yp = y + t * ldy + n;
        *yp = accumulate ? *yp + v : v;
      }
    }
  }
}

template <int T, bool kVec>
void launch(const MatmulBf16Args& a, const float* x, float* y, int rows_per_warp, cudaStream_t stream) {
  const int rows_per_block = kWarps * rows_per_warp;
  const dim3 grid(unsigned((a.N + rows_per_block - 1) / rows_per_block));
  const size_t smem = size_t(T) * a.K * 4;
  GPTOSS_LAUNCH((matmul_bf16_f32<T, kVec>), grid, dim3(kThreads), smem, stream, x, a.ldx, a.w, a.b, y, a.ldy, a.N, a.K,
                rows_per_warp, a.accumulate);
}
}  // namespace
}  // namespace cuda

int matmul_bf16_rows_per_warp_cuda(int N) {
  // Large N (the unembedding): 4 rows per warp, so each block's copy of x serves 32 rows of
  // weights (the copy is an L2 read of 4 K bytes per token against 64 K bytes of weights); below
  // that, 1, so the QKV and output projections spread over every SM (640 and 360 blocks).
  return N >= 32768 ? 4 : 1;
}

void matmul_bf16_cuda(const MatmulBf16Args& a, cudaStream_t stream, int rows_per_warp) {
  using namespace cuda;
  if (a.T < 0 || a.N < 1 || a.K < 1 || a.ldx < a.K || a.ldy < a.N || !a.x || !a.w || !a.y)
    throw invalid_argument("matmul_bf16: need T >= 0, N >= 1, K >= 1, ldx >= K, ldy >= N and non-null x, w, y");
  if (a.K > kMatmulBf16MaxKCuda)
    throw invalid_argument("matmul_bf16: K " + std::to_string(a.K) + " > " + std::to_string(kMatmulBf16MaxKCuda) +
                           " (x for one token must fit 48 KB of shared memory)");
  if (a.T == 0) return;
  const bool vec = a.K % 8 == 0 && a.ldx % 4 == 0 && aligned(a.x, 16) && aligned(a.w, 16);
  if (rows_per_warp < 0 || rows_per_warp > 64) throw invalid_argument("matmul_bf16: rows_per_warp must be in [0, 64]");
  if (rows_per_warp == 0) rows_per_warp = matmul_bf16_rows_per_warp_cuda(a.N);
  // The scalar path (odd K or unaligned rows, never gpt-oss's shapes) takes one token a launch.
  const int per_launch = vec ? int(std::min<size_t>(kMaxTokens, kSmemBytes / (size_t(a.K) * 4))) : 1;
  for (int t0 = 0; t0 < a.T; t0 += per_launch) {
    const int n = std::min(per_launch, a.T - t0);
    const float* x = a.x + int64_t(t0) * a.ldx;
    float* y = a.y + int64_t(t0) * a.ldy;
    if (!vec) launch<1, false>(a, x, y, rows_per_warp, stream);
    else if (n == 1) launch<1, true>(a, x, y, rows_per_warp, stream);
    else if (n == 2) launch<2, true>(a, x, y, rows_per_warp, stream);
    else if (n == 3) launch<3, true>(a, x, y, rows_per_warp, stream);
    else launch<4, true>(a, x, y, rows_per_warp, stream);
    check_launch("matmul_bf16");
  }
}
}  // namespace gptoss
