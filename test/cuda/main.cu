// The kernel lab's test runner: runs every registered test (or those whose name contains argv[1])
// and prints one line per test.
#include <algorithm>
#include <cstdarg>

#include "test/cuda/harness.h"

namespace lab {
std::vector<Test>& registry() {
  static std::vector<Test> r;
  return r;
}
std::string format(const char* f, ...) {
  char buf[2048];
  va_list ap;
  va_start(ap, f);
  vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}
uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
float bf16_to_f32(uint16_t b) {
  const uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
void for_each_schedule(const std::function<void()>& fn) {
#if defined(GPTOSS_CUDA_EMU)
  struct Sched {
    emu::Schedule s;
    uint64_t seed;
  };
  std::vector<Sched> schedules = {{emu::Schedule::Forward, 0}, {emu::Schedule::Reverse, 0}, {emu::Schedule::Tickets, 0}};
  // LAB_SEEDS=N: N random schedules instead of 2 (seeds from LAB_SEED_FROM, default 1), to
  // measure how often a race shows.
  const char* seeds = std::getenv("LAB_SEEDS");
  const int nseeds = seeds ? std::max(1, std::atoi(seeds)) : 2;
  const int from = std::getenv("LAB_SEED_FROM") ? std::atoi(std::getenv("LAB_SEED_FROM")) : 1;
  for (int i = from; i < from + nseeds; ++i) schedules.push_back({emu::Schedule::Random, uint64_t(i)});
  for (const auto& s : schedules) {
    emu::set_schedule(s.s, s.seed);
    try {
      fn();
    } catch (const std::exception& e) {
      emu::set_schedule(emu::Schedule::Forward);
      throw Failure(format("[schedule %s%s] %s", emu::schedule_name(s.s),
                           s.s == emu::Schedule::Random ? format(" seed %llu", (unsigned long long)s.seed).c_str() : "",
                           e.what()));
    }
  }
  emu::set_schedule(emu::Schedule::Forward);
#else
  fn();
#endif
}
double max_rel_err(const float* got, const float* want, size_t n, double abs_floor) {
  double worst = 0;
  for (size_t i = 0; i < n; ++i) {
    const double e = std::fabs(double(got[i]) - want[i]) / (std::fabs(double(want[i])) + abs_floor);
    if (!(e <= worst)) worst = std::isnan(e) ? INFINITY : e;
  }
  return worst;
}
}  // namespace lab

int main(int argc, char** argv) {
  const char* filter = argc > 1 ? argv[1] : "";
  int failed = 0, ran = 0;
#if defined(GPTOSS_CUDA_EMU)
  const char* mode = "emulated";
#else
  const char* mode = "native";
#endif
  for (const auto& t : lab::registry()) {
    if (!std::strstr(t.name, filter)) continue;
    ++ran;
    try {
      t.fn();
      std::printf("ok    [%s] %s\n", mode, t.name);
    } catch (const std::exception& e) {
      ++failed;
      std::printf("FAIL  [%s] %s\n      %s\n", mode, t.name, e.what());
    }
    std::fflush(stdout);
  }
  std::printf("%d of %d kernel-lab tests passed (%s)\n", ran - failed, ran, mode);
  return failed ? 1 : 0;
}
