import { describe, expect, it } from 'vitest';

import { bf16Bytes, bf16Values, relErr, rng } from '../helpers/checkpoint.js';
import type { Device, PrecisionMode } from '../../lib/backend/device.js';
import { addon } from '../../lib/backend/native.js';
import { f32, opDevices, runOp } from '../helpers/op.js';
import { dot, mxfp4Row, swiglu } from '../helpers/reference.js';

// moe_mxfp4 against a float64 loop over the MXFP4 decode of kernels/MODEL.md, at shapes no real
// model has: 7 blocks per down row, T = 1 to 33 (an expert's tokens go four at a time through each
// decoded block, then one at a time), skewed routing. 2I = 448 gate_up rows: with two or more
// threads and up to 16 slots the CPU op gives each thread a slice of 224 rows, else 128-row tiles.
const E = 5,
  H = 64,
  I = 224,
  k = 2;
// The CPU op computes in f32 (1e-5); in precision 'default' on a CPU with AVX-512 BF16 it takes bf16
// products of x split into hi + lo (16 significant bits, kernels/cpu/simd_avx512bf16.cc), held to
// the same 1e-5. The CUDA kernel rounds activations to f16 and sums 16 products of a block in f16
// (kernels/cuda/moe_mxfp4.cu, "Precision"; its lab test derives the element bound): about 1e-3 of
// the output's norm here, so it is held to 4e-3.
const tolerance = (device: Device) => (device === 'cuda' ? 4e-3 : 1e-5);
// The CPU runs in both precisions (they take different kernels where the CPU has AVX-512 BF16).
const runs = opDevices('moe_mxfp4').flatMap((device): [Device, PrecisionMode][] =>
  device === 'cpu'
    ? [
        [device, 'fp32'],
        [device, 'default'],
      ]
    : [[device, 'fp32']],
);

function setup(T: number, route: (t: number, j: number) => number, seed: number, shape = { E, H, I }) {
  const { E, H, I } = shape;
  const r = rng(seed);
  const w1b = Uint8Array.from({ length: E * 2 * I * (H / 32) * 16 }, () => Math.floor(r() * 256));
  // Large scales on expert 0 push gate/linear values past the +-7 clamp.
  const w1s = Uint8Array.from(
    { length: E * 2 * I * (H / 32) },
    (_, i) => (i < 2 * I * (H / 32) ? 126 : 122) + Math.floor(r() * 2),
  );
  const w2b = Uint8Array.from({ length: E * H * (I / 32) * 16 }, () => Math.floor(r() * 256));
  const w2s = Uint8Array.from({ length: E * H * (I / 32) }, () => 121 + Math.floor(r() * 3));
  const b1 = bf16Bytes(Array.from({ length: E * 2 * I }, () => r() - 0.5));
  const b2 = bf16Bytes(Array.from({ length: E * H }, () => r() - 0.5));
  const x = Float32Array.from({ length: T * H }, () => 2 * r() - 1);
  const idx = Int32Array.from({ length: T * k }, (_, i) => route(Math.floor(i / k), i % k));
  return { w1b, w1s, w2b, w2s, b1, b2, x, idx, shape };
}

function reference(d: ReturnType<typeof setup>, T: number): { y: Float64Array; clamped: number } {
  const { H, I } = d.shape;
  const y = new Float64Array(T * k * H);
  const b1 = bf16Values(d.b1),
    b2 = bf16Values(d.b2);
  let clamped = 0;
  for (let t = 0; t < T; t++)
    for (let j = 0; j < k; j++) {
      const e = d.idx[t * k + j];
      const x = d.x.subarray(t * H, (t + 1) * H);
      const act = new Float64Array(I);
      for (let u = 0; u < I; u++) {
        const g =
          dot(mxfp4Row(d.w1b.subarray(e * 2 * I * (H / 32) * 16), d.w1s.subarray(e * 2 * I * (H / 32)), 2 * u, H), x) +
          b1[e * 2 * I + 2 * u];
        const l =
          dot(
            mxfp4Row(d.w1b.subarray(e * 2 * I * (H / 32) * 16), d.w1s.subarray(e * 2 * I * (H / 32)), 2 * u + 1, H),
            x,
          ) + b1[e * 2 * I + 2 * u + 1];
        if (g > 7 || Math.abs(l) > 7) clamped++;
        act[u] = swiglu(g, l);
      }
      for (let r = 0; r < H; r++)
        y[(t * k + j) * H + r] =
          dot(mxfp4Row(d.w2b.subarray(e * H * (I / 32) * 16), d.w2s.subarray(e * H * (I / 32)), r, I), act) +
          b2[e * H + r];
    }
  return { y, clamped };
}

