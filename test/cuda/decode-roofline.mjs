#!/usr/bin/env node
// npm run cuda:predict: the predicted decode speed of the CUDA backend (a PREDICTION, never a
// measurement), from the static roofline test/cuda/static.mjs wrote (run it first). Two tables:
//
// Batch 1. One decode step is the kernels the backend launches for one token in default mode
// (native/cuda/backend.cc, launch_fused: the attention's norm folded into the QKV GEMV, decode
// attention (split, and a merge launch when more than one split is planned), rope fused with the KV append, the MLP's norm, router GEMV and top-k in
// one launch, the MXFP4 GEMV with f16 products and the combine fused into its down pass, the final
// norm on the gathered logit row), each at the launch of kernels/cuda/lab.json with that shape; its
// time is the sum of their predicted times, plus an assumed gap per kernel for a CUDA graph's
// launches and an assumed latency for each folded norm's prologue (both stated in the table).
//
// Batched decode: B sequences, one token each, B logit rows, every sequence at the same context.
// The kernels are those the backend's rules pick for T = B tokens (mirrored below and in
// roofline-model.mjs, with where each rule lives): the GEMV up to 8 tokens in one launch (x of 8 tokens in opted-in shared memory; two
// rows a warp at once from 5), the tensor-core GEMM from 9 (the unembedding from 8) with 32-token
// tiles up to 32 tokens, 64 up to 64 and 128 past, its k split over enough blocks for about the
// GPU's SMs (132 / 108) when the grid has at most half that many tiles (the partial sums discarded from L2, not DRAM bytes, and the tile's last
// block adding them up as a serial tail, see splitTailUs); the attention's norm folded only into a GEMV (the
// MLP's norm, router and top-k are one launch below routerGemm's size); the grouped MXFP4 GEMM when
// 4 T k >= 13 E, else the GEMV (from 2 tokens expert-major: moe_dispatch, gate_up and down over
// tiles of up to 4 slots of one expert, the combine; see moeGemvUs); decode attention
// (prefill_step is false: one token per sequence). The experts a step reads: uniform routing, each
// token's top-4 a uniform 4 of E, so an expert serves Binomial(B, 4 / E) tokens and
// E (1 - (1 - 4 / E)^B) distinct experts are read per layer. The static roofline models DRAM bytes and the PTX issue rate of the hot loop, not the
// tensor cores, and for cp.async kernels its issue figure is not meaningful (it counts ld.global
// only): for the two tensor-core kernels the time is max(its DRAM time, a hand model of the mma
// rate per SM) (matmulGemmUs and moeGemmUs in roofline-model.mjs). Device sampling (sample_cuda, launched after the step's graph,
// outside it) is a separate column. The memory roofline is the bytes a step must read (dense
// weights once, the distinct experts' MXFP4 blocks, the unembedding, each sequence's KV cache) over
// the GPU's bandwidth.
// Writes build-cuda-emu/static/decode.md and prints it.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

// Shared with prefill-roofline.mjs: static.json and lab.json, shapes, the assumed gap and norm
// prologue, the backend's GEMM and MoE rules, the tensor-core hand models, evaluate.
import {
  GAP_US,
  H,
  I,
  KTOP,
  KV_ROW,
  NORM_PROLOGUE_US,
  QD,
  QKV,
  V,
  binomial,
  distinctExperts,
  evaluate,
  gemmBN,
  gemmMT,
  kSplits,
  kernelRec,
  lab,
  matmulGemm,
  matmulGemmKernel,
  matmulGemmUs,
  models,
  moeGemm,
  moeGemmKernel,
  moeGemmUs,
  peakMmaPerClk,
  roof,
  root,
  routerGemm,
  staticUs,
} from './roofline-model.mjs';

