// The forward pass as a recorded program (native/DESIGN.md, "The data path of one step"). Built
// once per session and replayed by the addon for every step; reads like kernels/MODEL.md, "Forward
// pass".
import type { ModelConfig } from '../checkpoint/config.js';
import type { Device, KvDType, PrecisionMode } from '../backend/device.js';
import type {
  BufferSpec,
  NativeProgram,
  NativeSampling,
  PageTable,
  ProgramSpec,
  SampledToken,
} from '../backend/native.js';
import type { BufferId, OpSpec, WeightId } from '../backend/ops.js';

export interface LayerWeightIds {
  attnNorm: WeightId;
  qkv: { weight: WeightId; bias: WeightId; row: number; rows: number }[];
  sinks: WeightId;
  outWeight: WeightId;
  outBias: WeightId;
  mlpNorm: WeightId;
  routerWeight: WeightId;
  routerBias: WeightId;
  mlp1Blocks: WeightId;
  mlp1Scales: WeightId;
  mlp1Bias: WeightId;
  mlp2Blocks: WeightId;
  mlp2Scales: WeightId;
  mlp2Bias: WeightId;
}

export interface ModelWeightIds {
  embedding: WeightId;
  norm: WeightId;
  unembedding: WeightId;
  layers: LayerWeightIds[];
}

export interface GraphOptions {
  /** The backend the program runs on. */
  device: Device;
  /** Tokens per step (a longer prompt is fed in chunks of this many). */
  maxTokens: number;
  /** Logit rows per step at most (default maxTokens; the engine's: one per sequence). */
  maxLogitRows?: number;
  /** Positions the session's KV cache holds (every position of a step is below it). */
  maxContext: number;
  kvDType: KvDType;
  /** The precision mode (ProgramSpec.precision). */
  precision: PrecisionMode;
  /** Rows of each layer's KV pool when sequences share pages (the engine); default per-session caches. */
  pool?: { fullRows: number; slidingRows: number };
}

/** Rows a layer's KV cache needs: full layers the whole context; sliding layers a ring (kv_append.h). */
export function cacheRows(window: number, opts: Pick<GraphOptions, 'maxTokens' | 'maxContext'>): number {
  return window > 0 ? Math.min(opts.maxContext, window + opts.maxTokens - 1) : opts.maxContext;
}

