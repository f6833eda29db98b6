// `gptoss bench kernels`: every op of the forward pass alone, at the real gpt-oss shapes, with the
// bytes and operations it must move and do declared per call, placed against the ceilings measured
// in the same run (host read bandwidth; the dense bf16 matmul rate of our own matmul_bf16).
// Weights are synthetic; an op is repeated over distinct weight copies (as over a model's layers)
// until one pass streams a few hundred MB, so what is timed is not a cache-resident loop.
import type { ModelConfig } from '../checkpoint/config.js';
import {
  type Ceilings,
  type KernelCall,
  type KernelResult,
  measureReadGBps,
  ordinaryTokens,
  type Stat,
  stat,
  timeRuns,
} from './run.js';
import { expectedExperts, expertBytes, ropeSpec, stepSequence } from '../engine/graph.js';
import { seededRandom } from './rng.js';
import type { Device } from '../backend/device.js';
import { addon, type BufferSpec, type SyntheticTensorSpec } from '../backend/native.js';
import type { BufferId, OpSpec, WeightId } from '../backend/ops.js';
import { sampleLogits } from '../engine/sampler.js';
import { mxfp4ScaleCentre } from '../engine/synthetic.js';

type Tensor = Omit<SyntheticTensorSpec, 'seed' | 'name'>;

export interface Case extends KernelCall {
  /** The weights of one copy of the op. */
  weights: Record<string, Tensor>;
  buffers: Record<string, BufferSpec>;
  /** Buffers written before timing (expert choices, routing weights). */
  init?: Record<string, (copy: number) => ArrayBufferView>;
  /** Buffers of which each copy gets its own (a KV cache per layer). */
  perCopy?: string[];
  op_: (w: Record<string, WeightId>, b: (name: string) => BufferId) => OpSpec;
  positions: number[];
  /** Upper bound on copies (a 1.2 GB unembedding is timed once per pass). */
  maxCopies?: number;
}

const bf16 = (elements: number, a = 0.02): Tensor => ({ kind: 'bf16-uniform', bytes: elements * 2, a });
const u8 = (bytes: number, a = 0): Tensor => ({ kind: a ? 'u8-around' : 'u8-uniform', bytes, a });

/** A deterministic pick of `k` distinct experts out of `E` for each of `T` tokens. */
function experts(T: number, E: number, k: number, seed: number): Int32Array {
  const out = new Int32Array(T * k);
  const rand = seededRandom(seed);
  for (let t = 0; t < T; t++) {
    const chosen = new Set<number>();
    while (chosen.size < Math.min(k, E)) chosen.add(Math.floor(rand() * E));
    out.set([...chosen], t * k);
  }
  return out;
}

const f32 = (rows: number, cols: number): BufferSpec => ({ dtype: 'f32', rows, cols });

/** y[T, N] = x[T, K] W^T + b with bf16 weights: one matmul_bf16 call. */
function matmulCase(name: string, T: number, N: number, K: number, positions: number[], maxCopies?: number): Case {
  return {
    op: 'matmul_bf16',
    name,
    tokens: T,
    shape: `T=${T} N=${N} K=${K}`,
    bytes: N * K * 2 + N * 2 + T * K * 4 + T * N * 4,
    flops: 2 * T * N * K,
    weights: { w: bf16(N * K, Math.sqrt(3 / K)), b: bf16(N) },
    buffers: { x: f32(T, K), y: f32(T, N) },
    op_: (w, b) => ({ op: 'matmul_bf16', x: b('x'), y: b('y'), w: w.w, b: w.b, N, K }),
    positions,
    maxCopies,
  };
}

