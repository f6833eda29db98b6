#include "native/weights.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/simd.h"
#include "native/errors.h"
#include "native/host_alloc.h"
#include "native/js.h"

namespace gptoss {

namespace {

// splitmix64: a seeded stream per 64 KiB chunk, so the bytes do not depend on the thread count.
inline uint64_t mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

struct SyntheticSpec {
  std::string name, kind;  // kind: "bf16-uniform" | "bf16-const" | "u8-uniform" | "u8-around"
  size_t bytes = 0;
  uint64_t seed = 0;
  double a = 0;            // bf16-uniform: half-width; bf16-const: value; u8-around: centre
  uint8_t* data = nullptr;
};

void fill(SyntheticSpec& s) {
  constexpr size_t kChunk = 1 << 16;
  const size_t chunks = (s.bytes + kChunk - 1) / kChunk;
  // The kind, compared once (a string compare per element was a third of the fill's time).
  const bool u8_uniform = s.kind == "u8-uniform", u8_around = s.kind == "u8-around", bf16_const = s.kind == "bf16-const";
  cpu::parallel_for(int64_t(chunks), 4, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      uint64_t state = mix(s.seed * 0x100000001b3ull + uint64_t(c));
      const size_t begin = size_t(c) * kChunk, end = std::min(s.bytes, begin + kChunk);
      if (u8_uniform) {
        for (size_t i = begin; i < end; i += 8) {
          uint64_t r = mix(state++);
          std::memcpy(s.data + i, &r, std::min<size_t>(8, end - i));
        }
      } else if (u8_around) {
        // E8M0 scales within one binade of the centre.
        for (size_t i = begin; i < end; ++i) s.data[i] = uint8_t(int(s.a) + int(mix(state++) % 3) - 1);
      } else {
        uint16_t* out = reinterpret_cast<uint16_t*>(s.data);
        const uint16_t konst = cpu::f32_to_bf16(float(s.a));
        for (size_t i = begin / 2; i < end / 2; ++i) {
          if (bf16_const) {
            out[i] = konst;
          } else {
            const double u = double(mix(state++) >> 11) * (1.0 / 9007199254740992.0);
            out[i] = cpu::f32_to_bf16(float((2 * u - 1) * s.a));
          }
        }
      }
    }
  });
}
}  // namespace

Napi::Function Weights::Init(Napi::Env env) {
  Napi::Function f = DefineClass(env, "Weights", {
      InstanceMethod("mapFile", &Weights::MapFile),
      InstanceMethod("addMapped", &Weights::AddMapped),
      InstanceMethod("addSynthetic", &Weights::AddSynthetic),
      InstanceMethod("addBytes", &Weights::AddBytes),
      InstanceMethod("prefetch", &Weights::Prefetch),
      InstanceMethod("mappedState", &Weights::MappedState),
      InstanceMethod("evict", &Weights::Evict),
      InstanceMethod("upload", &Weights::Upload),
      InstanceMethod("dispose", &Weights::Dispose),
      InstanceAccessor("disposed", &Weights::Disposed, nullptr),
      InstanceAccessor("ownedBytes", &Weights::OwnedBytes, nullptr),
  });
  env.GetInstanceData<AddonData>()->weights_ctor = Napi::Persistent(f);
  return f;
}

