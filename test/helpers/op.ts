// Runs native ops on given inputs: a Program of those ops on one device, buffers written from JS,
// one step of one sequence, every buffer read back.
import type { Device, PrecisionMode } from '../../lib/backend/device.js';
import { stepSequence } from '../../lib/engine/graph.js';
import { addon, type BufferSpec } from '../../lib/backend/native.js';
import type { BufferId, OpSpec, WeightId } from '../../lib/backend/ops.js';

export interface OpRun {
  /** The backend to run on (default 'cpu'). */
  device?: Device;
  /** ProgramSpec.precision (default 'fp32': the op's exact contract). */
  precision?: PrecisionMode;
  weights: Record<string, Uint8Array>;
  buffers: Record<string, BufferSpec & { data?: ArrayBufferView }>;
  op: (w: Record<string, WeightId>, b: Record<string, BufferId>) => OpSpec | OpSpec[];
  maxTokens: number;
  positions?: number[];
  tokens?: number[];
  headDim?: number;
  /** KV page tables (default: one sequence whose pool, the buffer named kc, is one page). */
  pages?: {
    seqs: number[];
    full: { table: number[]; ring: number; pageSize: number };
    sliding?: { table: number[]; ring: number; pageSize: number };
  };
}

/** The devices this build can run `op` on: each op test runs on each. A device whose backend
 * lacks the op's kernel in this build is left out (the CUDA kernels land one by one; a program
 * with such an op is refused with ERR_UNSUPPORTED naming it). */
export const opDevices = (op?: string): Device[] =>
  addon().devices.filter((d) => usableDevice(d) && (!op || (addon().deviceOps[d] ?? []).includes(op)));

/** Whether this build has `device` and this machine can run it: a CUDA build (npm install where
 * nvcc is) on a machine with no GPU has the backend but no device; the emulated build has both. */
export const usableDevice = (device: Device): boolean =>
  addon().devices.includes(device) && (device === 'cpu' || addon().deviceInfo().cuda.available);

export async function runOp(spec: OpRun): Promise<Record<string, Uint8Array>> {
  const { Weights, Program } = addon();
  const weights = new Weights();
  const w: Record<string, WeightId> = {};
  for (const [name, bytes] of Object.entries(spec.weights)) w[name] = weights.addBytes(bytes, name);
  const names = Object.keys(spec.buffers);
  const b: Record<string, BufferId> = Object.fromEntries(names.map((n, i) => [n, i as BufferId]));
  const T = spec.maxTokens;
  const positions = Int32Array.from(spec.positions ?? Array.from({ length: T }, (_, i) => i));
  try {
    const program = new Program(weights, {
      device: spec.device ?? 'cpu',
      precision: spec.precision ?? 'fp32',
      maxTokens: spec.maxTokens,
      maxContext: Math.max(...positions, spec.buffers.kc?.rows ?? 0) + 1,
      rope: { theta: 150000, factor: 32, ntkAlpha: 1, ntkBeta: 32, initialContext: 4096, headDim: spec.headDim ?? 64 },
      buffers: names.map((n) => ({
        dtype: spec.buffers[n].dtype,
        rows: spec.buffers[n].rows,
        cols: spec.buffers[n].cols,
      })),
      ops: [spec.op(w, b)].flat(),
    });
    try {
      for (const n of names) {
        const d = spec.buffers[n].data;
        if (d) program.writeBuffer(b[n], d);
      }
      const tokens = Int32Array.from(spec.tokens ?? new Array<number>(positions.length).fill(0));
      if (spec.pages) {
        const table = (t: { table: number[]; ring: number; pageSize: number }) => ({
          ...t,
          table: Int32Array.from(t.table),
        });
        await program.step({
          tokens,
          positions,
          seqs: Int32Array.from(spec.pages.seqs),
          full: table(spec.pages.full),
          sliding: table(spec.pages.sliding ?? spec.pages.full),
          logitRows: new Int32Array(0),
          out: null,
        });
      } else {
        const page = { table: Int32Array.of(0), ring: 1, pageSize: spec.buffers.kc?.rows ?? 1 };
        await stepSequence(
          program,
          { full: page, sliding: page },
          { tokens, positions, logitsStart: positions.length, out: null },
        );
      }
      return Object.fromEntries(names.map((n) => [n, program.readBuffer(b[n])]));
    } finally {
      program.dispose();
    }
  } finally {
    weights.dispose();
  }
}

export const f32 = (u: Uint8Array) => new Float32Array(u.buffer, u.byteOffset, u.byteLength / 4);
export const i32 = (u: Uint8Array) => new Int32Array(u.buffer, u.byteOffset, u.byteLength / 4);
