// The record every part of the `gptoss bench` suite writes: one JSON object per run with the
// machine's fingerprint, the ceilings measured in the same run, and whichever parts ran. The
// report (lib/bench/report.ts) reads these back, validated against RUN_SCHEMA. 1 GB = 1e9 B.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';

import { Ajv } from 'ajv';

import { InvalidArgumentError } from '../errors.js';
import type { Device } from '../backend/device.js';
import { addon, packageRoot } from '../backend/native.js';

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

/** One op call as the kernel part declares it. */
export interface KernelCall {
  op: string;
  /** Which instance of the op: 'qkv', 'unembedding', 'decode ctx 4096', ... */
  name: string;
  tokens: number;
  shape: string;
  /** Declared per call: bytes read and written, and arithmetic operations. */
  bytes: number;
  flops: number;
}

export interface KernelResult extends KernelCall {
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

function commit(): string {
  const git = (args: string[]) =>
    execFileSync('git', args, { cwd: packageRoot, stdio: ['ignore', 'pipe', 'ignore'] })
      .toString()
      .trim();
  try {
    const head = git(['rev-parse', '--short', 'HEAD']);
    // Runs of uncommitted changes must not pool with runs of the commit itself (bench report).
    return git(['status', '--porcelain', '--untracked-files=no']) ? `${head}-dirty` : head;
  } catch {
    return 'unknown';
  }
}

export function fingerprint(): Record<string, string | number> {
  const info = addon().deviceInfo();
  const pkg = JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string };
  const fp: Record<string, string | number> = {
    cpu: cpus()[0]?.model ?? 'unknown',
    cpuThreads: info.cpu.threads,
    // '+bf16': precision 'default' takes AVX-512 BF16 products for the experts.
    simd: info.cpu.bf16 ? `${info.cpu.simd}+bf16` : info.cpu.simd,
    hostMemoryGB: +(totalmem() / 1e9).toFixed(1),
    node: process.version,
    package: pkg.version,
    commit: commit(),
  };
  const mhz = cpus()[0]?.speed;
  if (mhz) fp.cpuMHz = mhz;
  if (info.cuda.available) {
    fp.gpu = info.cuda.name ?? 'unknown';
    fp.gpuMemoryGB = +((info.cuda.totalMemory ?? 0) / 1e9).toFixed(1);
    if (info.cuda.computeCapability) fp.gpuComputeCapability = info.cuda.computeCapability;
    // Driver and clocks where nvidia-smi can tell (it is not needed to run).
    try {
      const [driver, sm, mem] = execFileSync(
        'nvidia-smi',
        ['--query-gpu=driver_version,clocks.max.sm,clocks.max.mem', '--format=csv,noheader,nounits', '-i', '0'],
        { stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 },
      )
        .toString()
        .trim()
        .split(',')
        .map((x) => x.trim());
      if (driver) fp.gpuDriver = driver;
      if (Number(sm)) fp.gpuMaxSmMHz = Number(sm);
      if (Number(mem)) fp.gpuMaxMemMHz = Number(mem);
    } catch {
      // no nvidia-smi: the fingerprint keeps what the runtime reported
    }
  }
  return fp;
}

/** Token ids a benchmark may feed as text: those below the first special token (199998). */
export const ordinaryTokens = (vocabSize: number): number => Math.min(vocabSize, 199998);

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

export const stat = (samples: number[]): Stat => ({ value: median(samples), samples });

/**
 * A decode point from its timing and declared work: a step can go no faster than streaming its
 * bytes, nor than doing its operations at the dense rate.
 */
export function decodePoint(
  batch: number,
  context: number,
  stepMs: Stat,
  bytesPerStep: number,
  flopsPerStep: number,
  c: Ceilings,
): DecodePoint {
  const memoryS = bytesPerStep / (c.readGBps.value * 1e9),
    computeS = flopsPerStep / (c.denseGFLOPs.value * 1e9);
  const rooflineTokensPerSecond = batch / Math.max(memoryS, computeS);
  const tokensPerSecond = batch / (stepMs.value / 1e3);
  return {
    batch,
    context,
    stepMs,
    tokensPerSecond,
    msPerOutputToken: stepMs.value,
    bytesPerStep,
    flopsPerStep,
    bound: memoryS >= computeS ? 'memory' : 'compute',
    rooflineTokensPerSecond,
    ratio: tokensPerSecond / rooflineTokensPerSecond,
  };
}

export function prefillPoint(tokens: number, seconds: Stat, flops: number, c: Ceilings): PrefillPoint {
  const GFLOPs = flops / seconds.value / 1e9;
  return {
    tokens,
    seconds,
    tokensPerSecond: tokens / seconds.value,
    flops,
    GFLOPs,
    ratioToDense: GFLOPs / c.denseGFLOPs.value,
  };
}

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

