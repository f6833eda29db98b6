// Misuse of the addon's own surface gets a typed error, never a crash (regressions of a review).
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';

import { describe, expect, it } from 'vitest';

import { loadModel } from '../lib/index.js';
import { addon, packageRoot } from '../lib/backend/native.js';
import { sampleLogits } from '../lib/engine/sampler.js';
import { fixtures } from './helpers/checkpoint.js';
import { runOp } from './helpers/op.js';

const base = {
  temperature: 1,
  topK: 0,
  topP: 1,
  minP: 0,
  presencePenalty: 0,
  frequencyPenalty: 0,
  repetitionPenalty: 1,
  banFrom: -1,
};

describe('misuse of the addon gets a typed error, never a crash', () => {
  it('an empty RNG state array is refused', async () => {
    expect(() => addon().sampleMany(new Float32Array(4), base, new BigUint64Array(0), 1)).toThrow(
      /rng must hold one 64-bit state/,
    );
  });

  it('sampling numbers a float or an int cannot hold are refused before any cast (undefined behaviour in C++)', () => {
    const rng = () => new BigUint64Array([1n]);
    const logits = new Float32Array(4);
    expect(() => addon().sampleMany(logits, { ...base, topK: 1e30 }, rng(), 1)).toThrow(
      /topK must be a 32-bit integer/,
    );
    expect(() => addon().sampleMany(logits, { ...base, topK: 2.5 }, rng(), 1)).toThrow(/topK must be a 32-bit integer/);
    expect(() => addon().sampleMany(logits, { ...base, banFrom: -3e9 }, rng(), 1)).toThrow(
      /banFrom must be a 32-bit integer/,
    );
    expect(() => addon().sampleMany(logits, { ...base, presencePenalty: 1e300 }, rng(), 1)).toThrow(
      /presencePenalty is outside the float32 range/,
    );
    // An empty mask is a mask of the wrong length, not "no mask".
    expect(() => addon().sampleMany(logits, { ...base, allowMask: new Int32Array(0) }, rng(), 1)).toThrow(
      /allowMask must hold ceil\(V \/ 32\) = 1 words, got 0/,
    );
  });

  it('negative or absurd synthetic tensor sizes are refused', () => {
    const w = new (addon().Weights)();
    expect(() => w.addSynthetic([{ name: 'x', kind: 'u8-uniform', bytes: -1048576, seed: 1, a: 0 }])).toThrow(
      /non-negative integer/,
    );
    w.dispose();
  });

  it('a logits matmul that is not limited to the logits rows is refused at construction', async () => {
    await expect(
      runOp({
        maxTokens: 1,
        weights: { t: new Uint8Array(8 * 4 * 2), w: new Uint8Array(8 * 4 * 2) },
        buffers: { x: { dtype: 'f32', rows: 1, cols: 4 } },
        op: (w, b) => [
          { op: 'embed', w: w.t, y: b.x, H: 4 },
          { op: 'matmul_bf16', x: b.x, w: w.w, N: 8, K: 4 },
        ],
      }),
    ).rejects.toThrow(/logits rows/);
  });

  it('column offsets that overflow are refused', async () => {
    await expect(
      runOp({
        maxTokens: 1,
        weights: { w: new Uint8Array(2) },
        buffers: { x: { dtype: 'f32', rows: 1, cols: 4 }, y: { dtype: 'f32', rows: 1, cols: 4 } },
        op: (w, b) => ({ op: 'matmul_bf16', x: b.x, y: b.y, ycol: 2147483647, w: w.w, N: 1, K: 1 }),
      }),
    ).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
  });

  it('an expert index outside [0, E) is refused when the step runs', async () => {
    const E = 2,
      H = 32,
      I = 32,
      k = 1;
    await expect(
      runOp({
        maxTokens: 1,
        weights: {
          w1b: new Uint8Array((E * 2 * I * H) / 2),
          w1s: new Uint8Array((E * 2 * I * H) / 32),
          b1: new Uint8Array(E * 2 * I * 2),
          w2b: new Uint8Array((E * H * I) / 2),
          w2s: new Uint8Array((E * H * I) / 32),
          b2: new Uint8Array(E * H * 2),
        },
        buffers: {
          x: { dtype: 'f32', rows: 1, cols: H },
          idx: { dtype: 'i32', rows: 1, cols: k, data: Int32Array.from([100000000]) },
          y: { dtype: 'f32', rows: 1, cols: H },
        },
        op: (w, b) => ({
          op: 'moe_mxfp4',
          x: b.x,
          idx: b.idx,
          y: b.y,
          E,
          k,
          H,
          I,
          w1b: w.w1b,
          w1s: w.w1s,
          b1: w.b1,
          w2b: w.w2b,
          w2s: w.w2s,
          b2: w.b2,
          limit: 7,
          alpha: 1.702,
        }),
      }),
    ).rejects.toThrow(/expert index 100000000 outside \[0, 2\)/);
  });

  it('the addon still works on the main thread after a worker thread loaded and left it', async () => {
    const code = `import(${JSON.stringify(join(packageRoot, 'dist', 'backend', 'native.js'))}).then((m) => { m.addon().deviceInfo(); })`;
    await new Promise<void>((resolve, reject) => {
      const w = new Worker(code, { eval: true });
      w.on('error', reject);
      w.on('exit', () => resolve());
    });
    const m = await loadModel(join(fixtures, 'tiny-b', 'hf'));
    expect((await m.createSession().forward([1], { logits: 'last' })).length).toBe(777);
    m.dispose();
  });
});

describe('sampler edge cases', () => {
  it('NaN logits are never drawn, and logits with no finite maximum are a typed error', async () => {
    const l = new Float32Array(1003);
    l[1002] = NaN;
    l[0] = NaN;
    const draws = await sampleLogits(l, { seed: 1 }, 300);
    expect(draws.every((t) => t !== 0 && t !== 1002)).toBe(true);
    await expect(sampleLogits(new Float32Array(8).fill(NaN))).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
    await expect(sampleLogits(new Float32Array(8).fill(-Infinity))).rejects.toThrow(/-inf/);
  });

  it('a temperature too small for float arithmetic is greedy', async () => {
    const l = Float32Array.from([0, 3, 1]);
    expect(Array.from(await sampleLogits(l, { temperature: 1e-6, seed: 2 }, 20)).every((t) => t === 1)).toBe(true);
  });
});

describe('generation lifetime', () => {
  it('breaking out of the event loop frees the session', async () => {
    const m = await loadModel(join(fixtures, 'tiny-a', 'hf'));
    for await (const ev of m.complete([1, 2, 3], { maxTokens: 50, stopTokens: [] })) if (ev.type === 'token') break;
    expect(m.sessionCount).toBe(0);
    m.dispose();
  });
});
