// The generic variant of the hot loops (see simd.h); the build compiles this file with its flags.
#include "kernels/cpu/simd_impl.h"

namespace gptoss::cpu {
extern const SimdKernels kSimdGeneric = {"generic", gemv_bf16, gemm_bf16, split_pairs, gemv_mxfp4, gemm_mxfp4,
                               bf16_to_f32_row, dot_f32, axpy_f32, dots_f32, axpys_f32, exp_sum, sum_f32};
}
