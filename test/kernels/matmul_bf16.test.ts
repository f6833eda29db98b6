import { describe, expect, it } from 'vitest';

import { bf16Bytes, bf16Values, relErr, rng } from '../helpers/checkpoint.js';
import { f32, opDevices, runOp } from '../helpers/op.js';

// Y (+)= X W^T + b with bf16 W, at widths that leave SIMD tails (K = 72, N = 33). On the CPU:
// the GEMV path (T <= 4) and the tiled path (T > 4). On CUDA (fp32 mode): the GEMV up to 8 tokens a
// launch (9: two launches), the tensor-core GEMM on hi + lo halves from 16 (16 x 40 x 2880: one
// tile, k split 10 ways over the program's scratch).
describe.each(opDevices('matmul_bf16'))('matmul_bf16 (%s)', (device) => {
  for (const [T, N, K] of [
    [1, 33, 72],
    [3, 33, 64],
    [5, 33, 72],
    [9, 33, 64],
    [16, 40, 2880],
    [33, 70, 2880 / 10],
  ]) {
    for (const accumulate of [0, 1]) {
      it(`T=${T} N=${N} K=${K}${accumulate ? ', accumulating into the output' : ''} matches float64`, async () => {
        const r = rng(T * 100 + N + accumulate);
        const w = bf16Bytes(Array.from({ length: N * K }, () => 2 * r() - 1));
        const b = bf16Bytes(Array.from({ length: N }, () => r()));
        const x = Float32Array.from({ length: T * K }, () => 2 * r() - 1);
        const y0 = Float32Array.from({ length: T * (N + 3) }, () => r());
        const out = await runOp({
          device,
          maxTokens: T,
          weights: { w, b },
          buffers: {
            x: { dtype: 'f32', rows: T, cols: K, data: x },
            y: { dtype: 'f32', rows: T, cols: N + 3, data: y0 },
          },
          op: (wi, bi) => ({
            op: 'matmul_bf16',
            x: bi.x,
            y: bi.y,
            ycol: 2,
            w: wi.w,
            b: wi.b,
            N,
            K,
            accumulate: accumulate === 1,
          }),
        });
        const W = bf16Values(w),
          B = bf16Values(b);
        const ref = Float64Array.from(y0);
        for (let t = 0; t < T; t++)
          for (let n = 0; n < N; n++) {
            let s = B[n];
            for (let kk = 0; kk < K; kk++) s += W[n * K + kk] * x[t * K + kk];
            ref[t * (N + 3) + 2 + n] = accumulate ? ref[t * (N + 3) + 2 + n] + s : s;
          }
        const y = f32(out.y);
        // The CPU op and the CUDA GEMV sum in f32 (1e-6); from 16 rows CUDA takes the tensor-core GEMM,
        // which in fp32 mode multiplies hi + lo bf16 halves of x (each product within 2^-16).
        expect(relErr(y, ref)).toBeLessThan(device === 'cuda' && T >= 16 ? 1e-5 : 1e-6);
        // columns outside [ycol, ycol + N) are untouched
        for (let t = 0; t < T; t++)
          expect([y[t * (N + 3)], y[t * (N + 3) + 1]]).toEqual([y0[t * (N + 3)], y0[t * (N + 3) + 1]]);
      });
    }
  }

  it('a token gets the same bits alone as among 9 (CPU: rows tiled by four tokens; CUDA: a launch of 8, then 1)', async () => {
    const T = 9,
      N = 37,
      K = 96;
    const r = rng(77);
    const w = bf16Bytes(Array.from({ length: N * K }, () => 2 * r() - 1));
    const x = Float32Array.from({ length: T * K }, () => 2 * r() - 1);
    const run = async (xs: Float32Array, rows: number) =>
      f32(
        (
          await runOp({
            device,
            maxTokens: rows,
            weights: { w },
            buffers: { x: { dtype: 'f32', rows, cols: K, data: xs }, y: { dtype: 'f32', rows, cols: N } },
            op: (wi, bi) => ({ op: 'matmul_bf16', x: bi.x, y: bi.y, w: wi.w, N, K }),
          })
        ).y,
      );
    const all = await run(x, T);
    for (const t of [0, 3, 4, 8]) {
      const alone = await run(x.slice(t * K, (t + 1) * K), 1);
      expect(Array.from(alone)).toEqual(Array.from(all.slice(t * N, (t + 1) * N)));
    }
  });

  // Default precision: from 9 rows CUDA takes the GEMM with bf16 activations (k split in two here:
  // 2 tiles of 128 rows over 16 k tiles at 64 tokens; 2 token tiles of the 128 x 256 tile at 130,
  // on wgmma where the device has it, the emulator included), each product within 2^-8 of the f32
  // one.
  it.each([64, 130])('default precision, %i rows x 200 x 512: within bf16 rounding of float64', async (T) => {
    const N = 200,
      K = 512;
    const r = rng(78);
    const w = bf16Bytes(Array.from({ length: N * K }, () => 2 * r() - 1));
    const x = Float32Array.from({ length: T * K }, () => 2 * r() - 1);
    const out = await runOp({
      device,
      precision: 'default',
      maxTokens: T,
      weights: { w },
      buffers: { x: { dtype: 'f32', rows: T, cols: K, data: x }, y: { dtype: 'f32', rows: T, cols: N } },
      op: (wi, bi) => ({ op: 'matmul_bf16', x: bi.x, y: bi.y, w: wi.w, N, K }),
    });
    const W = bf16Values(w);
    const ref = new Float64Array(T * N);
    for (let t = 0; t < T; t++)
      for (let n = 0; n < N; n++) {
        let s = 0;
        for (let kk = 0; kk < K; kk++) s += W[n * K + kk] * x[t * K + kk];
        ref[t * N + n] = s;
      }
    expect(relErr(f32(out.y), ref)).toBeLessThan(device === 'cuda' ? 1e-2 : 1e-6);
  });

  it('refuses a matrix whose size disagrees with N x K (before any step runs)', async () => {
    await expect(
      runOp({
        device,
        maxTokens: 1,
        weights: { w: new Uint8Array(10) },
        buffers: { x: { dtype: 'f32', rows: 1, cols: 4 }, y: { dtype: 'f32', rows: 1, cols: 4 } },
        op: (wi, bi) => ({ op: 'matmul_bf16', x: bi.x, y: bi.y, w: wi.w, N: 4, K: 4 }),
      }),
    ).rejects.toThrow(/has 10 bytes, expected 32/);
  });
});
