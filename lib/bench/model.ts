// `gptoss bench`: prefill and decode speed of one model on one device, with the ratio of the bytes
// a decode step streams to the memory read bandwidth measured in the same run (native/DESIGN.md,
// "Benchmarks report ratios"). 1 GB = 1e9 bytes.
import { fingerprint, median, ordinaryTokens } from './run.js';
import { decodeBytes } from '../engine/graph.js';
import type { Device } from '../backend/device.js';
import { loadModel, type Model } from '../engine/model.js';
import { addon } from '../backend/native.js';
import { seededRandom } from './rng.js';
import { Sampler, sampleLogits } from '../engine/sampler.js';
import { createSyntheticModel, presetConfig, type Preset } from '../engine/synthetic.js';
import { estimateMemory } from '../engine/memory.js';
import { OutOfMemoryError } from '../errors.js';
import { freemem, totalmem } from 'node:os';

export interface BenchOptions {
  model?: string;
  synthetic?: Preset;
  layers?: number;
  device?: Device;
  prefillTokens?: number;
  decodeTokens?: number;
  seed?: number;
  log?: (line: string) => void;
}

export interface BenchResult {
  bench: 'decode-prefill';
  model: string;
  device: Device;
  fingerprint: Record<string, string | number>;
  /** Host memory read bandwidth: the mean of the medians measured before and after the run. */
  ceiling: { hostReadGBps: number; before: number; after: number };
  prefill: { tokens: number; seconds: number; tokensPerSecond: number };
  decode: {
    tokens: number;
    context: number;
    msPerTokenMedian: number;
    tokensPerSecond: number;
    bytesPerToken: number;
    GBps: number;
    ratioToHostRead: number;
  };
  /** The sampler alone on the last step's logits (each draw copies and processes the full row). */
  sampler: { settings: string; msPerDraw: number; ratioToDecodeStep: number }[];
  units: { GB: '1e9 bytes' };
}

function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

/** The buffer of the memory bandwidth probe (measureHostBandwidth), held beside the model. */
const PROBE_BYTES = 2 ** 30;

/**
 * Synthetic weights are allocated, not mapped: before anything is built (or the bandwidth probe
 * run), checks that the host has the RAM available for them and the probe, and if not says the
 * figures and what would fit.
 */
export function checkSyntheticMemory(preset: Preset, layers: number | undefined, device: Device): void {
  if (device !== 'cpu') return;
  const need = (l?: number) => estimateMemory(presetConfig(preset, l), { device }).totalBytes + PROBE_BYTES;
  const bytes = need(layers);
  const free = freemem(); // MemAvailable on Linux
  if (bytes <= free) return;
  const gb = (b: number) => `${(b / 1e9).toFixed(2)} GB`;
  const n = presetConfig(preset, layers).numLayers;
  throw new OutOfMemoryError(
    `the synthetic gpt-oss-${preset} with ${n} layer${n > 1 ? 's' : ''} needs about ${gb(bytes)} of RAM ` +
      `(weights, KV cache and activations, and ${gb(PROBE_BYTES)} for the bandwidth probe); this host has ` +
      `${gb(free)} available (of ${gb(totalmem())})` +
      (n > 1 ? `; --layers 1 needs ${gb(need(1))}` : '; free some memory and run it again'),
  );
}

/** The model a benchmark runs: a checkpoint, or synthetic weights of a preset's shapes. */
export async function openBenchModel(o: {
  model?: string;
  synthetic?: Preset;
  layers?: number;
  device: Device;
  seed?: number;
  log: (line: string) => void;
}): Promise<{ model: Model; label: string }> {
  if (o.model) {
    o.log(`loading ${o.model}...`);
    return { model: await loadModel(o.model, { device: o.device }), label: o.model };
  }
  const preset = o.synthetic ?? '20b';
  checkSyntheticMemory(preset, o.layers, o.device);
  o.log(`generating synthetic gpt-oss-${preset} weights (${o.layers ?? 'all'} layers)...`);
  const model = await createSyntheticModel({ preset, layers: o.layers, device: o.device, seed: o.seed ?? 1 });
  return { model, label: `synthetic-${preset} (${model.config.numLayers} layers)` };
}

