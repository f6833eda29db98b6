// rope_f32: YaRN rotary embedding on the Q and K heads of a fused qkv row, in place
// (kernels/MODEL.md, "YaRN rotary"): half-split pairs (i, i + D/2), the table's NTK-by-parts
// frequencies and the concentration in both cos and sin; the reference is kernels/cpu/rope.cc,
// matched bit for bit but for the rare last-bit rounding of cos/sin (test/cuda/rope_test.cu).
//
// One block of 256 threads per token. The first D/2 threads compute the angle as the CPU does (the
// f32 product of position and frequency) and its cos and sin in double through sincospi: the
// reduction modulo 2 is exact, so angles up to 131072 rad stay accurate (kernels/MODEL.md, "Numerics": no fast-math sin)
// with no Payne-Hanek table in local memory; then every thread rotates pairs of every head with
// products and a difference nvcc may not contract into an FMA (__fmul_rn, as the CPU computes
// them). Fused variant (kAppend): the thread that rotates a K pair also writes it to the token's
// cache row, and the block copies the V heads there too (kv_append's work, one launch saved).
// Limits (checked by the launcher): head_dim even and <= 128, 0 <= T < 2^31.
#include "kernels/cuda/kv_cache.cuh"
#include "kernels/cuda/rope.cuh"

namespace gptoss {
namespace cuda {
namespace {
constexpr int kThreads = 256;
constexpr int kMaxHalf = 64;
constexpr double kInvPi = 0.31830988618379067154;

struct RopeConsts {
  float omega[kMaxHalf];
  float concentration;
};

// kAppend: kc/vc/pages/vcol/width used; C is the cache element (float or bf16 bits).
template <bool kAppend, class C>
__global__ void __launch_bounds__(kThreads)
    rope_f32(float* __restrict__ qkv, int64_t ld, const int32_t* __restrict__ positions, int q_heads, int kv_heads, int half,
             RopeConsts tab, C* __restrict__ kc, C* __restrict__ vc, KvPages pages, int64_t vcol) {
  __shared__ float cs[kMaxHalf], sn[kMaxHalf];
  const int t = blockIdx.x, tid = threadIdx.x;
  const int32_t pos = positions[t];
  if (tid < half) {
    const float ang = float(pos) * tab.omega[tid];
    double s, c;
    sincospi(double(ang) * kInvPi, &s, &c);
    cs[tid] = __fmul_rn(float(c), tab.concentration);
    sn[tid] = __fmul_rn(float(s), tab.concentration);
  }
  __syncthreads();
  float* row = qkv + t * ld;
  const int D = 2 * half, width = kv_heads * D;
  const int64_t crow = kAppend ? page_row(pages, pages.seq[t], pos) * width : 0;
  for (int i = tid; i < (q_heads + kv_heads) * half; i += kThreads) {
    const int h = i / half, j = i - h * half;
    float* x = row + h * D;
    const float x1 = x[j], x2 = x[j + half], c = cs[j], s = sn[j];
    const float o1 = __fsub_rn(__fmul_rn(x1, c), __fmul_rn(x2, s));
    const float o2 = __fadd_rn(__fmul_rn(x2, c), __fmul_rn(x1, s));
    x[j] = o1;
    x[j + half] = o2;
    if (kAppend && h >= q_heads) {
      C* k = kc + crow + (h - q_heads) * D;
      store_cache(k + j, o1);
      store_cache(k + j + half, o2);
    }
  }
  if (kAppend)
    for (int i = tid; i < width; i += kThreads) store_cache(vc + crow + i, row[vcol + i]);
}

RopeConsts consts(const RopeArgs& a) {
  if (a.T < 0 || a.q_heads < 0 || a.kv_heads < 0 || a.head_dim < 2 || a.head_dim % 2 || a.head_dim / 2 > kMaxHalf ||
      a.ld < int64_t(a.q_heads + a.kv_heads) * a.head_dim || !a.table || int(a.table->omega.size()) != a.head_dim / 2)
    throw invalid_argument("rope: need T >= 0, head_dim even and <= 128, ld >= (q_heads + kv_heads) * head_dim and a table of "
                           "head_dim / 2 frequencies");
  RopeConsts c{};
  for (int i = 0; i < a.head_dim / 2; ++i) c.omega[i] = a.table->omega[i];
  c.concentration = a.table->concentration;
  return c;
}
}  // namespace
}  // namespace cuda

void rope_cuda(const RopeArgs& a, cudaStream_t stream) {
  using namespace cuda;
  const RopeConsts c = consts(a);
  if (a.T == 0) return;
  if (!a.qkv || !a.positions) throw invalid_argument("rope: null qkv or positions");
  GPTOSS_LAUNCH((rope_f32<false, float>), dim3(unsigned(a.T)), dim3(kThreads), 0, stream, a.qkv, a.ld, a.positions, a.q_heads,
                a.kv_heads, a.head_dim / 2, c, static_cast<float*>(nullptr), static_cast<float*>(nullptr), KvPages{}, int64_t(0));
  check_launch("rope");
}

void rope_kv_append_cuda(const RopeArgs& r, const KvAppendArgs& kv, cudaStream_t stream) {
  using namespace cuda;
  const RopeConsts c = consts(r);
  const int64_t vcol = kv.v - r.qkv;
  if (kv.k != r.qkv + int64_t(r.q_heads) * r.head_dim || kv.ld != r.ld || kv.positions != r.positions || kv.T != r.T ||
      kv.width != r.kv_heads * r.head_dim || vcol < 0 || vcol + kv.width > r.ld ||
      (kv.cache_dtype != DType::F32 && kv.cache_dtype != DType::BF16))
    throw invalid_argument("rope_kv_append: the append must take the rotated K heads and V heads of the same rows, positions and "
                           "tokens, into an f32 or bf16 pool");
  if (r.T == 0) return;
  if (!r.qkv || !r.positions || !kv.k_cache || !kv.v_cache || !kv.pages.seq || !kv.pages.table || kv.pages.ring < 1 ||
      kv.pages.page_size < 1)
    throw invalid_argument("rope_kv_append: null pointer or empty page table");
  if (kv.cache_dtype == DType::F32)
    GPTOSS_LAUNCH((rope_f32<true, float>), dim3(unsigned(r.T)), dim3(kThreads), 0, stream, r.qkv, r.ld, r.positions, r.q_heads,
                  r.kv_heads, r.head_dim / 2, c, static_cast<float*>(kv.k_cache), static_cast<float*>(kv.v_cache), kv.pages, vcol);
  else
    GPTOSS_LAUNCH((rope_f32<true, uint16_t>), dim3(unsigned(r.T)), dim3(kThreads), 0, stream, r.qkv, r.ld, r.positions,
                  r.q_heads, r.kv_heads, r.head_dim / 2, c, static_cast<uint16_t*>(kv.k_cache),
                  static_cast<uint16_t*>(kv.v_cache), kv.pages, vcol);
  check_launch("rope_kv_append");
}
}  // namespace gptoss