// The split-k GEMM's tail: the last block of a tile reads every split's partial sums of the tile
// from L2 and adds them, alone on its SM, after the weight stream; at an assumed 64 bytes per
// clock from L2 into one SM (an assumption, not measured here).
const L2_BYTES_PER_CLK_PER_SM = 64;
// The most shared memory a block may opt in to: an A100's 163 KB (an H100 has 227 KB); the GEMV's
// tokens per launch are x's f32 rows that fit.
const SMEM_OPTIN = 166912;
// GPU memory a configuration must fit (weights + KV cache; activations and scratch not counted).
const GPU_MEMORY = 80 * 2 ** 30;

const contexts = [
  { name: '128', tokens: 128 },
  { name: '4k', tokens: 4096 },
  { name: '32k', tokens: 32768 },
];
const batches = [1, 8, 64, 256];

// ---- The backend's rules (mirrored; keep in step with the C++; the GEMM's and the MoE's are in
// roofline-model.mjs) ----
// kernels/cuda/matmul_bf16.cu: gemv's per_launch.
const gemvPerLaunch = (K, norm) => Math.min(8, Math.floor((SMEM_OPTIN - (norm ? 64 : 0)) / (K * 4)));
// The GEMV's lab.json launch for n tokens of QKV or the attention output (+residual).
function gemvLaunch(kind, n) {
  const two = n > 4 ? ' (two rows a warp at once, 16 rows a block)' : '';
  if (kind === 'qkv')
    return n === 1 ? '20b/120b decode QKV: 1 x 5120 x 2880' : `decode QKV, ${n} tokens: ${n} x 5120 x 2880${two}`;
  if (n === 1) return '20b/120b decode attn out (+residual): 1 x 2880 x 4096';
  if (n === 2) return 'decode attn out (+residual), 2 tokens: 2 x 2880 x 4096';
  if (n === 4) return 'decode attn out, 4 tokens: 4 x 2880 x 4096 (K 4096: 64 KB of x, opted in)';
  return `decode attn out, ${n} tokens: ${n} x 2880 x 4096${two}`;
}
// The GEMM for T tokens of a projection (µs): max(its DRAM time, the mma hand model). DRAM as the
// lab.json rows count it: W, x, y (twice with the residual) and the bias, at the bandwidth share
// of the SMs the grid uses. The k splits' partial sums are written, read once by the tile's last
// block and discarded from L2 (discard.global.L2, kernels/cuda/matmul_bf16.cu: every gpt-oss N is
// a multiple of 32), so they are not DRAM bytes (at most 4 T N ks bytes, 5.2 MB for QKV at 64
// tokens, live in an L2 of 50 MB / 40 MB between their writes and that read). The split count is
// the GPU's own (kSplits at its SMs, as the backend's gemm_sms), so the blocks are too.
function gemmUs(T, N, K, residual) {
  return (gpu) => {
    const g = lab.gpus[gpu];
    const ks = kSplits(T, N, K, g.sms);
    const MT = gemmMT(T);
    const blocks = Math.ceil(N / gemmBN(MT)) * Math.ceil(T / (32 * MT)) * ks;
    const bytes = N * K * 2 + T * K * 4 + T * N * 4 * (residual ? 2 : 1) + N * 2;
    const memoryUs = (bytes / (g.bandwidthGBs * 1e9 * (Math.min(g.sms, blocks) / g.sms))) * 1e6;
    return Math.max(memoryUs, matmulGemmUs(MT, T, N, K, residual)(gpu));
  };
}
// The serial tail of a split-k launch (µs): the last block of a tile reads the other ks - 1
// splits' rows x 128 partial sums (rows: the tile's tokens; its own split's are in its registers)
// and writes the tile's outputs (reading them first with the residual). The wide 128-token tile's
// tail is in matmulGemmUs itself (roofline-model.mjs), so it is not added again here.
function splitTailUs(T, N, K, residual) {
  return (gpu) => {
    const ks = kSplits(T, N, K, lab.gpus[gpu].sms);
    if (ks === 1 || gemmMT(T) === 4) return 0;
    const rows = Math.min(T, 32 * gemmMT(T));
    return ((ks + (residual ? 1 : 0)) * rows * 128 * 4) / (L2_BYTES_PER_CLK_PER_SM * lab.gpus[gpu].clockGHz * 1e3);
  };
}
// The expert-major MXFP4 GEMV of batched decode (kernels/cuda/moe_mxfp4.cu, T >= 2): the dispatch
// cuts each expert's slots into tiles of up to 4, and a tile's CTAs decode their weight rows once
// and apply them to its n slots. DRAM: each distinct expert once (the lab.json launch's bytes; an
// expert's later tiles run beside its first and read from L2). Issue (this function): per tile of
// n slots, the matrix's bytes x the hot loop's PTX instructions per byte at n slots, interpolated
// linearly between the one-token kernel's loop (n = 1) and the grouped kernel's (n = 4, every
// slot's products; static.json), as each slot past the first adds its products behind a uniform
// branch. Expert loads: Binomial(B, 4 / E) slots each (uniform routing).
function moeGemvUs(gateUp, B, E) {
  return (gpu) => {
    const g = lab.gpus[gpu];
    const one = kernelRec(gateUp ? 'moe_mxfp4_gate_up<1>' : 'moe_mxfp4_down<true>', gpu).hotLoop;
    const four = kernelRec(gateUp ? 'moe_mxfp4_gate_up_grouped' : 'moe_mxfp4_down_grouped', gpu).hotLoop;
    const perByte = (n) =>
      one.instructionsPerByte + ((four.instructionsPerByte - one.instructionsPerByte) * (n - 1)) / 3;
    const bytes = ((gateUp ? 2 * I * H : H * I) * 17) / 32;
    let instr = 0;
    binomial(B, KTOP / E).forEach((p, n) => {
      for (let r = n; r > 0; r -= 4) instr += E * p * bytes * perByte(Math.min(4, r));
    });
    return instr / (g.sms * g.schedulersPerSM * g.clockGHz * 1e3);
  };
}

