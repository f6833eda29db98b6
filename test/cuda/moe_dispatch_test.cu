// moe_dispatch_cuda and moe_dispatch_combine_cuda against a plain CPU grouping (the stable sort by
// (expert, slot) of kernels/cpu/moe_mxfp4.cc) and a plain CPU sum, bit for bit, under every emulator
// schedule: several 1024-slot chunks, more than 32 experts (the offset scan runs in 32-expert
// pieces), every slot on one expert, experts no slot chose, indices outside [0, E). Scratch and
// outputs are NaN-poisoned (all bits set) before every call.
#include <algorithm>
#include <cstdlib>

#include "kernels/cuda/moe_dispatch.cuh"
#include "test/cuda/harness.h"

namespace {
struct Want {
  std::vector<int32_t> offsets, order, tile_expert, tile_row0;
};
Want cpu_dispatch(const std::vector<int32_t>& idx, int E, int tile_rows) {
  Want w;
  w.offsets.assign(E + 1, 0);
  for (int32_t e : idx)
    if (e >= 0 && e < E) w.offsets[e + 1]++;
  for (int e = 0; e < E; ++e) w.offsets[e + 1] += w.offsets[e];
  std::vector<int32_t> fill(w.offsets.begin(), w.offsets.end() - 1);
  w.order.assign(w.offsets[E], -1);
  for (int s = 0; s < int(idx.size()); ++s)
    if (idx[s] >= 0 && idx[s] < E) w.order[fill[idx[s]]++] = s;
  for (int e = 0; e < E; ++e)
    for (int r = w.offsets[e]; r < w.offsets[e + 1]; r += tile_rows) {
      w.tile_expert.push_back(e);
      w.tile_row0.push_back(r);
    }
  return w;
}

std::vector<int32_t> download(const int32_t* p, size_t n) {
  std::vector<int32_t> h(n);
  cudaDeviceSynchronize();
  cudaMemcpy(h.data(), p, n * 4, cudaMemcpyDeviceToHost);
  return h;
}

void check_dispatch(const std::vector<int32_t>& idx, int T, int k, int E, int tile_rows) {
  const Want want = cpu_dispatch(idx, E, tile_rows);
  lab::DeviceBuf<int32_t> didx(idx);
  lab::DeviceBuf<uint8_t> scratch(gptoss::moe_dispatch_scratch_cuda(T, k, E, tile_rows));
  const gptoss::MoeDispatchPlan p = gptoss::moe_dispatch_carve(scratch.p, T, k, E, tile_rows);
  lab::for_each_schedule([&] {
    cudaMemset(scratch.p, 0xff, scratch.n);
    gptoss::moe_dispatch_cuda(didx.p, T, k, E, tile_rows, scratch.p, scratch.n, nullptr);
    const auto off = download(p.offsets, E + 1);
    LAB_CHECK(off == want.offsets, "T %d k %d E %d: offsets differ (first expert %d)", T, k, E,
              int(std::mismatch(off.begin(), off.end(), want.offsets.begin()).first - off.begin()));
    const auto order = download(p.order, want.order.size());
    LAB_CHECK(order == want.order, "T %d k %d E %d: order differs at sorted row %d", T, k, E,
              int(std::mismatch(order.begin(), order.end(), want.order.begin()).first - order.begin()));
    const int nt = download(p.ntiles, 1)[0];
    LAB_CHECK(nt == int(want.tile_expert.size()), "T %d k %d E %d: %d tiles, want %zu", T, k, E, nt, want.tile_expert.size());
    LAB_CHECK(nt <= gptoss::moe_dispatch_max_tiles(T * k, E, tile_rows), "more tiles than the bound");
    LAB_CHECK(download(p.tile_expert, nt) == want.tile_expert, "T %d k %d E %d: tile experts differ", T, k, E);
    LAB_CHECK(download(p.tile_row0, nt) == want.tile_row0, "T %d k %d E %d: tile rows differ", T, k, E);
  });
}

std::vector<int32_t> random_idx(int T, int k, int E, lab::Rng& r) {
  std::vector<int32_t> idx;
  for (int t = 0; t < T; ++t) {
    std::vector<int32_t> row;
    while (int(row.size()) < k) {
      const int32_t e = int32_t(r.next() % unsigned(E));
      if (std::find(row.begin(), row.end(), e) == row.end()) row.push_back(e);
    }
    idx.insert(idx.end(), row.begin(), row.end());
  }
  return idx;
}
}  // namespace

