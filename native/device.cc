// What this process can run on: the CPU's SIMD variant and thread count, and whether the CUDA
// backend was built and finds a device. Also the host memory read bandwidth, measured for the
// benchmarks' ceilings.
#include "native/device.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <memory>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/simd.h"
#include "native/errors.h"
#include "native/host_alloc.h"
#include "native/js.h"

namespace gptoss {

#if !defined(GPTOSS_WITH_CUDA) && !defined(GPTOSS_CUDA_EMU)
CudaProbe cuda_probe() {
  CudaProbe p;
  p.error = "this addon was built without CUDA (a CPU-only build: nvcc was not found, or node-gyp built it)";
  return p;
}
#endif

namespace {

Napi::Value DeviceInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  Napi::Object cpu = Napi::Object::New(env);
  cpu.Set("simd", cpu::simd().name);
  cpu.Set("bf16", cpu::simd_bf16() != nullptr);
  cpu.Set("threads", cpu::num_threads());
  o.Set("cpu", cpu);
  const CudaProbe p = cuda_probe();
  Napi::Object cuda = Napi::Object::New(env);
  cuda.Set("built", p.built);
  cuda.Set("emulated", p.emulated);
  cuda.Set("available", p.count > 0);
  cuda.Set("deviceCount", p.count);
  if (!p.error.empty()) cuda.Set("error", p.error);
  if (p.count > 0) {
    cuda.Set("name", p.name);
    cuda.Set("totalMemory", double(p.total_memory));
    cuda.Set("computeCapability", std::to_string(p.cc_major) + "." + std::to_string(p.cc_minor));
  }
  o.Set("cuda", cuda);
  return o;
}

// measureHostBandwidth(bytes, reps) -> Promise<{bytesPerSecond, best, median}>: reads a buffer
// larger than the caches with every thread, as the decode step reads weights.
Napi::Value MeasureHostBandwidth(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const double bytes_d = js::number(info[0], "measureHostBandwidth(bytes, reps): bytes");
    const int reps = js::int32(info[1], "measureHostBandwidth(bytes, reps): reps");
    if (!(bytes_d >= 1 << 20) || reps < 1) throw invalid_argument("measureHostBandwidth(bytes >= 1 MiB, reps >= 1)");
    const size_t n = size_t(bytes_d) / 4;
    auto results = std::make_shared<std::vector<double>>();
    return run_async(
        env,
        [n, reps, results]() {
          float* buf = static_cast<float*>(host_alloc(n * 4));
          if (!buf)
            throw Error("ERR_OUT_OF_MEMORY", "cannot allocate the bandwidth probe's buffer");
          std::unique_ptr<float, decltype(&std::free)> hold(buf, &std::free);
          cpu::parallel_for(int64_t(n), 1 << 16, [&](int64_t b, int64_t e) {
            for (int64_t i = b; i < e; ++i) buf[i] = float(i & 7);
          });
          constexpr int64_t kChunk = 1 << 18;  // floats per task (1 MiB)
          const int64_t chunks = int64_t((n + kChunk - 1) / kChunk);
          volatile double sink = 0;
          for (int r = 0; r < reps + 1; ++r) {
            std::vector<double> part(static_cast<size_t>(chunks), 0.0);
            auto t0 = std::chrono::steady_clock::now();
            cpu::parallel_for(chunks, 1, [&](int64_t c0, int64_t c1) {
              for (int64_t c = c0; c < c1; ++c) {
                const size_t b = size_t(c * kChunk), e = std::min(n, b + kChunk);
                part[size_t(c)] = cpu::simd().sum_f32(buf + b, e - b);
              }
            });
            auto t1 = std::chrono::steady_clock::now();
            for (double v : part) sink = sink + v;
            if (r > 0) results->push_back(double(n) * 4 / std::chrono::duration<double>(t1 - t0).count());
          }
        },
        [results](Napi::Env e) -> Napi::Value {
          std::vector<double> v = *results;
          std::sort(v.begin(), v.end());
          Napi::Object o = Napi::Object::New(e);
          o.Set("best", v.back());
          o.Set("median", v[v.size() / 2]);
          o.Set("bytesPerSecond", v[v.size() / 2]);
          return o;
        });
  });
}

}  // namespace

Napi::Object device_exports(Napi::Env env, Napi::Object exports) {
  exports.Set("deviceInfo", Napi::Function::New(env, DeviceInfo));
  exports.Set("measureHostBandwidth", Napi::Function::New(env, MeasureHostBandwidth));
  return exports;
}

}  // namespace gptoss
