import { describe, expect, it } from 'vitest';

import { bf16Bytes, bf16Values, rng } from '../helpers/checkpoint.js';
import { f32, opDevices, runOp } from '../helpers/op.js';

// embed: x[t, :] = table[tokens[t], :], bf16 -> f32 (exact), into rows of a wider buffer.
const V = 37,
  H = 33;

describe.each(opDevices('embed'))('embed (%s)', (device) => {
  it("copies each token's row of the bf16 table exactly, the same token twice alike, columns past H untouched", async () => {
    const r = rng(7);
    const table = bf16Bytes(Array.from({ length: V * H }, () => 4 * r() - 2));
    const tokens = [3, 0, V - 1, 3];
    const T = tokens.length,
      ld = H + 5;
    const before = Float32Array.from({ length: T * ld }, () => 9);
    const out = await runOp({
      device,
      maxTokens: T,
      tokens,
      weights: { table },
      buffers: { y: { dtype: 'f32', rows: T, cols: ld, data: before } },
      op: (w, b) => ({ op: 'embed', w: w.table, y: b.y, H }),
    });
    const y = f32(out.y),
      rows = bf16Values(table);
    tokens.forEach((tok, t) => {
      expect(Array.from(y.subarray(t * ld, t * ld + H))).toEqual(Array.from(rows.subarray(tok * H, (tok + 1) * H)));
      expect(Array.from(y.subarray(t * ld + H, (t + 1) * ld))).toEqual([9, 9, 9, 9, 9]);
    });
  });

  it("a token outside the table's rows is refused before the step runs", async () => {
    await expect(
      runOp({
        device,
        maxTokens: 1,
        tokens: [V],
        weights: { table: new Uint8Array(V * H * 2) },
        buffers: { y: { dtype: 'f32', rows: 1, cols: H } },
        op: (w, b) => ({ op: 'embed', w: w.table, y: b.y, H }),
      }),
    ).rejects.toMatchObject({
      code: 'ERR_INVALID_ARGUMENT',
      message: expect.stringMatching(/outside the vocabulary \[0, 37\)/),
    });
  });

  it('a table that is not [vocab, H] bf16 is refused at construction, naming the op and argument', async () => {
    await expect(
      runOp({
        device,
        maxTokens: 1,
        weights: { table: new Uint8Array(H * 2 + 1) },
        buffers: { y: { dtype: 'f32', rows: 1, cols: H } },
        op: (w, b) => ({ op: 'embed', w: w.table, y: b.y, H }),
      }),
    ).rejects.toThrow(/op 0 \(embed\): w the table must be \[vocab, H\] bf16/);
  });
});
