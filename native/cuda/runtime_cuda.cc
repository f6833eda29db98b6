// The runtime layer (gpu.h) on the CUDA runtime (static cudart, CMakeLists.txt). Every failure is a
// typed Error naming the call and CUDA's text; the sticky-free error is cleared so the process
// stays usable (a sticky error, after a kernel fault, leaves the context unusable: CUDA's rule).
#include <cuda_runtime.h>

#include "native/cuda/gpu.h"

namespace gptoss::gpu {
namespace {

[[noreturn]] void fail(cudaError_t e, const char* call, const std::string& what = "") {
  cudaGetLastError();
  const std::string text = std::string(call) + (what.empty() ? "" : " (" + what + ")") + ": " + cudaGetErrorString(e);
  switch (e) {
    case cudaErrorMemoryAllocation: throw Error("ERR_OUT_OF_MEMORY", "out of device memory: " + text);
    case cudaErrorDevicesUnavailable: throw Error("ERR_BUSY", "the GPU is in exclusive use by another process: " + text);
    case cudaErrorInsufficientDriver:
    case cudaErrorNoDevice:
      throw Error("ERR_DEVICE", "no usable GPU: " + text);
    default: throw Error("ERR_DEVICE", text);
  }
}
inline void check(cudaError_t e, const char* call, const std::string& what = "") {
  if (e != cudaSuccess) fail(e, call, what);
}

}  // namespace

struct EventRec {
  cudaEvent_t e;
};
struct GraphRec {
  cudaGraph_t graph;
  cudaGraphExec_t exec;
};

bool emulated() { return false; }

DeviceProps open_device() {
  int n = 0;
  check(cudaGetDeviceCount(&n), "cudaGetDeviceCount");
  if (n == 0) throw Error("ERR_DEVICE", "no usable GPU: no CUDA device found");
  check(cudaSetDevice(0), "cudaSetDevice");
  check(cudaFree(nullptr), "creating the CUDA context");  // where a busy (exclusive) device says so
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  DeviceProps p;
  p.name = prop.name;
  p.total_memory = prop.totalGlobalMem;
  p.cc_major = prop.major;
  p.cc_minor = prop.minor;
  p.sm_count = prop.multiProcessorCount;
  if (p.cc_major < 8) throw Error("ERR_UNSUPPORTED", "device 'cuda': " + p.name + " is sm_" + std::to_string(p.cc_major) + std::to_string(p.cc_minor) + "; the kernels are built for sm_80 and sm_90a");
  return p;
}

void* device_alloc(size_t bytes, const std::string& what) {
  void* p = nullptr;
  check(cudaMalloc(&p, bytes ? bytes : 1), "cudaMalloc", std::to_string(bytes) + " bytes for " + what);
  return p;
}
void device_free(void* p) {
  if (p) cudaFree(p);
}
void* pinned_alloc(size_t bytes) {
  void* p = nullptr;
  check(cudaMallocHost(&p, bytes ? bytes : 1), "cudaMallocHost", std::to_string(bytes) + " bytes of staging memory");
  return p;
}
void pinned_free(void* p) {
  if (p) cudaFreeHost(p);
}

cudaStream_t stream_create() {
  cudaStream_t s = nullptr;
  check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
  return s;
}
void stream_destroy(cudaStream_t s) {
  if (s) cudaStreamDestroy(s);
}
void stream_sync(cudaStream_t s) { check(cudaStreamSynchronize(s), "cudaStreamSynchronize"); }

void copy_h2d(void* dst, const void* src, size_t bytes, cudaStream_t s) {
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s), "cudaMemcpyAsync (host to device)");
}
void copy_d2h(void* dst, const void* src, size_t bytes, cudaStream_t s) {
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s), "cudaMemcpyAsync (device to host)");
}
void copy_d2d(void* dst, const void* src, size_t bytes, cudaStream_t s) {
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync (device to device)");
}
void fill_zero(void* dst, size_t bytes, cudaStream_t s) { check(cudaMemsetAsync(dst, 0, bytes, s), "cudaMemsetAsync"); }

Event event_create() {
  auto* e = new EventRec;
  const cudaError_t r = cudaEventCreateWithFlags(&e->e, cudaEventDisableTiming);
  if (r != cudaSuccess) {
    delete e;
    fail(r, "cudaEventCreate");
  }
  return e;
}
void event_destroy(Event e) {
  if (!e) return;
  cudaEventDestroy(e->e);
  delete e;
}
void event_record(Event e, cudaStream_t s) { check(cudaEventRecord(e->e, s), "cudaEventRecord"); }
void event_sync(Event e) { check(cudaEventSynchronize(e->e), "cudaEventSynchronize"); }

void capture_begin(cudaStream_t s) { check(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture"); }

Graph capture_end(cudaStream_t s) {
  auto* g = new GraphRec{};
  cudaError_t r = cudaStreamEndCapture(s, &g->graph);
  if (r == cudaSuccess) r = cudaGraphInstantiate(&g->exec, g->graph, 0);
  if (r != cudaSuccess) {
    if (g->graph) cudaGraphDestroy(g->graph);
    delete g;
    fail(r, "capturing a decode step as a CUDA graph");
  }
  return g;
}
void capture_abort(cudaStream_t s) {
  cudaGraph_t g = nullptr;
  if (cudaStreamEndCapture(s, &g) == cudaSuccess && g) cudaGraphDestroy(g);
  cudaGetLastError();
}
void graph_launch(Graph g, cudaStream_t s) { check(cudaGraphLaunch(g->exec, s), "cudaGraphLaunch"); }
void graph_destroy(Graph g) {
  if (!g) return;
  cudaGraphExecDestroy(g->exec);
  cudaGraphDestroy(g->graph);
  delete g;
}

DeviceLock::DeviceLock() {}
DeviceLock::~DeviceLock() {}

}  // namespace gptoss::gpu
