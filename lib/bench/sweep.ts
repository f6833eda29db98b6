// `gptoss bench decode | prefill | memory`: decode steps over a grid of batch sizes and context
// lengths against the weight-and-KV streaming roofline; prefill of long prompts against the dense
// matmul rate; and what the model takes in memory. Ceilings come from the same run.
import { freemem } from 'node:os';

import {
  type Ceilings,
  type DecodePoint,
  decodePoint,
  type DecodeSkip,
  type MemoryResult,
  ordinaryTokens,
  type PrefillPoint,
  prefillPoint,
  stat,
  timeRuns,
} from './run.js';
import type { ModelConfig } from '../checkpoint/config.js';
import { activeLayerParams, decodeBytes } from '../engine/graph.js';
import { estimateMemory } from '../engine/memory.js';
import type { Model } from '../engine/model.js';
import { Sampler } from '../engine/sampler.js';

export type Progress = (done: number, total: number, label: string) => void;

const PAGE = 16;

/** Bytes of KV pools a decode point needs: each sequence its own pages (none shared). */
export function decodePoolRows(cfg: ModelConfig, batch: number, context: number, steps: number, kvBytes = 4) {
  const window = Math.max(0, ...cfg.layerWindows);
  const fullRing = Math.ceil((context + steps + 1) / PAGE);
  // A sliding layer holds only its window: ring * page >= window + 1 token per step.
  const slidingRing = Math.min(fullRing, Math.ceil((window + 1) / PAGE) + 1);
  const width = 2 * cfg.numKvHeads * cfg.headDim * kvBytes;
  const fullLayers = cfg.layerWindows.filter((w) => w === 0).length;
  const slidingLayers = cfg.layerWindows.length - fullLayers;
  const bytes = batch * PAGE * width * (fullRing * fullLayers + slidingRing * slidingLayers);
  return { fullRing, slidingRing, bytes };
}

export interface DecodeSweepOptions {
  model: Model;
  batches: number[];
  contexts: number[];
  /** Timed steps per point (after one untimed step). */
  steps: number;
  ceilings: Ceilings;
  /** KV pool bytes a point may allocate; larger points are skipped with the reason. */
  memoryBudget?: number;
  progress?: Progress;
}

/**
 * Each point: `batch` sequences, each with its own KV pages already `context` long, decoding
 * together for `steps` steps (sampling included). The pages hold whatever the pool held: the
 * values do not change the work, and skipping the prefill keeps a 32k-context point affordable.
 */
export async function runDecodeSweep(
  o: DecodeSweepOptions,
): Promise<{ steps: number; points: DecodePoint[]; skipped: DecodeSkip[] }> {
  const cfg = o.model.config;
  const V = cfg.vocabSize;
  const budget = o.memoryBudget ?? freemem() * 0.5;
  const kvBytes = o.model.kvDType === 'f32' ? 4 : 2;
  const points: DecodePoint[] = [];
  const skipped: DecodeSkip[] = [];
  const grid = o.contexts.flatMap((context) => o.batches.map((batch) => ({ batch, context })));
  for (const [i, { batch, context }] of grid.entries()) {
    o.progress?.(i, grid.length, `decode batch ${batch}, context ${context}`);
    const pools = decodePoolRows(cfg, batch, context, o.steps, kvBytes);
    if (pools.bytes > budget) {
      skipped.push({
        batch,
        context,
        reason: `its KV cache needs ${(pools.bytes / 1e9).toFixed(1)} GB; the budget is ${(budget / 1e9).toFixed(1)} GB`,
      });
      continue;
    }
    const program = o.model.createPagedProgram({
      maxTokens: batch,
      fullRows: batch * pools.fullRing * PAGE,
      slidingRows: batch * pools.slidingRing * PAGE,
    });
    try {
      // Sequence s owns pages [s * ring, (s + 1) * ring) of each pool.
      const table = (ring: number) => ({
        table: Int32Array.from({ length: batch * ring }, (_, j) => j),
        ring,
        pageSize: PAGE,
      });
      const full = table(pools.fullRing),
        sliding = table(pools.slidingRing);
      const samplers = Array.from({ length: batch }, (_, s) => new Sampler({ seed: s + 1 }, V));
      const out = new Float32Array(batch * V);
      const seqs = Int32Array.from({ length: batch }, (_, s) => s);
      let pos = context;
      const step = () => {
        const args = {
          tokens: Int32Array.from(seqs, (s) => (s * 7919 + pos * 31) % ordinaryTokens(V)),
          positions: new Int32Array(batch).fill(pos),
          seqs,
          full,
          sliding,
          logitRows: seqs,
          out,
          sampling: samplers.map((s) => s.params()),
        };
        pos++;
        return program.step(args);
      };
      const ms = await timeRuns(step, o.steps, 0, o.steps);
      points.push(
        decodePoint(
          batch,
          context,
          stat(ms),
          decodeBytes(cfg, context, kvBytes, batch),
          decodeFlops(cfg, context, batch),
          o.ceilings,
        ),
      );
    } finally {
      program.dispose();
    }
  }
  o.progress?.(grid.length, grid.length, 'decode done');
  return { steps: o.steps, points, skipped };
}

