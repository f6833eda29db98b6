import { describe, expect, it } from 'vitest';

import { bf16Bytes, bf16Values, relErr, rng } from '../helpers/checkpoint.js';
import { f32, opDevices, runOp } from '../helpers/op.js';

// Attention with sinks, GQA (4 q heads on 2 kv heads) and the sliding window, over a cache
// filled directly, against a float64 softmax that includes the sink (kernels/MODEL.md,
// "Attention").
const Hq = 4,
  Hkv = 2,
  D = 64,
  cap = 24;

function reference(
  q: Float32Array,
  kc: Float32Array,
  vc: Float32Array,
  sinks: Float32Array,
  positions: number[],
  window: number,
) {
  const T = positions.length,
    group = Hq / Hkv;
  const out = new Float64Array(T * Hq * D);
  positions.forEach((p, t) => {
    for (let h = 0; h < Hq; h++) {
      const g = Math.floor(h / group);
      const lo = window > 0 ? Math.max(0, p - window + 1) : 0;
      const z: number[] = [];
      for (let j = lo; j <= p; j++) {
        let s = 0;
        for (let d = 0; d < D; d++) s += q[(t * Hq + h) * D + d] * kc[(j * Hkv + g) * D + d];
        z.push(s * 0.125);
      }
      const m = Math.max(sinks[h], ...z);
      const e = z.map((v) => Math.exp(v - m));
      const denom = e.reduce((a, b) => a + b, 0) + Math.exp(sinks[h] - m);
      for (let j = lo; j <= p; j++)
        for (let d = 0; d < D; d++) out[(t * Hq + h) * D + d] += (e[j - lo] / denom) * vc[(j * Hkv + g) * D + d];
    }
  });
  return out;
}

describe.each(opDevices('attention'))('attention (%s)', (device) => {
  for (const window of [0, 1, 3, 128]) {
    it(`matches float64 with sinks and window ${window || 'none (full causal)'}`, async () => {
      const r = rng(window + 5);
      const positions = [0, 7, 8, 9, 20];
      const T = positions.length;
      const q = Float32Array.from({ length: T * Hq * D }, () => 2 * r() - 1);
      const kc = Float32Array.from({ length: cap * Hkv * D }, () => 2 * r() - 1);
      const vc = Float32Array.from({ length: cap * Hkv * D }, () => 2 * r() - 1);
      const sinks = bf16Bytes([0.5, -1, 3, 0]);
      const out = await runOp({
        device,
        maxTokens: T,
        positions,
        weights: { sinks },
        buffers: {
          q: { dtype: 'f32', rows: T, cols: Hq * D, data: q },
          kc: { dtype: 'f32', rows: cap, cols: Hkv * D, data: kc },
          vc: { dtype: 'f32', rows: cap, cols: Hkv * D, data: vc },
          o: { dtype: 'f32', rows: T, cols: Hq * D },
        },
        op: (w, b) => ({
          op: 'attention',
          x: b.q,
          y: b.o,
          kc: b.kc,
          vc: b.vc,
          w: w.sinks,
          qHeads: Hq,
          kvHeads: Hkv,
          headDim: D,
          window,
          scale: 0.125,
        }),
      });
      expect(relErr(f32(out.o), reference(q, kc, vc, bf16Values(sinks), positions, window))).toBeLessThan(1e-6);
    });
  }

  // Long contexts are split into blocks of 256 keys merged per token: more than one block, a
  // window wider than a block, and a token alone or among others (bit-identical either way).
  for (const window of [0, 300]) {
    it(`matches float64 over several key blocks (window ${window || 'none'}), the same alone or in a batch`, async () => {
      const r = rng(window + 11);
      const capL = 720;
      const positions = [255, 256, 700, 3, 511];
      const T = positions.length;
      const q = Float32Array.from({ length: T * Hq * D }, () => 2 * r() - 1);
      const kc = Float32Array.from({ length: capL * Hkv * D }, () => 2 * r() - 1);
      const vc = Float32Array.from({ length: capL * Hkv * D }, () => 2 * r() - 1);
      const sinks = bf16Bytes([0.5, -1, 3, 0]);
      const run = (pos: number[], qs: Float32Array) =>
        runOp({
          device,
          maxTokens: pos.length,
          positions: pos,
          weights: { sinks },
          buffers: {
            q: { dtype: 'f32', rows: pos.length, cols: Hq * D, data: qs },
            kc: { dtype: 'f32', rows: capL, cols: Hkv * D, data: kc },
            vc: { dtype: 'f32', rows: capL, cols: Hkv * D, data: vc },
            o: { dtype: 'f32', rows: pos.length, cols: Hq * D },
          },
          op: (w, b) => ({
            op: 'attention',
            x: b.q,
            y: b.o,
            kc: b.kc,
            vc: b.vc,
            w: w.sinks,
            qHeads: Hq,
            kvHeads: Hkv,
            headDim: D,
            window,
            scale: 0.125,
          }),
        });
      const all = f32((await run(positions, q)).o);
      expect(relErr(all, reference(q, kc, vc, bf16Values(sinks), positions, window))).toBeLessThan(1e-6);
      const alone = f32((await run([700], q.slice(2 * Hq * D, 3 * Hq * D))).o);
      expect(Array.from(alone)).toEqual(Array.from(all.slice(2 * Hq * D, 3 * Hq * D)));
    });
  }

  it('a position past a full-attention cache raises ERR_CONTEXT_OVERFLOW', async () => {
    await expect(
      runOp({
        device,
        maxTokens: 1,
        positions: [cap],
        weights: { sinks: bf16Bytes([0, 0, 0, 0]) },
        buffers: {
          q: { dtype: 'f32', rows: 1, cols: Hq * D },
          kc: { dtype: 'f32', rows: cap, cols: Hkv * D },
          vc: { dtype: 'f32', rows: cap, cols: Hkv * D },
          o: { dtype: 'f32', rows: 1, cols: Hq * D },
        },
        op: (w, b) => ({
          op: 'attention',
          x: b.q,
          y: b.o,
          kc: b.kc,
          vc: b.vc,
          w: w.sinks,
          qHeads: Hq,
          kvHeads: Hkv,
          headDim: D,
          window: 0,
          scale: 0.125,
        }),
      }),
    ).rejects.toMatchObject({ code: 'ERR_CONTEXT_OVERFLOW' });
  });
});