Weights::Weights(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Weights>(info) {
  store_ = std::make_shared<WeightStore>();
}

Weights::~Weights() {
  // The finalizer is only a safety net (lib/ disposes explicitly); external memory is not
  // re-adjusted here because the env may be shutting down.
}

Weights* Weights::Unwrap(const Napi::Value& v) {
  AddonData* data = v.Env().GetInstanceData<AddonData>();
  if (!v.IsObject() || !data || !v.As<Napi::Object>().InstanceOf(data->weights_ctor.Value()))
    throw invalid_argument("expected a Weights object");
  return Napi::ObjectWrap<Weights>::Unwrap(v.As<Napi::Object>());
}

WeightStore& Weights::live(Napi::Env env) {
  if (!store_) throw Error("ERR_DISPOSED", "the model's weights were disposed");
  return *store_;
}

// mapFile(path) -> index. The whole file is mapped read-only; nothing is read until used.
Napi::Value Weights::MapFile(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    WeightStore& s = live(info.Env());
    const std::string path = js::string(info[0], "mapFile(path): path");
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw checkpoint_error(path, "", std::string("cannot open: ") + std::strerror(errno));
    struct stat st {};
    if (fstat(fd, &st) != 0) {
      ::close(fd);
      throw checkpoint_error(path, "", std::string("cannot stat: ") + std::strerror(errno));
    }
    WeightStore::Mapping m;
    m.path = path;
    m.size = size_t(st.st_size);
    if (m.size > 0) {
      m.addr = mmap(nullptr, m.size, PROT_READ, MAP_PRIVATE, fd, 0);
      if (m.addr == MAP_FAILED) {
        ::close(fd);
        throw checkpoint_error(path, "", std::string("mmap failed: ") + std::strerror(errno));
      }
#ifdef MADV_HUGEPAGE
      // What is read from the file from now on enters the page cache as 2 MB folios (where the file
      // system supports them) and is mapped one TLB entry per 2 MB: the CPU kernels stream the
      // weights, and through 4 KB pages each page costs a page walk and stops the hardware
      // prefetchers (on the build VM a 1 GB stream read 4-5x slower through 4 KB pages). Advice
      // only: without it, pages faulted in the kernels' order mostly come in as 4 KB folios.
      madvise(m.addr, m.size, MADV_HUGEPAGE);
#endif
    }
    ::close(fd);
    s.maps.push_back(m);
    return Napi::Number::New(info.Env(), double(s.maps.size() - 1));
  });
}

// addMapped(fileIndex, byteOffset, byteLength, name) -> tensor id. Bounds are checked against the
// mapped size, whatever the JS side validated before.
Napi::Value Weights::AddMapped(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    WeightStore& s = live(info.Env());
    const int64_t file = js::int32(info[0], "addMapped: fileIndex");
    const double off = js::number(info[1], "addMapped: byteOffset");
    const double len = js::number(info[2], "addMapped: byteLength");
    const std::string name = js::string(info[3], "addMapped: name");
    if (file < 0 || size_t(file) >= s.maps.size()) throw invalid_argument("addMapped: no such file index");
    const auto& m = s.maps[size_t(file)];
    if (!(off >= 0) || !(len >= 0) || off + len > double(m.size) || off != std::floor(off) || len != std::floor(len))
      throw checkpoint_error(m.path, name, "lies outside the file");
    TensorRef t;
    t.data = static_cast<const uint8_t*>(m.addr) + size_t(off);
    t.bytes = size_t(len);
    t.name = name;
    s.tensors.push_back(t);
    return Napi::Number::New(info.Env(), double(s.tensors.size() - 1));
  });
}

// addSynthetic([{name, kind, bytes, seed, a}]) -> Promise<ids>: random weights, deterministic
// from the seed, generated in memory on the worker pool.
Napi::Value Weights::AddSynthetic(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    live(info.Env());
    Napi::Array arr = js::array(info[0], "addSynthetic(specs): specs");
    auto specs = std::make_shared<std::vector<SyntheticSpec>>();
    for (uint32_t i = 0; i < arr.Length(); ++i) {
      const std::string at = "addSynthetic: specs[" + std::to_string(i) + "]";
      Napi::Object o = js::object(arr.Get(i), at);
      SyntheticSpec sp;
      sp.name = js::string(o.Get("name"), at + ".name");
      sp.kind = js::string(o.Get("kind"), at + ".kind");
      const double bytes = js::number(o.Get("bytes"), at + ".bytes");
      if (!(bytes >= 0) || bytes != std::floor(bytes) || bytes > 1e15)
        throw invalid_argument("addSynthetic: bytes of " + sp.name + " must be a non-negative integer");
      sp.bytes = size_t(bytes);
      const double seed = js::number(o.Get("seed"), at + ".seed");
      if (!(seed >= 0) || seed != std::floor(seed) || seed > 9007199254740991.0)
        throw invalid_argument(at + ".seed must be a non-negative integer");
      sp.seed = uint64_t(seed);
      sp.a = js::number(o.Get("a"), at + ".a");
      if (sp.kind != "bf16-uniform" && sp.kind != "bf16-const" && sp.kind != "u8-uniform" && sp.kind != "u8-around")
        throw invalid_argument("addSynthetic: unknown kind " + sp.kind);
      specs->push_back(sp);
    }
    auto store = store_;
    Napi::Env env = info.Env();
    // Allocate on the JS thread so a failure is a clean rejection before any work starts.
    for (auto& sp : *specs) sp.data = own(env, sp.bytes, sp.name);
    return run_async(
        env, [specs]() { for (auto& sp : *specs) fill(sp); },
        [specs, store](Napi::Env e) -> Napi::Value {
          Napi::Array ids = Napi::Array::New(e, specs->size());
          for (size_t i = 0; i < specs->size(); ++i) {
            TensorRef t;
            t.data = (*specs)[i].data;
            t.bytes = (*specs)[i].bytes;
            t.name = (*specs)[i].name;
            store->tensors.push_back(t);
            ids.Set(uint32_t(i), Napi::Number::New(e, double(store->tensors.size() - 1)));
          }
          return ids;
        });
  });
}

