#!/usr/bin/env node
// npm run cuda:predict-prefill: the predicted prefill speed of the CUDA backend (a PREDICTION, never
// a measurement), from the static roofline test/cuda/static.mjs wrote (run it first) and the
// tensor-core hand models (test/cuda/roofline-model.mjs, shared with decode-roofline.mjs).
//
// A prompt of P tokens runs as steps of at most C tokens (lib/engine/model.ts, Session.forward: the
// session's maxTokens). C = 512 is what the bench suite's prefill sweep uses (lib/bench/sweep.ts,
// runPrefillSweep: min(P, 512)); the engine's default step budget on CUDA (maxBatchTokens:
// CUDA_MAX_BATCH_TOKENS, read from lib/engine/engine.ts) and 256, its default before; one step of
// the whole prompt is a session with maxTokens >= P. Step c holds tokens [cC, cC + T) of
// one sequence, after cC cached positions; only the last step computes the last position's logits
// (logits 'last': the logits-only ops are skipped at L = 0).
//
// Each step's kernels are those native/cuda/backend.cc launches for T tokens of one sequence in
// default mode (prefill_step is true from 16 tokens; steps of more than 64 tokens are not graphs,
// each launch counts the same assumed gap), mirrored here:
//   embed; per layer: the attention's norm alone (rmsnorm_cuda: it is folded only into a GEMV), QKV
//   on the bf16 GEMM (matmul_bf16_gemm_f32<4, false, on wgmma or not>: T > 32 takes 128-token tiles; the GEMM from
//   16 tokens), rope fused with the KV append (rope_f32<true, bf16>), attention on the tensor-core
//   prefill kernel (attention_prefill_bf16<split>: split in an exact program, so false in default
//   mode), the output projection (+residual) on the GEMM, the MLP's norm + router GEMV + top-k in
//   one launch (router_topk_kernel<true>), and the experts on the grouped MXFP4 GEMM (4 T k >= 13 E:
//   from 26 tokens on 20b, 104 on 120b): moe_dispatch_kernel, moe_mxfp4_gemm_x_bf16, the gate_up
//   and down GEMMs, moe_dispatch_combine_f32 into the residual; then, in the last step, the gather
//   of the last row, the final norm on it and the unembedding GEMV of one row.
// Routing: uniform (each token's top-4 a uniform 4 of E): an expert serves Binomial(T, 4 / E) of a
// step's tokens and E (1 - (1 - 4 / E)^T) distinct experts' weights are read per layer per step.
//
// Times: the tensor-core kernels by hand models, against their DRAM floors: the bf16 GEMM and the
// grouped MXFP4 GEMM as in decode-roofline.mjs (roofline-model.mjs), the attention by attnUs below;
// every other kernel by the static roofline (staticUs: the hot loop's PTX issue rate against DRAM
// bytes) at this step's shape. Not counted: the host's work between steps (inputs up, one await per
// step), the last step's logits copy to the host, and the KV pages' allocation.
// Writes build-cuda-emu/static/prefill.md and prints it.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import {
  GAP_US,
  H,
  I,
  KTOP,
  KV_ROW,
  NORM_PROLOGUE_US,
  PEAK_BF16_TFLOPS,
  QD,
  QKV,
  V,
  WINDOW,
  distinctExperts,
  evaluate,
  gemmMT,
  kernelRec,
  lab,
  matmulGemm,
  matmulGemmKernel,
  matmulGemmUs,
  models,
  moeGemm,
  moeGemmKernel,
  moeGemmUs,
  l2PerSm,
  peakMmaPerClk,
  root,
  routerGemm,
  setL2Feed,
  setMmaSyncShare,
  staticUs,
} from './roofline-model.mjs';

const prompts = [512, 2048, 8192];
// The engine's default step budget on CUDA, as the code has it.
const engineDefault = Number(
  /export const CUDA_MAX_BATCH_TOKENS = (\d+);/.exec(readFileSync(join(root, 'lib/engine/engine.ts'), 'utf8'))?.[1],
);
if (!(engineDefault > 0)) throw new Error('prefill-roofline: no CUDA_MAX_BATCH_TOKENS in lib/engine/engine.ts');
const chunks = [
  { name: '512 (bench suite)', C: 512 },
  { name: `${engineDefault} (engine default)`, C: engineDefault },
  { name: '256 (engine default before)', C: 256 },
  { name: 'whole prompt', C: Infinity },
];

