// What the two speed predictions share (test/cuda/decode-roofline.mjs, test/cuda/prefill-roofline.mjs;
// both PREDICTIONS, never measurements): the static checks' output (build-cuda-emu/static/static.json,
// written by test/cuda/static.mjs: run it first) and kernels/cuda/lab.json, the model shapes, the
// assumed launch costs, the tensor-core hand models of the bf16 GEMM and the grouped MXFP4 GEMM, the
// static roofline of a launch shape lab.json does not list, and the sum of a step's launches.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { roofline } from './ptx.mjs';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const stat = JSON.parse(readFileSync(join(root, 'build-cuda-emu', 'static', 'static.json'), 'utf8'));
export const lab = JSON.parse(readFileSync(join(root, 'kernels/cuda/lab.json'), 'utf8'));

// Per kernel launched in a CUDA graph: the gap between two kernel nodes (an assumption, about what
// published graph-launch microbenchmarks report on H100/A100; not measured here). Steps of more
// than 64 tokens are not captured (kGraphTokens): their launches are queued ahead by the host while
// the long kernels run, and the same gap is assumed.
export const GAP_US = 1.0;
// A norm folded in front of a GEMV delays its weight stream by the norm's own critical path: the
// row from L2, a block reduction (two barriers) and the scaling pass, in every block at once (an
// assumption from L2 latency and barrier costs, not in the static model; not measured here). Taken
// once per launch, also for the up to 4 tokens a batched GEMV launch normalises.
export const NORM_PROLOGUE_US = 0.5;
// The tensor-core hand models: dense bf16 peak of each GPU, shared-memory bytes per clock per SM,
// and the bf16 GEMM's shared-memory bytes per mma with fills (benchmarks/RESULTS.md, "CUDA prefill
// on the tensor cores"): per block and 32-k tile, ldmatrix bytes (per warp and k16 step MT A
// fragments and NT / 2 B fragment pairs, 512 B each) + the fills (W: BN rows x 64 B by cp.async;
// x: BM rows x 64 B of bf16 stores), over the block's 16 MT NT mma per warp. 32-token tile (MT 1,
// 32 x 128): (8 x 2 x 3 x 512 + 8192 + 2048) / 64 = 544 B; 64-token tile (MT 2): (8 x 2 x 4 x 512
// + 8192 + 4096) / 128 = 352 B; the wide 128-token tile (MT 4, NT 8: warps of 64 tokens x 64 rows,
// blocks of 128 x 256): (8 x 2 x 8 x 512 + 16384 + 8192) / 512 = 128 + 48 = 176 B (the narrow
// 128 x 128 tile it replaced: 256 B).
export const PEAK_BF16_TFLOPS = { 'H100 SXM': 989, 'A100 SXM 80GB': 312 };
export const SMEM_BYTES_PER_CLK = 128;
export const GEMM_SMEM_PER_MMA = { 1: 544, 2: 352, 4: 176 };
// The split-k tail of the wide tile: the tile's last block reads the other ks - 1 splits' partial
// sums of its up to 128 x 256 outputs (rows past T, columns past N skipped; its own split's are in
// its registers) from L2 and writes the outputs (reading them first with the residual), alone on
// its SM after the k loop (the same assumed 64 bytes per clock from L2 into one SM as
// decode-roofline.mjs's tail of the narrow tiles; an assumption, not measured here).
export const GEMM_TAIL_L2_BYTES_PER_CLK = 64;

export const models = {
  '20b': { layers: 24, experts: 32 },
  '120b': { layers: 36, experts: 128 },
};
export const H = 2880,
  I = 2880,
  QKV = 5120,
  QD = 4096,
  V = 201088,
  KTOP = 4,
  WINDOW = 128,
  KV_ROW = 8 * 64 * 2 * 2; // K and V, 8 heads x 64 dims, bf16: bytes per position per layer

export const kernelRec = (kernel, gpu) =>
  stat.kernels.find((k) => k.kernel === kernel && k.arch === lab.gpus[gpu].arch);