// ---- One decode step of B sequences: [group, kernel, launch, count, extra µs, hand model] ----
// A null kernel is a launch the static model has no row for (the logit rows' gather), counted for
// its gap.
// The tensor-core split kernel of decode attention (kernels/cuda/attention.cu, attention_split_mma):
// its hot loop is a warp's 32 keys (static.json: PTX instructions and mma per warpBytes of keys and
// values). Issue: the launch's bytes x instructions per byte at one per scheduler and clock on the
// SMs its blocks fill; tensor pipe: its mma at the dense peak rate; against the DRAM floor (the
// lab.json row).
// µs.
function attnMmaUs(launch) {
  return (gpu) => {
    const g = lab.gpus[gpu];
    const hot = kernelRec('attention_split_mma', gpu).hotLoop;
    const row = lab.kernels.attention_split_mma.launches.find((l) => l.name === launch);
    if (!row) throw new Error(`decode-roofline: no attention_split_mma launch "${launch}" in lab.json`);
    const sms = Math.min(g.sms, row.blocks);
    const issueClk = (row.bytes * hot.instructionsPerByte) / (sms * g.schedulersPerSM);
    const mmaClk = ((row.bytes / hot.warpBytes) * hot.mma) / (sms * peakMmaPerClk(gpu));
    return Math.max(issueClk, mmaClk) / (g.clockGHz * 1e3);
  };
}

