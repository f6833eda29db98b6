// Runs one native op on given inputs: a Program with a single op, buffers written from JS.
import { addon, type BufferSpec, type OpSpec, type WeightId } from '../../lib/native.js';

export interface OpRun {
  weights: Record<string, Uint8Array>;
  buffers: Record<string, BufferSpec & { data?: ArrayBufferView }>;
  op: (w: Record<string, WeightId>, b: Record<string, number>) => OpSpec | OpSpec[];
  maxTokens: number;
  positions?: number[];
  headDim?: number;
}

export async function runOp(spec: OpRun): Promise<Record<string, Uint8Array>> {
  const { Weights, Program } = addon();
  const weights = new Weights();
  const w: Record<string, WeightId> = {};
  for (const [name, bytes] of Object.entries(spec.weights)) w[name] = weights.addBytes(bytes, name);
  const names = Object.keys(spec.buffers);
  const b: Record<string, number> = Object.fromEntries(names.map((n, i) => [n, i]));
  const program = new Program(weights, {
    maxTokens: spec.maxTokens,
    rope: { theta: 150000, factor: 32, ntkAlpha: 1, ntkBeta: 32, initialContext: 4096, headDim: spec.headDim ?? 64 },
    buffers: names.map((n) => ({ dtype: spec.buffers[n].dtype, rows: spec.buffers[n].rows, cols: spec.buffers[n].cols })),
    ops: [spec.op(w, b)].flat(),
  });
  try {
    for (const n of names) {
      const d = spec.buffers[n].data;
      if (d) program.writeBuffer(b[n], d);
    }
    const T = spec.maxTokens;
    const positions = Int32Array.from(spec.positions ?? Array.from({ length: T }, (_, i) => i));
    await program.run(new Int32Array(positions.length), positions, positions.length, null);
    return Object.fromEntries(names.map((n) => [n, program.readBuffer(b[n])]));
  } finally {
    program.dispose();
    weights.dispose();
  }
}

export const f32 = (u: Uint8Array) => new Float32Array(u.buffer, u.byteOffset, u.byteLength / 4);
export const i32 = (u: Uint8Array) => new Int32Array(u.buffer, u.byteOffset, u.byteLength / 4);
