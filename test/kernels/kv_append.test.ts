import { describe, expect, it } from 'vitest';

import { bf16Bytes, bf16Values, rng } from '../helpers/checkpoint.js';
import { f32, opDevices, runOp } from '../helpers/op.js';

// kv_append writes each token's K and V heads at the pool row its sequence's pages give its
// position (kernels/kv_pages.h): row = table[s * ring + (p / pageSize) % ring] * pageSize + p % pageSize.
const Hkv = 2,
  D = 64,
  width = Hkv * D,
  Hq = 4;
const cols = (Hq + 2 * Hkv) * D,
  xcol = Hq * D,
  vcol = (Hq + Hkv) * D;

// Two sequences with fragmented pages (ring 2, 2 rows a page, 4 pages in the pool), interleaved.
const seqs = [0, 1, 0, 1],
  positions = [0, 0, 3, 2];
const table = [2, 0, 1, 3]; // sequence 0: pages 2, 0; sequence 1: pages 1, 3
const rowOf = (s: number, p: number) => table[s * 2 + (Math.floor(p / 2) % 2)] * 2 + (p % 2);

async function append(device: 'cpu' | 'cuda', dtype: 'f32' | 'bf16', window: number) {
  const r = rng(dtype === 'f32' ? 1 : 2);
  const T = seqs.length,
    rows = 8;
  const x = Float32Array.from({ length: T * cols }, () => 2 * r() - 1);
  const pageTable = { table, ring: 2, pageSize: 2 };
  // The other layer type's table is a decoy: an op must use its own layer type's pages.
  const decoy = { table: [0, 0, 0, 0], ring: 2, pageSize: 2 };
  const out = await runOp({
    device,
    maxTokens: T,
    positions,
    weights: {},
    buffers: {
      x: { dtype: 'f32', rows: T, cols, data: x },
      kc: { dtype, rows, cols: width },
      vc: { dtype, rows, cols: width },
    },
    pages: { seqs, full: window ? decoy : pageTable, sliding: window ? pageTable : decoy },
    op: (_, b) => ({ op: 'kv_append', x: b.x, xcol, vcol, kc: b.kc, vc: b.vc, kvHeads: Hkv, headDim: D, window }),
  });
  const read = (u: Uint8Array) => (dtype === 'f32' ? f32(u) : bf16Values(u));
  return { x, kc: read(out.kc), vc: read(out.vc) };
}

describe.each(opDevices('kv_append'))('kv_append (%s)', (device) => {
  for (const [dtype, window] of [
    ['f32', 0],
    ['bf16', 0],
    ['f32', 5],
  ] as const) {
    it(`writes K and V of interleaved sequences at their fragmented pages (${dtype} pool, ${window ? 'sliding-window' : 'full'} layer's table)`, async () => {
      const { x, kc, vc } = await append(device, dtype, window);
      // A bf16 pool holds the values rounded to nearest even, as the reference casts them.
      const cast = (v: Float32Array) => (dtype === 'f32' ? Array.from(v) : Array.from(bf16Values(bf16Bytes(v))));
      const written = new Set<number>();
      seqs.forEach((s, t) => {
        const row = rowOf(s, positions[t]);
        written.add(row);
        expect(Array.from(kc.subarray(row * width, (row + 1) * width))).toEqual(
          cast(x.subarray(t * cols + xcol, t * cols + xcol + width)),
        );
        expect(Array.from(vc.subarray(row * width, (row + 1) * width))).toEqual(
          cast(x.subarray(t * cols + vcol, t * cols + vcol + width)),
        );
      });
      // Rows no token maps to stay as they were (zero).
      for (let row = 0; row < 8; row++)
        if (!written.has(row)) expect(kc.subarray(row * width, (row + 1) * width).every((v) => v === 0)).toBe(true);
    });
  }

  it('a page outside the pool is refused before anything is written', async () => {
    await expect(
      runOp({
        device,
        maxTokens: 1,
        weights: {},
        buffers: {
          x: { dtype: 'f32', rows: 1, cols },
          kc: { dtype: 'f32', rows: 4, cols: width },
          vc: { dtype: 'f32', rows: 4, cols: width },
        },
        pages: { seqs: [0], full: { table: [2], ring: 1, pageSize: 2 } },
        op: (_, b) => ({
          op: 'kv_append',
          x: b.x,
          xcol,
          vcol,
          kc: b.kc,
          vc: b.vc,
          kvHeads: Hkv,
          headDim: D,
          window: 0,
        }),
      }),
    ).rejects.toThrow(/KV page 2 is outside the pool's 2 pages/);
  });
});