// addBytes(typedArray, name) -> tensor id: a copy owned by the store (small tensors, op tests).
Napi::Value Weights::AddBytes(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    WeightStore& s = live(info.Env());
    if (!info[0].IsTypedArray()) throw invalid_argument("addBytes(bytes, name): bytes must be a typed array");
    Napi::TypedArray src = info[0].As<Napi::TypedArray>();
    const size_t n = src.ByteLength();
    const std::string name = js::string(info[1], "addBytes(bytes, name): name");
    uint8_t* p = own(info.Env(), n, name);
    std::memcpy(p, static_cast<uint8_t*>(src.ArrayBuffer().Data()) + src.ByteOffset(), n);
    TensorRef t;
    t.data = static_cast<const uint8_t*>(p);
    t.bytes = n;
    t.name = name;
    s.tensors.push_back(t);
    return Napi::Number::New(info.Env(), double(s.tensors.size() - 1));
  });
}

// prefetch(fileIndex, byteOffset, byteLength) -> Promise: reads a range of a mapped file into
// memory (one byte per page, on the worker pool), so the first step does not fault it in.
Napi::Value Weights::Prefetch(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    WeightStore& s = live(info.Env());
    const int64_t file = js::int32(info[0], "prefetch: fileIndex");
    const double off = js::number(info[1], "prefetch: byteOffset"), len = js::number(info[2], "prefetch: byteLength");
    if (file < 0 || size_t(file) >= s.maps.size()) throw invalid_argument("prefetch: no such file index");
    const auto& m = s.maps[size_t(file)];
    if (!(off >= 0) || !(len >= 0) || off + len > double(m.size)) throw invalid_argument("prefetch: range outside the file");
    auto store = store_;
    const uint8_t* base = static_cast<const uint8_t*>(m.addr) + size_t(off);
    const size_t n = size_t(len);
    return run_async(info.Env(), [store, base, n]() {
      if (n == 0) return;
      constexpr size_t kPage = 4096, kChunk = size_t(1) << 22;
      madvise(const_cast<uint8_t*>(base) - (reinterpret_cast<uintptr_t>(base) % kPage), n, MADV_WILLNEED);
      std::atomic<uint64_t> sum{0};
      cpu::parallel_for(int64_t((n + kChunk - 1) / kChunk), 1, [&](int64_t c0, int64_t c1) {
        uint64_t local = 0;
        for (int64_t c = c0; c < c1; ++c)
          for (size_t i = size_t(c) * kChunk; i < std::min(n, size_t(c + 1) * kChunk); i += kPage) local += base[i];
        sum += local;
      });
    }, nullptr);
  });
}

// mappedState(fileIndex) -> {resident, huge} | null: bytes of the file's mapping resident in this
// process, and how many of them are mapped as 2 MB pages (Rss and FilePmdMapped of the mapping in
// /proc/self/smaps); null where that is not known (not Linux, or no such line).
Napi::Value Weights::MappedState(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    WeightStore& s = live(info.Env());
    const int64_t file = js::int32(info[0], "mappedState: fileIndex");
    if (file < 0 || size_t(file) >= s.maps.size()) throw invalid_argument("mappedState: no such file index");
    const auto& m = s.maps[size_t(file)];
    double resident = -1, huge = -1;
    if (m.addr) {
      char head[32];
      std::snprintf(head, sizeof head, "%lx-", static_cast<unsigned long>(reinterpret_cast<uintptr_t>(m.addr)));
      if (FILE* f = std::fopen("/proc/self/smaps", "re")) {
        char line[512];
        bool in = false;
        while (std::fgets(line, sizeof line, f)) {
          // A mapping's header is "start-end perms ..." in hex; its fields are "Name: value".
          unsigned long a = 0, b = 0;
          char perms[8];
          if (std::sscanf(line, "%lx-%lx %7s", &a, &b, perms) == 3) {
            if (in) break;
            in = std::strncmp(line, head, std::strlen(head)) == 0;
          } else if (in) {
            unsigned long kb = 0;
            if (std::sscanf(line, "Rss: %lu kB", &kb) == 1) resident = double(kb) * 1024;
            else if (std::sscanf(line, "FilePmdMapped: %lu kB", &kb) == 1) huge = double(kb) * 1024;
          }
        }
        std::fclose(f);
      }
    }
    if (resident < 0 || huge < 0) return info.Env().Null();
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("resident", resident);
    o.Set("huge", huge);
    return o;
  });
}

