// Large host allocations: 2 MiB aligned and advised as transparent huge pages, so that streaming
// weights through the cores is not limited by TLB misses (THP is often in "madvise" mode).
#pragma once
#include <sys/mman.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace gptoss {

inline void* host_alloc(size_t bytes) {
  constexpr size_t kHuge = size_t(2) << 20;
  const size_t align = bytes >= kHuge ? kHuge : 64;
  if (bytes > (size_t(1) << 50)) return nullptr;  // no machine has this; also keeps the rounding below from wrapping
  const size_t size = (bytes + align - 1) / align * align;
  void* p = nullptr;
  if (posix_memalign(&p, align, size == 0 ? align : size) != 0) return nullptr;
#ifdef MADV_HUGEPAGE
  if (align == kHuge) madvise(p, size, MADV_HUGEPAGE);
#endif
  return p;
}

}  // namespace gptoss
