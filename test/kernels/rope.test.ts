import { describe, expect, it } from 'vitest';

import { f32, opDevices, runOp } from '../helpers/op.js';

// YaRN frequencies and concentration (kernels/MODEL.md, "YaRN rotary", sample values listed there),
// read back from the rotation of unit vectors at position 1.
describe.each(opDevices('rope'))('rope (%s)', (device) => {
  it('rotates pair (i, i+32) by omega_i with the YaRN sample frequencies, scaled by the concentration', async () => {
    const D = 64,
      heads = 2; // one q head, one k head
    const x = new Float32Array(heads * D);
    for (let i = 0; i < 32; i++) x[i] = 1; // q: a = 1, b = 0 in every pair
    for (let i = 0; i < 32; i++) x[D + 32 + i] = 1; // k: a = 0, b = 1
    const out = f32(
      (
        await runOp({
          device,
          maxTokens: 1,
          positions: [1],
          weights: {},
          buffers: { qkv: { dtype: 'f32', rows: 1, cols: heads * D, data: x } },
          op: (_, b) => ({ op: 'rope', x: b.qkv, qHeads: 1, kvHeads: 1, headDim: D }),
        })
      ).qkv,
    );
    const omega = (i: number) => Math.atan2(out[i + 32], out[i]);
    const C = Math.hypot(out[0], out[32]);
    expect(C).toBeCloseTo(1.3465735902799727, 6);
    const samples: [number, number][] = [
      [0, 1.0],
      [8, 0.0508133],
      [9, 0.0317057],
      [10, 0.019335],
      [17, 1.29319e-4],
      [18, 3.83088e-5],
      [31, 3.02351e-7],
    ];
    for (const [i, w] of samples) expect(Math.abs(omega(i) - w) / w).toBeLessThan(1e-4);
    // k head: b' = b cos, a' = -b sin
    expect(out[D + 8]).toBeCloseTo(-C * Math.sin(0.0508133), 5);
    expect(out[D + 32 + 8]).toBeCloseTo(C * Math.cos(0.0508133), 5);
  });
});