// evict(fileIndex, byteOffset, byteLength): drops a range of a mapped file from this mapping and
// from the page cache (unless another process maps it), so the next touch reads it from the file
// again, into 2 MB folios after mapFile's advice. For a page cache that holds a file in 4 KB
// folios (a file just written is cached that way), which stay 4 KB however they are mapped.
// Safe while programs read the weights: a dropped page is faulted in again with the same bytes.
Napi::Value Weights::Evict(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    WeightStore& s = live(info.Env());
    const int64_t file = js::int32(info[0], "evict: fileIndex");
    const double off = js::number(info[1], "evict: byteOffset"), len = js::number(info[2], "evict: byteLength");
    if (file < 0 || size_t(file) >= s.maps.size()) throw invalid_argument("evict: no such file index");
    const auto& m = s.maps[size_t(file)];
    if (!(off >= 0) || !(len >= 0) || off + len > double(m.size) || off != std::floor(off) || len != std::floor(len))
      throw invalid_argument("evict: range outside the file");
    if (!m.addr || len == 0) return info.Env().Undefined();
    // Whole pages inside the range (the mapping starts on a page, at file offset 0).
    const size_t page = size_t(sysconf(_SC_PAGESIZE));
    const size_t lo = (size_t(off) + page - 1) / page * page, hi = std::min(m.size, size_t(off + len)) / page * page;
    if (hi <= lo) return info.Env().Undefined();
    madvise(static_cast<uint8_t*>(m.addr) + lo, hi - lo, MADV_DONTNEED);
    const int fd = ::open(m.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
#ifdef POSIX_FADV_DONTNEED
      fdatasync(fd);  // dirty pages (a file just written) would stay in the cache
      posix_fadvise(fd, off_t(lo), off_t(hi - lo), POSIX_FADV_DONTNEED);
#endif
      ::close(fd);
    }
    return info.Env().Undefined();
  });
}

// upload(device) -> Promise: copies the weights to the device now, on the libuv pool (pinned
// staging, progress on stderr for checkpoints over 1 GB), so the programs made afterwards find
// them there instead of copying them on the JS thread in their constructor. The copies are held
// until dispose; tensors added later go up with the next upload or program.
Napi::Value Weights::Upload(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    live(info.Env());
    const std::string device = js::string(info[0], "upload(device): device");
    std::shared_ptr<Backend> backend = backend_for(device);
    auto store = store_;
    auto held = std::make_shared<std::shared_ptr<const DeviceWeights>>();
    // info.This() is kept alive until the promise settles, so `this` is valid in the result.
    return run_async(
        info.Env(), [backend, store, held]() { *held = backend->upload_weights(store); },
        [this, held](Napi::Env e) -> Napi::Value {
          if (store_ && *held) uploaded_.push_back(*held);
          return e.Undefined();
        },
        {info.This()});
  });
}

// Memory the store owns (freed with it), counted and reported to V8 as it is taken.
uint8_t* Weights::own(Napi::Env env, size_t bytes, const std::string& what) {
  void* p = host_alloc(bytes);
  if (!p) throw Error("ERR_OUT_OF_MEMORY", "cannot allocate " + std::to_string(bytes) + " bytes for " + what);
  store_->owned.push_back(p);
  store_->owned_bytes += bytes;
  Napi::MemoryManagement::AdjustExternalMemory(env, int64_t(bytes));
  reported_ += int64_t(bytes);
  return static_cast<uint8_t*>(p);
}

Napi::Value Weights::Dispose(const Napi::CallbackInfo& info) {
  if (store_) {
    uploaded_.clear();
    store_.reset();  // programs still running keep their own reference
    if (reported_) Napi::MemoryManagement::AdjustExternalMemory(info.Env(), -reported_);
    reported_ = 0;
  }
  return info.Env().Undefined();
}

Napi::Value Weights::Disposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), !store_);
}

Napi::Value Weights::OwnedBytes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), store_ ? double(store_->owned_bytes) : 0.0);
}

}  // namespace gptoss
