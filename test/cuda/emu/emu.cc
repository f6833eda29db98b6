// The emulator's scheduler: fibers per CUDA thread, rendezvous resolution, the rule checks and the
// poisoning described in cuda_emu.h. Kept out of line so that every intrinsic is an opaque call:
// the compiler then reloads shared memory after a barrier as it must on a GPU.
#include "cuda_emu.h"

#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <vector>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMU_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define EMU_ASAN 1
#endif
#ifdef EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

extern "C" {
extern char __start_emu_shared[] __attribute__((weak));
extern char __stop_emu_shared[] __attribute__((weak));
}

// Switching fibers. glibc's swapcontext saves and restores the signal mask with a system call on
// every switch, which was 85% of the emulator's time (perf, an end-to-end forward on the emulated
// addon). On x86-64 a switch is instead the System V callee-saved registers, the SSE and x87
// control words and the stack pointer: emu_switch(&from_sp, to_sp) pushes them on the current
// stack, stores its pointer, loads the other and pops. Elsewhere, ucontext.
#if defined(__x86_64__)
#define EMU_FAST_SWITCH 1
extern "C" void emu_switch(void** from_sp, void* to_sp);
asm(R"(
  .text
  .p2align 4
  .globl emu_switch
  .hidden emu_switch
  .type emu_switch, @function
emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_switch, .-emu_switch
  .section .note.GNU-stack,"",@progbits
  .text
)");
#endif

namespace emu {
ThreadRegs* g_regs = nullptr;

namespace {
constexpr size_t kStack = 256 * 1024;  // ASan frames are large; fibers only run small kernels
constexpr size_t kCanary = 64;
constexpr unsigned char kCanaryByte = 0xA5;

enum class State { Runnable, Waiting, Done };

struct CpCopy {
  void* dst;
  std::vector<unsigned char> bytes;
};

struct Thread {
#ifdef EMU_FAST_SWITCH
  void* sp = nullptr;  // saved stack pointer while switched out (emu_switch)
#else
  ucontext_t ctx;
#endif
  char* stack = nullptr;
  ThreadRegs regs;
  int linear = 0, lane = 0, warp = 0;
  State state = State::Runnable;
  // what it waits at
  Op op = Op::SyncThreads;
  unsigned mask = 0;
  uint64_t val = 0, result = 0;
  int arg = 0, width = 32, pred = 0;
  void* data = nullptr;
  Site site{"?", 0};
  Site last{"?", 0};  // last intrinsic reached, for messages about exited threads
  std::vector<CpCopy> cp_pending;
  std::deque<std::vector<CpCopy>> cp_groups;
#ifdef EMU_ASAN
  void* fake = nullptr;
#endif
};

// A warpgroup's wgmma state: the operations issued since the last commit, the committed groups in
// flight, and the accumulators' true values while the registers read NaN (key: a thread's d).
struct WgmmaOp {
  int n = 0, scale_d = 0;
  uint64_t desc = 0;
  uint32_t a[128][4];
  float* d[128];
};
struct Warpgroup {
  bool fenced = false;
  std::vector<WgmmaOp> open;
  std::deque<std::vector<WgmmaOp>> groups;
  std::map<float*, std::vector<float>> shadow;
};

// One block of a launch, resident in the emulator: its fibers, its shared memory and where its
// scheduler stands. A launch runs its blocks one after another, or, under the random and tickets
// schedules, several at once (interleaved at atomics on global memory: launch, below). Blocks are
// pooled across launches with their fiber stacks.
struct Launch {
  const char* kernel = "?";
  dim3 grid, block;
  uint3 block_idx{0, 0, 0};
  std::function<void()>* body = nullptr;
  std::vector<Thread> threads;
  Thread* cur = nullptr;
#ifdef EMU_FAST_SWITCH
  void* sched_sp = nullptr;
#else
  ucontext_t sched;
#endif
  std::vector<unsigned char> dyn_buf;
  unsigned char* dyn = nullptr;
  size_t dyn_bytes = 0;
  bool failed = false;
  std::string error;
  std::vector<char*> stacks;         // its fibers' stacks (kept when the block returns to the pool)
  std::vector<int> round;            // this round's thread order, and the next to run
  size_t next = 0;
  bool in_round = false;
  int atomics = 0;                   // atomics on global memory so far
  int stop_at = 0;                   // the one after which it hands over (0: none; never when one at a time)
  bool preempt = false;              // a fiber asked to hand the emulator to another block
  std::vector<unsigned char> statics;  // its static shared memory while another block runs
  std::vector<Warpgroup> wg;         // wgmma state per warpgroup
#ifdef EMU_ASAN
  void* sched_fake = nullptr;
  const void* main_bottom = nullptr;
  size_t main_size = 0;
#endif
};

Launch* L = nullptr;
Schedule g_schedule = Schedule::Forward;
uint64_t g_seed = 0;
std::mt19937_64 g_rng;
// Blocks that have ended, with their fiber stacks, for the next blocks and launches.
std::vector<std::unique_ptr<Launch>> g_pool;
// At most this many blocks of a launch are resident at once when they interleave.
constexpr size_t kMaxResident = 16;

const char* op_name(Op op) {
  switch (op) {
    case Op::ShflIdx: return "__shfl_sync";
    case Op::ShflUp: return "__shfl_up_sync";
    case Op::ShflDown: return "__shfl_down_sync";
    case Op::ShflXor: return "__shfl_xor_sync";
    case Op::Ballot: return "__ballot_sync";
    case Op::Any: return "__any_sync";
    case Op::All: return "__all_sync";
    case Op::ReduceAddU: case Op::ReduceAddI: return "__reduce_add_sync";
    case Op::ReduceMinU: case Op::ReduceMinI: return "__reduce_min_sync";
    case Op::ReduceMaxU: case Op::ReduceMaxI: return "__reduce_max_sync";
    case Op::ReduceAnd: return "__reduce_and_sync";
    case Op::ReduceOr: return "__reduce_or_sync";
    case Op::ReduceXor: return "__reduce_xor_sync";
    case Op::SyncWarp: return "__syncwarp";
    case Op::Mma: return "mma.sync.m16n8k16";
    case Op::Ldmatrix: return "ldmatrix";
    case Op::WgmmaFence: return "wgmma.fence";
    case Op::Wgmma: return "wgmma.mma_async";
    case Op::WgmmaCommit: return "wgmma.commit_group";
    case Op::WgmmaWait: return "wgmma.wait_group";
    case Op::SyncThreads: return "__syncthreads";
    case Op::SyncThreadsCount: return "__syncthreads_count";
    case Op::SyncThreadsAnd: return "__syncthreads_and";
    case Op::SyncThreadsOr: return "__syncthreads_or";
  }
  return "?";
}
bool is_barrier(Op op) { return op >= Op::SyncThreads; }
bool is_warpgroup(Op op) { return op >= Op::WgmmaFence && op <= Op::WgmmaWait; }

std::string fmt(const char* f, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, f);
  vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}
std::string where(const Thread& t, Site s) {
  return fmt("kernel %s, block (%u,%u,%u), thread (%u,%u,%u) [warp %d lane %d] at %s:%d", L->kernel, L->block_idx.x,
             L->block_idx.y, L->block_idx.z, t.regs.tid.x, t.regs.tid.y, t.regs.tid.z, t.warp, t.lane,
             s.file, s.line);
}
std::string at(const Thread& t) { return fmt("%s (%s:%d)", op_name(t.op), t.site.file, t.site.line); }

// ---- fibers ----
void to_scheduler(bool finished) {
  Thread* t = L->cur;
#ifdef EMU_ASAN
  __sanitizer_start_switch_fiber(finished ? nullptr : &t->fake, L->main_bottom, L->main_size);
#else
  (void)finished;
#endif
#ifdef EMU_FAST_SWITCH
  emu_switch(&t->sp, L->sched_sp);
#else
  swapcontext(&t->ctx, &L->sched);
#endif
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(t->fake, &L->main_bottom, &L->main_size);
#endif
}

// Thrown on a fiber when a rule is broken: unwinds the CUDA thread's stack (so nothing it holds
// leaks) to fiber_entry, which hands control back to the scheduler.
struct Abort {};

void fiber_entry() {
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &L->main_bottom, &L->main_size);
#endif
  try {
    (*L->body)();
  } catch (const Abort&) {
  }
  L->cur->state = State::Done;
  to_scheduler(true);
  std::abort();  // a finished fiber is never resumed
}