// ---- The attention hand model (kernels/cuda/attention_prefill.cu) ----
// A block is 8 tokens x one KV head's 8 query heads (4 warps, 2 tokens each) and walks the key
// tiles [its tokens' lowest window start, its highest position] 64 keys at a time. Per tile every
// warp issues the next tile's copies, the votes, the wait and the barriers (IDLE_PTX); a warp whose
// rows see a key of the tile also computes it: S = Q K^T, the online softmax and O += P V (its
// unmasked count: the hot loop's PTX, static.json, less the mask and the paths not taken), plus
// the mask (MASK_PTX) on a tile that crosses a row's bounds. Counted by hand in the sm_90 PTX of
// both variants (the same for both): the mask block 146, the zero-fill copies for keys past the
// range and the second wait 56, the per-tile path every warp takes (copies of the next tile, votes,
// wait, barriers) 230 instructions; the rest of the hot loop is a busy warp's unmasked tile (bf16:
// 382 of 814, split: 558 of 990). An SM issues
// 4 instructions per clock or its mma at the dense peak, whichever is slower, over the warps of its
// resident blocks; the busiest SM takes ceil(blocks / SMs) blocks of the mean cost, plus 2% for
// each block's Q load, first tile and epilogue. Tokens x 64 heads x 64 dims of Q read and O
// written, and each key's K and V once (the blocks share them through L2), are its DRAM floor.
// The L2 -> SM feed assumed for the "L2-fed" column: A100's documented read bandwidth per clock.
const L2_FEED_ASSUMED = 5120;
const MASK_PTX = 146,
  NOT_TAKEN_PTX = 56,
  IDLE_PTX = 230;
function attnUs(T, p0, window, split) {
  return (gpu) => {
    const g = lab.gpus[gpu];
    const hot = kernelRec(`attention_prefill_bf16<${split}>`, gpu).hotLoop;
    const busyPtx = hot.instructions - MASK_PTX - NOT_TAKEN_PTX - IDLE_PTX;
    const mmaPerTile = hot.mma;
    let instr = 0,
      mma = 0,
      blocks = 0,
      tiles = 0;
    for (let t0 = 0; t0 < T; t0 += 8) {
      const tl = Math.min(T, t0 + 8) - 1;
      const lo = (t) => (window ? Math.max(0, p0 + t - window + 1) : 0);
      const klo = lo(t0),
        khi = p0 + tl;
      blocks++;
      for (let kb = klo; kb <= khi; kb += 64) {
        tiles++;
        for (let w = 0; w < 4; w++) {
          let act = false,
            full = true;
          for (const t of [t0 + 2 * w, t0 + 2 * w + 1]) {
            const mine = t <= tl;
            const slo = mine ? lo(t) : Infinity,
              sp = mine ? p0 + t : -1;
            act ||= kb <= sp && kb + 63 >= slo;
            full &&= slo <= kb && kb + 63 <= sp;
          }
          instr += IDLE_PTX;
          if (act) {
            instr += busyPtx + (full ? 0 : MASK_PTX);
            mma += mmaPerTile;
          }
        }
      }
    }
    const kv = 8; // KV heads: the grid's second dimension, the same work each
    // L2: each tile's 64 keys of K and V (bf16, 16 KB) into the block (l2PerSm: none unless set)
    const perBlockClk =
      Math.max(instr / blocks / 4, mma / blocks / peakMmaPerClk(gpu), (tiles * 16384) / blocks / l2PerSm(gpu)) * 1.02;
    const tensorUs = (Math.ceil((kv * blocks) / g.sms) * perBlockClk) / (g.clockGHz * 1e3);
    const keys = p0 + T - (window ? Math.max(0, p0 - window + 1) : 0);
    const dramUs = ((T * QD * 4 * 2 + keys * KV_ROW) / (g.bandwidthGBs * 1e9)) * 1e6;
    return Math.max(tensorUs, dramUs);
  };
}

// The router GEMV's vector loop, the one gpt-oss's shapes take with the norm folded: 133 PTX
// instructions per iteration (sm_90, counted by hand), in which a warp reads 2 x 512 bytes of
// weights (and x and the gain). static.json's hot loop for this kernel is its scalar fallback.
const ROUTER_PTX_PER_W_BYTE = 133 / 1024;

