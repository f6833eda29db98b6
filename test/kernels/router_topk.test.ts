import { describe, expect, it } from 'vitest';

import type { Device } from '../../lib/backend/device.js';
import { f32, i32, opDevices, runOp } from '../helpers/op.js';

async function topk(device: Device, logits: number[][], k: number) {
  const T = logits.length,
    E = logits[0].length;
  const out = await runOp({
    device,
    maxTokens: T,
    weights: {},
    buffers: {
      l: { dtype: 'f32', rows: T, cols: E, data: Float32Array.from(logits.flat()) },
      idx: { dtype: 'i32', rows: T, cols: k },
      wt: { dtype: 'f32', rows: T, cols: k },
    },
    op: (_, b) => ({ op: 'router_topk', x: b.l, idx: b.idx, wt: b.wt, E, k }),
  });
  return { idx: Array.from(i32(out.idx)), wt: Array.from(f32(out.wt)) };
}

describe.each(opDevices('router_topk'))('router_topk (%s)', (device) => {
  it('takes the k largest logits in descending order, then a softmax over those k only', async () => {
    const { idx, wt } = await topk(device, [[0.1, 2, -1, 3, 0.5, 1.5]], 3);
    expect(idx).toEqual([3, 1, 5]);
    const e = [3, 2, 1.5].map((v) => Math.exp(v - 3));
    const s = e.reduce((a, b) => a + b);
    wt.forEach((w, i) => expect(w).toBeCloseTo(e[i] / s, 6));
  });

  it('breaks ties toward the lower expert index', async () => {
    const { idx } = await topk(device, [[1, 5, 5, 1, 5]], 2);
    expect(idx).toEqual([1, 2]);
    const all = await topk(device, [[0, 0, 0, 0]], 4);
    expect(all.idx).toEqual([0, 1, 2, 3]);
    all.wt.forEach((w) => expect(w).toBeCloseTo(0.25, 6));
  });

  it('refuses k larger than the number of experts', async () => {
    await expect(topk(device, [[1, 2]], 3)).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
  });
});