export function kernelCases(cfg: ModelConfig, T: number, context: number): Case[] {
  const H = cfg.hiddenSize,
    I = cfg.intermediateSize,
    E = cfg.numExperts,
    k = cfg.expertsPerToken,
    D = cfg.headDim;
  const Hq = cfg.numHeads,
    Hkv = cfg.numKvHeads,
    V = cfg.vocabSize,
    window = cfg.slidingWindow;
  const qkvN = (Hq + 2 * Hkv) * D;
  const positions = Array.from({ length: T }, (_, i) => context + i);
  const matmul = (name: string, N: number, K: number, maxCopies?: number) =>
    matmulCase(name, T, N, K, positions, maxCopies);
  const perExpert = expertBytes(cfg);
  const used = expectedExperts(E, k, T);
  const attention = (window: number): Case => {
    const keys = window > 0 ? Math.min(window, context + 1) : context + 1; // keys the last token sees
    const rows = context + T;
    // Each query sees its own prefix: average keys per query over the T tokens.
    const seen = positions.reduce((a, p) => a + (window > 0 ? Math.min(window, p + 1) : p + 1), 0);
    return {
      op: 'attention',
      name: `${window ? `sliding ${window}` : 'full'}, ctx ${context}`,
      tokens: T,
      shape: `T=${T} heads ${Hq}/${Hkv}x${D} keys<=${keys}`,
      bytes:
        2 * Math.min(rows, window > 0 ? window + T - 1 : rows) * Hkv * D * 4 + T * qkvN * 4 + T * Hq * D * 4 + Hq * 2,
      flops: 4 * seen * Hq * D,
      weights: { sinks: bf16(Hq, 1) },
      buffers: { x: f32(T, qkvN), y: f32(T, Hq * D), kc: f32(rows, Hkv * D), vc: f32(rows, Hkv * D) },
      perCopy: ['kc', 'vc'],
      op_: (w, b) => ({
        op: 'attention',
        x: b('x'),
        y: b('y'),
        kc: b('kc'),
        vc: b('vc'),
        w: w.sinks,
        qHeads: Hq,
        kvHeads: Hkv,
        headDim: D,
        window,
        scale: 1 / Math.sqrt(D),
      }),
      positions,
      maxCopies: 8,
    };
  };
  return [
    {
      op: 'embed',
      name: 'embedding',
      tokens: T,
      shape: `T=${T} H=${H} V=${V}`,
      bytes: T * H * 2 + T * H * 4,
      flops: T * H,
      weights: { w: bf16(V * H, 1) },
      buffers: { y: f32(T, H) },
      op_: (w, b) => ({ op: 'embed', w: w.w, y: b('y'), H }),
      positions,
      maxCopies: 1,
    },
    {
      op: 'rmsnorm',
      name: 'norm',
      tokens: T,
      shape: `T=${T} H=${H}`,
      bytes: T * H * 8 + H * 2,
      flops: 4 * T * H,
      weights: { w: bf16(H, 1) },
      buffers: { x: f32(T, H), y: f32(T, H) },
      op_: (w, b) => ({ op: 'rmsnorm', x: b('x'), y: b('y'), w: w.w, H, eps: cfg.rmsNormEps }),
      positions,
    },
    matmul('qkv', qkvN, H),
    {
      op: 'rope',
      name: 'q and k',
      tokens: T,
      shape: `T=${T} heads ${Hq}+${Hkv}x${D}`,
      bytes: 2 * T * (Hq + Hkv) * D * 4,
      flops: 3 * T * (Hq + Hkv) * D,
      weights: {},
      buffers: { x: f32(T, qkvN) },
      op_: (_w, b) => ({ op: 'rope', x: b('x'), qHeads: Hq, kvHeads: Hkv, headDim: D }),
      positions,
    },
    {
      op: 'kv_append',
      name: 'full layer',
      tokens: T,
      shape: `T=${T} ${Hkv}x${D} K and V`,
      bytes: 2 * 2 * T * Hkv * D * 4,
      flops: 2 * T * Hkv * D,
      weights: {},
      buffers: { x: f32(T, qkvN), kc: f32(context + T, Hkv * D), vc: f32(context + T, Hkv * D) },
      perCopy: ['kc', 'vc'],
      op_: (_w, b) => ({
        op: 'kv_append',
        x: b('x'),
        xcol: Hq * D,
        vcol: (Hq + Hkv) * D,
        kc: b('kc'),
        vc: b('vc'),
        kvHeads: Hkv,
        headDim: D,
        window: 0,
      }),
      positions,
      maxCopies: 8,
    },
    attention(0),
    attention(window),
    matmul('attention output', H, Hq * D),
    matmul('router', E, H),
    {
      op: 'router_topk',
      name: `top-${k} of ${E}`,
      tokens: T,
      shape: `T=${T} E=${E} k=${k}`,
      bytes: T * E * 4 + T * k * 8,
      flops: 3 * T * E,
      weights: {},
      buffers: { x: f32(T, E), idx: { dtype: 'i32', rows: T, cols: k }, wt: f32(T, k) },
      op_: (_w, b) => ({ op: 'router_topk', x: b('x'), idx: b('idx'), wt: b('wt'), E, k }),
      positions,
    },
    {
      op: 'moe_mxfp4',
      name: `${k} of ${E} experts`,
      tokens: T,
      shape: `T=${T} E=${E} k=${k} H=${H} I=${I} (${used.toFixed(1)} experts read)`,
      bytes: used * perExpert + T * H * 4 + T * k * H * 4,
      flops: 2 * T * k * (2 * I * H + H * I),
      weights: {
        w1b: u8((E * 2 * I * H) / 2),
        w1s: u8((E * 2 * I * H) / 32, mxfp4ScaleCentre(H)),
        b1: bf16(E * 2 * I),
        w2b: u8((E * H * I) / 2),
        w2s: u8((E * H * I) / 32, mxfp4ScaleCentre(I)),
        b2: bf16(E * H),
      },
      buffers: { x: f32(T, H), idx: { dtype: 'i32', rows: T, cols: k }, y: f32(T * k, H) },
      // One set of experts (a layer's worth is 0.4-1.6 GB); each copy routes to other experts.
      perCopy: ['idx'],
      init: { idx: (c) => experts(T, E, k, c + 1) },
      op_: (w, b) => ({
        op: 'moe_mxfp4',
        x: b('x'),
        idx: b('idx'),
        y: b('y'),
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
        limit: cfg.swigluLimit,
        alpha: cfg.swigluAlpha,
      }),
      positions,
      maxCopies: 8,
    },
    {
      op: 'moe_combine',
      name: `${k} slots`,
      tokens: T,
      shape: `T=${T} k=${k} H=${H}`,
      bytes: T * k * H * 4 + 2 * T * H * 4 + T * k * 4,
      flops: 2 * T * k * H,
      weights: {},
      buffers: { x: f32(T, H), y: f32(T * k, H), wt: f32(T, k) },
      op_: (_w, b) => ({ op: 'moe_combine', x: b('x'), y: b('y'), wt: b('wt'), k, H }),
      positions,
    },
    matmul('unembedding', V, H, 1),
  ];
}

