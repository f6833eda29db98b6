// Where a sequence's keys and values live in a layer's KV pool. The pool is pages of page_size
// rows; sequence s owns table[s * ring + i] for i < ring; position p sits in page
// table[s * ring + (p / page_size) % ring] at row p % page_size. Two positions share a row only
// if they differ by a multiple of ring * page_size, so:
//   - a full-attention layer gives each sequence enough pages for its context (no wrap);
//   - a sliding-window layer gives it ring * page_size >= window + step tokens - 1 rows and
//     reuses them, so it holds only its window.
// One contiguous cache per session is the case ring = 1, page_size = capacity, table = {0}.
#pragma once
#include <cstdint>

namespace gptoss {
struct KvPages {
  const int32_t* seq;    // [T] sequence of each token: a row of `table`
  const int32_t* table;  // [S, ring] page ids
  int ring, page_size;
  int64_t row(int32_t s, int64_t pos) const {
    return int64_t(table[int64_t(s) * ring + (pos / page_size) % ring]) * page_size + pos % page_size;
  }
};
}  // namespace gptoss