void run(Thread& t) {
  L->cur = &t;
  g_regs = &t.regs;
#ifdef EMU_ASAN
  __sanitizer_start_switch_fiber(&L->sched_fake, t.stack, kStack);
#endif
#ifdef EMU_FAST_SWITCH
  emu_switch(&L->sched_sp, t.sp);
#else
  swapcontext(&L->sched, &t.ctx);
#endif
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(L->sched_fake, nullptr, nullptr);
#endif
  g_regs = nullptr;
  L->cur = nullptr;
}

// Called on a fiber: record the rule broken and leave the block for good.
// On the scheduler (resolving a rendezvous) it throws instead.
[[noreturn]] void fail_here(const std::string& msg) {
  if (!L) throw Error("cuda-emu: " + msg);
  L->failed = true;
  if (!L->cur) {
    L->error = msg;
    throw Error("cuda-emu: " + msg);
  }
  L->error = msg;
  throw Abort{};
}

Thread& self(const char* what, Site s) {
  if (!L || !L->cur) throw Error(fmt("cuda-emu: %s called outside a kernel at %s:%d", what, s.file, s.line));
  return *L->cur;
}

// The order of a round's fibers (threads) or of a grid's blocks under the schedule.
std::vector<int> order(int n, bool threads) {
  std::vector<int> o(n);
  for (int i = 0; i < n; ++i) o[i] = i;
  if (g_schedule == Schedule::Reverse) std::reverse(o.begin(), o.end());
  if (g_schedule == Schedule::Random) std::shuffle(o.begin(), o.end(), g_rng);
  if (g_schedule == Schedule::Tickets && threads) {  // lane 0 of every warp first, then lane 1, ...
    int k = 0;
    for (int lane = 0; lane < 32; ++lane)
      for (int i = lane; i < n; i += 32) o[k++] = i;
  }
  return o;
}

// ---- rendezvous resolution ----
uint32_t warp_lanes(int w) {
  const int n = int(L->threads.size()) - 32 * w;
  return n >= 32 ? 0xffffffffu : ((1u << n) - 1u);
}

float bf(uint32_t reg, int half) { return __uint_as_float(((reg >> (16 * half)) & 0xffffu) << 16); }

// mma.m16n8k16 .row.col f32.bf16.bf16.f32, fragment layouts from the PTX ISA ("Matrix Fragments for
// mma.m16n8k16 with floating point type"): groupID = lane >> 2, tig = lane % 4.
//   A (16x16): a_i at row groupID + 8 * ((i >> 1) & 1), col 2 * tig + (i & 1) + 8 * (i >> 2)
//   B (16x8):  b_i at row 2 * tig + (i & 1) + 8 * (i >> 1), col groupID
//   C/D (16x8): c_i at row groupID + 8 * (i >> 1), col 2 * tig + (i & 1)
// Register r of A holds a_{2r} (low half) and a_{2r+1}; of B, b_{2r} and b_{2r+1}.
void complete_mma(Thread** lanes) {
  double A[16][16], B[16][8], C[16][8];
  for (int l = 0; l < 32; ++l) {
    const MmaLane& d = *static_cast<MmaLane*>(lanes[l]->data);
    const int g = l >> 2, tig = l & 3;
    for (int i = 0; i < 8; ++i) A[g + 8 * ((i >> 1) & 1)][2 * tig + (i & 1) + 8 * (i >> 2)] = bf(d.a[i >> 1], i & 1);
    for (int i = 0; i < 4; ++i) B[2 * tig + (i & 1) + 8 * (i >> 1)][g] = bf(d.b[i >> 1], i & 1);
    for (int i = 0; i < 4; ++i) C[g + 8 * (i >> 1)][2 * tig + (i & 1)] = d.c[i];
  }
  for (int l = 0; l < 32; ++l) {
    MmaLane& d = *static_cast<MmaLane*>(lanes[l]->data);
    const int g = l >> 2, tig = l & 3;
    for (int i = 0; i < 4; ++i) {
      const int r = g + 8 * (i >> 1), c = 2 * tig + (i & 1);
      double s = C[r][c];  // exact for bf16 products; one rounding at the end
      for (int k = 0; k < 16; ++k) s += A[r][k] * B[k][c];
      d.d[i] = float(s);
    }
  }
}

