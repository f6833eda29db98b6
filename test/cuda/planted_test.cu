// The emulator tested with planted bugs (issue 16, item 3). One small kernel exercises what real
// kernels do: cp.async staging in two groups into exactly-sized dynamic shared memory, a transpose
// through an xor-swizzled static shared tile, a block reduction with shuffles and __syncthreads,
// and a 16-byte vector load; a second, the last-block pattern over a grid (tickets). Each switch
// plants one bug; each must be caught (a wrong result under
// some schedule, a rule error, or a sanitizer report), and the correct kernel must pass under
// every schedule. The line printed under each test says what caught it. Emulator only: on a GPU
// these bugs are undefined behaviour, which compute-sanitizer (benchmarks/gpu.sh) looks for.
#if defined(GPTOSS_CUDA_EMU)
#include <sys/wait.h>
#include <unistd.h>

#include "kernels/cuda/mma.cuh"
#include "test/cuda/harness.h"

namespace {
using namespace gptoss::cuda;

enum Bug {
  kNone, kNoSync, kBadSwizzle, kPastDynSmem, kDivergentShfl, kMisaligned, kWaitTooFew,
  kBarrierLines, kExitEarly, kMaskWithoutCaller, kDeadlock, kCpAsyncMisaligned, kShflOutsideMask,
  kExitBeforeShfl, kShflMaskMismatch, kTicketBeforeStores,
};
constexpr int kN = 16;  // a 16x16 tile
constexpr int kThreads = 128;

// out = transpose(in) / sqrt(sum(in^2)) * scale.x
__global__ void planted(const float* in, const float4* scale, float* out, int bug) {
  float* tile = dynamic_shared<float>();  // [kN * kN], filled by cp.async
  __shared__ float tr[kN * kN];           // row c holds column c of the tile, slot r ^ c
  __shared__ float warp_ss[kThreads / 32];
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  if (t < 32) {
    cp_async16(tile + 4 * t, in + 4 * t + (bug == kCpAsyncMisaligned ? 1 : 0));
    cp_async_commit();
    cp_async16(tile + 128 + 4 * t, in + 128 + 4 * t);
    cp_async_commit();
    if (bug == kWaitTooFew)
      cp_async_wait<1>();
    else
      cp_async_wait<0>();
  }
  if (bug == kPastDynSmem && t == 0) tile[kN * kN] = 0.f;
  __syncthreads();
  for (int e = t; e < kN * kN; e += kThreads) {
    const int r = e / kN, c = e % kN;
    tr[c * kN + (r ^ c)] = tile[e];
  }
  if (bug != kNoSync) __syncthreads();
  float v[2], ss = 0.f;
  for (int i = 0; i < 2; ++i) {
    const int e = t + kThreads * i, r = e / kN, c = e % kN;
    v[i] = tr[r * kN + (bug == kBadSwizzle ? c : (c ^ r))];
    ss += tile[e] * tile[e];
  }
  if (bug == kDivergentShfl && lane < 16) ss += __shfl_xor_sync(kFullMask, ss, 1);
  if (bug == kMaskWithoutCaller && lane == 5) ss += __shfl_xor_sync(0xffffffdfu, ss, 1);
  if (bug == kShflOutsideMask && warp == 0 && lane < 16) ss += __shfl_down_sync(0x0000ffffu, ss, 8);
  if (bug == kDeadlock && lane < 2) {
    if (lane == 0) __syncwarp(0x3u);
    else __syncthreads();
  }
  if (bug == kExitBeforeShfl && t == 31) return;  // warp 0's lanes 0-30 wait for it in the shuffles below
  for (int o = 16; o > 0; o >>= 1)
    ss += __shfl_xor_sync(bug == kShflMaskMismatch && t == 3 ? 0xfffffffeu : kFullMask, ss, o);
  if (lane == 0) warp_ss[warp] = ss;
  if (bug == kExitEarly && t == kThreads - 1) return;
  if (bug == kBarrierLines && warp == 1) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  const float total = warp_ss[0] + warp_ss[1] + warp_ss[2] + warp_ss[3];
  const float4 s = *scale;
  for (int i = 0; i < 2; ++i) out[t + kThreads * i] = v[i] / sqrtf(total) * s.x;
}

// The last-block pattern (split-k's sum, the sampler's merge): out = the sum of 2 x in, in order,
// by the block whose warp counts the grid's last ticket. Every lane stores its share, fences, and
// its warp's lane 0 counts a ticket once the warp's lanes have stored (__syncwarp).
constexpr int kTicketBlocks = 3, kTicketThreads = 64;
__global__ void planted_tickets(const float* in, float* part, unsigned* ticket, float* out, int bug) {
  __shared__ unsigned last;
  const int t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
  if (t == 0) last = 0u;
  __syncthreads();
  part[i] = 2.f * in[i];
  __threadfence();
  if (bug != kTicketBeforeStores) __syncwarp();
  if ((t & 31) == 0 && atomicAdd(ticket, 1u) == gridDim.x * (blockDim.x / 32) - 1) last = 1u;
  __syncthreads();
  if (!last) return;
  __threadfence();
  if (t == 0) {
    float s = 0.f;
    for (unsigned k = 0; k < gridDim.x * blockDim.x; ++k) s += part[k];
    *out = s;
    *ticket = 0u;
  }
}

struct Result {
  bool caught;
  std::string how;
};

std::vector<float> input() {
  lab::Rng r(42);
  std::vector<float> x(kN * kN);
  for (auto& v : x) v = r.uniform(-2.f, 2.f);
  return x;
}

// Launches once under the current schedule; the check of the output against the reference.
void run_once(int bug, const std::vector<float>& x) {
  alignas(16) float scale_buf[8] = {1.5f, 0, 0, 0, 0, 0, 0, 0};
  const float4* scale = reinterpret_cast<const float4*>(bug == kMisaligned ? scale_buf + 1 : scale_buf);
  lab::DeviceBuf<float> din(x), dout(kN * kN);
  GPTOSS_LAUNCH(planted, dim3(1), dim3(kThreads), kN * kN * sizeof(float), nullptr, din.p, scale, dout.p, bug);
  const std::vector<float> got = dout.download();
  double ss = 0;
  for (float v : x) ss += double(v) * v;
  std::vector<float> want(kN * kN);
  for (int r = 0; r < kN; ++r)
    for (int c = 0; c < kN; ++c) want[r * kN + c] = float(x[c * kN + r] / std::sqrt(ss) * 1.5);
  const double e = lab::max_rel_err(got.data(), want.data(), want.size(), 1e-3);
  LAB_CHECK(e < 1e-5, "wrong result: max relative error %.3g", e);
}

// The tickets kernel once: the shares start NaN (cudaMalloc's poison), the ticket at zero.
void run_tickets_once(int bug) {
  const int n = kTicketBlocks * kTicketThreads;
  lab::Rng r(7);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = r.uniform(-2.f, 2.f);
  lab::DeviceBuf<float> din(x), dpart(x.size()), dout(1);
  lab::DeviceBuf<unsigned> dticket(1);
  cudaMemset(dticket.p, 0, sizeof(unsigned));
  GPTOSS_LAUNCH(planted_tickets, dim3(kTicketBlocks), dim3(kTicketThreads), 0, nullptr, din.p, dpart.p, dticket.p, dout.p, bug);
  float want = 0.f;
  for (float v : x) want += 2.f * v;
  const float got = dout.download()[0];
  LAB_CHECK(got == want, "wrong result: sum %.9g, want %.9g", got, want);
  LAB_CHECK(dticket.download()[0] == 0u, "the ticket was left at %u", dticket.download()[0]);
}

// Every schedule; caught as soon as one gives a wrong result or a rule error.
Result under_schedules(int bug) {
  const std::vector<float> x = input();
  try {
    lab::for_each_schedule([&] {
      if (bug == kTicketBeforeStores || bug == kNone) run_tickets_once(bug);
      if (bug != kTicketBeforeStores) run_once(bug, x);
    });
  } catch (const std::exception& e) {
    return {true, e.what()};
  }
  return {false, "passed under every schedule"};
}

// For bugs a sanitizer reports (the report aborts the process): run in a child, read its stderr.
Result in_child(int bug, const char* pattern) {
  int fds[2];
  if (pipe(fds) != 0) return {false, "pipe failed"};
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 2);
    close(fds[0]);
    const Result r = under_schedules(bug);
    std::fprintf(stderr, "child: %s\n", r.how.c_str());
    _exit(r.caught ? 3 : 0);
  }
  close(fds[1]);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) out.append(buf, size_t(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  const bool failed = !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  const size_t at = out.find(pattern);
  if (failed && at != std::string::npos) {
    const size_t bol = out.rfind('\n', at) == std::string::npos ? 0 : out.rfind('\n', at) + 1;
    return {true, out.substr(bol, out.find('\n', at) - bol)};
  }
  return {false, "child " + std::string(failed ? "failed" : "passed") + " without '" + pattern + "':\n" + out.substr(0, 2000)};
}

void expect(const char* what, const Result& r, const char* must_contain = "") {
  LAB_CHECK(r.caught, "planted bug '%s' was NOT caught: %s", what, r.how.c_str());
  LAB_CHECK(std::strstr(r.how.c_str(), must_contain), "planted bug '%s' caught, but not as expected (%s): %s", what,
            must_contain, r.how.c_str());
  std::printf("      caught '%s': %s\n", what, r.how.c_str());
}

#if defined(LAB_SANITIZERS)
constexpr bool kSan = true;
#else
constexpr bool kSan = false;
#endif
}  // namespace

