// The runtime layer (gpu.h) on the kernel lab's emulator: the CPU plays the device. Built only into
// the emulated addon (npm run build:cuda-emu, -DGPTOSS_CUDA_EMU); never passes for a GPU
// (open_device says "emulated").
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "native/cuda/gpu.h"

namespace gptoss::gpu {
namespace {

std::recursive_mutex& device_mutex() {
  static std::recursive_mutex m;
  return m;
}

struct State {
  std::mutex mu;  // the allocation table (allocations may come from any thread)
  std::unordered_map<void*, size_t> sizes;
  size_t used = 0;
  size_t limit = 0;
};
State& state() {
  static State* s = [] {
    auto* st = new State;
    const char* env = std::getenv("GPTOSS_CUDA_EMU_MEMORY");
    st->limit = env ? size_t(std::strtoull(env, nullptr, 10)) : size_t(64) << 30;
    return st;
  }();
  return *s;
}

// The stream being captured and what it recorded, in order (launches and copies).
cudaStream_t g_capturing = nullptr;
std::vector<std::function<void()>>* g_recording = nullptr;

// Runs a copy now, or records it when its stream is being captured.
void queue(cudaStream_t s, std::function<void()> fn) {
  if (g_recording && s == g_capturing) g_recording->push_back(std::move(fn));
  else fn();
}

}  // namespace

struct EventRec {};
struct GraphRec {
  std::vector<std::function<void()>> ops;
};

bool emulated() { return true; }

// GPTOSS_CUDA_EMU_SCHEDULE: every launch's schedule, named as the kernel lab names them: forward
// (the default), reverse, tickets, random or random:SEED (test/cuda/emu/cuda_emu.h).
void schedule_from_env() {
  const char* env = std::getenv("GPTOSS_CUDA_EMU_SCHEDULE");
  if (!env || !*env) return;
  const std::string v = env;
  if (v == "forward") ::emu::set_schedule(::emu::Schedule::Forward);
  else if (v == "reverse") ::emu::set_schedule(::emu::Schedule::Reverse);
  else if (v == "tickets") ::emu::set_schedule(::emu::Schedule::Tickets);
  else if (v == "random") ::emu::set_schedule(::emu::Schedule::Random, 1);
  else if (v.rfind("random:", 0) == 0 && v.size() > 7 && v.find_first_not_of("0123456789", 7) == std::string::npos)
    ::emu::set_schedule(::emu::Schedule::Random, std::strtoull(v.c_str() + 7, nullptr, 10));
  else
    throw Error("ERR_INVALID_ARGUMENT", "GPTOSS_CUDA_EMU_SCHEDULE is '" + v +
                                           "'; it must be forward, reverse, tickets, random or random:SEED");
}

DeviceProps open_device() {
  // Once per process (deviceInfo() opens it too): a later open must not reseed a random schedule.
  static const bool scheduled = (schedule_from_env(), true);
  (void)scheduled;
  DeviceProps p;
  p.name = std::string("CUDA emulator on the CPU (test/cuda/emu; not a GPU; schedule ") +
           ::emu::schedule_name(::emu::schedule()) +
           (::emu::blocks_interleave() ? "" : ", blocks one at a time: a GCC build") + ")";
  p.total_memory = state().limit;
  p.cc_major = 9;
  p.cc_minor = 0;
  // Few SMs: a persistent grid's idle CTAs cost the emulator time, and no result depends on it.
  p.sm_count = 4;
  p.emulated = true;
  return p;
}

void* device_alloc(size_t bytes, const std::string& what) {
  State& st = state();
  std::lock_guard<std::mutex> g(st.mu);
  if (bytes > st.limit - st.used)
    throw Error("ERR_OUT_OF_MEMORY", "cannot allocate " + std::to_string(bytes) + " bytes of device memory for " + what + " (" +
                                         std::to_string(st.limit - st.used) + " free of the emulated device's " + std::to_string(st.limit) +
                                         ", GPTOSS_CUDA_EMU_MEMORY)");
  // 256-byte aligned as cudaMalloc's, and NaN (all bits set) until written, as the lab's.
  void* p = std::aligned_alloc(256, (bytes + 255) / 256 * 256 + 256);
  if (p) std::memset(p, 0xff, bytes);
  if (!p)
    throw Error("ERR_OUT_OF_MEMORY", "cannot allocate " + std::to_string(bytes) + " bytes of (emulated) device memory for " + what);
  st.sizes[p] = bytes;
  st.used += bytes;
  return p;
}

void device_free(void* p) {
  if (!p) return;
  State& st = state();
  std::lock_guard<std::mutex> g(st.mu);
  auto it = st.sizes.find(p);
  if (it != st.sizes.end()) {
    st.used -= it->second;
    st.sizes.erase(it);
  }
  std::free(p);
}

void* pinned_alloc(size_t bytes) {
  void* p = std::malloc(bytes ? bytes : 1);
  if (!p) throw Error("ERR_OUT_OF_MEMORY", "cannot allocate " + std::to_string(bytes) + " bytes of staging memory");
  return p;
}
void pinned_free(void* p) { std::free(p); }

cudaStream_t stream_create() { return reinterpret_cast<cudaStream_t>(new char); }
void stream_destroy(cudaStream_t s) { delete reinterpret_cast<char*>(s); }
void stream_sync(cudaStream_t) {}

void copy_h2d(void* dst, const void* src, size_t bytes, cudaStream_t s) {
  queue(s, [=] { std::memcpy(dst, src, bytes); });
}
void copy_d2h(void* dst, const void* src, size_t bytes, cudaStream_t s) {
  queue(s, [=] { std::memcpy(dst, src, bytes); });
}
void copy_d2d(void* dst, const void* src, size_t bytes, cudaStream_t s) {
  queue(s, [=] { std::memmove(dst, src, bytes); });
}
void fill_zero(void* dst, size_t bytes, cudaStream_t s) {
  queue(s, [=] { std::memset(dst, 0, bytes); });
}

Event event_create() { return new EventRec; }
void event_destroy(Event e) { delete e; }
void event_record(Event, cudaStream_t) {}
void event_sync(Event) {}

void capture_begin(cudaStream_t s) {
  if (g_recording) throw Error("ERR_INTERNAL", "cuda-emu: a stream is already being captured");
  g_capturing = s;
  g_recording = new std::vector<std::function<void()>>;
  ::emu::set_capture_hook([](std::function<void()> replay) { g_recording->push_back(std::move(replay)); });
}

Graph capture_end(cudaStream_t s) {
  if (!g_recording || g_capturing != s) throw Error("ERR_INTERNAL", "cuda-emu: capture_end without capture_begin on that stream");
  ::emu::set_capture_hook(nullptr);
  auto* g = new GraphRec;
  g->ops = std::move(*g_recording);
  delete g_recording;
  g_recording = nullptr;
  g_capturing = nullptr;
  return g;
}

void capture_abort(cudaStream_t) {
  ::emu::set_capture_hook(nullptr);
  delete g_recording;
  g_recording = nullptr;
  g_capturing = nullptr;
}

void graph_launch(Graph g, cudaStream_t s) {
  for (auto& op : g->ops) queue(s, op);
}
void graph_destroy(Graph g) { delete g; }

DeviceLock::DeviceLock() {
  device_mutex().lock();
  held_ = true;
}
DeviceLock::~DeviceLock() {
  if (held_) device_mutex().unlock();
}

}  // namespace gptoss::gpu