// A launch's static-roofline row, by its lab.json name.
export function roof(kernel, launch, gpu) {
  const rec = kernelRec(kernel, gpu);
  const r = rec?.roofline?.find((x) => x.gpu === gpu && x.launch === launch);
  if (!r) throw new Error(`roofline: no prediction for ${kernel} "${launch}" on ${gpu} (run static.mjs first)`);
  return r;
}
// The static roofline (test/cuda/ptx.mjs) of a launch shape lab.json does not list: DRAM bytes at
// the bandwidth share of the SMs the grid can use, against the hot loop's PTX instructions per byte
// times the bytes that loop moves (loopBytes: what it reads through L2 when that is more than DRAM
// sees, e.g. a weight row every token's block streams again). instructionsPerByte: the rate of the
// loop the shapes take where the hot loop static.json names (the most instructions per byte) is a
// path they do not take, such as a scalar fallback. µs.
export function staticUs(kernel, gpu, { blocks, bytes, loopBytes = bytes, instructionsPerByte }) {
  const rec = kernelRec(kernel, gpu);
  if (!rec) throw new Error(`roofline: no static record of ${kernel} on ${gpu} (run static.mjs first)`);
  const g = lab.gpus[gpu];
  const hot = instructionsPerByte === undefined ? rec.hotLoop : { ...rec.hotLoop, instructionsPerByte };
  const mem = roofline(gpu, g, { name: '', blocks, bytes, flops: 0 }, hot);
  const iss = roofline(gpu, g, { name: '', blocks, bytes: loopBytes, flops: 0 }, hot);
  return Math.max(mem.memoryUs, iss.issueUs ?? 0);
}

// ---- The backend's rules (mirrored; keep in step with the C++) ----
// kernels/cuda/matmul_bf16.cu: matmul_bf16_kernel_cuda (default mode), matmul_bf16_gemm_tile_m_cuda,
// matmul_bf16_gemm_k_splits_cuda.
export const matmulGemm = (T, N) => T >= (N >= 32768 ? 8 : 9);
export const gemmMT = (T) => (T <= 32 ? 1 : T <= 64 ? 2 : 4);
// kernels/cuda/matmul_bf16_gemm.cuh: warp_nt, block_n (default mode): the 128-token tile is wide,
// 8 n8 fragments a warp, 256 weight rows a block; the others 4 and 128.
export const gemmNT = (MT) => (MT === 4 ? 8 : 4);
export const gemmBN = (MT) => 32 * gemmNT(MT);
// sms: the device's SMs (the backend's gemm_sms: multiProcessorCount), lab.gpus[gpu].sms.
export function kSplits(T, N, K, sms) {
  const MT = gemmMT(T);
  const tiles = Math.ceil(N / gemmBN(MT)) * Math.ceil(T / (32 * MT));
  if (tiles > Math.floor(sms / 2)) return 1;
  const KT = Math.ceil(K / 32);
  // The wide tile (one block an SM) rounds the count of splits down, the narrow ones up.
  const fill = gemmNT(MT) === 8 ? Math.floor(sms / tiles) : Math.ceil(sms / tiles);
  const want = Math.min(fill, Math.floor(KT / 8));
  if (want <= 1) return 1;
  return Math.ceil(KT / Math.ceil(KT / want));
}
// kernels/cuda/moe_mxfp4_gemm.cu: moe_mxfp4_use_gemm.
export const moeGemm = (T, E) => 4 * T * KTOP >= 13 * E || T * KTOP >= 65536;
// kernels/cuda/router_topk.cuh: router_topk_use_gemm (default mode): the MLP's norm, router GEMV
// and top-k in one launch below T x E = 5120 up to 64 tokens, 12288 past 64 (the GEMM's wide
// tile); from there the norm, the router's GEMM and the top-k launch.
export const routerGemm = (T, E) => T * E >= (T <= 64 ? 5120 : 12288);
export const distinctExperts = (B, E) => E * (1 - Math.pow(1 - KTOP / E, B));

// Binomial(n, p) probabilities, for the tokens an expert serves.
export function binomial(n, p) {
  const out = [];
  let lg = 0; // log n choose j, built up
  for (let j = 0; j <= n; j++) {
    if (j > 0) lg += Math.log(n - j + 1) - Math.log(j);
    out.push(Math.exp(lg + j * Math.log(p) + (n - j) * Math.log1p(-p)));
  }
  return out;
}