export function newRun(command: string, model: string, device: Device, fp = fingerprint()): BenchRun {
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
  // The first probe in a process reads low (lib/bench/model.ts), so one is run and discarded.
  await addon().measureHostBandwidth(1 << 30, 2);
  const samples: number[] = [];
  for (let i = 0; i < reps; i++) samples.push((await addon().measureHostBandwidth(1 << 30, 3)).bytesPerSecond / 1e9);
  return stat(samples);
}

// --- The figures as tables: the terminal (formatRun, formatServeBench) and the report's Markdown --

export interface Table {
  title: string;
  head: string[];
  rows: string[][];
}

/** A number to d decimals; '-' where nothing was measured. */
export const fmt = (x: number | null, d = 1): string => (x !== null && Number.isFinite(x) ? x.toFixed(d) : '-');
export const percent = (x: number): string => `${fmt(x * 100)}%`;

export interface ServeLevelResult {
  /** Clients in a closed loop; with a request rate, the cap on requests in flight. */
  concurrency: number;
  /** Open-loop load: the offered request rate (requests/s), when the level was driven by one. */
  requestRate?: number;
  requests: number;
  errors: number;
  seconds: number;
  inputTokensPerSecond: number;
  outputTokensPerSecond: number;
  /** null where there was nothing to measure (no request succeeded; one-token answers have no ITL). */
  ttftMs: { p50: number | null; p90: number | null; p99: number | null };
  itlMs: { p50: number | null; p90: number | null; p99: number | null };
  goodputRequestsPerSecond: number;
}

export function serveTable(levels: ServeLevelResult[]): Table {
  const ms = (p: ServeLevelResult['ttftMs'], d: number) => [p.p50, p.p90, p.p99].map((x) => fmt(x, d)).join('/');
  return {
    title: 'Serving',
    head: [
      'concurrency',
      'offered req/s',
      'requests',
      'errors',
      'in tok/s',
      'out tok/s',
      'TTFT p50/p90/p99 ms',
      'ITL p50/p90/p99 ms',
      'goodput req/s',
    ],
    rows: levels.map((l) => [
      String(l.concurrency),
      l.requestRate === undefined ? '-' : String(l.requestRate),
      String(l.requests),
      String(l.errors),
      fmt(l.inputTokensPerSecond),
      fmt(l.outputTokensPerSecond),
      ms(l.ttftMs, 0),
      ms(l.itlMs, 1),
      fmt(l.goodputRequestsPerSecond, 2),
    ]),
  };
}

/** Every measured part of a run that has rows, in report order. */
export function runTables(r: BenchRun): Table[] {
  const out: Table[] = [];
  if (r.kernels?.length)
    out.push({
      title: 'Kernels',
      head: ['op', 'instance', 'T', 'shape', 'ms', 'GB/s', 'GFLOP/s', 'bound', 'of roofline'],
      rows: r.kernels.map((k) => [
        k.op,
        k.name,
        String(k.tokens),
        k.shape,
        fmt(k.ms.value, 3),
        fmt(k.GBps),
        fmt(k.GFLOPs),
        k.bound,
        percent(k.ratio),
      ]),
    });
  if (r.decode?.points.length)
    out.push({
      title: 'Decode',
      head: [
        'decode batch',
        'context',
        'tokens/s',
        'ms/token',
        'GB/step',
        'GFLOP/step',
        'bound',
        'roofline tok/s',
        'ratio',
      ],
      rows: r.decode.points.map((p) => [
        String(p.batch),
        String(p.context),
        fmt(p.tokensPerSecond, 2),
        fmt(p.msPerOutputToken),
        fmt(p.bytesPerStep / 1e9, 3),
        fmt(p.flopsPerStep / 1e9),
        p.bound,
        fmt(p.rooflineTokensPerSecond, 2),
        percent(p.ratio),
      ]),
    });
  if (r.prefill?.length)
    out.push({
      title: 'Prefill',
      head: ['prefill tokens', 'tokens/s', 'seconds', 'GFLOP/s', 'of dense'],
      rows: r.prefill.map((p) => [
        String(p.tokens),
        fmt(p.tokensPerSecond),
        fmt(p.seconds.value, 2),
        fmt(p.GFLOPs),
        percent(p.ratioToDense),
      ]),
    });
  if (r.serve?.length) out.push(serveTable(r.serve));
  if (r.memory)
    out.push({
      title: 'Memory',
      head: ['context', 'KV per sequence (GB)'],
      rows: r.memory.kvBytesAt.map((k) => [String(k.context), fmt(k.bytes / 1e9, 3)]),
    });
  return out;
}