// ldmatrix.m8n8.x{1,2,4}[.trans].b16 (PTX ISA, "Warp-level matrix load instruction: ldmatrix"):
// lanes 8i..8i+7 give the row addresses of matrix i; lane l receives, in register i, row l / 4,
// elements 2 * (l % 4) and 2 * (l % 4) + 1 of matrix i (of its transpose with .trans).
void complete_ldmatrix(Thread** lanes) {
  const LdmatrixLane& d0 = *static_cast<LdmatrixLane*>(lanes[0]->data);
  for (int l = 0; l < 32; ++l) {
    const LdmatrixLane& d = *static_cast<LdmatrixLane*>(lanes[l]->data);
    if (d.num != d0.num || d.trans != d0.trans)
      fail_here(fmt("ldmatrix: lanes disagree on the shape (.x%d%s vs .x%d%s)", d0.num, d0.trans ? ".trans" : "", d.num,
                    d.trans ? ".trans" : ""));
  }
  auto elem = [&](int m, int row, int col) { return uint32_t(static_cast<LdmatrixLane*>(lanes[8 * m + row]->data)->row[col]); };
  for (int l = 0; l < 32; ++l) {
    LdmatrixLane& d = *static_cast<LdmatrixLane*>(lanes[l]->data);
    for (int m = 0; m < d0.num; ++m) {
      const int r = l >> 2, c = 2 * (l & 3);
      d.r[m] = d0.trans ? (elem(m, c, r) | (elem(m, c + 1, r) << 16)) : (elem(m, r, c) | (elem(m, r, c + 1) << 16));
    }
  }
}

void complete_warp(Thread** lanes, uint32_t mask) {
  Thread* first = nullptr;
  for (int l = 0; l < 32; ++l)
    if (mask >> l & 1) { first = lanes[l]; break; }
  const Op op = first->op;
  if (op == Op::Mma) return complete_mma(lanes);
  if (op == Op::Ldmatrix) return complete_ldmatrix(lanes);
  uint64_t acc = 0;
  bool init = false;
  for (int l = 0; l < 32; ++l) {
    if (!(mask >> l & 1)) continue;
    const Thread& t = *lanes[l];
    const uint32_t v = uint32_t(t.val);
    switch (op) {
      case Op::Ballot: case Op::Any: case Op::All: acc |= uint64_t(t.arg != 0) << l; break;
      case Op::ReduceAddU: case Op::ReduceAddI: acc = uint32_t(acc + v); break;
      case Op::ReduceMinU: acc = init ? std::min<uint32_t>(uint32_t(acc), v) : v; break;
      case Op::ReduceMaxU: acc = init ? std::max<uint32_t>(uint32_t(acc), v) : v; break;
      case Op::ReduceMinI: acc = uint32_t(init ? std::min<int32_t>(int32_t(acc), int32_t(v)) : int32_t(v)); break;
      case Op::ReduceMaxI: acc = uint32_t(init ? std::max<int32_t>(int32_t(acc), int32_t(v)) : int32_t(v)); break;
      case Op::ReduceAnd: acc = init ? (acc & v) : v; break;
      case Op::ReduceOr: acc |= v; break;
      case Op::ReduceXor: acc ^= v; break;
      default: break;
    }
    init = true;
  }
  for (int l = 0; l < 32; ++l) {
    if (!(mask >> l & 1)) continue;
    Thread& t = *lanes[l];
    switch (op) {
      case Op::ShflIdx: case Op::ShflUp: case Op::ShflDown: case Op::ShflXor: {
        // PTX ISA shfl.sync: c = ((32 - width) << 8) | clamp, clamp 0 for up and 31 otherwise.
        const int w = t.width;
        const int seg = 32 - w;
        const int cval = op == Op::ShflUp ? 0 : 31;
        const int maxLane = (l & seg) | (cval & ~seg), minLane = l & seg;
        const int b = t.arg & 31;
        int j = 0;
        bool p = false;
        switch (op) {
          case Op::ShflUp: j = l - b; p = j >= maxLane; break;
          case Op::ShflDown: j = l + b; p = j <= maxLane; break;
          case Op::ShflXor: j = l ^ b; p = j <= maxLane; break;
          default: j = minLane | (b & ~seg); p = j <= maxLane; break;
        }
        if (!p) j = l;
        if (!(mask >> j & 1))
          fail_here(where(t, t.site) + fmt(": %s reads lane %d, which is not in the mask 0x%08x (its value is undefined)",
                                           op_name(op), j, mask));
        t.result = lanes[j]->val;
        break;
      }
      case Op::Ballot: t.result = acc; break;
      case Op::Any: t.result = acc != 0; break;
      case Op::All: t.result = (uint32_t(acc) & mask) == mask; break;
      case Op::SyncWarp: t.result = 0; break;
      default: t.result = acc; break;
    }
  }
}

// One pass over the warps: complete every collective whose lanes have all arrived. Returns
// whether anything completed; breaks the launch on a rule violation.
bool resolve_warps() {
  bool progress = false;
  const int nwarps = int((L->threads.size() + 31) / 32);
  for (int w = 0; w < nwarps; ++w) {
    Thread* lanes[32] = {};
    const uint32_t exists = warp_lanes(w);
    for (int l = 0; l < 32; ++l)
      if (exists >> l & 1) lanes[l] = &L->threads[32 * w + l];
    uint32_t done_mask = 0;
    for (int l = 0; l < 32; ++l) {
      Thread* t = lanes[l];
      if (!t || t->state != State::Waiting || is_barrier(t->op) || is_warpgroup(t->op) || (done_mask >> l & 1)) continue;
      const uint32_t m = t->mask;
      bool ready = true;
      for (int k = 0; k < 32 && ready; ++k) {
        if (!(m >> k & 1)) continue;
        Thread* o = lanes[k];
        if (o->state == State::Done) {
          fail_here(where(*t, t->site) + fmt(": %s with mask 0x%08x waits for lane %d, which has exited (last at %s:%d)",
                                             op_name(t->op), m, k, o->last.file, o->last.line));
        }
        if (o->state != State::Waiting || is_barrier(o->op) || is_warpgroup(o->op)) ready = false;
      }
      if (!ready) continue;
      for (int k = 0; k < 32; ++k) {
        if (!(m >> k & 1)) continue;
        Thread* o = lanes[k];
        if (o->op != t->op || o->mask != t->mask || o->site.line != t->site.line ||
            std::strcmp(o->site.file, t->site.file) != 0) {
          fail_here(where(*t, t->site) + fmt(": lanes named in the mask 0x%08x disagree (they must reach the same intrinsic with the same mask): lane %d is at %s with mask 0x%08x, lane %d at %s with mask 0x%08x",
                                             m, l, at(*t).c_str(), t->mask, k, at(*o).c_str(), o->mask));
        }
      }
      complete_warp(lanes, m);
      for (int k = 0; k < 32; ++k)
        if (m >> k & 1) lanes[k]->state = State::Runnable;
      done_mask |= m;
      progress = true;
    }
  }
  return progress;
}