// ---- The tensor-core hand models (PREDICTIONS, as the static roofline) ----
// The share of the dense bf16 peak mma.sync reaches: 1 unless a script sets it. On an H100 the
// peak is wgmma's; what mma.sync reaches there is not measured (test/cuda/mma_peak.cu will, on a
// GPU), so the prefill predictions are also given at an assumed 2/3 (setMmaSyncShare).
let mmaSyncShare = { 'H100 SXM': 1, 'A100 SXM 80GB': 1 };
export const setMmaSyncShare = (gpu, share) => {
  mmaSyncShare = { ...mmaSyncShare, [gpu]: share };
};
// Tensor work per clock per SM in mma.m16n8k16 units (4096 flops): at the dense bf16 peak
// (wgmma's on an H100), and what mma.sync gets of it.
export const peakWgmmaPerClk = (gpu) =>
  (PEAK_BF16_TFLOPS[gpu] * 1e12) / 4096 / (lab.gpus[gpu].sms * lab.gpus[gpu].clockGHz * 1e9);
export const peakMmaPerClk = (gpu) => peakWgmmaPerClk(gpu) * mmaSyncShare[gpu];
// The L2 -> SM feed: bytes per clock for the whole device, none (not a bound) unless a script
// sets it (setL2Feed). A100's is documented (its whitepaper: 5120 B/clk of L2 read bandwidth);
// H100's is not, so prefill-roofline.mjs also gives the prefill with an assumed 5120 B/clk there
// (38.8 B/clk an SM; an assumption, measured by l2_feed in benchmarks/gpu.sh on a GPU). The
// tensor-core kernels' operands come through it: their tiles' bytes per mma (below) bound the
// rate at feed / SMs / bytes.
let l2Feed = {};
export const setL2Feed = (gpu, bytesPerClk) => {
  l2Feed = { ...l2Feed, [gpu]: bytesPerClk };
};
export const l2PerSm = (gpu) => (l2Feed[gpu] ? l2Feed[gpu] / lab.gpus[gpu].sms : Infinity);
// The bf16 GEMM's L2 bytes per mma: per block and 32-k tile, W (BN rows x 64 B) and x (BM rows x
// 32 f32), over its 16 MT NT mma: the wide tile (either instruction) (16384 + 16384) / 512 = 64 B,
// the 64-token tile 128, the 32-token 192.
export const GEMM_L2_PER_MMA = {
  1: (128 * 64 + 32 * 128) / 64,
  2: (128 * 64 + 64 * 128) / 128,
  4: (256 * 64 + 128 * 128) / 512,
};
// Which instruction the grouped MoE GEMM takes on a GPU (kernels/cuda/moe_mxfp4_gemm.cu,
// moe_mxfp4_gemm_mma_for: wgmma on sm_90).
export const moeWgmma = (gpu) => lab.gpus[gpu].arch === 'sm_90';
// Which instruction the bf16 GEMM's 128-token tile takes (the backend's use_wgmma: wgmma on sm_90),
// and the kernel's name.
export const matmulGemmKernel = (MT, gpu) => `matmul_bf16_gemm_f32<${MT}, false, ${MT === 4 && moeWgmma(gpu)}>`;
// The wgmma wide tile (kernels/cuda/matmul_bf16.cu, kWg): shared-memory bytes per mma, per block
// and 32-k tile: the x fragments by ldmatrix (8 warps x 2 x 512 B), wgmma's B (each warpgroup's
// two m64n256k16 read all 256 rows x 64 B: 2 x 16 KB) and the fills (W 16 KB, x 8 KB): 64 KB over
// 512 mma.
export const GEMM_WGMMA_SMEM_PER_MMA = (8 * 2 * 512 + 2 * 256 * 64 + 256 * 64 + 128 * 64) / 512;
// The bf16 GEMM (kernels/cuda/matmul_bf16.cu, default mode): mma per clock per SM = min(dense bf16
// peak, 4 schedulers / PTX instructions per mma of the k loop (static.json's hot loop),
// shared-memory bandwidth / bytes per mma); the busiest SM takes ceil(blocks / SMs) blocks; split
// k: k_splits blocks per tile, each its share of the k tiles; the wide tile's split-k tail
// (GEMM_TAIL_L2_BYTES_PER_CLK) added. (decode-roofline.mjs adds its own tail for every split
// launch, 128 columns wide.) residual: y is read and written (the attention output). On wgmma
// (the wide tile on an H100): the peak is wgmma's, the issue term the k loop's PTX per step (its
// hot loop holds two steps, 2 wgmma each) for 512 mma a block. µs.
export function matmulGemmUs(MT, T, N, K, residual = false) {
  return (gpu) => {
    const g = lab.gpus[gpu];
    const kernel = matmulGemmKernel(MT, gpu);
    const wgmma = kernel.endsWith('true>');
    const NT = gemmNT(MT),
      BN = gemmBN(MT);
    const hot = kernelRec(kernel, gpu).hotLoop;
    // per warp and 32-k tile: 2 MT NT mma (wgmma: the block's 512 over its 8 warps)
    const loop = wgmma ? hot.instructions / (hot.wgmma / 2) : hot.instructions;
    const rate = wgmma
      ? Math.min(peakWgmmaPerClk(gpu), (4 * 64) / loop, SMEM_BYTES_PER_CLK / GEMM_WGMMA_SMEM_PER_MMA)
      : Math.min(peakMmaPerClk(gpu), (4 * 2 * MT * NT) / loop, SMEM_BYTES_PER_CLK / GEMM_SMEM_PER_MMA[MT]);
    const fed = Math.min(rate, l2PerSm(gpu) / GEMM_L2_PER_MMA[MT]);
    const ks = kSplits(T, N, K, g.sms);
    const blocks = Math.ceil(N / BN) * Math.ceil(T / (32 * MT)) * ks;
    const mmaPerBlock = 8 * Math.ceil(Math.ceil(K / 32) / ks) * 2 * MT * NT; // padding rows and columns included
    const tailClk =
      NT === 8 && ks > 1
        ? ((ks + (residual ? 1 : 0)) * Math.min(T, 32 * MT) * Math.min(N, BN) * 4) / GEMM_TAIL_L2_BYTES_PER_CLK
        : 0;
    return ((Math.ceil(blocks / g.sms) * mmaPerBlock) / fed + tailClk) / (g.clockGHz * 1e3);
  };
}
// The grouped MXFP4 GEMM (kernels/cuda/moe_mxfp4_gemm.cu): an item is 256 weight rows x one m-tile
// of an expert (16 kPairs sorted rows: 64 or 128, moeGemmTileRows); per warp and 32-k step a fixed
// part (decode, scales, copies, barrier; with 64-row tiles also every pair's setp + bra, which run
// whether or not the pair holds tokens; the 128-row tile's loop is compiled per count of pairs and
// checks none) and, per pair of n8 token tiles holding tokens, 1 ldmatrix.x4 + 4 mma per 16-k
// chunk, twice (PER_PAIR = 10, counted by hand in the sm_90 PTX: the row address is one register
// per chunk with the pair's offset in the ldmatrix); the PTX k loop (static.json's hot loop) is
// the full tile's (kPairs pairs), so the fixed part is it less kPairs PER_PAIR. Per item, the SM's time is its
// warps' instructions / 4 per clock or their mma at the peak rate, whichever is longer, plus 2% for
// the pipeline fill and epilogue; the busiest SM takes ceil(items / SMs) items of the mean cost
// (2 CTAs an SM share its issue with 64-row tiles, 1 runs alone with 128: the same sum).
// Expert loads: Binomial(B, 4 / E) tokens each (uniform routing), in ceil(n / rows) m-tiles. µs.
export const PER_PAIR = 10;
// kernels/cuda/moe_mxfp4_gemm.cu: moe_mxfp4_gemm_tile_rows; the 128-row tile on wgmma where the GPU
// has it (run).
export const moeGemmTileRows = (T, E) => (T * KTOP >= 48 * E ? 128 : 64);
const moeGemmName = (gateUp, tileRows, wgmma = false) => `moe_mxfp4_gemm_kernel<${gateUp}, ${tileRows / 16}, ${wgmma}>`;
const moeGemmOnWgmma = (T, E, gpu) => moeWgmma(gpu) && moeGemmTileRows(T, E) === 128;
export const moeGemmKernel = (gateUp, T, E, gpu) =>
  moeGemmName(gateUp, moeGemmTileRows(T, E), moeGemmOnWgmma(T, E, gpu));