// ---- One prefill step: T tokens after p0 cached, the last step (logits) or not ----
function step(mname, T, p0, last, split) {
  const m = models[mname],
    L = m.layers,
    E = m.experts;
  const ks = [];
  const add = (group, kernel, n, us, extra = 0) => ks.push({ group, kernel, launch: '', n, extra, us });
  if (T <= 64 || gemmMT(T) !== 4 || !matmulGemm(T, H))
    throw new Error('prefill-roofline: steps of 64 tokens or fewer take other kernels (graph-sized steps)');
  if (!moeGemm(T, E)) throw new Error(`prefill-roofline: ${T} tokens on ${mname} take the MXFP4 GEMV`);
  add('other', 'embed_bf16_f32<true>', 1, (gpu) =>
    staticUs('embed_bf16_f32<true>', gpu, { blocks: T, bytes: T * (2 * H + 4 + 4 * H) }),
  );
  const norm = (gpu) => staticUs('rmsnorm_f32_bf16w<true>', gpu, { blocks: T, bytes: T * 8 * H + 2 * H });
  // kernels/cuda/matmul_bf16.cu: the GEMM's DRAM bytes (W once, x and y once, the bias); the out
  // projection reads and writes y (+residual).
  const gemm = (N, K, acc) => (gpu) => {
    const dram = N * K * 2 + T * K * 4 + T * N * 4 * (acc ? 2 : 1) + N * 2;
    const mem = (dram / (lab.gpus[gpu].bandwidthGBs * 1e9)) * 1e6;
    return Math.max(mem, matmulGemmUs(4, T, N, K, acc)(gpu));
  };
  add('norms', 'rmsnorm_f32_bf16w<true>', L, norm);
  add('QKV', (gpu) => matmulGemmKernel(4, gpu), L, gemm(QKV, H, false));
  // rope + KV append per token: Q and K rotated in place, K and V appended as bf16 (the lab.json
  // row's bytes per token, 40,964).
  add('rope + KV append', 'rope_f32<true, unsigned short>', L, (gpu) =>
    staticUs('rope_f32<true, unsigned short>', gpu, { blocks: T, bytes: T * 40964 }),
  );
  add('attention (full)', `attention_prefill_bf16<${split}>`, L / 2, attnUs(T, p0, 0, split));
  add('attention (window)', `attention_prefill_bf16<${split}>`, L / 2, attnUs(T, p0, WINDOW, split));
  add('out', (gpu) => matmulGemmKernel(4, gpu), L, gemm(H, QD, true));
  // The MLP's norm, router GEMV and top-k (kernels/cuda/router_topk.cu, grid E / 4 x T): DRAM the
  // router's weights once, x read, the normalised row written; its loop streams each token's
  // block's 4 weight rows again (from L2) with x and the gain: ROUTER_PTX_PER_W_BYTE. From
  // routerGemm's step size: the norm alone, the router's logits on the bf16 GEMM, and the top-k
  // launch (grid 1 x T: each token's E logits read, its k indices and weights written).
  if (!routerGemm(T, E))
    add(
      'router',
      'router_topk_kernel<true>',
      L,
      (gpu) =>
        staticUs('router_topk_kernel<true>', gpu, {
          blocks: (E / 4) * T,
          bytes: E * H * 2 + T * (8 * H + 8 * KTOP),
          loopBytes: T * E * H * 2,
          instructionsPerByte: ROUTER_PTX_PER_W_BYTE,
        }),
      NORM_PROLOGUE_US,
    );
  else {
    add('router', 'rmsnorm_f32_bf16w<true>', L, norm);
    add('router', (gpu) => matmulGemmKernel(gemmMT(T), gpu), L, gemm(E, H, false));
    add('router', 'router_topk_kernel<false>', L, (gpu) =>
      staticUs('router_topk_kernel<false>', gpu, { blocks: T, bytes: T * (4 * E + 8 * KTOP) }),
    );
  }
  // The grouped MXFP4 GEMM (kernels/cuda/moe_mxfp4_gemm.cu): one dispatch CTA (the lab.json row's
  // bytes at 2048 tokens, 166,404, in proportion to the slots), x to bf16, gate_up (DRAM: the
  // distinct experts' W1 blocks, scales and bias, x in bf16, act per slot in bf16), down (their W2,
  // act, y per slot in f32), the combine (per-slot y, the residual read and written).
  const D = distinctExperts(T, E);
  add('dispatch', 'moe_dispatch_kernel', L, (gpu) =>
    staticUs('moe_dispatch_kernel', gpu, { blocks: 1, bytes: (166404 * T) / 2048 }),
  );
  add('dispatch', 'moe_mxfp4_gemm_x_bf16', L, (gpu) =>
    staticUs('moe_mxfp4_gemm_x_bf16', gpu, { blocks: Math.ceil(H / 256) * T, bytes: T * (4 * H + 2 * H + 16) }),
  );
  const w1 = (2 * I * H * 17) / 32 + 2 * I * 2,
    w2 = (H * I * 17) / 32 + H * 2;
  const moe = (gateUp, bytes) => (gpu) =>
    Math.max((bytes / (lab.gpus[gpu].bandwidthGBs * 1e9)) * 1e6, moeGemmUs(gateUp, T, E)(gpu));
  add('MoE gate_up', (gpu) => moeGemmKernel(true, T, E, gpu), L, moe(true, D * w1 + T * H * 2 + T * KTOP * I * 2));
  add(
    'MoE down',
    (gpu) => moeGemmKernel(false, T, E, gpu),
    L,
    moe(false, D * w2 + T * KTOP * I * 2 + T * KTOP * H * 4),
  );
  add('combine', 'moe_dispatch_combine_f32', L, (gpu) =>
    staticUs('moe_dispatch_combine_f32', gpu, {
      blocks: Math.ceil(H / 256) * T,
      bytes: T * (KTOP * H * 4 + 8 * H + 16),
    }),
  );
  if (last) {
    add('unembedding (last position)', null, 1, () => 0); // gather_rows: the last row
    add('unembedding (last position)', 'rmsnorm_f32_bf16w<true>', 1, (gpu) =>
      staticUs('rmsnorm_f32_bf16w<true>', gpu, { blocks: 1, bytes: 8 * H + 2 * H }),
    );
    add('unembedding (last position)', 'matmul_bf16_f32<1, true>', 1, (gpu) =>
      staticUs('matmul_bf16_f32<1, true>', gpu, { blocks: Math.ceil(V / 32), bytes: V * H * 2 + H * 4 + V * 4 }),
    );
  }
  return ks;
}