function step(mname, ctx, B) {
  const m = models[mname],
    L = m.layers,
    half = L / 2,
    E = m.experts;
  const ks = [];
  const add = (group, kernel, launch, n, extra = 0, tensor = null) =>
    ks.push({ group, kernel, launch, n, extra, tensor });
  const splitPre = B === 1 ? '20b/120b decode' : `batched decode, ${B} sequences`;
  // Embedding, then the final norm on the gathered logit rows (L = B).
  add('other', 'embed_bf16_f32<true>', B === 1 ? 'decode: 1 token x 2880' : `batched decode: ${B} tokens x 2880`, 1);
  add('other', null, 'gather_rows: the logit rows', 1);
  const normRows = B === 1 ? 'decode: 1 row x 2880' : `batched decode: ${B} rows x 2880`;
  add('other', 'rmsnorm_f32_bf16w<true>', normRows, 1);

  // QKV (the attention's norm folded in when the GEMV runs).
  if (!matmulGemm(B, QKV)) {
    const per = gemvPerLaunch(H, true);
    for (let t = 0; t < B; t += per) {
      const n = Math.min(per, B - t);
      add('QKV + out', `matmul_bf16_f32<${n}, true>`, gemvLaunch('qkv', n), L, NORM_PROLOGUE_US);
    }
  } else {
    add('other', 'rmsnorm_f32_bf16w<true>', normRows, L);
    ks.push({
      group: 'QKV + out',
      kernel: (gpu) => matmulGemmKernel(gemmMT(B), gpu),
      n: L,
      extra: splitTailUs(B, QKV, H, false),
      us: gemmUs(B, QKV, H, false),
    });
  }
  add(
    'other',
    'rope_f32<true, unsigned short>',
    `${B === 1 ? 'decode' : 'batched decode'}, fused append: ${B === 1 ? '1 token' : `${B} tokens`}, bf16 KV`,
    L,
  );

  // Attention: split over 128-key splits of the planned context (taken here as the context
  // itself), then the merge, which the split kernel does itself when one split is planned
  // (attention_cuda's fold_merge): every sliding layer, and full layers up to 128 positions. Default
  // mode's split kernel is the tensor-core one (attention_split_mma: the backend's choice for a bf16
  // cache outside an exact program).
  const slidingSplit = `${splitPre}, bf16 KV, context 128 (sliding layer)`;
  const fullSplit = ctx.tokens <= 128 ? slidingSplit : `${splitPre}, bf16 KV, context ${ctx.name} (full layer)`;
  add('attention', 'attention_split_mma', slidingSplit, half, 0, attnMmaUs(slidingSplit));
  add('attention', 'attention_split_mma', fullSplit, half, 0, attnMmaUs(fullSplit));
  const mergePre = B === 1 ? 'decode merge, ' : `batched decode merge, ${B} sequences, `;
  if (ctx.tokens > 128)
    add(
      'attention',
      'attention_merge_f32',
      ctx.tokens === 4096
        ? B === 1
          ? '20b/120b decode merge, context 4k (32 splits)'
          : `${mergePre}context 4k (32 splits)`
        : `${mergePre}context 32k (256 splits)`,
      half,
    );

  // Attention output (+ residual).
  if (!matmulGemm(B, H)) {
    const per = gemvPerLaunch(QD, false);
    const counts = {};
    for (let t = 0; t < B; t += per) counts[Math.min(per, B - t)] = (counts[Math.min(per, B - t)] ?? 0) + 1;
    for (const [n, c] of Object.entries(counts))
      add('QKV + out', `matmul_bf16_f32<${n}, true>`, gemvLaunch('out', +n), c * L);
  } else {
    ks.push({
      group: 'QKV + out',
      kernel: (gpu) => matmulGemmKernel(gemmMT(B), gpu),
      n: L,
      extra: splitTailUs(B, H, QD, true),
      us: gemmUs(B, H, QD, true),
    });
  }

  // The MLP's norm, router and top-k: one launch (launch_fused) below routerGemm's size; from it the
  // norm alone, the router's logits on the bf16 GEMM (gemmUs and its split tail, as the projections)
  // and the top-k over them (a block per token).
  if (!routerGemm(B, E)) {
    const routerName =
      B === 1
        ? `${mname} decode, 1 token: router [${E} x 2880] bf16 + top-4`
        : `${mname} batched decode, ${B} tokens: router [${E} x 2880] bf16 + top-4, norm folded`;
    add('router', 'router_topk_kernel<true>', routerName, L, NORM_PROLOGUE_US);
  } else {
    add('router', 'rmsnorm_f32_bf16w<true>', normRows, L);
    ks.push({
      group: 'router',
      kernel: (gpu) => matmulGemmKernel(gemmMT(B), gpu),
      n: L,
      extra: splitTailUs(B, E, H, false),
      us: gemmUs(B, E, H, false),
    });
    ks.push({
      group: 'router',
      kernel: 'router_topk_kernel<false>',
      n: L,
      us: (gpu) => staticUs('router_topk_kernel<false>', gpu, { blocks: B, bytes: B * (4 * E + 8 * KTOP) }),
    });
  }

  // The experts, with the combine into the residual.
  const D = distinctExperts(B, E);
  if (!moeGemm(B, E)) {
    if (B === 1) {
      add(
        'MoE',
        'moe_mxfp4_gate_up<1>',
        '20b/120b decode, 1 token: 4 experts x W1 [5760 x 2880] MXFP4 (+ scales, bias, x, act)',
        L,
      );
      add(
        'MoE',
        'moe_mxfp4_down<true>',
        '20b/120b decode, 1 token: 4 experts x W2 [2880 x 2880] MXFP4, routing weights and residual fused',
        L,
      );
    } else {
      add(
        'MoE',
        'moe_dispatch_kernel',
        `${mname} batched decode: ${B} tokens x top-4 over ${E} experts, 4-slot tiles (one CTA)`,
        L,
      );
      add(
        'MoE',
        'moe_mxfp4_gate_up_grouped',
        `${mname} batched decode, ${B} tokens: ${D.toFixed(1)} expected distinct experts of ${E} x W1, tiles of up to 4 slots (uniform routing; bytes: each expert once, x, act)`,
        L,
        0,
        moeGemvUs(true, B, E),
      );
      add(
        'MoE',
        'moe_mxfp4_down_grouped',
        `${mname} batched decode, ${B} tokens: ${D.toFixed(1)} expected distinct experts of ${E} x W2, tiles of up to 4 slots (uniform routing; bytes: each expert once, act, per-slot y)`,
        L,
        0,
        moeGemvUs(false, B, E),
      );
      add(
        'MoE',
        'moe_mxfp4_combine_slots',
        `batched decode, ${B} tokens x top-4, H 2880: per-slot outputs weighted in order j, added to the residual`,
        L,
      );
    }
  } else {
    add('MoE', 'moe_dispatch_kernel', `${mname} batched decode: ${B} tokens x top-4 over ${E} experts (one CTA)`, L);
    add('MoE', 'moe_mxfp4_gemm_x_bf16', `batched decode: ${B} tokens x 2880 to bf16`, L);
    add(
      'MoE',
      (gpu) => moeGemmKernel(true, B, E, gpu),
      `${mname} batched decode gate_up: ${B} tokens x top-4, ${D.toFixed(1)} expected distinct experts of ${E} (uniform routing; bytes: their W1 once, x bf16, act; flops: 2 S 2I H)`,
      L,
      0,
      moeGemmUs(true, B, E),
    );
    add(
      'MoE',
      (gpu) => moeGemmKernel(false, B, E, gpu),
      `${mname} batched decode down: ${B} tokens x top-4, ${D.toFixed(1)} expected distinct experts of ${E} (bytes: their W2 once, act, yw; flops: 2 S H I)`,
      L,
      0,
      moeGemmUs(false, B, E),
    );
    add('MoE', 'moe_dispatch_combine_f32', `batched decode: ${B} tokens x top-4, H 2880, added to the residual`, L);
  }

  // The unembedding of the B logit rows.
  if (!matmulGemm(B, V)) {
    if (B !== 1) throw new Error(`decode-roofline: no unembedding GEMV launch for ${B} rows`);
    add('unembedding', 'matmul_bf16_f32<1, true>', '20b/120b decode unembedding: 1 x 201088 x 2880', 1);
  } else {
    const name = {
      8: '20b/120b unembedding, 8 logit rows: 8 x 201088 x 2880 (bytes: W, x, y once; flops: 2TNK)',
      64: '20b/120b unembedding, 64 logit rows: 64 x 201088 x 2880 (bytes: W, x, y once; flops: 2TNK)',
      256: '20b/120b unembedding, 256 logit rows: 256 x 201088 x 2880 (two token tiles, N tiles fastest: W read twice from DRAM; flops: 2TNK)',
    }[B];
    add('unembedding', (gpu) => matmulGemmKernel(gemmMT(B), gpu), name, 1, 0, matmulGemmUs(gemmMT(B), B, V, H));
  }
  return ks;
}