// wgmma (an H100): per CTA and 32-k step its 8 warps issue the k loop's PTX (static.json's hot loop
// of the wgmma kernel: decode, copies, the 8 predicated forms of each of its 4 wgmma, fence,
// commit, wait; no per-pair work), 2 warps to a scheduler, while the tensor core runs the step
// before (one group in flight): 8 m16n8k16-worths per warp and pair holding tokens (N = 16 pairs)
// at wgmma's peak. A step takes the longer of the two, plus 2% as the mma.sync model.
export function moeGemmUs(gateUp, B, E, tileRows, wgmma) {
  return (gpu) => {
    const g = lab.gpus[gpu];
    tileRows = tileRows ?? moeGemmTileRows(B, E);
    wgmma = wgmma ?? (moeWgmma(gpu) && tileRows === 128); // by the GPU unless given
    const pairsMax = tileRows / 16;
    const hot = kernelRec(moeGemmName(gateUp, tileRows, wgmma), gpu).hotLoop;
    // wgmma's k loop runs two steps an iteration, each 4 wgmma in 8 predicated forms.
    const base = wgmma ? hot.instructions / (hot.wgmma / 32) : hot.instructions - pairsMax * PER_PAIR;
    const nb = (gateUp ? H : I) / 32;
    const rowsN = gateUp ? 2 * I : H;
    const ntn = Math.ceil(rowsN / 256),
      warpTiles = wgmma ? 8 * ntn : rowsN / 32; // warps that compute (with mma.sync the last n-tile's other warps skip the math)
    const peak = wgmma ? peakWgmmaPerClk(gpu) : peakMmaPerClk(gpu);
    // L2 bytes per step: 256 weight rows' 16-byte blocks and scales, the m-tile's token rows (bf16,
    // 64 B each; rows past the tile's tokens repeat its last, from L1).
    const itemClk = (pairs, rows) =>
      Math.max(
        ((8 * nb * (base + PER_PAIR * (wgmma ? 0 : pairs))) / 4) * 1.02,
        (8 * nb * 8 * pairs) / peak,
        (nb * (256 * 17 + rows * 64)) / l2PerSm(gpu),
      );
    let items = 0,
      clk = 0;
    binomial(B, KTOP / E).forEach((p, n) => {
      for (let r = n; r > 0; r -= tileRows) {
        const rows = Math.min(tileRows, r);
        items += E * p * ntn;
        clk += E * p * (warpTiles / 8) * itemClk(Math.ceil(rows / 16), rows);
      }
    });
    return (Math.ceil(items / g.sms) * (clk / items)) / (g.clockGHz * 1e3);
  };
}

