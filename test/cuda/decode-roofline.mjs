#!/usr/bin/env node
// npm run cuda:predict: the predicted batch-1 decode speed of the CUDA backend (a PREDICTION, never
// a measurement), from the static roofline test/cuda/static.mjs wrote (run it first). One decode
// step is the kernels the backend launches for one token in default mode (native/cuda/backend.cc,
// launch_fused: the attention's norm folded into the QKV GEMV, decode attention, rope fused with
// the KV append, the MLP's norm, router GEMV and top-k in one launch, the MXFP4 GEMV with f16
// products and the combine fused into its down pass, the final norm on the gathered logit row),
// each at the launch of kernels/cuda/lab.json with that shape; its time is the sum of their
// predicted times, plus an assumed gap per kernel for a CUDA graph's launches and an assumed
// latency for each folded norm's prologue (both stated in the table). The memory
// roofline is the bytes a step must read (the dense weights, the 4 chosen experts per layer, the
// unembedding, the KV cache at that context) over the GPU's bandwidth.
// Writes build-cuda-emu/static/decode.md and prints it.
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const stat = JSON.parse(readFileSync(join(root, 'build-cuda-emu', 'static', 'static.json'), 'utf8'));
const lab = JSON.parse(readFileSync(join(root, 'kernels/cuda/lab.json'), 'utf8'));
// Per kernel launched in a CUDA graph: the gap between two kernel nodes (an assumption, about what
// published graph-launch microbenchmarks report on H100/A100; not measured here).
const GAP_US = 1.0;
// A norm folded in front of a GEMV delays its weight stream by the norm's own critical path: the
// row from L2, a block reduction (two barriers) and the scaling pass, in every block at once (an
// assumption from L2 latency and barrier costs, not in the static model; not measured here).
const NORM_PROLOGUE_US = 0.5;

const models = {
  '20b': { layers: 24, experts: 32, router: '20b decode, 1 token: router [32 x 2880] bf16 + top-4' },
  '120b': { layers: 36, experts: 128, router: '120b decode, 1 token: router [128 x 2880] bf16 + top-4' },
};
const H = 2880,
  I = 2880,
  QKV = 5120,
  QD = 4096,
  V = 201088,
  KVW = 8 * 64;
const contexts = [
  { name: '128', tokens: 128, full: '20b/120b decode, bf16 KV, context 128 (sliding layer)', merge: false },
  { name: '4k', tokens: 4096, full: '20b/120b decode, bf16 KV, context 4k (full layer)', merge: true },
  { name: '32k', tokens: 32768, full: '20b/120b decode, bf16 KV, context 32k (full layer)', merge: true },
];
const SLIDING = '20b/120b decode, bf16 KV, context 128 (sliding layer)';
const MERGE = '20b/120b decode merge, context 4k (32 splits)';

function launchUs(kernel, launch, gpu) {
  const rec = stat.kernels.find((k) => k.kernel === kernel && k.roofline?.some((r) => r.gpu === gpu));
  const r = rec?.roofline.find((x) => x.gpu === gpu && x.launch === launch);
  if (!r) throw new Error(`decode-roofline: no prediction for ${kernel} "${launch}" on ${gpu} (run static.mjs first)`);
  return r.predictedUs;
}

