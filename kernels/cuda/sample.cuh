// sample on the device: the logit processing of kernels/sample.h and a per-row reduction that copies
// back only what the host needs to finish the draw with the CPU sampler itself
// (kernels/cpu/sample.cc), so the result is the CPU's, bit for bit (token, logprob, RNG advance):
//   greedy (temperature < 1e-4): the argmax (ties to the lower id) and the exp sum the logprob needs,
//     summed on the device in the CPU's own order (exp_sum's, kernels/cpu/simd.h: f32 lanes of
//     its SIMD width per block of kSampleChunk ids, the blocks' lanes into double lanes; the exps
//     by the same formula); the host adds the < 16 tail ids with the CPU's own compiled code;
//   top-k (0 < top_k <= kSampleMaxTopK, top_k < n): the K' best processed logits (K' from
//     sample_cuda_candidates, ties to the lower id) with their ids, in id order; the host runs
//     sample_cpu on them (a compact row laid out so every exp is computed as in the full row) when
//     it can prove the full row's top-k cut lies inside them, else it asks for the full row;
//   a draw from the whole distribution (temperature >= 1e-4, no top-k, top-p or min-p: gpt-oss's
//     recommended settings): the exps and their sum as for greedy (exp((l - max) / T)), and the
//     double sum of each kSampleChunk ids' exps; the host adds the tail to the CPU's total,
//     draws u from the RNG as sample_cpu does, finds the chunk where sample_cpu's id-order walk
//     (u -= e[i]) crosses zero from the chunk sums, copies that chunk's raw logits alone (4 KB),
//     processes them and walks them with the CPU's own code. The chunk sums are rounded in another
//     order than the CPU's walk; the host bounds that difference and accepts the crossing only
//     when it is farther from zero than the bound, else it asks for the full row (RNG untouched);
//   anything else (top-p or min-p without top-k, top_k > kSampleMaxTopK): the full row.
// The raw logits are not modified: a row that needs the full row is copied back as it is and
// sampled by sample_cpu. Each row is reduced by slices of kSampleSlice ids, a block each, then merged
// per row (kernels/cuda/sample.cu); deterministic: integer histograms, ordered scans and merges.
#pragma once
#include <functional>
#include <vector>

#include "kernels/cuda/common.cuh"
#include "kernels/sample.h"

namespace gptoss {
constexpr int kSampleMaxTopK = 1024;
constexpr int kSampleMaxCandidates = 2048;

constexpr int kSampleChunk = 1024;  // ids per chunk: exp_sum's block (its lane sums), Draw's chunk sums
constexpr int kSampleSlice = 8192;  // ids per block of the first pass (a multiple of kSampleChunk)
constexpr int kSampleMaxSlices = 1024;  // so V <= 8,388,608

enum class SamplePath : int32_t { Greedy = 0, TopK = 1, FullRow = 2, Draw = 3 };
// Which path a row takes (host, from its parameters alone).
SamplePath sample_cuda_path(const SampleParams& p, int V);
// K' for top_k: min(2 * top_k + 64, kSampleMaxCandidates) (the margin lets the host prove the cut).
int sample_cuda_candidates(int top_k);
// Chunk sums per row for a vocabulary of V: ceil(V / kSampleChunk).
__host__ __device__ inline int sample_cuda_chunks(int V) { return (V + kSampleChunk - 1) / kSampleChunk; }
// Slices per row: ceil(V / kSampleSlice).
__host__ __device__ inline int sample_cuda_slices(int V) { return (V + kSampleSlice - 1) / kSampleSlice; }

// Per row, device-side (packed by SampleCudaBatch).
struct SampleCudaRow {
  int32_t n;          // ids [0, n) may be drawn (ban_from applied)
  int32_t path;       // SamplePath
  int32_t ncand;      // K' (TopK)
  int32_t lanes;      // the CPU's SIMD width, 8 or 16 (Greedy, Draw)
  int32_t fused_exp;  // 1: the exp's steps are fused multiply-adds (AVX2/AVX-512 lanes), 0: separate
  int32_t bias_off, bias_len, hist_off, hist_len;  // into entries; each list stably sorted by id
  int32_t allow_off;  // into allow, -1 = no mask
  float repetition, frequency, presence;
  float scale;  // 1 / temperature as sample_cpu rounds it (Draw; 1 for Greedy)
};
struct SampleCudaEntry {
  int32_t id;
  float value;    // bias
  int32_t count;  // history
};
// Per row, copied back: 104 bytes.
struct SampleCudaOut {
  int32_t best;      // argmax of the processed logits over [0, n), ties to the lower id
  float max;         // its value (NaN when every one is NaN)
  int32_t count;     // candidates written (TopK)
  int32_t eligible;  // ids in [0, n) with a finite or +inf processed logit (TopK)
  double body;       // Greedy, Draw: the sum of exp((l - max) * scale) over the lanes-wide body, in exp_sum's order
  float tail[16];    // Greedy, Draw: the processed logits of the last n % lanes ids
  int32_t tail_n, pad[3];
};
struct SampleCudaCand {
  int32_t id;
  float logit;  // processed
};

// Host: the rows' parameters packed for one launch (upload rows, entries, allow as they are).
struct SampleCudaBatch {
  std::vector<SampleCudaRow> rows;
  std::vector<SampleCudaEntry> entries;
  std::vector<uint32_t> allow;
  uint32_t paths = 0;  // bit 1 << SamplePath of every row added (SampleCudaArgs::paths)
  // Adds a row (p already checked with sample_params_error). Returns its path.
  SamplePath add(const SampleParams& p, int V);
};

struct SampleCudaArgs {
  const float* logits;  // [rows, ld] raw, not modified
  int64_t ld;
  int V, rows;
  const SampleCudaRow* row;         // [rows]
  const SampleCudaEntry* entries;
  const uint32_t* allow;
  float* scratch;                   // sample_cuda_scratch(rows, V) bytes: the processed rows, the slices' lists
  size_t scratch_bytes;
  SampleCudaOut* out;               // [rows]
  SampleCudaCand* cand;             // [rows, kSampleMaxCandidates]
  double* chunks;                   // [rows, sample_cuda_chunks(V)]: Draw rows' chunk sums over the body
  uint32_t paths = ~0u;             // bit 1 << SamplePath for each path a row takes: launches for others are skipped
  unsigned* tickets = nullptr;      // [rows] zero before the first call, left zero (TopK rows' slice counts)
};
size_t sample_cuda_scratch(int rows, int V);
// Select by slices (and, in the last block of a TopK row, the merge of its slices); then the exps
// and their sum when a row is Greedy or Draw. Throws ERR_INVALID_ARGUMENT before launching.
void sample_cuda(const SampleCudaArgs& a, cudaStream_t stream);

// Host: finishes row r's draw from its out (and, for TopK, its out.count candidates; for Draw, its
// chunk sums and `raw`, which copies the row's raw logits of ids [first, first + count) to dst).
// Returns true with *res set and *rng advanced exactly as sample_cpu on the full processed row
// would; false (rng untouched) when the full row is needed. Throws sample_cpu's errors (every
// logit NaN, ...).
using SampleRawLogits = std::function<void(int first, int count, float* dst)>;
bool sample_cuda_finish(const SampleParams& p, int V, const SampleCudaOut& out, const SampleCudaCand* cand,
                        uint64_t* rng, SampleResult* res, const double* chunks = nullptr,
                        const SampleRawLogits& raw = {});
}  // namespace gptoss