// Device sampling of the B rows (backend.cc reduce_rows: sample_cuda per chunk of up to 32 rows,
// after the step and outside its graph). The top-k path (top-k 40, 300 listed ids a row, the lab's
// shapes) is one launch a chunk: select (a block per slice of 8192 ids: mask, listed ids, the
// slice's argmax and K' best), whose last block of each row merges its slices (the K' best of the
// slices' candidates).
// Greedy and draw rows: drawSampling below.
function sampling(B) {
  const n = Math.min(B, 32),
    chunks = Math.ceil(B / 32);
  const select =
    n === 1
      ? "gpt-oss decode, 1 row of 201088, top-k 40 (K' 144): mask, 300 listed ids, 25 slices of 8192 (argmax, each slice's K' best)"
      : `${n} rows of 201088, top-k 40: ${25 * n} slices of 8192 (mask, listed ids, argmax, K' best)`;
  // The merge runs after the row's other slices, in one block of the same launch: a tail of one
  // CTA a row (the 25 slices' records and 3,600 candidates read, K' written: 74,288 bytes a row).
  const merge = (gpu) => staticUs('sample_select', gpu, { blocks: n, bytes: 74288 * n });
  return (gpu) => chunks * (roof('sample_select', select, gpu).predictedUs + merge(gpu) + GAP_US);
}