export async function runBench(options: BenchOptions): Promise<BenchResult> {
  const log = options.log ?? (() => {});
  const device = options.device ?? 'cpu';
  const P = options.prefillTokens ?? 128;
  const N = options.decodeTokens ?? 16;
  if (!options.model) checkSyntheticMemory(options.synthetic ?? '20b', options.layers, device);
  // The ceiling is measured before and after the timed work, since shared machines drift.
  log('measuring host memory read bandwidth...');
  // The first probe in a process reads low (measured: 52 vs 83 GB/s on the build VM), so one is
  // run and discarded.
  await addon().measureHostBandwidth(1 << 30, 2);
  const bwBefore = await addon().measureHostBandwidth(1 << 30, 5);
  const { model, label } = await openBenchModel({ ...options, device, log });
  try {
    const cfg = model.config;
    const session = model.createSession({ maxContext: P + N + 4, maxTokens: Math.min(P, 128) });
    const uniform = seededRandom(options.seed ?? 1);
    const rand = () => Math.floor(uniform() * ordinaryTokens(cfg.vocabSize));
    // Warm-up: touches every weight page once (a checkpoint's first touch reads the disk).
    log('warming up...');
    await session.forward([rand(), rand()], { logits: 'last' });
    session.reset();

    log(`prefill of ${P} tokens...`);
    const prompt = Array.from({ length: P }, rand);
    const t0 = performance.now();
    let logits = await session.forward(prompt, { logits: 'last' });
    const prefillS = (performance.now() - t0) / 1e3;

    log(`decoding ${N} tokens...`);
    // Each step samples on the worker thread (OpenAI's defaults for gpt-oss: temperature 1, top_p 1).
    const sampler = new Sampler({ seed: options.seed ?? 1 }, cfg.vocabSize);
    let token = argmax(logits);
    const times: number[] = [];
    for (let i = 0; i < N; i++) {
      const t = performance.now();
      const r = await session.next([token], sampler);
      times.push(performance.now() - t);
      token = r.token;
      logits = r.logits;
    }
    const ms = median(times);
    // The sampler alone over this vocabulary, for its share of a step (target: under 5%).
    log('timing the sampler...');
    const sampling: BenchResult['sampler'] = [];
    for (const [name, o] of [
      ['temperature 1 (default)', {}],
      ['greedy', { temperature: 0 }],
      ['top_p 0.9', { topP: 0.9 }],
      ['top_k 40, top_p 0.95, min_p 0.05', { topK: 40, topP: 0.95, minP: 0.05 }],
    ] as const) {
      await sampleLogits(logits, o, 3);
      const draws = 50;
      const t = performance.now();
      await sampleLogits(logits, o, draws);
      const each = (performance.now() - t) / draws;
      sampling.push({ settings: name, msPerDraw: each, ratioToDecodeStep: each / ms });
    }
    log('measuring host memory read bandwidth again...');
    const bwAfter = await addon().measureHostBandwidth(1 << 30, 5);
    const ceiling = (bwBefore.bytesPerSecond + bwAfter.bytesPerSecond) / 2e9;
    const ctx = P + Math.floor(N / 2);
    const bytes = decodeBytes(cfg, ctx, 4);
    const GBps = bytes / (ms / 1e3) / 1e9;
    session.dispose();
    return {
      bench: 'decode-prefill',
      model: label,
      device,
      fingerprint: fingerprint(),
      ceiling: { hostReadGBps: ceiling, before: bwBefore.bytesPerSecond / 1e9, after: bwAfter.bytesPerSecond / 1e9 },
      prefill: { tokens: P, seconds: prefillS, tokensPerSecond: P / prefillS },
      decode: {
        tokens: N,
        context: ctx,
        msPerTokenMedian: ms,
        tokensPerSecond: 1e3 / ms,
        bytesPerToken: bytes,
        GBps,
        ratioToHostRead: GBps / ceiling,
      },
      sampler: sampling,
      units: { GB: '1e9 bytes' },
    };
  } finally {
    model.dispose();
  }
}

export function formatBench(r: BenchResult): string {
  const rows: [string, string][] = [
    ['model', r.model],
    ['device', `${r.device} (${r.fingerprint.cpu}, ${r.fingerprint.cpuThreads} threads, ${r.fingerprint.simd})`],
    [
      'host read bandwidth',
      `${r.ceiling.hostReadGBps.toFixed(1)} GB/s (${r.ceiling.before.toFixed(1)} before, ${r.ceiling.after.toFixed(1)} after)`,
    ],
    ['prefill', `${r.prefill.tokens} tokens, ${r.prefill.tokensPerSecond.toFixed(1)} tokens/s`],
    [
      'decode',
      `${r.decode.tokensPerSecond.toFixed(2)} tokens/s (${r.decode.msPerTokenMedian.toFixed(1)} ms/token, median of ${r.decode.tokens})`,
    ],
    [
      'decode weights+KV streamed',
      `${(r.decode.bytesPerToken / 1e9).toFixed(3)} GB/token, ${r.decode.GBps.toFixed(1)} GB/s`,
    ],
    ['ratio to host read bandwidth', `${(r.decode.ratioToHostRead * 100).toFixed(1)}%`],
    ...r.sampler.map((s): [string, string] => [
      `sampler, ${s.settings}`,
      `${s.msPerDraw.toFixed(3)} ms/draw, ${(s.ratioToDecodeStep * 100).toFixed(2)}% of a decode step`,
    ]),
  ];
  const w = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n');
}