// A prompt of P tokens in steps of at most C: the sum over its steps, per group.
function prefill(mname, P, C, split, gpu) {
  const groups = {};
  let us = 0,
    launches = 0,
    steps = 0;
  for (let p0 = 0; p0 < P; p0 += C) {
    const T = Math.min(C, P - p0);
    const e = evaluate(step(mname, T, p0, p0 + T >= P, split), gpu);
    us += e.stepUs;
    launches += e.launches;
    steps++;
    for (const [k, v] of Object.entries(e.groups)) groups[k] = (groups[k] ?? 0) + v;
  }
  return { us, launches, steps, groups };
}

// The arithmetic a prefill must do (2 flops per multiply-add of the dense projections, the routed
// experts, attention's unmasked QK and PV per key a query sees, the last row's unembedding), over
// the dense bf16 peak: the tensor-core ceiling.
function flops(mname, P) {
  const L = models[mname].layers;
  let attn = 0;
  for (let p = 0; p < P; p++) attn += 2 * 2 * 64 * 64 * ((p + 1) / 2 + Math.min(p + 1, WINDOW) / 2);
  return L * (P * 2 * (QKV * H + H * QD + KTOP * (2 * I * H + H * I)) + attn) + 2 * V * H;
}

const f = (x, d = 0) => x.toFixed(d);
const groupNames = [
  'QKV',
  'attention (full)',
  'attention (window)',
  'out',
  'router',
  'dispatch',
  'MoE gate_up',
  'MoE down',
  'combine',
  'norms',
  'rope + KV append',
  'unembedding (last position)',
  'other',
];
const out = [];
const rows = [];
for (const gpu of Object.keys(lab.gpus))
  for (const mname of Object.keys(models))
    for (const P of prompts) {
      const seen = new Set();
      for (const { name, C } of chunks) {
        const eff = Math.min(C, P);
        if (seen.has(eff)) continue; // the same steps as a row already there
        seen.add(eff);
        const now = prefill(mname, P, eff, false, gpu);
        // The same with mma.sync at an assumed 2/3 of the peak (H100: unmeasured; A100: mma.sync is
        // how its peak is reached, so the same).
        setMmaSyncShare(gpu, gpu === 'H100 SXM' ? 2 / 3 : 1);
        const low = prefill(mname, P, eff, false, gpu);
        // And with the L2 feed as a bound besides: A100's documented 5120 B/clk, assumed on H100.
        setL2Feed(gpu, L2_FEED_ASSUMED);
        const fed = prefill(mname, P, eff, false, gpu);
        setL2Feed(gpu, undefined);
        setMmaSyncShare(gpu, 1);
        const ceiling = (flops(mname, P) / (PEAK_BF16_TFLOPS[gpu] * 1e12)) * 1e6;
        rows.push({ gpu, mname, P, C, eff, chunk: eff === P ? 'whole prompt' : name, now, low, fed, ceiling });
      }
    }