/** Operations of one decode step: per sequence 2 x active parameters, logits, and attention over its context. */
export function decodeFlops(cfg: ModelConfig, ctx: number, batch: number): number {
  let perToken = 2 * cfg.numLayers * activeLayerParams(cfg) + 2 * cfg.vocabSize * cfg.hiddenSize;
  for (const window of cfg.layerWindows)
    perToken += 4 * cfg.numHeads * cfg.headDim * (window > 0 ? Math.min(window, ctx + 1) : ctx + 1);
  return batch * perToken;
}

/** Useful operations of a prompt of T tokens: 2 x active parameters per token, attention, logits. */
export function prefillFlops(cfg: ModelConfig, T: number): number {
  let flops = 2 * T * cfg.numLayers * activeLayerParams(cfg) + 2 * cfg.vocabSize * cfg.hiddenSize; // logits of the last position
  for (const window of cfg.layerWindows) {
    // Keys each query sees, summed over the prompt: QK and PV are 2 x D operations per key per head.
    const w = window > 0 ? Math.min(window, T) : T;
    const keys = T * w - (w * (w - 1)) / 2;
    flops += 4 * cfg.numHeads * cfg.headDim * keys;
  }
  return flops;
}

export interface PrefillSweepOptions {
  model: Model;
  prompts: number[];
  repeats: number;
  /** Tokens per step (the prompt is fed in chunks of this many). */
  chunk?: number;
  ceilings: Ceilings;
  progress?: Progress;
}

export async function runPrefillSweep(o: PrefillSweepOptions): Promise<PrefillPoint[]> {
  const cfg = o.model.config;
  const out: PrefillPoint[] = [];
  for (const [i, T] of o.prompts.entries()) {
    o.progress?.(i, o.prompts.length, `prefill ${T} tokens`);
    const session = o.model.createSession({ maxContext: T + 1, maxTokens: Math.min(T, o.chunk ?? 512) });
    try {
      const prompt = Array.from({ length: T }, (_, j) => (j * 7919 + 13) % ordinaryTokens(cfg.vocabSize));
      const samples: number[] = [];
      for (let r = 0; r < o.repeats; r++) {
        session.reset();
        const t = performance.now();
        await session.forward(prompt, { logits: 'last' });
        samples.push((performance.now() - t) / 1e3);
      }
      out.push(prefillPoint(T, stat(samples), prefillFlops(cfg, T), o.ceilings));
    } finally {
      session.dispose();
    }
  }
  o.progress?.(o.prompts.length, o.prompts.length, 'prefill done');
  return out;
}

/** Peak resident set of this process so far (the kernel's high-water mark). */
export const peakRss = (): number => process.resourceUsage().maxRSS * 1024;

export function memoryResult(model: Model, rssAfterLoad: number, contexts = [1024, 8192, 32768, 131072]): MemoryResult {
  const cfg = model.config;
  const e = estimateMemory(cfg, { device: model.device });
  return {
    weightsBytes: e.weightsBytes,
    kvBytesPerToken: e.kvBytesPerToken,
    kvDType: model.kvDType,
    rssAfterLoadBytes: rssAfterLoad,
    peakRssBytes: peakRss(),
    kvBytesAt: contexts.map((context) => ({
      context,
      bytes: estimateMemory(cfg, { device: model.device, contextTokens: context }).kvBytes,
    })),
  };
}