LAB_TEST("planted: the correct kernels pass under forward, reverse, tickets and two random schedules") {
  const Result r = under_schedules(kNone);
  LAB_CHECK(!r.caught, "the correct kernel failed: %s", r.how.c_str());
}
LAB_TEST("planted: a missing __syncthreads is caught") { expect("missing __syncthreads", under_schedules(kNoSync), "wrong result"); }
LAB_TEST("planted: a broken swizzle is caught") { expect("broken swizzle", under_schedules(kBadSwizzle), "wrong result"); }
LAB_TEST("planted: a write one element past dynamic shared memory is caught") {
  if (kSan) expect("write past dynamic shared memory", in_child(kPastDynSmem, "AddressSanitizer"), "AddressSanitizer");
  else expect("write past dynamic shared memory", under_schedules(kPastDynSmem), "past the end of dynamic shared memory");
}
LAB_TEST("planted: a full-mask shuffle under if (lane < 16) is caught") {
  expect("full-mask shuffle under if (lane < 16)", under_schedules(kDivergentShfl), "disagree");
}
LAB_TEST("planted: a misaligned 16-byte load is caught") {
  if (kSan) expect("misaligned float4 pointer", in_child(kMisaligned, "misaligned address"), "misaligned address");
  else expect("misaligned float4 pointer", under_schedules(kMisaligned), "not 16-byte aligned");
}
LAB_TEST("planted: waiting for one cp.async group too few is caught") {
  expect("cp.async wait_group one too few", under_schedules(kWaitTooFew), "wrong result");
}
LAB_TEST("planted: __syncthreads reached at two different lines is caught") {
  expect("barrier at different lines", under_schedules(kBarrierLines), "barrier reached at different places");
}
LAB_TEST("planted: a thread exiting while the block waits for it at a barrier is caught") {
  expect("exit before a barrier", under_schedules(kExitEarly), "which has exited");
}
LAB_TEST("planted: a shuffle mask that leaves out the calling lane is caught") {
  expect("mask without the caller", under_schedules(kMaskWithoutCaller), "does not name the calling lane");
}
LAB_TEST("planted: a deadlock (__syncwarp waiting on a lane held at __syncthreads) is caught") {
  expect("deadlock", under_schedules(kDeadlock), "deadlock");
}
LAB_TEST("planted: a cp.async from a misaligned source is caught") {
  expect("misaligned cp.async", under_schedules(kCpAsyncMisaligned), "misaligned");
}
LAB_TEST("planted: a shuffle reading a lane outside its mask is caught") {
  expect("shuffle reads outside the mask", under_schedules(kShflOutsideMask), "not in the mask");
}
LAB_TEST("planted: a lane exiting before a full-mask shuffle the others wait in is caught") {
  expect("exit before a full-mask shuffle", under_schedules(kExitBeforeShfl),
         "__shfl_xor_sync with mask 0xffffffff waits for lane 31, which has exited");
}
LAB_TEST("planted: one lane passing a different mask at the shuffle all lanes reach is caught") {
  const Result r = under_schedules(kShflMaskMismatch);
  LAB_CHECK(std::strstr(r.how.c_str(), "with mask 0xfffffffe"), "not caught as lane 3's mask: %s", r.how.c_str());
  expect("one lane's mask differs at the same shuffle", r, "disagree");
}
LAB_TEST("planted: a warp's ticket counted before its other lanes store (no __syncwarp) is caught by the tickets schedule") {
  if (!emu::blocks_interleave()) {  // a GCC build (cuda_emu.h): nothing can overtake the block
    std::printf("      not run: blocks do not interleave in a GCC build\n");
    return;
  }
  expect("ticket before the warp's stores", under_schedules(kTicketBeforeStores), "[schedule tickets] ");
}
#endif