// The kernels of one decode step: [kernel, launch, count, extra µs per launch]; a null kernel is a
// launch the static model has no row for (the logit row's gather: 11.5 KB), counted for its gap.
function step(m, ctx) {
  const L = m.layers,
    half = L / 2;
  return [
    ['embed_bf16_f32<true>', 'decode: 1 token x 2880', 1],
    [null, 'gather_rows: the logit row', 1],
    ['rmsnorm_f32_bf16w<true>', 'decode: 1 row x 2880', 1],
    ['matmul_bf16_f32<1, true>', '20b/120b decode QKV: 1 x 5120 x 2880', L, NORM_PROLOGUE_US],
    ['rope_f32<true, unsigned short>', 'decode, fused append: 1 token, bf16 KV', L],
    ['attention_split_f32<unsigned short>', SLIDING, half],
    ['attention_split_f32<unsigned short>', ctx.full, half],
    ...(ctx.merge ? [['attention_merge_f32', MERGE, half]] : []),
    ['matmul_bf16_f32<1, true>', '20b/120b decode attn out (+residual): 1 x 2880 x 4096', L],
    ['router_topk_kernel<true>', m.router, L, NORM_PROLOGUE_US],
    [
      'moe_mxfp4_gate_up<1>',
      '20b/120b decode, 1 token: 4 experts x W1 [5760 x 2880] MXFP4 (+ scales, bias, x, act)',
      L,
    ],
    [
      'moe_mxfp4_down<true>',
      '20b/120b decode, 1 token: 4 experts x W2 [2880 x 2880] MXFP4, routing weights and residual fused',
      L,
    ],
    ['matmul_bf16_f32<1, true>', '20b/120b decode unembedding: 1 x 201088 x 2880', 1],
  ];
}

// Bytes one step must read: bf16 dense weights, 4 experts' MXFP4 blocks (17 bytes per 32 weights)
// and bf16 biases, the bf16 KV cache (half the layers see at most 128 positions).
function mustReadBytes(m, ctx) {
  const dense = 2 * (QKV * H + H * QD + m.experts * H + 2 * H) + 2 * (QKV + H + m.experts);
  const expert = (2 * I * H + H * I) * (17 / 32) + 2 * (2 * I + H);
  const kv = (n) => n * KVW * 2 * 2;
  const perLayer = dense + 4 * expert;
  return m.layers * perLayer + V * H * 2 + (m.layers / 2) * (kv(Math.min(ctx.tokens, 128)) + kv(ctx.tokens));
}

const rows = [];
for (const [gpu, g] of Object.entries(lab.gpus))
  for (const [mname, m] of Object.entries(models))
    for (const ctx of contexts) {
      const ks = step(m, ctx);
      const kernelUs = ks.reduce((a, [k, l, n, extra = 0]) => a + n * ((k ? launchUs(k, l, gpu) : 0) + extra), 0);
      const launches = ks.reduce((a, [, , n]) => a + n, 0);
      const stepUs = kernelUs + launches * GAP_US;
      const bytes = mustReadBytes(m, ctx);
      const rooflineUs = (bytes / (g.bandwidthGBs * 1e9)) * 1e6;
      rows.push({ gpu, model: mname, ctx: ctx.name, launches, kernelUs, stepUs, bytes, rooflineUs });
    }

const f = (x, d = 0) => x.toFixed(d);
const md = [
  `Predicted batch-1 decode, default mode (PREDICTIONS from the static roofline of the nvcc build; no GPU ran this). Step = the kernels the CUDA backend launches for one token, each at its lab.json launch; "with gaps" adds an assumed ${GAP_US} µs per graph kernel node; kernel time includes an assumed ${NORM_PROLOGUE_US} µs per folded norm's prologue. Memory roofline = bytes a step must read / bandwidth.`,
  '',
  '| GPU | model | context | kernels | kernel time µs | step µs (with gaps) | predicted tokens/s | memory roofline tokens/s | share of roofline |',
  '|---|---|---|---|---|---|---|---|---|',
  ...rows.map(
    (r) =>
      `| ${r.gpu} | ${r.model} | ${r.ctx} | ${r.launches} | ${f(r.kernelUs, 1)} | ${f(r.stepUs, 1)} | ${f(1e6 / r.stepUs)} | ${f(1e6 / r.rooflineUs)} | ${f((100 * r.rooflineUs) / r.stepUs)}% |`,
  ),
  '',
].join('\n');
writeFileSync(join(root, 'build-cuda-emu', 'static', 'decode.md'), md);
process.stdout.write(md);
