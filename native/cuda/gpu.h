// The thin runtime layer the CUDA backend (native/cuda/backend.cc) reaches the GPU through:
// device memory, pinned host memory, streams, events, copies and graph capture/replay. Kernel
// launches go through each op's launcher (kernels/cuda/<op>.cuh), which launch on a stream.
// Two implementations, chosen at link time:
//   - runtime_cuda.cc: the CUDA runtime (static cudart); errors are typed: no driver or no device
//     -> ERR_DEVICE, out of memory -> ERR_OUT_OF_MEMORY, a device in exclusive use -> ERR_BUSY,
//     anything else -> ERR_DEVICE with the call and CUDA's text. Nothing aborts.
//   - runtime_emu.cc: the kernel lab's emulator (test/cuda/emu) on the CPU: device memory is host
//     memory (fresh allocations read NaN), copies run at once, a launch runs to completion, and a
//     captured graph is the list of launches and copies recorded during capture, run again on
//     replay. One process-wide lock serialises the emulated device (the emulator runs one block
//     at a time), which DeviceLock takes. GPTOSS_CUDA_EMU_MEMORY (bytes) caps its device memory,
//     so out-of-memory paths can be tested.
#pragma once
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>

#include "kernels/cuda/common.cuh"

namespace gptoss::gpu {

struct DeviceProps {
  std::string name;
  size_t total_memory = 0;
  int cc_major = 0, cc_minor = 0;
  int sm_count = 0;  // streaming multiprocessors: persistent grids size themselves by it
  bool emulated = false;
};
// Selects device 0 and reports it; throws ERR_DEVICE (no driver, no device) or ERR_BUSY (emulated:
// ERR_INVALID_ARGUMENT for a GPTOSS_CUDA_EMU_SCHEDULE it does not know).
DeviceProps open_device();
bool emulated();

// Device memory; throws ERR_OUT_OF_MEMORY naming `what` and the bytes.
void* device_alloc(size_t bytes, const std::string& what);
void device_free(void* p);
// Page-locked host memory for staging copies; throws ERR_OUT_OF_MEMORY.
void* pinned_alloc(size_t bytes);
void pinned_free(void* p);

cudaStream_t stream_create();
void stream_destroy(cudaStream_t s);
void stream_sync(cudaStream_t s);

// Copies and fills queued on a stream (recorded, not run, while the stream is being captured).
void copy_h2d(void* dst, const void* src, size_t bytes, cudaStream_t s);
void copy_d2h(void* dst, const void* src, size_t bytes, cudaStream_t s);
void copy_d2d(void* dst, const void* src, size_t bytes, cudaStream_t s);
void fill_zero(void* dst, size_t bytes, cudaStream_t s);

// An event recorded on a stream (a staging buffer may be refilled once its copy has passed it).
struct EventRec;
using Event = EventRec*;
Event event_create();
void event_destroy(Event e);
void event_record(Event e, cudaStream_t s);
void event_sync(Event e);

// Graph capture: everything queued on `s` between begin and end becomes one executable graph.
struct GraphRec;
using Graph = GraphRec*;
void capture_begin(cudaStream_t s);
// Ends the capture; on failure (a launcher threw meanwhile) call capture_abort instead.
Graph capture_end(cudaStream_t s);
void capture_abort(cudaStream_t s);
void graph_launch(Graph g, cudaStream_t s);
void graph_destroy(Graph g);

// Held while ops are queued or graphs replayed: the emulated device runs one launch at a time
// process-wide; on a GPU it holds nothing.
class DeviceLock {
 public:
  DeviceLock();
  ~DeviceLock();
  DeviceLock(const DeviceLock&) = delete;
  DeviceLock& operator=(const DeviceLock&) = delete;

 private:
  bool held_ = false;
};

// Runs fn, turning what the emulator throws for a broken CUDA rule into ERR_DEVICE (no-op on a GPU,
// where launchers report launch failures themselves).
template <class Fn>
void guarded_launch(const char* what, Fn&& fn);

}  // namespace gptoss::gpu

#if defined(GPTOSS_CUDA_EMU)
template <class Fn>
void gptoss::gpu::guarded_launch(const char* what, Fn&& fn) {
  try {
    fn();
  } catch (const ::emu::Error& e) {
    throw Error("ERR_DEVICE", std::string(what) + ": " + e.what());
  }
}
#else
template <class Fn>
void gptoss::gpu::guarded_launch(const char*, Fn&& fn) {
  fn();
}
#endif