bool resolve_barrier() {
  Thread* first = nullptr;
  for (Thread& t : L->threads) {
    if (t.state == State::Waiting && is_barrier(t.op)) {
      if (!first) first = &t;
    } else if (t.state != State::Done) {
      return false;
    }
  }
  if (!first) return false;
  int count = 0;
  for (Thread& t : L->threads) {
    if (t.state == State::Done) {
      fail_here(where(*first, first->site) + fmt(": %s waits for thread (%u,%u,%u), which has exited (last at %s:%d)",
                                                 op_name(first->op), t.regs.tid.x, t.regs.tid.y,
                                                 t.regs.tid.z, t.last.file, t.last.line));
    }
    if (t.op != first->op || t.site.line != first->site.line || std::strcmp(t.site.file, first->site.file) != 0) {
      fail_here(where(*first, first->site) + fmt(": barrier reached at different places: this thread at %s, thread (%u,%u,%u) at %s",
                                                 at(*first).c_str(), t.regs.tid.x, t.regs.tid.y,
                                                 t.regs.tid.z, at(t).c_str()));
    }
    count += t.pred;
  }
  const int n = int(L->threads.size());
  for (Thread& t : L->threads) {
    switch (t.op) {
      case Op::SyncThreadsCount: t.result = uint64_t(count); break;
      case Op::SyncThreadsAnd: t.result = count == n; break;
      case Op::SyncThreadsOr: t.result = count != 0; break;
      default: t.result = 0; break;
    }
    t.state = State::Runnable;
  }
  return true;
}

// ---- wgmma (sm_90a) ----
// B (K x N, K-major) of one wgmma.mma_async through its descriptor (PTX ISA, "Matrix Descriptor
// Format"; the no-swizzle canonical layout as CuTe's make_gmma_desc states it, in 16-byte units
// ((8, n), 2) : ((1, SBO), LBO)): bits 0-13 the start address >> 4, 16-29 the leading byte offset
// (between the two 8-element halves of k16) >> 4, 32-45 the stride byte offset (between groups of
// 8 columns n) >> 4, 49-51 the base offset, 62-63 the swizzle mode. Element (k, n) lies at
// start + (n / 8) SBO + (n % 8) 16 + (k / 8) LBO + (k % 8) 2.
void wgmma_read_b(const WgmmaOp& op, double (*B)[256], Thread& t) {
  const uint64_t d = op.desc;
  const size_t start = size_t(d & 0x3fff) << 4, lbo = size_t((d >> 16) & 0x3fff) << 4,
               sbo = size_t((d >> 32) & 0x3fff) << 4;
  if ((d >> 62) != 0 || ((d >> 49) & 7) != 0)
    fail_here(where(t, t.site) + fmt(": wgmma descriptor 0x%016llx: only the no-swizzle layout with base offset 0 is emulated",
                                     (unsigned long long)d));
  for (int n = 0; n < op.n; ++n)
    for (int k = 0; k < 16; ++k) {
      const size_t off = start + size_t(n / 8) * sbo + size_t(n % 8) * 16 + size_t(k / 8) * lbo + size_t(k % 8) * 2;
      if (off + 2 > L->dyn_bytes)
        fail_here(where(t, t.site) + fmt(": wgmma descriptor 0x%016llx reads B(k=%d, n=%d) at shared offset %zu, past the %zu bytes of dynamic shared memory",
                                         (unsigned long long)d, k, n, off, L->dyn_bytes));
      uint16_t v;
      std::memcpy(&v, L->dyn + off, 2);
      B[k][n] = __uint_as_float(uint32_t(v) << 16);
    }
}

// D = A B (+ D) for one retired wgmma.mma_async m64nNk16 .f32.bf16.bf16 with A in registers: thread
// (warp w of the group, g = lane / 4, t = lane % 4) holds rows 16 w + g (+ 8) as in mma.m16n8k16's
// A fragment, and d[4 j + 2 h + v] = D[16 w + g + 8 h][8 j + 2 t + v] (CuTe's ALayout_64x16 and
// CLayout_64xN). Exact products summed in double, rounded once, as the emulated mma.
void wgmma_retire(Warpgroup& w, const WgmmaOp& op, Thread& t) {
  static double A[64][16], B[16][256];
  wgmma_read_b(op, B, t);
  for (int i = 0; i < 128; ++i) {
    const int row = 16 * (i >> 5) + ((i & 31) >> 2), tg = i & 3;
    for (int r = 0; r < 4; ++r)
      for (int lo = 0; lo < 2; ++lo) A[row + 8 * (r & 1)][2 * tg + lo + 8 * (r >> 1)] = bf(op.a[i][r], lo);
  }
  for (int i = 0; i < 128; ++i) {
    const int row = 16 * (i >> 5) + ((i & 31) >> 2), tg = i & 3;
    std::vector<float>& acc = w.shadow.at(op.d[i]);
    for (int j = 0; j < op.n / 8; ++j)
      for (int h = 0; h < 2; ++h)
        for (int v = 0; v < 2; ++v) {
          const int n = 8 * j + 2 * tg + v;
          double s = op.scale_d ? double(acc[4 * j + 2 * h + v]) : 0.0;
          for (int k = 0; k < 16; ++k) s += A[row + 8 * h][k] * B[k][n];
          acc[4 * j + 2 * h + v] = float(s);
        }
  }
}