const top = (groups, us) =>
  Object.entries(groups)
    .sort((a, b) => b[1] - a[1])
    .slice(0, 3)
    .map(([k, v]) => `${k} ${f((100 * v) / us)}%`)
    .join(', ');
out.push(
  `Predicted prefill, default mode (PREDICTIONS from the static roofline of the nvcc build and the tensor-core hand models; no GPU ran this). A prompt of P tokens in steps of at most C tokens of one sequence (the bench suite's prefill sweep: 512; the engine's default step budget on CUDA: ${engineDefault}, and 256, its default before; or one step), each step the kernels native/cuda/backend.cc launches for it, the last step with the last position's logits; an assumed ${GAP_US} µs per launch and ${NORM_PROLOGUE_US} µs per folded norm; uniform routing (E (1 - (1 - 4/E)^T) distinct experts read per layer per step). The grouped MoE GEMM's and the bf16 GEMM's 128-row tiles run on wgmma on an H100 (its dense peak, which the published 989 TFLOP/s is) and on mma.sync on an A100. Every other tensor-core kernel (the attention, the MoE GEMM's 64-row tile) runs on mma.sync, taken at the dense peak ("predicted"; on an H100 an upper bound: what mma.sync reaches there is not measured) and at an assumed 2/3 of it on an H100 ("mma.sync at 2/3"; an assumption, not a figure from any source). "L2-fed" adds the L2 -> SM feed as a bound on the tensor-core kernels (their operands' bytes per mma; test/cuda/roofline-model.mjs setL2Feed) at ${L2_FEED_ASSUMED} bytes per clock for the device, A100's documented figure, assumed on H100 (not documented there), with mma.sync at 2/3 on H100. Ceiling: the prefill's flops at the dense bf16 peak. Host work between steps and the logits' copy to the host are not counted.`,
  '',
  '| GPU | model | prompt tokens | steps of | steps | launches | predicted ms | predicted tokens/s | mma.sync at 2/3: tokens/s | L2-fed: tokens/s | tensor-core ceiling tokens/s | largest shares |',
  '|---|---|---|---|---|---|---|---|---|---|---|---|',
  ...rows.map(
    (r) =>
      `| ${r.gpu} | ${r.mname} | ${r.P} | ${r.chunk} | ${r.now.steps} | ${r.now.launches} | ${f(r.now.us / 1e3, 1)} | ${f((1e6 * r.P) / r.now.us)} | ${f((1e6 * r.P) / r.low.us)} | ${f((1e6 * r.P) / r.fed.us)} | ${f((1e6 * r.P) / r.ceiling)} | ${top(r.now.groups, r.now.us)} |`,
  ),
  '',
);
for (const [chunk, pick] of [
  ['at most 512 tokens (the bench suite)', (r) => r.eff === Math.min(512, r.P)],
  ['the whole prompt', (r) => r.eff === r.P],
]) {
  out.push(
    `Where the prefill's time goes, steps of ${chunk} (share of the predicted time, launch gaps included; other = the embedding):`,
    '',
    `| GPU | model | prompt tokens | ${groupNames.join(' | ')} |`,
    `|---|---|---|${groupNames.map(() => '---|').join('')}`,
    ...rows
      .filter(pick)
      .map(
        (r) =>
          `| ${r.gpu} | ${r.mname} | ${r.P} | ${groupNames.map((n) => f((100 * (r.now.groups[n] ?? 0)) / r.now.us, 1)).join(' | ')} |`,
      ),
    '',
  );
}

const md = out.join('\n');
writeFileSync(join(root, 'build-cuda-emu', 'static', 'prefill.md'), md);
process.stdout.write(md);