/** Copies so that a pass streams >= 256 MB of weights, at most 16 (and the case's own cap). */
function copiesFor(c: Case): number {
  const wbytes = Object.values(c.weights).reduce((a, t) => a + t.bytes, 0);
  const perCopyBytes = (c.perCopy ?? []).reduce((a, n) => a + c.buffers[n].rows * c.buffers[n].cols * 4, 0);
  const unit = c.op === 'moe_mxfp4' ? c.bytes : wbytes + perCopyBytes;
  return Math.max(1, Math.min(c.maxCopies ?? 16, unit > 0 ? Math.ceil(256e6 / unit) : 16));
}

/** Milliseconds per call of one case: the op over `copies` weight sets in one program, per op. */
export async function timeCase(c: Case, cfg: ModelConfig, seed: number, device: Device = 'cpu'): Promise<number[]> {
  const { Weights, Program } = addon();
  const copies = copiesFor(c);
  const weights = new Weights();
  try {
    // moe_mxfp4 shares one set of experts between copies (routing differs); others get a set each.
    const sets = c.op === 'moe_mxfp4' ? 1 : copies;
    const specs: SyntheticTensorSpec[] = [];
    for (let s = 0; s < sets; s++)
      for (const [name, t] of Object.entries(c.weights))
        specs.push({ ...t, name: `${c.name}.${s}.${name}`, seed: seed + specs.length });
    const ids = specs.length ? await weights.addSynthetic(specs) : [];
    const names = Object.keys(c.weights);
    const bufs: BufferSpec[] = [];
    const index = new Map<string, number>();
    for (const [name, spec] of Object.entries(c.buffers))
      for (let i = 0; i < (c.perCopy?.includes(name) ? copies : 1); i++) index.set(`${name}.${i}`, bufs.push(spec) - 1);
    const bufferOf = (copy: number) => (name: string) =>
      index.get(`${name}.${c.perCopy?.includes(name) ? copy : 0}`)! as BufferId;
    const ops = Array.from({ length: copies }, (_, i) => {
      const s = i % sets;
      const w = Object.fromEntries(names.map((n, j) => [n, ids[s * names.length + j] as WeightId]));
      return c.op_(w, bufferOf(i));
    });
    const program = new Program(weights, {
      device,
      precision: 'default',
      maxTokens: c.tokens,
      maxContext: Math.max(...c.positions) + 1,
      rope: ropeSpec(cfg),
      buffers: bufs,
      ops,
    });
    // One sequence whose KV pool (the case's kc, if any) is one page.
    const page = { table: Int32Array.of(0), ring: 1, pageSize: c.buffers.kc?.rows ?? 1 };
    try {
      for (const [name, make] of Object.entries(c.init ?? {}))
        for (let i = 0; i < copies; i++) program.writeBuffer(bufferOf(i)(name), make(i));
      const tokens = Int32Array.from(c.positions, (_, i) => (i * 7919) % ordinaryTokens(cfg.vocabSize));
      const positions = Int32Array.from(c.positions);
      const runs = await timeRuns(
        () =>
          stepSequence(
            program,
            { full: page, sliding: page },
            { tokens, positions, logitsStart: positions.length, out: null },
          ),
        3,
        300,
        40,
      );
      return runs.map((ms) => ms / copies);
    } finally {
      program.dispose();
    }
  } finally {
    weights.dispose();
  }
}