export function buildProgram(cfg: ModelConfig, w: ModelWeightIds, opts: GraphOptions): ProgramSpec {
  const M = opts.maxTokens;
  const H = cfg.hiddenSize,
    D = cfg.headDim,
    Hq = cfg.numHeads,
    Hkv = cfg.numKvHeads;
  const E = cfg.numExperts,
    k = cfg.expertsPerToken;
  const buffers: BufferSpec[] = [];
  const buffer = (dtype: BufferSpec['dtype'], rows: number, cols: number): BufferId =>
    (buffers.push({ dtype, rows, cols }) - 1) as BufferId;

  const x = buffer('f32', M, H); // residual stream
  const h = buffer('f32', M, H); // normed input of the current block
  const qkv = buffer('f32', M, (Hq + 2 * Hkv) * D);
  const attn = buffer('f32', M, Hq * D);
  const router = buffer('f32', M, E);
  const expertIdx = buffer('i32', M, k);
  const expertWeight = buffer('f32', M, k);
  const slots = buffer('f32', M * k, H); // one expert output per (token, slot)

  const ops: OpSpec[] = [{ op: 'embed', w: w.embedding, y: x, H }];
  cfg.layerWindows.forEach((window, l) => {
    const L = w.layers[l];
    const rows = opts.pool ? (window > 0 ? opts.pool.slidingRows : opts.pool.fullRows) : cacheRows(window, opts);
    const kc = buffer(opts.kvDType, rows, Hkv * D);
    const vc = buffer(opts.kvDType, rows, Hkv * D);
    // Attention block (kernels/MODEL.md, "Forward pass", "Attention"): x += out(attention(rope(qkv(norm(x)))))
    ops.push({ op: 'rmsnorm', x, y: h, w: L.attnNorm, H, eps: cfg.rmsNormEps });
    for (const p of L.qkv)
      ops.push({ op: 'matmul_bf16', x: h, y: qkv, ycol: p.row, w: p.weight, b: p.bias, N: p.rows, K: H });
    ops.push({ op: 'rope', x: qkv, qHeads: Hq, kvHeads: Hkv, headDim: D });
    ops.push({ op: 'kv_append', x: qkv, xcol: Hq * D, vcol: (Hq + Hkv) * D, kc, vc, kvHeads: Hkv, headDim: D, window });
    ops.push({
      op: 'attention',
      x: qkv,
      y: attn,
      kc,
      vc,
      w: L.sinks,
      qHeads: Hq,
      kvHeads: Hkv,
      headDim: D,
      window,
      scale: 1 / Math.sqrt(D),
    });
    ops.push({ op: 'matmul_bf16', x: attn, y: x, w: L.outWeight, b: L.outBias, N: H, K: Hq * D, accumulate: true });
    // MoE block (kernels/MODEL.md, "Router", "Experts", "Combine"): x += sum_k w_k * expert_k(norm(x))
    ops.push({ op: 'rmsnorm', x, y: h, w: L.mlpNorm, H, eps: cfg.rmsNormEps });
    ops.push({ op: 'matmul_bf16', x: h, y: router, w: L.routerWeight, b: L.routerBias, N: E, K: H });
    ops.push({ op: 'router_topk', x: router, idx: expertIdx, wt: expertWeight, E, k });
    ops.push({
      op: 'moe_mxfp4',
      x: h,
      idx: expertIdx,
      y: slots,
      E,
      k,
      H,
      I: cfg.intermediateSize,
      w1b: L.mlp1Blocks,
      w1s: L.mlp1Scales,
      b1: L.mlp1Bias,
      w2b: L.mlp2Blocks,
      w2s: L.mlp2Scales,
      b2: L.mlp2Bias,
      limit: cfg.swigluLimit,
      alpha: cfg.swigluAlpha,
    });
    ops.push({ op: 'moe_combine', x, y: slots, wt: expertWeight, k, H });
  });
  // Final norm and unembedding (kernels/MODEL.md, "Forward pass"), only for the rows whose logits are asked for.
  // Without y, the unembedding writes the step's logits.
  ops.push({ op: 'rmsnorm', x, y: h, w: w.norm, H, eps: cfg.rmsNormEps, logitsRows: true });
  ops.push({ op: 'matmul_bf16', x: h, w: w.unembedding, N: cfg.vocabSize, K: H, logitsRows: true });

  return {
    device: opts.device,
    precision: opts.precision,
    maxTokens: M,
    ...(opts.maxLogitRows !== undefined && { maxLogitRows: opts.maxLogitRows }),
    maxContext: opts.maxContext,
    rope: ropeSpec(cfg),
    buffers,
    ops,
  };
}

/**
 * The page tables of a session's program (one sequence; each layer's cache one contiguous page,
 * the whole pool: kv_pages.h's ring = 1, page_size = capacity case).
 */
export function sessionPageTables(
  cfg: ModelConfig,
  opts: Pick<GraphOptions, 'maxTokens' | 'maxContext'>,
): { full: PageTable; sliding: PageTable } {
  const rows = (sliding: boolean) => {
    const windows = cfg.layerWindows.filter((w) => w > 0 === sliding);
    return windows.length ? Math.min(...windows.map((w) => cacheRows(w, opts))) : 1;
  };
  return {
    full: { table: Int32Array.of(0), ring: 1, pageSize: rows(false) },
    sliding: { table: Int32Array.of(0), ring: 1, pageSize: rows(true) },
  };
}

