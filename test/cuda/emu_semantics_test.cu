// The emulator's warp shuffles and counting barriers against CUDA's statement of them, with
// expected values derived by hand here (not from the emulator). Built for the emulator and, by
// test/cuda/build-native.sh, with nvcc: a GPU run confirms the emulator on the same cases.
//
// Shuffles at width 8 and 16 with sources outside the caller's segment. The PTX ISA's shfl.sync
// pseudo-code (CUDA passes c = ((32 - width) << 8) | clamp, clamp 0 for .up and 31 otherwise):
//   segmask = 32 - width; maxLane = (lane & segmask) | (clamp & ~segmask); minLane = lane & segmask
//   .up: j = lane - b, valid if j >= maxLane      .down: j = lane + b, valid if j <= maxLane
//   .bfly: j = lane ^ b, valid if j <= maxLane    .idx: j = minLane | (b & ~segmask), valid if j <= maxLane
//   not valid: j = lane (the caller's own value)
// In words (CUDA Programming Guide, "Warp Shuffle Functions"): __shfl_sync reads lane srcLane %
// width of the caller's segment; __shfl_up_sync / __shfl_down_sync return the caller's own value
// when the source falls before / after its segment; __shfl_xor_sync may read an earlier segment
// (whose lanes are at most maxLane) but returns the caller's own value for a later one.
// __syncthreads_count returns how many threads of the block passed a non-zero predicate;
// __syncthreads_and / _or are non-zero iff all / any did.
#include "test/cuda/harness.h"

namespace {

constexpr int kCases = 15;
constexpr unsigned kFull = 0xffffffffu;

// out[c * 32 + lane] = the lane whose value lane received in case c (every lane holds 100 + lane).
__global__ void shfl_cases(int* out) {
  const int l = threadIdx.x, v = 100 + l;
  for (int c = 0; c < kCases; ++c) {
    int r = -1;
    switch (c) {  // c is the same in every lane: all 32 reach each shuffle
      case 0: r = __shfl_sync(kFull, v, 13, 8); break;
      case 1: r = __shfl_sync(kFull, v, -1, 16); break;
      case 2: r = __shfl_sync(kFull, v, l + 20, 8); break;
      case 3: r = __shfl_up_sync(kFull, v, 3, 8); break;
      case 4: r = __shfl_up_sync(kFull, v, 9, 8); break;
      case 5: r = __shfl_up_sync(kFull, v, 5, 16); break;
      case 6: r = __shfl_down_sync(kFull, v, 5, 16); break;
      case 7: r = __shfl_down_sync(kFull, v, 3, 8); break;
      case 8: r = __shfl_down_sync(kFull, v, 12, 8); break;
      case 9: r = __shfl_xor_sync(kFull, v, 3, 8); break;
      case 10: r = __shfl_xor_sync(kFull, v, 8, 8); break;
      case 11: r = __shfl_xor_sync(kFull, v, 16, 16); break;
      case 12: r = __shfl_xor_sync(kFull, v, 24, 8); break;
      case 13: r = __shfl_xor_sync(kFull, v, 4, 16); break;
      case 14: r = __shfl_xor_sync(kFull, v, 20, 16); break;
    }
    out[c * 32 + l] = r - 100;
  }
}

// The source lane of lane l in each case, worked out by hand from the rules above.
int want_source(int c, int l) {
  switch (c) {
    case 0: return (l / 8) * 8 + 5;  // 13 % 8 = 5 in each 8-lane segment
    case 1: return (l / 16) * 16 + 15;  // -1 % 16 = 15 (srcLane's low bits)
    case 2: return (l / 8) * 8 + (l + 4) % 8;  // (l + 20) % 8 = (l + 4) % 8, same segment
    case 3: return l % 8 >= 3 ? l - 3 : l;  // lanes 0-2 of a segment keep their own
    case 4: return l;  // 9 > width - 1: every source is before the segment
    case 5: return l % 16 >= 5 ? l - 5 : l;
    case 6: return l % 16 <= 10 ? l + 5 : l;  // lanes 11-15 of a segment keep their own
    case 7: return l % 8 <= 4 ? l + 3 : l;
    case 8: return l;  // 12 > width - 1: every source is after the segment
    case 9: return l ^ 3;  // within the segment
    case 10: return (l & 8) ? l - 8 : l;  // segments 1 and 3 read segments 0 and 2; 0 and 2 keep their own
    case 11: return l >= 16 ? l - 16 : l;  // the upper half reads the lower; the lower keeps its own
    case 12: return l >= 16 ? l ^ 24 : l;  // segments 2, 3 read 1, 0; segments 0, 1 would read 3, 2: own
    case 13: return l ^ 4;  // within the segment
    case 14: return l >= 16 ? l ^ 20 : l;  // lanes 16-31 read 4 ^ (l - 16); lanes 0-15 would read 16-31: own
  }
  return -1;
}

constexpr int kBlock = 80;  // two full warps and a partial third
constexpr int kSyncCases = 6;

__global__ void syncthreads_cases(int* out) {
  const int t = threadIdx.x;
  int* o = out + t * kSyncCases;
  o[0] = __syncthreads_count(t % 3 == 0);
  o[1] = __syncthreads_count(t * 7);  // any non-zero value counts once
  o[2] = __syncthreads_and(t < kBlock) != 0;
  o[3] = __syncthreads_and(t != 41) != 0;
  o[4] = __syncthreads_or(t == kBlock - 1) != 0;
  o[5] = __syncthreads_or(0) != 0;
}

}  // namespace

LAB_TEST("emu semantics: __shfl_sync/_up/_down/_xor at widths 8 and 16, sources outside the segment") {
  lab::DeviceBuf<int> out(kCases * 32);
  lab::for_each_schedule([&] {
    GPTOSS_LAUNCH(shfl_cases, dim3(1), dim3(32), 0, nullptr, out.p);
    const std::vector<int> got = out.download();
    for (int c = 0; c < kCases; ++c)
      for (int l = 0; l < 32; ++l)
        LAB_CHECK(got[c * 32 + l] == want_source(c, l), "case %d: lane %d read lane %d, want lane %d", c, l, got[c * 32 + l],
                  want_source(c, l));
  });
}

LAB_TEST("emu semantics: __syncthreads_count/_and/_or over 80 threads (a partial warp)") {
  lab::DeviceBuf<int> out(kBlock * kSyncCases);
  // 0, 3, ..., 78: 27 threads; t * 7 is zero for t = 0 only; all are < 80; thread 41 fails the and;
  // thread 79 passes the or; nobody passes 0.
  const int want[kSyncCases] = {27, kBlock - 1, 1, 0, 1, 0};
  lab::for_each_schedule([&] {
    GPTOSS_LAUNCH(syncthreads_cases, dim3(1), dim3(kBlock), 0, nullptr, out.p);
    const std::vector<int> got = out.download();
    for (int t = 0; t < kBlock; ++t)
      for (int c = 0; c < kSyncCases; ++c)
        LAB_CHECK(got[t * kSyncCases + c] == want[c], "case %d: thread %d got %d, want %d", c, t, got[t * kSyncCases + c],
                  want[c]);
  });
}
