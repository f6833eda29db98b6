// The record every part of the `gptoss bench` suite writes: one JSON object per run with the
// machine's fingerprint, the ceilings measured in the same run, and whichever parts ran. The
// report (lib/bench-report.ts) reads these back, validated against RUN_SCHEMA. 1 GB = 1e9 B.
import { Ajv } from 'ajv';

import { fingerprint } from './bench.js';
import type { ServeLevelResult } from './bench-serve.js';
import { InvalidArgumentError } from './errors.js';
import type { Device } from './model.js';
import { addon } from './native.js';

export const RUN_SCHEMA_ID = 'node-gpt-oss/bench-run@1';

/** A measured figure: the median of its samples, with the samples kept for noise estimates. */
export interface Stat {
  value: number;
  samples: number[];
}

export interface Ceilings {
  /** Host memory read bandwidth, GB/s (the CPU backend's streaming ceiling). */
  readGBps: Stat;
  /** Dense bf16 matmul rate, GFLOP/s: which kernel at which shape is in `denseKernel`. */
  denseGFLOPs: Stat;
  denseKernel: string;
}

export interface KernelResult {
  op: string;
  /** Which instance of the op: 'qkv', 'unembedding', 'decode ctx 4096', ... */
  name: string;
  tokens: number;
  shape: string;
  /** Declared per call: bytes read and written, and arithmetic operations. */
  bytes: number;
  flops: number;
  ms: Stat;
  GBps: number;
  GFLOPs: number;
  /** flops / bytes */
  intensity: number;
  /** min(dense rate, intensity x read bandwidth) */
  attainableGFLOPs: number;
  bound: 'memory' | 'compute';
  /** Achieved over attainable. */
  ratio: number;
}

export interface DecodePoint {
  batch: number;
  context: number;
  /** One step: a token for each of `batch` sequences. */
  stepMs: Stat;
  tokensPerSecond: number;
  msPerOutputToken: number;
  /** Weights (experts: the expected distinct ones for this batch) and every sequence's KV. */
  bytesPerStep: number;
  flopsPerStep: number;
  /** Which ceiling limits the step: streaming its bytes, or its operations at the dense rate. */
  bound: 'memory' | 'compute';
  /** batch / max(bytes / read bandwidth, operations / dense rate) */
  rooflineTokensPerSecond: number;
  ratio: number;
}

export interface DecodeSkip {
  batch: number;
  context: number;
  reason: string;
}

export interface PrefillPoint {
  tokens: number;
  seconds: Stat;
  tokensPerSecond: number;
  /** 2 x active parameters per token plus attention (QK and PV over the visible keys). */
  flops: number;
  GFLOPs: number;
  ratioToDense: number;
}

export interface MemoryResult {
  weightsBytes: number;
  kvBytesPerToken: number;
  kvDType: string;
  /** Resident set after loading, and the peak over the run (host; GPU figures when on CUDA). */
  rssAfterLoadBytes: number;
  peakRssBytes: number;
  kvBytesAt: { context: number; bytes: number }[];
}

export interface BenchRun {
  schema: typeof RUN_SCHEMA_ID;
  id: string;
  date: string;
  command: string;
  model: string;
  device: Device;
  fingerprint: Record<string, string | number>;
  units: { GB: '1e9 bytes'; GFLOPs: '1e9 operations per second' };
  ceilings?: Ceilings;
  kernels?: KernelResult[];
  decode?: { steps: number; points: DecodePoint[]; skipped: DecodeSkip[] };
  prefill?: PrefillPoint[];
  memory?: MemoryResult;
  serve?: ServeLevelResult[];
}

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

export const stat = (samples: number[]): Stat => ({ value: median(samples), samples });

/** Times `fn` at least `minRuns` times and for at least `minMs`, after one untimed call. */
export async function timeRuns(fn: () => Promise<unknown>, minRuns = 3, minMs = 200, maxRuns = 50): Promise<number[]> {
  await fn();
  const samples: number[] = [];
  const start = performance.now();
  while (samples.length < maxRuns && (samples.length < minRuns || performance.now() - start < minMs)) {
    const t = performance.now();
    await fn();
    samples.push(performance.now() - t);
  }
  return samples;
}

export function newRun(command: string, model: string, device: Device): BenchRun {
  const fp = fingerprint();
  const date = new Date().toISOString();
  return {
    schema: RUN_SCHEMA_ID,
    id: `${date.replace(/[:.]/g, '-')}-${fp.commit}`,
    date,
    command,
    model,
    device,
    fingerprint: fp,
    units: { GB: '1e9 bytes', GFLOPs: '1e9 operations per second' },
  };
}

/** Host read bandwidth (GB/s): `reps` probes of a 1 GiB buffer, after a discarded first one. */
export async function measureReadGBps(reps = 3): Promise<Stat> {
  // The first probe in a process reads low (lib/bench.ts), so one is run and discarded.
  await addon().measureHostBandwidth(1 << 30, 2);
  const samples: number[] = [];
  for (let i = 0; i < reps; i++) samples.push((await addon().measureHostBandwidth(1 << 30, 3)).bytesPerSecond / 1e9);
  return stat(samples);
}