// Whole-distribution draws (gpt-oss's recommended temperature 1, no top-k) and greedy rows: select
// (one row: its own lab.json launch; more rows: the top-k rows' select, an upper bound, as these
// rows skip the K' lists), then sample_exp, a block a 1024-id chunk: each block merges the slices'
// argmax, writes its chunk's exps and their f32 lane sums and double sum, and each row's last block
// folds the chunks' lanes (no merge launch). Its dependent chains, which the static roofline cannot
// see, are added at assumed latencies (published microbenchmarks of sm_80 / sm_90; not measured
// here): per wave of blocks over the SMs, a lane's 1024 / 8 f32 adds (the narrower CPU vector gives
// the longer chain) at F32_ADD_CLK; then the fold, one add per chunk (197) at F64_ADD_CLK.
const F32_ADD_CLK = 4,
  F64_ADD_CLK = 8;
function drawSampling(B) {
  const n = Math.min(B, 32),
    chunks = Math.ceil(B / 32),
    nch = Math.ceil(V / 1024);
  const select =
    n === 1
      ? '1 row of 201088, greedy or draw: 25 slices of 8192 (mask, 300 listed ids, argmax)'
      : `${n} rows of 201088, top-k 40: ${25 * n} slices of 8192 (mask, listed ids, argmax, K' best)`;
  const exp =
    n === 1
      ? "1 row of 201088, draw: each of 197 blocks merges the 25 slices' argmax, then its chunk's exps in place, 16 f32 lane sums (exp_sum's order) and double sum; the last block folds the 197 x 16 lane sums"
      : "32 rows of 201088, draw: 6304 blocks, each merging its row's 25 slices' argmax, then its chunk's exps in place, lane sums and double sums; each row's last block folds its lane sums";
  return (gpu) => {
    const g = lab.gpus[gpu];
    const clk = (c) => c / (g.clockGHz * 1e3);
    const waves = Math.ceil((nch * n) / g.sms);
    const expUs = roof('sample_exp', exp, gpu).predictedUs + clk(waves * (1024 / 8) * F32_ADD_CLK + nch * F64_ADD_CLK);
    return chunks * (roof('sample_select', select, gpu).predictedUs + expUs + 2 * GAP_US);
  };
}

