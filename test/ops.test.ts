// The op registry seen from both sides, and the typed boundary around it (issue 15).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { CheckpointError, InternalError, InvalidArgumentError, UnsupportedError } from '../lib/errors.js';
import { fromNative } from '../lib/errors.js';
import { addon } from '../lib/backend/native.js';
import { describeOps, OP_NAMES } from '../lib/backend/ops.js';
import { tmpDir } from './helpers/checkpoint.js';
import { runOp } from './helpers/op.js';

const router = (E: number, extra: Record<string, unknown> = {}) => ({
  maxTokens: 1,
  weights: {},
  buffers: {
    x: { dtype: 'f32' as const, rows: 1, cols: E },
    idx: { dtype: 'i32' as const, rows: 1, cols: 2 },
    wt: { dtype: 'f32' as const, rows: 1, cols: 2 },
  },
  op: (_: unknown, b: Record<string, number>) =>
    ({ op: 'router_topk', x: b.x, idx: b.idx, wt: b.wt, E, k: 2, ...extra }) as never,
});

describe('the op registry', () => {
  it('lib/backend/ops.ts lists exactly the ops and fields the addon declares (kernels/ops.h), kinds and optionality alike', () => {
    expect(Object.keys(addon().ops)).toEqual(OP_NAMES);
    expect(addon().ops).toEqual(describeOps());
  });

  it('a limit is checked where the program is built, naming the op, the argument and the limit', async () => {
    await expect(runOp(router(300))).rejects.toThrow(
      /^op 0 \(router_topk\): E must lie in \[1, 256\] \(this backend's limit\), got 300$/,
    );
  });

  it('a misspelled field is refused, not defaulted', async () => {
    await expect(runOp(router(8, { kk: 2 }))).rejects.toThrow(/op 0 \(router_topk\): unknown field\(s\) kk/);
  });

  it('a missing field is refused: no gpt-oss constant stands in for it', async () => {
    await expect(
      runOp({
        maxTokens: 1,
        weights: { g: new Uint8Array(8) },
        buffers: { x: { dtype: 'f32', rows: 1, cols: 4 }, y: { dtype: 'f32', rows: 1, cols: 4 } },
        op: (w, b) => ({ op: 'rmsnorm', x: b.x, y: b.y, w: w.g, H: 4 }) as never,
      }),
    ).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT', message: 'op 0 (rmsnorm): missing field eps' });
  });

  it('a field of the wrong type is refused with the path to it', async () => {
    await expect(runOp(router(8, { k: '2' }))).rejects.toThrow(
      /op 0 \(router_topk\): k must be a number, got a string/,
    );
    await expect(runOp(router(8, { k: 2.5 }))).rejects.toThrow(/op 0 \(router_topk\): k must be a 32-bit integer/);
  });

  it('an activation buffer named where a KV pool belongs is refused', async () => {
    await expect(
      runOp({
        maxTokens: 1,
        weights: {},
        buffers: { x: { dtype: 'f32', rows: 1, cols: 1024 }, kc: { dtype: 'f32', rows: 4, cols: 128 } },
        op: (_, b) => [
          { op: 'kv_append', x: b.x, xcol: 0, vcol: 0, kc: b.kc, vc: b.kc, kvHeads: 2, headDim: 64, window: 0 },
          { op: 'rope', x: b.kc, qHeads: 1, kvHeads: 1, headDim: 64 },
        ],
      }),
    ).rejects.toThrow(/op 1 \(rope\): x is a KV pool, not an activation buffer/);
  });
});

describe('devices', () => {
  it('a program for a device this build has no backend for is a typed ERR_UNSUPPORTED naming what is missing', async () => {
    if (addon().devices.includes('cuda')) return; // a CUDA build: covered by the CUDA tests
    const e = await runOp({ ...router(8), device: 'cuda' }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(UnsupportedError);
    expect((e as Error).message).toMatch(/device 'cuda': this addon was built without CUDA/);
  });

  it('an unknown device name is an invalid argument', async () => {
    await expect(runOp({ ...router(8), device: 'tpu' as never })).rejects.toBeInstanceOf(InvalidArgumentError);
  });
});

describe('memory a program holds', () => {
  it('is planned before allocation exactly as the program then reports it: an arena (activations, the largest scratch) and KV pools', () => {
    const { Weights, Program } = addon();
    const weights = new Weights();
    const sinks = weights.addBytes(new Uint8Array(8), 'sinks');
    const spec = {
      device: 'cpu' as const,
      precision: 'fp32' as const,
      maxTokens: 4,
      maxContext: 600,
      rope: { theta: 150000, factor: 32, ntkAlpha: 1, ntkBeta: 32, initialContext: 4096, headDim: 64 },
      buffers: [
        { dtype: 'f32' as const, rows: 4, cols: 256 },
        { dtype: 'f32' as const, rows: 4, cols: 256 },
        { dtype: 'bf16' as const, rows: 600, cols: 128 },
        { dtype: 'bf16' as const, rows: 600, cols: 128 },
      ],
      ops: [
        {
          op: 'attention' as const,
          x: 0 as never,
          y: 1 as never,
          kc: 2 as never,
          vc: 3 as never,
          w: sinks,
          qHeads: 4,
          kvHeads: 2,
          headDim: 64,
          window: 0,
          scale: 0.125,
        },
      ],
    };
    const planned = addon().planMemory(spec, 0);
    const program = new Program(weights, spec);
    expect(program.memory).toEqual(planned);
    expect(planned).toMatchObject({ device: 'cpu', activations: 2 * 4 * 256 * 4, kv: 2 * 600 * 128 * 2, logits: 0 });
    // Attention's partials for 4 tokens x 3 key blocks, plus a slice per worker thread.
    expect(planned.scratch).toBeGreaterThan(4 * 3 * 4 * 66 * 4);
    expect(planned.arena).toBe(planned.activations + planned.scratch);
    program.dispose();
    expect(program.memory.total).toBe(0);
    weights.dispose();
  });
});

describe('errors across the boundary', () => {
  it('a checkpoint error from native code carries its file and tensor', () => {
    const dir = tmpDir();
    const file = join(dir, 'small.safetensors');
    writeFileSync(file, new Uint8Array(16));
    const w = new (addon().Weights)();
    const f = w.mapFile(file);
    let e: unknown;
    try {
      w.addMapped(f, 8, 64, 'model.norm.weight');
    } catch (x) {
      e = x;
    }
    w.dispose();
    expect(e).toBeInstanceOf(CheckpointError);
    expect(e).toMatchObject({ code: 'ERR_BAD_CHECKPOINT', file, tensor: 'model.norm.weight' });
    expect((e as Error).message).toBe(`${file}: tensor model.norm.weight: lies outside the file`);
  });

  it('an error native code does not describe is ERR_INTERNAL, not an invalid argument', () => {
    const e = fromNative(Object.assign(new Error('internal error: vector::_M_range_check'), { code: 'ERR_INTERNAL' }));
    expect(e).toBeInstanceOf(InternalError);
    expect(e).toMatchObject({ code: 'ERR_INTERNAL' });
  });
});