// --- The schema the report validates its input against ------------------------------------------

const num = { type: 'number' } as const;
const int = { type: 'integer', minimum: 0 } as const;
const statSchema = {
  type: 'object',
  required: ['value', 'samples'],
  properties: { value: num, samples: { type: 'array', items: num, minItems: 1 } },
} as const;
const obj = (required: string[], properties: Record<string, unknown>) => ({ type: 'object', required, properties });
const numOrNull = { type: ['number', 'null'] } as const; // null: nothing to measure
const percentiles = obj(['p50', 'p90', 'p99'], { p50: numOrNull, p90: numOrNull, p99: numOrNull });

export const RUN_SCHEMA = obj(['schema', 'id', 'date', 'command', 'model', 'device', 'fingerprint', 'units'], {
  schema: { const: RUN_SCHEMA_ID },
  id: { type: 'string', minLength: 1 },
  date: { type: 'string', minLength: 1 },
  command: { type: 'string' },
  model: { type: 'string' },
  device: { enum: ['cpu', 'cuda'] },
  fingerprint: { type: 'object', required: ['commit', 'package'], additionalProperties: { type: ['string', 'number'] } },
  units: obj(['GB'], { GB: { const: '1e9 bytes' } }),
  ceilings: obj(['readGBps', 'denseGFLOPs', 'denseKernel'], { readGBps: statSchema, denseGFLOPs: statSchema, denseKernel: { type: 'string' } }),
  kernels: {
    type: 'array',
    items: obj(['op', 'name', 'tokens', 'shape', 'bytes', 'flops', 'ms', 'GBps', 'GFLOPs', 'intensity', 'attainableGFLOPs', 'bound', 'ratio'], {
      op: { type: 'string' }, name: { type: 'string' }, tokens: int, shape: { type: 'string' }, bytes: num, flops: num, ms: statSchema,
      GBps: num, GFLOPs: num, intensity: num, attainableGFLOPs: num, bound: { enum: ['memory', 'compute'] }, ratio: num,
    }),
  },
  decode: obj(['steps', 'points', 'skipped'], {
    steps: int,
    points: {
      type: 'array',
      items: obj(['batch', 'context', 'stepMs', 'tokensPerSecond', 'msPerOutputToken', 'bytesPerStep', 'flopsPerStep', 'bound', 'rooflineTokensPerSecond', 'ratio'], {
        batch: int, context: int, stepMs: statSchema, tokensPerSecond: num, msPerOutputToken: num, bytesPerStep: num, flopsPerStep: num,
        bound: { enum: ['memory', 'compute'] }, rooflineTokensPerSecond: num, ratio: num,
      }),
    },
    skipped: { type: 'array', items: obj(['batch', 'context', 'reason'], { batch: int, context: int, reason: { type: 'string' } }) },
  }),
  prefill: {
    type: 'array',
    items: obj(['tokens', 'seconds', 'tokensPerSecond', 'flops', 'GFLOPs', 'ratioToDense'], {
      tokens: int, seconds: statSchema, tokensPerSecond: num, flops: num, GFLOPs: num, ratioToDense: num,
    }),
  },
  memory: obj(['weightsBytes', 'kvBytesPerToken', 'kvDType', 'rssAfterLoadBytes', 'peakRssBytes', 'kvBytesAt'], {
    weightsBytes: num, kvBytesPerToken: num, kvDType: { type: 'string' }, rssAfterLoadBytes: num, peakRssBytes: num,
    kvBytesAt: { type: 'array', items: obj(['context', 'bytes'], { context: int, bytes: num }) },
  }),
  serve: {
    type: 'array',
    items: obj(['concurrency', 'requests', 'errors', 'seconds', 'inputTokensPerSecond', 'outputTokensPerSecond', 'ttftMs', 'itlMs', 'goodputRequestsPerSecond'], {
      concurrency: int, requestRate: { type: 'number', exclusiveMinimum: 0 }, requests: int, errors: int, seconds: num, inputTokensPerSecond: num, outputTokensPerSecond: num,
      ttftMs: percentiles, itlMs: percentiles, goodputRequestsPerSecond: num,
    }),
  },
});

let validator: ReturnType<Ajv['compile']> | undefined;

/** Checks a parsed results file; the error names the file and the first problem's path. */
export function validateRun(data: unknown, source: string): BenchRun {
  validator ??= new Ajv({ allErrors: false, strict: false }).compile(RUN_SCHEMA);
  if (!validator(data)) {
    const e = validator.errors?.[0];
    throw new InvalidArgumentError(`${source} is not a gptoss bench result (${RUN_SCHEMA_ID}): ${e?.instancePath || '/'} ${e?.message ?? 'is invalid'}`);
  }
  return data as BenchRun;
}
