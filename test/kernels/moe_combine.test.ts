import { describe, expect, it } from 'vitest';

import { relErr, rng } from '../helpers/checkpoint.js';
import { f32, opDevices, runOp } from '../helpers/op.js';

// moe_combine: x[t] += sum_j weight[t, j] * y[t * k + j] (kernels/MODEL.md, "Combine"), against
// float64.
describe.each(opDevices('moe_combine'))('moe_combine (%s)', (device) => {
  for (const [T, k, H] of [
    [1, 4, 2880],
    [3, 4, 33],
    [5, 1, 64],
  ] as const) {
    it(`T=${T} k=${k} H=${H}: adds the routing-weighted expert outputs to the residual`, async () => {
      const r = rng(T * 31 + k + H);
      const ld = H + 3; // the residual stream may be wider than H: columns past H are untouched
      const x = Float32Array.from({ length: T * ld }, () => 2 * r() - 1);
      const y = Float32Array.from({ length: T * k * H }, () => 2 * r() - 1);
      const wt = Float32Array.from({ length: T * k }, () => r());
      const out = await runOp({
        device,
        maxTokens: T,
        weights: {},
        buffers: {
          x: { dtype: 'f32', rows: T, cols: ld, data: x },
          y: { dtype: 'f32', rows: T * k, cols: H, data: y },
          wt: { dtype: 'f32', rows: T, cols: k, data: wt },
        },
        op: (_, b) => ({ op: 'moe_combine', x: b.x, y: b.y, wt: b.wt, k, H }),
      });
      const got = f32(out.x);
      const ref = new Float64Array(T * H),
        mine = new Float32Array(T * H);
      for (let t = 0; t < T; t++)
        for (let i = 0; i < H; i++) {
          let s = 0;
          for (let j = 0; j < k; j++) s += wt[t * k + j] * y[(t * k + j) * H + i];
          ref[t * H + i] = x[t * ld + i] + s;
          mine[t * H + i] = got[t * ld + i];
        }
      expect(relErr(mine, ref)).toBeLessThan(1e-6);
      for (let t = 0; t < T; t++)
        expect(Array.from(got.subarray(t * ld + H, (t + 1) * ld))).toEqual(
          Array.from(x.subarray(t * ld + H, (t + 1) * ld)),
        );
    });
  }

  it('a slots buffer with fewer than maxTokens * k rows is refused, naming the op, argument and need', async () => {
    await expect(
      runOp({
        device,
        maxTokens: 2,
        weights: {},
        buffers: {
          x: { dtype: 'f32', rows: 2, cols: 8 },
          y: { dtype: 'f32', rows: 2, cols: 8 },
          wt: { dtype: 'f32', rows: 2, cols: 4 },
        },
        op: (_, b) => ({ op: 'moe_combine', x: b.x, y: b.y, wt: b.wt, k: 4, H: 8 }),
      }),
    ).rejects.toThrow(/op 0 \(moe_combine\): y is 2x8, needs at least 8x8/);
  });
});