// Bytes one step must read: bf16 dense weights (QKV, out, router, norms, biases), the distinct
// experts' MXFP4 blocks (17 bytes per 32 weights) and bf16 biases, the unembedding, each
// sequence's bf16 KV cache (half the layers see at most 128 positions).
const denseBytes = (E) => 2 * (QKV * H + H * QD + E * H + 2 * H) + 2 * (QKV + H + E);
const expertBytes = (2 * I * H + H * I) * (17 / 32) + 2 * (2 * I + H);
const kvBytes = (m, ctx) => (m.layers / 2) * (Math.min(ctx.tokens, 128) + ctx.tokens) * KV_ROW;
function mustReadBytes(mname, ctx, B) {
  const m = models[mname];
  const experts = B === 1 ? KTOP : distinctExperts(B, m.experts);
  return m.layers * (denseBytes(m.experts) + experts * expertBytes) + V * H * 2 + B * kvBytes(m, ctx);
}
// Weights (embedding and unembedding included) and the KV cache of B sequences at the context.
const residentBytes = (mname, ctx, B) => {
  const m = models[mname];
  return m.layers * (denseBytes(m.experts) + m.experts * expertBytes) + 2 * V * H * 2 + B * kvBytes(m, ctx);
};

const f = (x, d = 0) => x.toFixed(d);
const out = [];

// ---- Batch 1 ----
const rows1 = [];
for (const [gpu, g] of Object.entries(lab.gpus))
  for (const mname of Object.keys(models))
    for (const ctx of contexts) {
      const e = evaluate(step(mname, ctx, 1), gpu);
      const rooflineUs = (mustReadBytes(mname, ctx, 1) / (g.bandwidthGBs * 1e9)) * 1e6;
      rows1.push({ gpu, model: mname, ctx: ctx.name, ...e, rooflineUs });
    }
out.push(
  `Predicted batch-1 decode, default mode (PREDICTIONS from the static roofline of the nvcc build; no GPU ran this). Step = the kernels the CUDA backend launches for one token, each at its lab.json launch; "with gaps" adds an assumed ${GAP_US} µs per graph kernel node; kernel time includes an assumed ${NORM_PROLOGUE_US} µs per folded norm's prologue. Memory roofline = bytes a step must read / bandwidth.`,
  '',
  '| GPU | model | context | kernels | kernel time µs | step µs (with gaps) | predicted tokens/s | memory roofline tokens/s | share of roofline |',
  '|---|---|---|---|---|---|---|---|---|',
  ...rows1.map(
    (r) =>
      `| ${r.gpu} | ${r.model} | ${r.ctx} | ${r.launches} | ${f(r.kernelUs, 1)} | ${f(r.stepUs, 1)} | ${f(1e6 / r.stepUs)} | ${f(1e6 / r.rooflineUs)} | ${f((100 * r.rooflineUs) / r.stepUs)}% |`,
  ),
  '',
);

// ---- Batched decode ----
const rowsB = [];
for (const [gpu, g] of Object.entries(lab.gpus))
  for (const mname of Object.keys(models))
    for (const B of batches)
      for (const ctx of contexts) {
        const resident = residentBytes(mname, ctx, B);
        const row = { gpu, model: mname, B, ctx: ctx.name, resident };
        if (resident <= GPU_MEMORY) {
          const e = evaluate(step(mname, ctx, B), gpu);
          const rooflineUs = (mustReadBytes(mname, ctx, B) / (g.bandwidthGBs * 1e9)) * 1e6;
          Object.assign(row, e, { rooflineUs, sampleUs: sampling(B)(gpu), drawUs: drawSampling(B)(gpu) });
        }
        rowsB.push(row);
      }
const top = (groups, stepUs) =>
  Object.entries(groups)
    .sort((a, b) => b[1] - a[1])
    .slice(0, 2)
    .map(([k, v]) => `${k} ${f((100 * v) / stepUs)}%`)
    .join(', ');