// Completes the warpgroup collective its 128 threads wait at (all at the same op and place).
void complete_warpgroup(Thread** th) {
  Thread& t0 = *th[0];
  Warpgroup& w = L->wg[t0.warp / 4];
  switch (t0.op) {
    case Op::WgmmaFence: w.fenced = true; break;
    case Op::Wgmma: {
      if (!w.fenced)
        fail_here(where(t0, t0.site) + ": wgmma.mma_async without a wgmma.fence since the last commit (the registers it reads may not be ready)");
      const WgmmaLane& l0 = *static_cast<WgmmaLane*>(t0.data);
      WgmmaOp op;
      op.n = l0.n;
      op.scale_d = l0.scale_d;
      op.desc = l0.desc;
      if (op.n < 8 || op.n > 256 || op.n % 8)
        fail_here(where(t0, t0.site) + fmt(": wgmma.mma_async with N = %d (8..256, a multiple of 8)", op.n));
      for (int i = 0; i < 128; ++i) {
        const WgmmaLane& l = *static_cast<WgmmaLane*>(th[i]->data);
        if (l.n != op.n || l.desc != op.desc || l.scale_d != op.scale_d)
          fail_here(where(*th[i], th[i]->site) + fmt(": wgmma.mma_async: the warpgroup's threads disagree on N, the descriptor or scale-d (thread 0: N %d desc 0x%016llx, this one: N %d desc 0x%016llx)",
                                                     op.n, (unsigned long long)op.desc, l.n, (unsigned long long)l.desc));
        std::memcpy(op.a[i], l.a, sizeof l.a);
        op.d[i] = l.d;
        auto it = w.shadow.find(l.d);
        if (it == w.shadow.end()) {
          w.shadow.emplace(l.d, std::vector<float>(l.d, l.d + op.n / 2));
        } else if (int(it->second.size()) != op.n / 2) {
          fail_here(where(*th[i], th[i]->site) + ": wgmma.mma_async: accumulators in flight with another N");
        }
        std::fill(l.d, l.d + op.n / 2, std::numeric_limits<float>::quiet_NaN());  // undefined until waited for
      }
      w.open.push_back(op);
      break;
    }
    case Op::WgmmaCommit:
      w.groups.push_back(std::move(w.open));
      w.open.clear();
      w.fenced = false;
      break;
    case Op::WgmmaWait: {
      if (!w.open.empty())
        fail_here(where(t0, t0.site) + ": wgmma.wait_group with wgmma.mma_async not yet committed");
      while (int(w.groups.size()) > t0.arg) {
        for (const WgmmaOp& op : w.groups.front()) wgmma_retire(w, op, t0);
        w.groups.pop_front();
      }
      for (auto it = w.shadow.begin(); it != w.shadow.end();) {
        bool pending = false;
        for (const auto& g : w.groups)
          for (const WgmmaOp& op : g)
            for (int i = 0; i < 128 && !pending; ++i) pending = op.d[i] == it->first;
        if (pending) {
          ++it;
          continue;
        }
        std::copy(it->second.begin(), it->second.end(), it->first);
        it = w.shadow.erase(it);
      }
      break;
    }
    default: break;
  }
}

bool resolve_warpgroups() {
  bool progress = false;
  const int n = int(L->threads.size());
  for (int g = 0; 128 * g < n; ++g) {
    Thread* th[128];
    bool ready = true, any = false;
    for (int i = 0; i < 128; ++i) {
      th[i] = 128 * g + i < n ? &L->threads[128 * g + i] : nullptr;
      if (!th[i]) {
        ready = false;
        continue;
      }
      const bool at_wg = th[i]->state == State::Waiting && is_warpgroup(th[i]->op);
      any |= at_wg;
      if (th[i]->state == State::Done && any)
        fail_here(where(*th[0], th[0]->site) + fmt(": %s waits for thread %d of its warpgroup, which has exited", op_name(th[0]->op), 128 * g + i));
      ready &= at_wg;
    }
    if (!any) continue;
    if (n % 128)
      fail_here(where(*th[0], th[0]->site) + fmt(": %s needs whole warpgroups (128 threads); the block has %d", op_name(th[0]->op), n));
    if (!ready) continue;
    for (int i = 1; i < 128; ++i)
      if (th[i]->op != th[0]->op || th[i]->arg != th[0]->arg || th[i]->site.line != th[0]->site.line ||
          std::strcmp(th[i]->site.file, th[0]->site.file) != 0)
        fail_here(where(*th[0], th[0]->site) + fmt(": the warpgroup's threads reach different wgmma instructions: thread %d at %s, thread %d at %s",
                                                   128 * g, at(*th[0]).c_str(), 128 * g + i, at(*th[i]).c_str()));
    complete_warpgroup(th);
    for (int i = 0; i < 128; ++i) th[i]->state = State::Runnable;
    progress = true;
  }
  return progress;
}

[[noreturn]] void deadlock() {
  std::string msg = fmt("kernel %s, block (%u,%u,%u): deadlock, no rendezvous can complete:", L->kernel, L->block_idx.x,
                        L->block_idx.y, L->block_idx.z);
  int shown = 0;
  for (Thread& t : L->threads) {
    if (t.state != State::Waiting || shown >= 8) continue;
    msg += fmt("\n  thread (%u,%u,%u) [warp %d lane %d] waits at %s mask 0x%08x", t.regs.tid.x, t.regs.tid.y,
               t.regs.tid.z, t.warp, t.lane, at(t).c_str(), t.mask);
    ++shown;
  }
  L->failed = true;
  L->error = msg;
  throw Error("cuda-emu: " + msg);
}

void check_canary() {
  for (size_t i = 0; i < kCanary; ++i)
    if (L->dyn[L->dyn_bytes + i] != kCanaryByte)
      throw Error(fmt("cuda-emu: kernel %s, block (%u,%u,%u): wrote past the end of dynamic shared memory (%zu bytes; byte %zu after it changed)",
                      L->kernel, L->block_idx.x, L->block_idx.y, L->block_idx.z, L->dyn_bytes, i));
}

size_t static_bytes() {
  return __start_emu_shared && __stop_emu_shared ? size_t(__stop_emu_shared - __start_emu_shared) : 0;
}