// ---- A step's launches: { group, kernel, launch, n, extra, tensor, us } ----
// kernel null: a launch the static model has no row for, counted for its gap. us (a function of
// the GPU): the launch's time where no lab.json row names it (staticUs, a hand model); else the
// lab.json row `launch`, against `tensor` (a hand model) for tensor-core kernels, whose static
// issue figure counts ld.global only and is not meaningful. extra: µs per launch (or a function of
// the GPU). Returns the step's kernel time, launch count, time with an assumed GAP_US per launch,
// and the time per group (gaps included).
export function evaluate(ks, gpu) {
  const groups = {};
  let kernelUs = 0,
    launches = 0;
  for (const { group, kernel: k, launch, n, extra = 0, tensor, us: own } of ks) {
    let us = 0;
    const kernel = typeof k === 'function' ? k(gpu) : k; // by the GPU where the backend's choice depends on it
    const ex = typeof extra === 'function' ? extra(gpu) : extra;
    if (own) us = own(gpu);
    else if (kernel) {
      const r = roof(kernel, launch, gpu);
      us = tensor ? Math.max(r.memoryUs, tensor(gpu)) : r.predictedUs;
    }
    const t = n * (us + ex);
    kernelUs += t;
    launches += n;
    groups[group] = (groups[group] ?? 0) + t + n * GAP_US;
  }
  return { kernelUs, launches, stepUs: kernelUs + launches * GAP_US, groups };
}
