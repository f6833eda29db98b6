// A fixed pool of worker threads for the CPU ops. parallel_for splits [0, n) into chunks that the
// workers and the calling thread take from one atomic counter; it returns when all are done.
// One parallel_for runs at a time (calls from two sessions queue on a mutex); a call made from
// inside a parallel_for body runs serially on that thread. If a body throws, the remaining chunks
// are skipped and the first exception is rethrown on the calling thread after all workers stop.
#pragma once
#include <cstdint>
#include <functional>

namespace gptoss::cpu {

// fn(begin, end) over chunks of at most `grain` indices.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

// Threads that take part, the caller included (GPTOSS_THREADS, else the hardware's count).
int num_threads();

// Which of those threads runs the calling code: 0 for the thread that called parallel_for (and
// any thread outside the pool), 1 .. num_threads() - 1 for the pool's workers. A body indexes
// its per-thread scratch with it (one parallel_for runs at a time, so the caller's slot is free).
int worker_index();

}  // namespace gptoss::cpu
