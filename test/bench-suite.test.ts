import { describe, expect, it } from 'vitest';

import { kernelCases, runKernelBench } from '../lib/bench/kernels.js';
import { type Ceilings, newRun, validateRun } from '../lib/bench/run.js';
import { decodeFlops, decodePoolRows, prefillFlops, runDecodeSweep, runPrefillSweep } from '../lib/bench/sweep.js';
import type { ModelConfig } from '../lib/checkpoint/config.js';
import { decodeBytes } from '../lib/engine/graph.js';
import { createSyntheticModel, presetConfig } from '../lib/engine/synthetic.js';

// A small model of the real structure (alternating sliding and full layers, MoE with top-k), so
// the suite's parts run in seconds; the real shapes run in `gptoss bench suite`.
const small: ModelConfig = {
  ...presetConfig('20b', 2),
  hiddenSize: 128,
  intermediateSize: 64,
  numExperts: 8,
  expertsPerToken: 2,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 64,
  vocabSize: 2048,
  slidingWindow: 16,
  layerWindows: [16, 0],
};
// Fixed ceilings make the ratios checkable by hand.
const ceilings: Ceilings = {
  readGBps: { value: 10, samples: [10] },
  denseGFLOPs: { value: 50, samples: [50] },
  denseKernel: 'test',
};

describe('bench suite parts', () => {
  it('kernels: every op of the forward pass at decode and prefill shapes, placed on the roofline', async () => {
    const ks = await runKernelBench({ config: small, tokens: [1, 8], context: 64, ceilings });
    const ops = new Set(ks.map((k) => k.op));
    for (const op of [
      'embed',
      'rmsnorm',
      'matmul_bf16',
      'rope',
      'kv_append',
      'attention',
      'router_topk',
      'moe_mxfp4',
      'moe_combine',
      'sample',
    ])
      expect(ops, op).toContain(op);
    for (const k of ks) {
      expect(k.bytes, k.name).toBeGreaterThan(0);
      expect(k.flops, k.name).toBeGreaterThan(0);
      expect(k.ms.samples.length).toBeGreaterThanOrEqual(3);
      expect(k.GBps).toBeCloseTo(k.bytes / (k.ms.value / 1e3) / 1e9, 6);
      // The roof is min(dense, intensity x bandwidth) and says which of the two binds.
      const memoryRoof = k.intensity * 10;
      expect(k.attainableGFLOPs).toBeCloseTo(Math.min(50, memoryRoof), 9);
      expect(k.bound).toBe(memoryRoof < 50 ? 'memory' : 'compute');
      expect(k.ratio).toBeCloseTo(k.GFLOPs / k.attainableGFLOPs, 9);
    }
    // The unembedding at one token moves its whole weight: 2 bytes per element.
    const unembed = ks.find((k) => k.name === 'unembedding' && k.tokens === 1)!;
    expect(unembed.bytes).toBeGreaterThan(small.vocabSize * small.hiddenSize * 2);
    expect(unembed.flops).toBe(2 * small.vocabSize * small.hiddenSize);
    const run = newRun('test', 'small', 'cpu');
    run.ceilings = ceilings;
    run.kernels = ks;
    expect(() => validateRun(JSON.parse(JSON.stringify(run)), 'kernels')).not.toThrow();
  }, 120_000);

  it('decode: one point per batch and context, each against its own roofline; points over the memory budget are skipped with the reason', async () => {
    const model = await createSyntheticModel({ config: small, seed: 2 });
    try {
      const batches = [1, 3],
        contexts = [0, 40];
      const big = decodePoolRows(small, 3, 40, 2).bytes;
      const r = await runDecodeSweep({ model, batches, contexts, steps: 2, ceilings, memoryBudget: big - 1 });
      expect(r.points.map((p) => [p.batch, p.context])).toEqual([
        [1, 0],
        [3, 0],
        [1, 40],
      ]);
      expect(r.skipped).toEqual([
        { batch: 3, context: 40, reason: expect.stringMatching(/KV cache needs .* GB; the budget is/) },
      ]);
      for (const p of r.points) {
        expect(p.stepMs.samples).toHaveLength(2);
        expect(p.bytesPerStep).toBe(decodeBytes(small, p.context, 4, p.batch));
        expect(p.tokensPerSecond).toBeCloseTo(p.batch / (p.stepMs.value / 1e3), 6);
        expect(p.flopsPerStep).toBe(decodeFlops(small, p.context, p.batch));
        // The roof: streaming the step's bytes at 10 GB/s or doing its operations at 50 GFLOP/s, whichever is slower.
        const memoryS = p.bytesPerStep / 10e9,
          computeS = p.flopsPerStep / 50e9;
        expect(p.rooflineTokensPerSecond).toBeCloseTo(p.batch / Math.max(memoryS, computeS), 6);
        expect(p.bound).toBe(memoryS >= computeS ? 'memory' : 'compute');
      }
      // A larger batch reads more KV and more distinct experts per step, but the dense weights once.
      const one = r.points[0],
        three = r.points[1];
      expect(three.bytesPerStep).toBeGreaterThan(one.bytesPerStep);
      expect(three.bytesPerStep).toBeLessThan(3 * one.bytesPerStep);
    } finally {
      model.dispose();
    }
  }, 120_000);

  it('prefill: tokens/s and the share of the dense rate from the declared operations', async () => {
    const model = await createSyntheticModel({ config: small, seed: 3 });
    try {
      const r = await runPrefillSweep({ model, prompts: [5, 33], repeats: 2, chunk: 16, ceilings });
      expect(r.map((p) => p.tokens)).toEqual([5, 33]);
      for (const p of r) {
        expect(p.seconds.samples).toHaveLength(2);
        expect(p.flops).toBe(prefillFlops(small, p.tokens));
        expect(p.ratioToDense).toBeCloseTo(p.GFLOPs / 50, 9);
      }
    } finally {
      model.dispose();
    }
  }, 120_000);

  it('the MoE kernel case routes like uniform top-k: k distinct experts per token, nearly all experts at 128 tokens', () => {
    const cfg = presetConfig('20b', 1);
    const moe = kernelCases(cfg, 128, 0).find((c) => c.op === 'moe_mxfp4')!;
    for (const copy of [0, 1]) {
      const idx = moe.init!.idx(copy) as Int32Array;
      expect(idx).toHaveLength(128 * 4);
      for (let t = 0; t < 128; t++) expect(new Set(idx.subarray(t * 4, t * 4 + 4)).size).toBe(4);
      // Expected distinct experts: 32 x (1 - (28/32)^128) = 32.0; a broken generator gave 5-6.
      expect(new Set(idx).size).toBeGreaterThanOrEqual(31);
    }
  });

  it('prefill operations count each query against the keys its window lets it see', () => {
    const cfg = { ...small, layerWindows: [0] };
    const dense = prefillFlops({ ...cfg, numLayers: 1 }, 4);
    const slid = prefillFlops({ ...cfg, numLayers: 1, layerWindows: [2] }, 4);
    // Full causal: 1+2+3+4 = 10 keys; window 2: 1+2+2+2 = 7 keys; 4 x heads x headDim operations each.
    expect(dense - slid).toBe(4 * small.numHeads * small.headDim * (10 - 7));
  });
});
