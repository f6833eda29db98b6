#include "kernels/cpu/parallel.h"

#include <atomic>
#include <condition_variable>
#include <exception>
#include <utility>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define GPTOSS_PAUSE() _mm_pause()
#else
#define GPTOSS_PAUSE() ((void)0)
#endif

namespace gptoss::cpu {
namespace {

thread_local bool t_inside = false;
thread_local int t_worker = 0;  // worker_index(): set once when a pool thread starts

class Pool {
 public:
  Pool() {
    int n = int(std::thread::hardware_concurrency());
    if (const char* env = std::getenv("GPTOSS_THREADS")) n = std::atoi(env);
    if (n < 1) n = 1;
    threads_ = n;
    for (int i = 1; i < n; ++i)
      workers_.emplace_back([this, i] {
        t_worker = i;
        loop();
      });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_ = true;
      ++generation_;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

  int threads() const { return threads_; }

  void run(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
    if (grain < 1) grain = 1;
    if (t_inside || workers_.empty() || n <= grain) {  // serial: exceptions propagate as usual
      for (int64_t b = 0; b < n; b += grain) fn(b, b + grain < n ? b + grain : n);
      return;
    }
    std::lock_guard<std::mutex> serial(run_m_);
    {
      std::lock_guard<std::mutex> lk(m_);
      fn_ = &fn;
      n_ = n;
      grain_ = grain;
      next_.store(0);
      busy_.store(int(workers_.size()));
      generation_.fetch_add(1);
    }
    cv_.notify_all();
    work();
    // Workers decrement busy_ when the counter runs dry; wait for the stragglers' last chunk.
    while (busy_.load(std::memory_order_acquire) != 0) GPTOSS_PAUSE();
    fn_ = nullptr;
    // A body that threw (an allocation failure, say) stopped the loop for everyone; rethrow
    // here, on the caller's thread, once no worker touches fn any more.
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

 private:
  void work() {
    struct Inside {
      Inside() { t_inside = true; }
      ~Inside() { t_inside = false; }
    } inside;
    for (;;) {
      int64_t b = next_.fetch_add(grain_);
      if (b >= n_) break;
      try {
        (*fn_)(b, b + grain_ < n_ ? b + grain_ : n_);
      } catch (...) {
        std::lock_guard<std::mutex> lk(error_m_);
        if (!error_) error_ = std::current_exception();
        next_.store(n_);  // the others stop at their next chunk
      }
    }
  }

  void loop() {
    uint64_t seen = 0;
    for (;;) {
      // Spin briefly before sleeping: a decode step issues a few hundred parallel regions.
      for (int i = 0; i < 4000 && generation_.load(std::memory_order_acquire) == seen; ++i)
        GPTOSS_PAUSE();
      if (generation_.load(std::memory_order_acquire) == seen) {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return generation_.load() != seen; });
      }
      seen = generation_.load();
      if (stop_) return;
      work();
      busy_.fetch_sub(1, std::memory_order_release);
    }
  }

  int threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex m_, run_m_;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int64_t> next_{0};
  std::atomic<int> busy_{0};
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  std::mutex error_m_;
  std::exception_ptr error_;
  int64_t n_ = 0, grain_ = 1;
  bool stop_ = false;
};

Pool& pool() {
  // Never destroyed: worker threads must not be joined from a static destructor at exit, when
  // Node may already have torn down parts of the process.
  static Pool* p = new Pool();
  return *p;
}

}  // namespace

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  pool().run(n, grain, fn);
}

int num_threads() { return pool().threads(); }

int worker_index() { return t_worker; }

}  // namespace gptoss::cpu