out.push(
  `Predicted batched decode, default mode (PREDICTIONS; no GPU ran this): B sequences, one token each, B logit rows, all at the context shown. Kernels as the backend's rules pick them for T = B (GEMV up to 8 tokens in one launch; tensor-core GEMM from 9, the unembedding from 8, k split to about the GPU's SM count of blocks (132 / 108) when the grid has at most half as many tiles, its partials kept in L2 and discarded there (not DRAM bytes) and an assumed ${L2_BYTES_PER_CLK_PER_SM} B/clock L2 read of the other splits' partials by each tile's last block added; grouped MXFP4 GEMM when 16B >= 13E, else the expert-major MXFP4 GEMV). Uniform routing: E (1 - (1 - 4/E)^B) distinct experts read per layer. Step = kernel times (static roofline; tensor-core kernels: max(DRAM time, hand mma-rate model)) + an assumed ${GAP_US} µs per kernel + ${NORM_PROLOGUE_US} µs per folded norm. Device sampling (sample_cuda per 32 rows, outside the step's graph) is listed apart: the top-k path (top-k 40), and whole-distribution draws (temperature 1, gpt-oss's recommended setting) with their sum's dependent chains at an assumed ${F32_ADD_CLK} clocks per f32 add and ${F64_ADD_CLK} per double add. Memory roofline = (dense weights + distinct experts + unembedding + B sequences' KV) / bandwidth. Configurations whose weights and KV exceed 80 GiB are marked and not predicted.`,
  '',
  '| GPU | model | batch | context | kernels | step µs | predicted tokens/s | memory roofline tokens/s | share | + top-k sampling µs | tokens/s with top-k | + draw sampling µs | tokens/s with a draw | share with a draw | largest shares of the step |',
  '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ...rowsB.map((r) =>
    r.stepUs === undefined
      ? `| ${r.gpu} | ${r.model} | ${r.B} | ${r.ctx} | — | — | does not fit: weights + KV ${f(r.resident / 2 ** 30)} GiB | | | | | | | | |`
      : `| ${r.gpu} | ${r.model} | ${r.B} | ${r.ctx} | ${r.launches} | ${f(r.stepUs, 1)} | ${f((1e6 * r.B) / r.stepUs)} | ${f((1e6 * r.B) / r.rooflineUs)} | ${f((100 * r.rooflineUs) / r.stepUs)}% | ${f(r.sampleUs, 1)} | ${f((1e6 * r.B) / (r.stepUs + r.sampleUs))} | ${f(r.drawUs, 1)} | ${f((1e6 * r.B) / (r.stepUs + r.drawUs))} | ${f((100 * r.rooflineUs) / (r.stepUs + r.drawUs))}% | ${top(r.groups, r.stepUs)} |`,
  ),
  '',
);
// Where the step's time goes (H100), µs per group, launch gaps included.
const groupNames = ['QKV + out', 'attention', 'router', 'MoE', 'unembedding', 'other'];
const first = Object.keys(lab.gpus)[0];
out.push(
  `Where a batched step's time goes on ${first} (µs per step, each group's launch gaps included; other = embedding, norms not folded, rope + KV append, the logit rows' gather):`,
  '',
  `| model | batch | context | ${groupNames.join(' | ')} | step µs |`,
  `|---|---|---|${groupNames.map(() => '---|').join('')}---|`,
  ...rowsB
    .filter((r) => r.gpu === first && r.stepUs !== undefined)
    .map(
      (r) =>
        `| ${r.model} | ${r.B} | ${r.ctx} | ${groupNames.map((n) => f(r.groups[n] ?? 0, 0)).join(' | ')} | ${f(r.stepUs, 0)} |`,
    ),
  '',
);

const md = out.join('\n');
writeFileSync(join(root, 'build-cuda-emu', 'static', 'decode.md'), md);
process.stdout.write(md);