function padded<A extends Float32Array | Int32Array>(a: A, n: number): A {
  const out = new (a.constructor as new (n: number) => A)(n);
  out.set(a);
  return out;
}

async function runIn(
  device: Device,
  d: ReturnType<typeof setup>,
  T: number,
  precision: PrecisionMode = 'fp32',
  maxTokens = T,
) {
  const { E, H, I } = d.shape;
  const out = await runOp({
    device,
    precision,
    maxTokens,
    positions: Array.from({ length: T }, (_, i) => i),
    weights: { w1b: d.w1b, w1s: d.w1s, b1: d.b1, w2b: d.w2b, w2s: d.w2s, b2: d.b2 },
    // Buffers hold the program's maxTokens rows; the step runs T of them.
    buffers: {
      x: { dtype: 'f32', rows: maxTokens, cols: H, data: padded(d.x, maxTokens * H) },
      idx: { dtype: 'i32', rows: maxTokens, cols: k, data: padded(d.idx, maxTokens * k) },
      y: { dtype: 'f32', rows: maxTokens * k, cols: H },
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
  });
  return f32(out.y).slice(0, T * k * H);
}

describe.each(runs)('moe_mxfp4 (%s) in precision %s', (device, precision) => {
  const tol = tolerance(device);
  const run = (d: ReturnType<typeof setup>, T: number) => runIn(device, d, T, precision);
  for (const T of [1, 2, 3, 33]) {
    it(`matches the float64 reference for T = ${T} tokens spread over the experts`, async () => {
      const d = setup(T, (t, j) => (t * 3 + j * 2) % E, T);
      const ref = reference(d, T);
      expect(relErr(await run(d, T), ref.y)).toBeLessThan(tol);
    });
  }

  it('matches when every token goes to expert 0 (skew) and three experts get none', async () => {
    const T = 33;
    const d = setup(T, (_, j) => (j === 0 ? 0 : 4), 7);
    const ref = reference(d, T);
    expect(ref.clamped).toBeGreaterThan(0); // the clamp is exercised
    expect(relErr(await run(d, T), ref.y)).toBeLessThan(tol);
  });

  it('a token gets the same bits alone as among 33 tokens sharing its experts (groups of four and the rest)', async () => {
    const T = 33;
    const d = setup(T, (_, j) => (j === 0 ? 1 : 3), 9);
    const all = await run(d, T);
    for (const t of [0, 3, 4, 31, 32]) {
      const alone = { ...d, x: d.x.slice(t * H, (t + 1) * H), idx: d.idx.slice(t * k, (t + 1) * k) };
      expect(Array.from(await run(alone, 1))).toEqual(Array.from(all.slice(t * k * H, (t + 1) * k * H)));
    }
  });

  it('a step of 8 tokens (16 slots, sliced) in a program planned for 9 (18 slots, tiled) gets the bits of its own program', async () => {
    const d = setup(8, (t, j) => (t + 3 * j) % E, 13);
    const own = await run(d, 8);
    expect(relErr(own, reference(d, 8).y)).toBeLessThan(tol);
    const planned = await runIn(device, d, 8, precision, 9);
    expect(Array.from(planned)).toEqual(Array.from(own));
  });

  it('reading nibbles high-first would be caught (the comparison can fail)', async () => {
    const T = 3;
    const d = setup(T, (t, j) => (t + j) % E, 3);
    const swapped = { ...d, w1b: d.w1b.map((b) => ((b & 15) << 4) | (b >> 4)) };
    expect(relErr(await run(swapped, T), reference(d, T).y)).toBeGreaterThan(0.1);
  });
});

describe.runIf(opDevices('moe_mxfp4').includes('cpu') && addon().deviceInfo().cpu.bf16)(
  'moe_mxfp4 bf16 products (cpu)',
  () => {
    it("precision 'default' takes them: other bits than 'fp32', the same values within 1e-5", async () => {
      const T = 9;
      const d = setup(T, (t, j) => (t + 2 * j) % E, 11);
      const exact = await runIn('cpu', d, T, 'fp32');
      const fast = await runIn('cpu', d, T, 'default');
      expect(Array.from(fast)).not.toEqual(Array.from(exact));
      expect(relErr(fast, exact)).toBeLessThan(1e-5);
    });

    // The module's shapes give the bf16 kernel one four-block step per down row and none per
    // gate_up row. Here gate_up rows are two steps (H = 256, nothing left over) and down rows a
    // step and a lone block (I = 160); five tokens on the same experts go four, then one.
    it('four-block steps: other rows and widths, the f32 values within 1e-5, a token alone gets its bits among five', async () => {
      const shape = { E: 3, H: 256, I: 160 };
      const T = 5;
      const d = setup(T, (_, j) => j, 21, shape);
      const exact = await runIn('cpu', d, T, 'fp32');
      const fast = await runIn('cpu', d, T, 'default');
      expect(Array.from(fast)).not.toEqual(Array.from(exact));
      expect(relErr(fast, exact)).toBeLessThan(1e-5);
      for (const t of [0, 4]) {
        const alone = { ...d, x: d.x.slice(t * shape.H, (t + 1) * shape.H), idx: d.idx.slice(t * k, (t + 1) * k) };
        const got = await runIn('cpu', alone, 1, 'default');
        expect(Array.from(got)).toEqual(Array.from(fast.slice(t * k * shape.H, (t + 1) * k * shape.H)));
      }
    });

    // Four-block steps build a block's scale from its byte as an exponent field (no table): byte 0
    // is 2^-127, a subnormal, not zero. A down row whose seven blocks (a four-block step, a pair, a
    // lone block) all have byte 0 and no bias is ~1e-37, and must be what the f32 path gives.
    it("scale byte 0 (2^-127, subnormal) is kept in 'default' as in 'fp32'", async () => {
      const T = 1;
      const d = setup(T, (_, j) => j, 5);
      const rows = [0, 5, 63];
      for (const r of rows) {
        d.w2s.fill(0, r * (I / 32), (r + 1) * (I / 32)); // expert 0, down row r
        d.b2.fill(0, 2 * r, 2 * r + 2);
      }
      const exact = await runIn('cpu', d, T, 'fp32');
      const fast = await runIn('cpu', d, T, 'default');
      for (const r of rows) {
        expect(Math.abs(exact[r])).toBeGreaterThan(1e-39);
        expect(Math.abs(exact[r])).toBeLessThan(1e-35);
        expect(Math.abs(fast[r] - exact[r])).toBeLessThan(1e-5 * Math.abs(exact[r]));
      }
    });
  },
);

// In precision 'default' the CUDA backend takes the grouped GEMM from 3.25 slots per expert
// (moe_mxfp4_use_gemm: T >= 9 here) with bf16 activations, and its 128-row tile from 48 (T >= 120),
// on wgmma where the device is an sm_90 (the emulator reports one): x and the SwiGLU activations
// rounded to bf16 (relative 2^-8 each) put the output ~3e-3 off the float64 reference.
describe.runIf(opDevices('moe_mxfp4').includes('cuda'))('moe_mxfp4 grouped GEMM (cuda)', () => {
  it.each([
    [40, '64-row tiles'],
    [130, '128-row tiles'],
  ])("precision 'default', T = %i (%s): the float64 reference within bf16's rounding", async (T) => {
    const d = setup(T, (t, j) => (t + 2 * j) % E, 17);
    const got = await runIn('cuda', d, T, 'default');
    const err = relErr(got, reference(d, T).y);
    expect(err).toBeLessThan(1e-2);
    expect(err).toBeGreaterThan(0); // the bf16 path, not the exact GEMV
  });
});