// A block's first step: its shared memory NaN (static and dynamic), the canary after the dynamic,
// every fiber at the kernel's start.
void start_block() {
  const int n = int(L->threads.size());
  L->wg.assign(size_t(n + 127) / 128, Warpgroup());
  if (static_bytes()) std::memset(__start_emu_shared, 0xff, static_bytes());
#ifdef EMU_ASAN
  ASAN_UNPOISON_MEMORY_REGION(L->dyn, L->dyn_bytes + kCanary);
#endif
  std::memset(L->dyn, 0xff, L->dyn_bytes);
  std::memset(L->dyn + L->dyn_bytes, kCanaryByte, kCanary);
#ifdef EMU_ASAN
  ASAN_POISON_MEMORY_REGION(L->dyn + L->dyn_bytes, kCanary);
#endif
  for (int i = 0; i < n; ++i) {
    Thread& t = L->threads[i];
    t.state = State::Runnable;
    t.regs.bid = L->block_idx;
    t.last = {"(start)", 0};
    t.cp_pending.clear();
    t.cp_groups.clear();
    t.data = nullptr;
#ifdef EMU_FAST_SWITCH
    // A fresh stack as emu_switch leaves one: control words, six zeroed registers, then
    // fiber_entry as the return address with a null one above it, so fiber_entry starts with
    // the stack aligned as after a call (rsp % 16 == 8).
    uint64_t* top = reinterpret_cast<uint64_t*>(t.stack + kStack);
    top[-1] = 0;
    top[-2] = reinterpret_cast<uint64_t>(&fiber_entry);
    for (int r = 3; r <= 8; ++r) top[-r] = 0;
    top[-9] = 0x1F80ull | (0x037Full << 32);  // MXCSR default; x87 control word default
    t.sp = top - 9;
#else
    getcontext(&t.ctx);
    t.ctx.uc_stack.ss_sp = t.stack;
    t.ctx.uc_stack.ss_size = kStack;
    t.ctx.uc_link = nullptr;
    makecontext(&t.ctx, fiber_entry, 0);
#endif
  }
}

// Runs the block L until it ends (true) or one of its fibers hands the emulator to another block
// at an atomic (false; the round goes on from there when the block is resumed).
bool step_block() {
  const int n = int(L->threads.size());
  for (;;) {
    if (!L->in_round) {
      L->round = order(n, true);
      L->next = 0;
      L->in_round = true;
    }
    while (L->next < L->round.size()) {
      Thread& t = L->threads[L->round[L->next++]];
      if (t.state != State::Runnable) continue;
      run(t);
      if (L->failed) throw Error("cuda-emu: " + L->error);
      if (L->preempt) {
        L->preempt = false;
        return false;
      }
    }
    L->in_round = false;
    bool alive = false, runnable = false;
    for (Thread& t : L->threads) {
      alive |= t.state != State::Done;
      runnable |= t.state == State::Runnable;  // handed over mid-round: runs on in the next
    }
    if (!alive) break;
    if (runnable) continue;
    bool progress = resolve_warps();
    if (L->failed) throw Error("cuda-emu: " + L->error);
    if (!progress) {
      progress = resolve_warpgroups();
      if (L->failed) throw Error("cuda-emu: " + L->error);
    }
    if (!progress) {
      progress = resolve_barrier();
      if (L->failed) throw Error("cuda-emu: " + L->error);
    }
    if (!progress) deadlock();
  }
  for (size_t g = 0; g < L->wg.size(); ++g)
    if (!L->wg[g].open.empty() || !L->wg[g].groups.empty())
      throw Error(fmt("cuda-emu: kernel %s, block (%u,%u,%u): warpgroup %zu ended with wgmma.mma_async in flight (no wgmma.wait_group for it)",
                      L->kernel, L->block_idx.x, L->block_idx.y, L->block_idx.z, g));
#ifdef EMU_ASAN
  ASAN_UNPOISON_MEMORY_REGION(L->dyn + L->dyn_bytes, kCanary);
#endif
  check_canary();
  return true;
}

Thread& arrive(Op op, unsigned mask, Site s) {
  Thread& t = self(op_name(op), s);
  t.last = s;
  t.op = op;
  t.mask = mask;
  t.site = s;
  return t;
}

void wait_here(Thread& t) {
  t.state = State::Waiting;
  to_scheduler(false);
}
}  // namespace

void set_schedule(Schedule s, uint64_t seed) {
  g_schedule = s;
  g_seed = seed;
  g_rng.seed(seed);
}
Schedule schedule() { return g_schedule; }
bool blocks_interleave() {
#if defined(__GNUC__) && !defined(__clang__)
  return false;  // GCC leaves template kernels' static __shared__ out of the section: blocks would share it
#else
  return true;
#endif
}
const char* schedule_name(Schedule s) {
  return s == Schedule::Forward ? "forward" : s == Schedule::Reverse ? "reverse" : s == Schedule::Random ? "random" : "tickets";
}

namespace {
CaptureHook g_capture;
}
void set_capture_hook(CaptureHook hook) { g_capture = std::move(hook); }

