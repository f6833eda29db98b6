import { describe, expect, it } from 'vitest';

import { bf16Bytes, bf16Values, relErr, rng } from '../helpers/checkpoint.js';
import { f32, opDevices, runOp } from '../helpers/op.js';

describe.each(opDevices('rmsnorm'))('rmsnorm (%s)', (device) => {
  it('y = g * x / sqrt(mean(x^2) + eps) per row, gain in bf16', async () => {
    const r = rng(3);
    const T = 3,
      H = 33;
    const x = Float32Array.from({ length: T * H }, () => 4 * r() - 2);
    const g = bf16Bytes(Array.from({ length: H }, () => r() + 0.5));
    const out = await runOp({
      device,
      maxTokens: T,
      weights: { g },
      buffers: { x: { dtype: 'f32', rows: T, cols: H, data: x }, y: { dtype: 'f32', rows: T, cols: H } },
      op: (w, b) => ({ op: 'rmsnorm', x: b.x, y: b.y, w: w.g, H, eps: 1e-5 }),
    });
    const G = bf16Values(g);
    const ref = new Float64Array(T * H);
    for (let t = 0; t < T; t++) {
      let ss = 0;
      for (let i = 0; i < H; i++) ss += x[t * H + i] ** 2;
      const inv = 1 / Math.sqrt(ss / H + 1e-5);
      for (let i = 0; i < H; i++) ref[t * H + i] = x[t * H + i] * inv * G[i];
    }
    expect(relErr(f32(out.y), ref)).toBeLessThan(1e-6);
  });
});