/** Aligned columns for a terminal: the first and every text column left, figures right. */
export function textTable(t: Table): string {
  const w = t.head.map((h, i) => Math.max(h.length, ...t.rows.map((r) => r[i].length)));
  const left = t.head.map((_, i) => i === 0 || t.rows.some((r) => !/^[-+\d.,/%]*$/.test(r[i])));
  return [t.head, ...t.rows]
    .map((r) =>
      r
        .map((c, i) => (left[i] ? c.padEnd(w[i]) : c.padStart(w[i])))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/** One line on the memory a run measured. */
export const memoryLine = (m: MemoryResult): string =>
  `weights ${fmt(m.weightsBytes / 1e9, 2)} GB, KV cache ${fmt(m.kvBytesPerToken / 1e3)} kB per token (${m.kvDType}), resident after load ${fmt(m.rssAfterLoadBytes / 1e9, 2)} GB, peak ${fmt(m.peakRssBytes / 1e9, 2)} GB`;

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
  fingerprint: {
    type: 'object',
    required: ['commit', 'package'],
    additionalProperties: { type: ['string', 'number'] },
  },
  units: obj(['GB'], { GB: { const: '1e9 bytes' } }),
  ceilings: obj(['readGBps', 'denseGFLOPs', 'denseKernel'], {
    readGBps: statSchema,
    denseGFLOPs: statSchema,
    denseKernel: { type: 'string' },
  }),
  kernels: {
    type: 'array',
    items: obj(
      [
        'op',
        'name',
        'tokens',
        'shape',
        'bytes',
        'flops',
        'ms',
        'GBps',
        'GFLOPs',
        'intensity',
        'attainableGFLOPs',
        'bound',
        'ratio',
      ],
      {
        op: { type: 'string' },
        name: { type: 'string' },
        tokens: int,
        shape: { type: 'string' },
        bytes: num,
        flops: num,
        ms: statSchema,
        GBps: num,
        GFLOPs: num,
        intensity: num,
        attainableGFLOPs: num,
        bound: { enum: ['memory', 'compute'] },
        ratio: num,
      },
    ),
  },
  decode: obj(['steps', 'points', 'skipped'], {
    steps: int,
    points: {
      type: 'array',
      items: obj(
        [
          'batch',
          'context',
          'stepMs',
          'tokensPerSecond',
          'msPerOutputToken',
          'bytesPerStep',
          'flopsPerStep',
          'bound',
          'rooflineTokensPerSecond',
          'ratio',
        ],
        {
          batch: int,
          context: int,
          stepMs: statSchema,
          tokensPerSecond: num,
          msPerOutputToken: num,
          bytesPerStep: num,
          flopsPerStep: num,
          bound: { enum: ['memory', 'compute'] },
          rooflineTokensPerSecond: num,
          ratio: num,
        },
      ),
    },
    skipped: {
      type: 'array',
      items: obj(['batch', 'context', 'reason'], { batch: int, context: int, reason: { type: 'string' } }),
    },
  }),
  prefill: {
    type: 'array',
    items: obj(['tokens', 'seconds', 'tokensPerSecond', 'flops', 'GFLOPs', 'ratioToDense'], {
      tokens: int,
      seconds: statSchema,
      tokensPerSecond: num,
      flops: num,
      GFLOPs: num,
      ratioToDense: num,
    }),
  },
  memory: obj(['weightsBytes', 'kvBytesPerToken', 'kvDType', 'rssAfterLoadBytes', 'peakRssBytes', 'kvBytesAt'], {
    weightsBytes: num,
    kvBytesPerToken: num,
    kvDType: { type: 'string' },
    rssAfterLoadBytes: num,
    peakRssBytes: num,
    kvBytesAt: { type: 'array', items: obj(['context', 'bytes'], { context: int, bytes: num }) },
  }),
  serve: {
    type: 'array',
    items: obj(
      [
        'concurrency',
        'requests',
        'errors',
        'seconds',
        'inputTokensPerSecond',
        'outputTokensPerSecond',
        'ttftMs',
        'itlMs',
        'goodputRequestsPerSecond',
      ],
      {
        concurrency: int,
        requestRate: { type: 'number', exclusiveMinimum: 0 },
        requests: int,
        errors: int,
        seconds: num,
        inputTokensPerSecond: num,
        outputTokensPerSecond: num,
        ttftMs: percentiles,
        itlMs: percentiles,
        goodputRequestsPerSecond: num,
      },
    ),
  },
});

let validator: ReturnType<Ajv['compile']> | undefined;

/** Checks a parsed results file; the error names the file and the first problem's path. */
export function validateRun(data: unknown, source: string): BenchRun {
  validator ??= new Ajv({ allErrors: false, strict: false }).compile(RUN_SCHEMA);
  if (!validator(data)) {
    const e = validator.errors?.[0];
    throw new InvalidArgumentError(
      `${source} is not a gptoss bench result (${RUN_SCHEMA_ID}): ${e?.instancePath || '/'} ${e?.message ?? 'is invalid'}`,
    );
  }
  return data as BenchRun;
}