void launch(const char* kernel, Site site, dim3 grid, dim3 block, size_t smem, std::function<void()> body) {
  if (L) throw Error(fmt("cuda-emu: %s launched from inside a kernel at %s:%d", kernel, site.file, site.line));
  if (g_capture) {  // a stream being captured: record the launch, run it when the graph is replayed
    g_capture([=] { launch(kernel, site, grid, block, smem, body); });
    return;
  }
  const size_t n = size_t(block.x) * block.y * block.z;
  if (n == 0 || n > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535)
    throw Error(fmt("cuda-emu: %s launched at %s:%d with an invalid configuration grid (%u,%u,%u) block (%u,%u,%u)", kernel,
                    site.file, site.line, grid.x, grid.y, grid.z, block.x, block.y, block.z));
  if (smem > 227 * 1024)
    throw Error(fmt("cuda-emu: %s launched at %s:%d with %zu bytes of dynamic shared memory (over 227 KiB)", kernel,
                    site.file, site.line, smem));
  std::vector<uint3> blocks;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) blocks.push_back({x, y, z});
  const std::vector<int> bo = order(int(blocks.size()), false);
  // Under the random and tickets schedules the blocks interleave: a block hands the emulator to
  // another after one of its atomics on global memory, so that a block counting a ticket can be
  // overtaken by the block that takes the last one (the ticket races a barrier guards: a lane's
  // ticket counted before its warp's other lanes have stored what the ticket vouches for).
  // Otherwise one block runs at a time, in the schedule's order.
  const bool interleave = blocks_interleave() && (g_schedule == Schedule::Random || g_schedule == Schedule::Tickets) &&
                          blocks.size() > 1;
  const bool lifo = g_schedule == Schedule::Tickets;
  int most_atomics = 0;  // by a block that has ended: what the next blocks are likely to do
  std::deque<std::unique_ptr<Launch>> resident;  // in the order they handed over
  size_t started = 0;
  Launch* in_place = nullptr;  // the block whose static shared memory the section holds
  auto new_block = [&](uint3 idx) {
    std::unique_ptr<Launch> l;
    if (g_pool.empty()) {
      l = std::make_unique<Launch>();
    } else {  // a fresh state, the stacks and buffers' capacity kept
      l = std::move(g_pool.back());
      g_pool.pop_back();
      std::vector<char*> stacks = std::move(l->stacks);
      std::vector<Thread> threads = std::move(l->threads);
      std::vector<unsigned char> dyn = std::move(l->dyn_buf);
      *l = Launch();
      l->stacks = std::move(stacks);
      l->threads = std::move(threads);
      l->dyn_buf = std::move(dyn);
    }
    l->kernel = kernel;
    l->grid = grid;
    l->block = block;
    l->body = &body;
    l->block_idx = idx;
    while (l->stacks.size() < n) {
      void* p = mmap(nullptr, kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) throw Error("cuda-emu: cannot map a fiber stack");
      l->stacks.push_back(static_cast<char*>(p));
    }
    l->threads.resize(n);  // start_block resets what a fiber's last run left
    for (size_t i = 0; i < n; ++i) {
      Thread& t = l->threads[i];
      t.stack = l->stacks[i];
      t.linear = int(i);
      t.lane = int(i % 32);
      t.warp = int(i / 32);
      t.regs.tid = {unsigned(i % block.x), unsigned(i / block.x % block.y), unsigned(i / (size_t(block.x) * block.y))};
      t.regs.bdim = {block.x, block.y, block.z};
      t.regs.gdim = {grid.x, grid.y, grid.z};
    }
    l->dyn_buf.resize(smem + kCanary);
    l->dyn = l->dyn_buf.data();
    l->dyn_bytes = smem;
    return l;
  };
  try {
    while (started < blocks.size() || !resident.empty()) {
      // Every block starts (up to kMaxResident at once) before a handed-over one goes on, then to
      // its end: under random in the order they handed over, under tickets the last first. Each
      // hands over once: under tickets after its last atomic (as far as the blocks that have ended
      // tell), under random after that one or, as often, one drawn at random. Under tickets its
      // threads run lane 0 of every warp first: a warp's ticket (lane 0) is counted before its
      // other lanes run on, and the block that takes a row's or tile's last ticket goes on first
      // and reads what the others' lanes have yet to store, unless a barrier held lane 0 back.
      const bool start = resident.empty() || (interleave && started < blocks.size() && resident.size() < kMaxResident);
      Launch* b;
      if (start) {
        resident.push_back(new_block(blocks[bo[started++]]));
        b = resident.back().get();
        if (interleave && most_atomics > 0)
          b->stop_at = lifo || (g_rng() & 1) ? most_atomics : 1 + int(g_rng() % uint64_t(most_atomics));
      } else {
        b = lifo ? resident.back().get() : resident.front().get();
      }
      if (in_place != b && static_bytes()) {  // the static shared memory is one section: swap
        if (in_place) in_place->statics.assign(__start_emu_shared, __stop_emu_shared);
        if (!start) std::memcpy(__start_emu_shared, b->statics.data(), static_bytes());
      }
      in_place = b;
      L = b;
      if (start) start_block();
      const bool done = step_block();
      L = nullptr;
      const auto at = std::find_if(resident.begin(), resident.end(), [&](const auto& r) { return r.get() == b; });
      std::unique_ptr<Launch> own = std::move(*at);
      resident.erase(at);
      if (!done) {
        resident.push_back(std::move(own));  // handed over: goes on after those before it
      } else {
        most_atomics = std::max(most_atomics, b->atomics);
        in_place = nullptr;
        g_pool.push_back(std::move(own));
      }
    }
  } catch (...) {
    for (auto& l : resident) {
#ifdef EMU_ASAN
      ASAN_UNPOISON_MEMORY_REGION(l->dyn, l->dyn_bytes + kCanary);
      // A failed block leaves fibers suspended mid-kernel: their frames' redzones stay poisoned on
      // the pooled stacks, and the next kernel to run there would be reported for touching them.
      for (const Thread& t : l->threads)
        if (t.state != State::Done) ASAN_UNPOISON_MEMORY_REGION(t.stack, kStack);
#endif
      g_pool.push_back(std::move(l));
    }
    L = nullptr;
    g_regs = nullptr;
    throw;
  }
  L = nullptr;
}

void atomic_point(const void* p) {
  if (!L || !L->cur || is_shared(p, 1) || ++L->atomics != L->stop_at) return;
  L->preempt = true;
  to_scheduler(false);  // still runnable: it goes on when its block is resumed
}

uint64_t warp_op(Op op, unsigned mask, uint64_t val, int arg, int width, Site s) {
  Thread& t = arrive(op, mask, s);
  if (!(mask >> t.lane & 1))
    fail_here(where(t, s) + fmt(": %s with mask 0x%08x does not name the calling lane %d", op_name(op), mask, t.lane));
  const uint32_t exists = warp_lanes(t.warp);
  if (mask & ~exists)
    fail_here(where(t, s) + fmt(": %s with mask 0x%08x names lanes that do not exist in this block (warp has 0x%08x)",
                                op_name(op), mask, exists));
  if (width < 1 || width > 32 || (width & (width - 1)))
    fail_here(where(t, s) + fmt(": %s width %d is not a power of two in [1, 32]", op_name(op), width));
  t.val = val;
  t.arg = arg;
  t.width = width;
  t.data = nullptr;
  wait_here(t);
  return t.result;
}

void warp_collective(Op op, void* data, Site s) {
  Thread& t = arrive(op, 0xffffffffu, s);
  if (warp_lanes(t.warp) != 0xffffffffu)
    fail_here(where(t, s) + fmt(": %s needs all 32 lanes of the warp, and this warp is partial", op_name(op)));
  if (op == Op::Ldmatrix) {
    const auto& d = *static_cast<LdmatrixLane*>(data);
    if (t.lane < 8 * d.num) {
      if (reinterpret_cast<uintptr_t>(d.addr) % 16)
        fail_here(where(t, s) + fmt(": ldmatrix row address %p is not 16-byte aligned", d.addr));
      if (!is_shared(d.addr, 16))
        fail_here(where(t, s) + fmt(": ldmatrix row address %p is not in shared memory", d.addr));
      // The row is read in this lane's program order, when it arrives, not when the warp's last
      // lane does: by then every other warp has run on to its own next rendezvous, which would
      // hide a missing barrier between another thread's cp.async wait (or store) and this read.
      std::memcpy(static_cast<LdmatrixLane*>(data)->row, d.addr, 16);
    }
  }
  t.data = data;
  wait_here(t);
}