LAB_TEST("moe_dispatch: 700 tokens x top-4 over 128 experts (3 chunks, 4 scan pieces), tiles of 64, every schedule") {
  lab::Rng r(31);
  check_dispatch(random_idx(700, 4, 128, r), 700, 4, 128, 64);
}
LAB_TEST("moe_dispatch: skew: 1500 slots, most on one expert, experts no slot chose, 1 token, 33 tokens") {
  lab::Rng r(32);
  std::vector<int32_t> idx;
  for (int t = 0; t < 750; ++t) idx.insert(idx.end(), {5, int32_t(t % 7 == 0 ? 37 : 2)});
  check_dispatch(idx, 750, 2, 40, 64);
  check_dispatch({3, 0, 7, 1}, 1, 4, 8, 64);
  check_dispatch(random_idx(33, 4, 32, r), 33, 4, 32, 16);
  std::vector<int32_t> one(1100, 31);  // every slot on the last expert: 18 tiles of 64 from one thread
  check_dispatch(one, 1100, 1, 32, 64);
}
LAB_TEST("moe_dispatch: indices outside [0, E) are in no group, the rest keep their order") {
  lab::Rng r(33);
  std::vector<int32_t> idx = random_idx(300, 4, 20, r);
  idx[7] = -1;
  idx[500] = 20;
  idx[1199] = 1 << 20;
  idx[64] = 256 + 3;  // agrees with expert 3 in the 8 bits the ballots compare
  check_dispatch(idx, 300, 4, 20, 32);
}
LAB_TEST("moe_dispatch: combine sums the k weighted rows per token in order, bit for bit; a bad slot makes its token NaN") {
  lab::Rng r(34);
  const int T = 37, k = 4, E = 6, H = 300;
  std::vector<int32_t> idx = random_idx(T, k, E, r);
  idx[4 * 9 + 2] = 6;  // token 9
  std::vector<float> yw(size_t(T) * k * H), resid(size_t(T) * (H + 5));
  for (auto& v : yw) v = r.uniform(-2.f, 2.f);
  for (auto& v : resid) v = r.uniform(-1.f, 1.f);
  lab::DeviceBuf<float> dyw(yw), dout(resid.size());
  lab::DeviceBuf<int32_t> didx(idx);
  for (bool acc : {true, false})
    lab::for_each_schedule([&] {
      dout.upload(resid);
      gptoss::moe_dispatch_combine_cuda(dyw.p, didx.p, T, k, E, H, dout.p, H + 5, acc, nullptr);
      const std::vector<float> got = dout.download();
      for (int t = 0; t < T; ++t)
        for (int i = 0; i < H + 5; ++i) {
          const float g = got[size_t(t) * (H + 5) + i];
          if (i >= H) {
            LAB_CHECK(std::memcmp(&g, &resid[size_t(t) * (H + 5) + i], 4) == 0, "token %d: column %d past H written", t, i);
            continue;
          }
          if (t == 9) {
            LAB_CHECK(std::isnan(g), "token 9 (a bad slot): out[%d] = %g, not NaN", i, g);
            continue;
          }
          float sum = 0.f;
          for (int j = 0; j < k; ++j) sum += yw[(size_t(t) * k + j) * H + i];
          const float want = acc ? resid[size_t(t) * (H + 5) + i] + sum : sum;
          LAB_CHECK(std::memcmp(&g, &want, 4) == 0, "token %d element %d: %.9g, want %.9g (accumulate %d)", t, i, g, want, acc);
        }
    });
}
LAB_TEST("moe_dispatch: bad shapes are ERR_INVALID_ARGUMENT before any launch") {
  std::vector<uint8_t> buf(1 << 16);
  int32_t idx[4] = {0, 1, 2, 3};
  auto rejects = [&](int T, int k, int E, int tile, size_t bytes) {
    try {
      gptoss::moe_dispatch_cuda(idx, T, k, E, tile, buf.data(), bytes, nullptr);
    } catch (const gptoss::Error& e) {
      return e.code == "ERR_INVALID_ARGUMENT";
    }
    return false;
  };
  LAB_CHECK(rejects(1, 4, 257, 64, buf.size()), "E = 257 was accepted");
  LAB_CHECK(rejects(1, 4, 8, 0, buf.size()), "tile_rows = 0 was accepted");
  LAB_CHECK(rejects(1, 4, 8, 64, 16), "a short scratch was accepted");
}