/** The dense ceiling: our matmul_bf16 at a large, compute-bound shape (256 tokens, 16384 x H). */
export async function measureDenseGFLOPs(cfg: ModelConfig): Promise<{ stat: Stat; kernel: string }> {
  const c = matmulCase(
    'dense',
    256,
    16384,
    cfg.hiddenSize,
    Array.from({ length: 256 }, (_, i) => i),
    4,
  );
  const ms = await timeCase(c, cfg, 97);
  return { stat: stat(ms.map((m) => c.flops / (m / 1e3) / 1e9)), kernel: `matmul_bf16 (ours, CPU) ${c.shape}` };
}

export async function measureCeilings(cfg: ModelConfig): Promise<Ceilings> {
  const readGBps = await measureReadGBps();
  const dense = await measureDenseGFLOPs(cfg);
  return { readGBps, denseGFLOPs: dense.stat, denseKernel: dense.kernel };
}

export function placeKernel(c: KernelCall, ms: number[], ceilings: Ceilings): KernelResult {
  const s = stat(ms);
  const GBps = c.bytes / (s.value / 1e3) / 1e9;
  const GFLOPs = c.flops / (s.value / 1e3) / 1e9;
  const intensity = c.flops / c.bytes;
  const memoryRoof = intensity * ceilings.readGBps.value;
  const attainable = Math.min(ceilings.denseGFLOPs.value, memoryRoof);
  return {
    op: c.op,
    name: c.name,
    tokens: c.tokens,
    shape: c.shape,
    bytes: c.bytes,
    flops: c.flops,
    ms: s,
    GBps,
    GFLOPs,
    intensity,
    attainableGFLOPs: attainable,
    bound: memoryRoof < ceilings.denseGFLOPs.value ? 'memory' : 'compute',
    ratio: GFLOPs / attainable,
  };
}

export interface KernelBenchOptions {
  config: ModelConfig;
  tokens?: number[];
  /** Context of the attention and kv_append cases (decode at this position). */
  context?: number;
  ceilings: Ceilings;
  progress?: (done: number, total: number, label: string) => void;
}

export async function runKernelBench(o: KernelBenchOptions): Promise<KernelResult[]> {
  const tokens = o.tokens ?? [1, 128];
  const cases = tokens.flatMap((T) => kernelCases(o.config, T, T === 1 ? (o.context ?? 4096) : 0));
  const total = cases.length + 1;
  const out: KernelResult[] = [];
  for (const [i, c] of cases.entries()) {
    o.progress?.(i, total, `${c.op} ${c.name} T=${c.tokens}`);
    out.push(placeKernel(c, await timeCase(c, o.config, 1000 * i + 1), o.ceilings));
  }
  // The sampler over the vocabulary (temperature 1: a softmax and a draw; reads the row once).
  o.progress?.(cases.length, total, 'sample');
  const V = o.config.vocabSize;
  const logits = Float32Array.from({ length: V }, (_, i) => Math.sin(i * 12.9898) * 4);
  const draws = 20;
  const ms = (await timeRuns(() => sampleLogits(logits, {}, draws), 3, 200, 20)).map((m) => m / draws);
  out.push(
    placeKernel(
      { op: 'sample', name: 'temperature 1', tokens: 1, shape: `V=${V}`, bytes: V * 4, flops: 5 * V },
      ms,
      o.ceilings,
    ),
  );
  o.progress?.(total, total, 'done');
  return out;
}