void warpgroup_op(Op op, WgmmaLane* lane, int arg, Site s) {
  Thread& t = arrive(op, 0xffffffffu, s);
  t.data = lane;
  t.arg = arg;
  wait_here(t);
}

uint32_t shared_window(const void* p, Site s) {
  Thread& t = self("the shared address of a pointer", s);
  const auto* c = static_cast<const unsigned char*>(p);
  if (c < L->dyn || c > L->dyn + L->dyn_bytes)
    fail_here(where(t, s) + fmt(": %p is not in dynamic shared memory (the emulated wgmma descriptor addresses only that)", p));
  return uint32_t(c - L->dyn);
}

int barrier(Op op, int pred, Site s) {
  Thread& t = arrive(op, 0, s);
  t.pred = pred;
  wait_here(t);
  return int(t.result);
}

void fail(Site s, const std::string& what) {
  if (!L || !L->cur) throw Error(fmt("cuda-emu: %s at %s:%d", what.c_str(), s.file, s.line));
  fail_here(where(*L->cur, s) + ": " + what);
}

void misaligned_vector(const void* p, unsigned bytes) {
  const std::string msg = fmt("a %u-byte vector access at %p, which is not %u-byte aligned", bytes, p, bytes);
  if (!L || !L->cur) throw Error("cuda-emu: " + msg);
  fail_here(where(*L->cur, L->cur->last) + " (or after it): " + msg);
}

void* dynamic_shared() {
  if (!L) throw Error("cuda-emu: dynamic shared memory used outside a kernel");
  return L->dyn;
}

bool is_shared(const void* p, size_t n) {
  const auto* c = static_cast<const unsigned char*>(p);
  if (L && c >= L->dyn && c + n <= L->dyn + L->dyn_bytes) return true;
  return __start_emu_shared && c >= reinterpret_cast<unsigned char*>(__start_emu_shared) &&
         c + n <= reinterpret_cast<unsigned char*>(__stop_emu_shared);
}

void cp_async(void* dst, const void* src, int bytes, Site s) {
  Thread& t = self("cp.async", s);
  t.last = s;
  if (bytes != 4 && bytes != 8 && bytes != 16) fail_here(where(t, s) + fmt(": cp.async of %d bytes (4, 8 or 16)", bytes));
  if (reinterpret_cast<uintptr_t>(dst) % bytes || reinterpret_cast<uintptr_t>(src) % bytes)
    fail_here(where(t, s) + fmt(": cp.async of %d bytes from %p to %p is misaligned", bytes, src, dst));
  if (!is_shared(dst, size_t(bytes))) fail_here(where(t, s) + fmt(": cp.async destination %p is not shared memory", dst));
  CpCopy c{dst, std::vector<unsigned char>(static_cast<const unsigned char*>(src), static_cast<const unsigned char*>(src) + bytes)};
  std::memset(dst, 0xff, size_t(bytes));  // reads NaN until waited for
  t.cp_pending.push_back(std::move(c));
}

void discard_l2(void* p, int bytes, Site s) {
  Thread& t = self("discard.global.L2", s);
  t.last = s;
  if (bytes != 128) fail_here(where(t, s) + fmt(": discard.global.L2 of %d bytes (only 128)", bytes));
  if (reinterpret_cast<uintptr_t>(p) % 128) fail_here(where(t, s) + fmt(": discard.global.L2 at %p, not 128-byte aligned", p));
  if (is_shared(p, 128)) fail_here(where(t, s) + fmt(": discard.global.L2 at %p, which is shared memory", p));
  std::memset(p, 0xff, 128);
}

void cp_async_commit() {
  Thread& t = self("cp.async.commit_group", {"?", 0});
  t.cp_groups.push_back(std::move(t.cp_pending));
  t.cp_pending.clear();
}

void cp_async_wait(int n) {
  Thread& t = self("cp.async.wait_group", {"?", 0});
  while (int(t.cp_groups.size()) > n) {
    for (CpCopy& c : t.cp_groups.front()) std::memcpy(c.dst, c.bytes.data(), c.bytes.size());
    t.cp_groups.pop_front();
  }
}
}  // namespace emu

// IEEE binary16, round to nearest even (cuda_fp16.h semantics for finite values).
float __half2float(__half h) {
  const unsigned s = (h.__x >> 15) & 1, e = (h.__x >> 10) & 0x1f, m = h.__x & 0x3ff;
  float v;
  if (e == 0) v = std::ldexp(float(m), -24);
  else if (e == 31) v = m ? NAN : INFINITY;
  else v = std::ldexp(float(m | 0x400), int(e) - 25);
  return s ? -v : v;
}
__half __float2half(float f) {
  const unsigned u = __float_as_uint(f), s = (u >> 16) & 0x8000;
  const float a = std::fabs(f);
  if (std::isnan(f)) return {uint16_t(s | 0x7e00)};
  if (a >= 65520.f) return {uint16_t(s | 0x7c00)};
  if (a < 6.103515625e-05f) return {uint16_t(s | unsigned(std::nearbyint(a * 16777216.f)))};  // subnormal
  int e;
  const float fr = std::frexp(a, &e);  // a = fr * 2^e, fr in [0.5, 1)
  unsigned m = unsigned(std::nearbyint(fr * 2048.f));  // 11 bits with the implicit one
  if (m == 2048) { m = 1024; ++e; }
  return {uint16_t(s | (unsigned(e + 14) << 10) | (m & 0x3ff))};
}

cudaError_t cudaMalloc(void** p, size_t n) {
  // 256-byte aligned, as cudaMalloc's allocations are (kernels may rely on it: 128-byte lines).
  if (posix_memalign(p, 256, n ? n : 1) != 0) {
    *p = nullptr;
    return cudaErrorMemoryAllocation;
  }
  std::memset(*p, 0xff, n);
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  std::free(p);
  return cudaSuccess;
}