/** The rotary embedding's parameters as a program carries them (kernels/MODEL.md, "YaRN rotary"). */
export function ropeSpec(cfg: ModelConfig): ProgramSpec['rope'] {
  return {
    theta: cfg.ropeTheta,
    factor: cfg.ropeScalingFactor,
    ntkAlpha: cfg.ropeNtkAlpha,
    ntkBeta: cfg.ropeNtkBeta,
    initialContext: cfg.initialContextLength,
    headDim: cfg.headDim,
  };
}

/** Bytes of one expert: MXFP4 blocks and E8M0 scales of both matrices, and their bf16 biases. */
export function expertBytes(cfg: ModelConfig): number {
  const H = cfg.hiddenSize,
    I = cfg.intermediateSize;
  return (2 * I * H) / 2 + (2 * I * H) / 32 + 2 * I * 2 + (H * I) / 2 + (H * I) / 32 + H * 2;
}

/** Matmul parameters one token uses in one layer: QKV, output, router, and k experts. */
export function activeLayerParams(cfg: ModelConfig): number {
  const H = cfg.hiddenSize,
    D = cfg.headDim;
  return (
    (cfg.numHeads + 2 * cfg.numKvHeads) * D * H +
    H * cfg.numHeads * D +
    cfg.numExperts * H +
    cfg.expertsPerToken * 3 * cfg.intermediateSize * H
  );
}

/** Distinct experts `tokens` tokens touch under uniform top-k routing, in expectation (k for one). */
export const expectedExperts = (E: number, k: number, tokens: number): number =>
  tokens === 1 ? k : E * (1 - Math.pow(1 - k / E, tokens));

/**
 * Bytes of weights and KV cache one decode step reads at context `ctx` with `batch` sequences (for
 * roofline ratios): dense weights once, the experts the batch touches (the expectation under
 * uniform top-k routing; exactly k for one token) and every sequence's keys and values.
 */
export function decodeBytes(cfg: ModelConfig, ctx: number, kvBytes: number, batch = 1): number {
  const H = cfg.hiddenSize,
    D = cfg.headDim,
    Hq = cfg.numHeads,
    Hkv = cfg.numKvHeads;
  const E = cfg.numExperts,
    k = cfg.expertsPerToken;
  const qkvRows = (Hq + 2 * Hkv) * D;
  const perExpert = expertBytes(cfg);
  const experts = expectedExperts(E, k, batch);
  let bytes = batch * H * 2 /* embedding rows */ + H * 2 + cfg.vocabSize * H * 2; /* final norm, unembedding */
  cfg.layerWindows.forEach((window) => {
    bytes += 2 * H * 2 + qkvRows * H * 2 + qkvRows * 2 + Hq * 2 + H * Hq * D * 2 + H * 2;
    bytes += E * H * 2 + E * 2 + experts * perExpert;
    const keys = window > 0 ? Math.min(window, ctx + 1) : ctx + 1;
    bytes += batch * 2 * keys * Hkv * D * kvBytes;
  });
  return bytes;
}

/**
 * One sequence's step over a program's step(): the tokens at `positions`, logits of rows
 * [logitsStart, tokens) into `out`, and with `sampling`, a draw from the last row (a failed draw
 * rejects with its typed error). Sessions, op tests and kernel benchmarks step this way.
 */
export async function stepSequence(
  program: NativeProgram,
  tables: { full: PageTable; sliding: PageTable },
  o: {
    tokens: Int32Array;
    positions: Int32Array;
    logitsStart: number;
    out: Float32Array | null;
    sampling?: NativeSampling | null;
  },
): Promise<SampledToken | undefined> {
  const T = o.tokens.length;
  const logitRows = Int32Array.from({ length: T - o.logitsStart }, (_, i) => o.logitsStart + i);
  const rows = await program.step({
    tokens: o.tokens,
    positions: o.positions,
    seqs: new Int32Array(T),
    ...tables,
    logitRows,
    out: o.out,
    sampling: o.sampling
      ? Array.from(logitRows, (_, i) => (i === logitRows.length - 1 ? o.sampling! : null))
      : undefined,
  });
  const last = rows.at(-1);
  if (!last) return undefined;
  if ('error' in last) throw last.error;
  return last;
}
