// What a model needs in memory on a device, worked out from its config before anything is
// allocated: weights, KV cache per token and at a context length, and whether it fits.
import { freemem, totalmem } from 'node:os';

import type { ModelConfig } from '../checkpoint/config.js';
import { type Device, type KvDType, kvDTypeBytes, kvDTypeFor, type PrecisionMode } from '../backend/device.js';
import { OutOfMemoryError } from '../errors.js';
import { buildProgram, cacheRows, expertBytes, type ModelWeightIds } from './graph.js';
import { addon } from '../backend/native.js';
import type { WeightId } from '../backend/ops.js';

export interface MemoryEstimate {
  device: Device;
  weightsBytes: number;
  /** The KV cache's dtype (the device's and the precision mode's, lib/backend/device.ts). */
  kvDType: KvDType;
  /** KV cache bytes per token of context, counting every layer (K and V in kvDType). */
  kvBytesPerToken: number;
  contextTokens: number;
  /** KV cache at contextTokens (sliding-window layers hold only their ring). */
  kvBytes: number;
  /**
   * A session program's arena at maxTokens per step: activation buffers and the largest kernel
   * scratch (native/runtime/program.h); 0 for a device this build has no backend for, or none of
   * which is usable here (planning needs the device).
   */
  arenaBytes: number;
  totalBytes: number;
  /** What the device has: host RAM for the CPU, the GPU's memory for CUDA (0 if none). */
  deviceBytes: number;
  /** What is free now: the host's available RAM (MemAvailable: free plus reclaimable cache); on
   * CUDA the GPU's memory (the addon reports no free figure). */
  availableBytes: number;
  /** Why the device has no memory to offer: no usable CUDA device, or an addon built without CUDA. */
  unavailable?: string;
  /** Whether totalBytes fits what the device has at all (deviceBytes). */
  fits: boolean;
  /** Whether totalBytes fits what is free now (availableBytes). */
  fitsAvailable: boolean;
}

/** Bytes of weights the config implies (bf16 dense tensors, MXFP4 experts with their scales). */
export function weightBytes(c: ModelConfig): number {
  const H = c.hiddenSize,
    E = c.numExperts,
    D = c.headDim;
  const qkv = (c.numHeads + 2 * c.numKvHeads) * D;
  const perLayer =
    2 * H * 2 +
    (qkv * H + qkv) * 2 +
    c.numHeads * 2 +
    (H * c.numHeads * D + H) * 2 +
    (E * H + E) * 2 +
    E * expertBytes(c);
  return c.numLayers * perLayer + 2 * c.vocabSize * H * 2 + H * 2;
}

export function estimateMemory(
  config: ModelConfig,
  options: {
    device?: Device;
    mode?: PrecisionMode;
    contextTokens?: number;
    maxTokens?: number;
    /** Logit rows per step at most (default maxTokens). */
    maxLogitRows?: number;
    weightsBytes?: number;
    kvBytes?: number;
  } = {},
): MemoryEstimate {
  const device = options.device ?? 'cpu';
  const precision = options.mode ?? 'default';
  const kvDType = kvDTypeFor(device, precision);
  const context = options.contextTokens ?? Math.min(4096, config.maxContext);
  const maxTokens = options.maxTokens ?? Math.min(128, context);
  const width = 2 * config.numKvHeads * config.headDim * kvDTypeBytes(kvDType);
  const kvBytes =
    options.kvBytes ??
    config.layerWindows.reduce((a, w) => a + cacheRows(w, { maxTokens, maxContext: context }) * width, 0);
  const weightsBytes = options.weightsBytes ?? weightBytes(config);
  const arenaBytes = programArenaBytes(config, {
    device,
    precision,
    kvDType,
    maxTokens,
    maxLogitRows: options.maxLogitRows,
    maxContext: context,
  });
  let deviceBytes = totalmem();
  let availableBytes = Math.min(deviceBytes, freemem()); // libuv reads MemAvailable on Linux
  let unavailable: string | undefined;
  if (device === 'cuda') {
    const cuda = addon().deviceInfo().cuda;
    deviceBytes = availableBytes = cuda.available ? (cuda.totalMemory ?? 0) : 0;
    if (!cuda.available) unavailable = cuda.error ?? 'no usable CUDA device';
  }
  const totalBytes = weightsBytes + kvBytes + arenaBytes;
  return {
    device,
    weightsBytes,
    kvDType,
    kvBytesPerToken: config.numLayers * width,
    contextTokens: context,
    kvBytes,
    arenaBytes,
    totalBytes,
    deviceBytes,
    availableBytes,
    ...(unavailable !== undefined && { unavailable }),
    fits: totalBytes <= deviceBytes,
    fitsAvailable: totalBytes <= availableBytes,
  };
}

/** The arena the addon will allocate for a session program of this shape (planMemory: no allocation). */
export function programArenaBytes(
  config: ModelConfig,
  o: {
    device: Device;
    precision: PrecisionMode;
    kvDType: KvDType;
    maxTokens: number;
    maxLogitRows?: number;
    maxContext: number;
  },
): number {
  if (!addon().devices.includes(o.device)) return 0;
  if (o.device === 'cuda' && !addon().deviceInfo().cuda.available) return 0;
  // The plan reads the ops' shapes, not the weights: any ids will do.
  const id = 0 as WeightId;
  const rows = (config.numHeads + 2 * config.numKvHeads) * config.headDim;
  const layer = {
    attnNorm: id,
    qkv: [{ weight: id, bias: id, row: 0, rows }],
    sinks: id,
    outWeight: id,
    outBias: id,
    mlpNorm: id,
    routerWeight: id,
    routerBias: id,
    mlp1Blocks: id,
    mlp1Scales: id,
    mlp1Bias: id,
    mlp2Blocks: id,
    mlp2Scales: id,
    mlp2Bias: id,
  };
  const ids: ModelWeightIds = {
    embedding: id,
    norm: id,
    unembedding: id,
    layers: config.layerWindows.map(() => layer),
  };
  const spec = buildProgram(config, ids, {
    device: o.device,
    maxTokens: o.maxTokens,
    maxLogitRows: o.maxLogitRows,
    maxContext: o.maxContext,
    kvDType: o.kvDType,
    precision: o.precision,
  });
  return addon().planMemory(spec, config.vocabSize).arena;
}

export interface KvPoolOptions {
  /** The KV cache's dtype (Model.kvDType). */
  kvDType: KvDType;
  maxSequences: number;
  maxContext: number;
  maxBatchTokens: number;
  pageSize: number;
  kvCacheBytes?: number;
}

/** How the engine's shared KV pools are sized (lib/engine/engine.ts), worked out before any is allocated. */
export interface KvPoolPlan {
  /** Page-table entries per sequence: enough pages for maxContext. */
  tableRow: number;
  /** The widest sliding window of any layer (0: none). */
  window: number;
  /** Bytes of one full-attention page over every full-attention layer (at least one layer's worth). */
  pageBytes: number;
  fullPages: number;
  slidingPages: number;
  /** Bytes of both pools over all layers (K and V in kvDType). */
  bytes: number;
}

export function kvPoolPlan(c: ModelConfig, o: KvPoolOptions): KvPoolPlan {
  const P = o.pageSize;
  const width = 2 * c.numKvHeads * c.headDim * kvDTypeBytes(o.kvDType);
  const window = Math.max(0, ...c.layerWindows);
  const fullLayers = c.layerWindows.filter((w) => w === 0).length;
  const pageBytes = Math.max(1, fullLayers) * P * width;
  const tableRow = Math.ceil(o.maxContext / P);
  const fullPages = o.kvCacheBytes !== undefined ? Math.floor(o.kvCacheBytes / pageBytes) : o.maxSequences * tableRow;
  // A sequence holds at most the window before its next token plus one step of sliding pages
  // (and a page at each end); on top, room for cached prefixes' window pages. Per sequence, not
  // once: a sequence keeps its last step's pages until it next runs, so the steps' tokens held at
  // once can exceed one step's budget (counting the budget once starved the pool: the server
  // isolation tests' hang-ups left a sequence running, and a full pool answered 429).
  const perSeq = Math.ceil((window + o.maxBatchTokens) / P) + 2;
  const slidingPages = o.maxSequences * perSeq + Math.ceil(fullPages / 4);
  const bytes = (fullPages * fullLayers + slidingPages * (c.layerWindows.length - fullLayers)) * P * width;
  return { tableRow, window, pageBytes, fullPages, slidingPages, bytes };
}

/** The device cannot hold the model: raised before anything is allocated, with the figures. */
export class InsufficientMemoryError extends OutOfMemoryError {
  readonly estimate: MemoryEstimate;
  /** `what` needs the memory (default the model); `hint` says what to change. */
  constructor(estimate: MemoryEstimate, what = 'the model', hint = '') {
    const gb = (b: number) => `${(b / 1e9).toFixed(2)} GB`;
    const e = estimate;
    const has =
      e.unavailable !== undefined
        ? `there is no GPU to hold it (${e.unavailable})`
        : e.totalBytes <= e.deviceBytes
          ? `the ${e.device === 'cpu' ? 'host' : 'GPU'} has ${gb(e.availableBytes)} available now (of ${gb(e.deviceBytes)})`
          : `the ${e.device === 'cpu' ? 'host' : 'GPU'} has ${gb(e.deviceBytes)}`;
    super(
      `${what} needs ${gb(e.totalBytes)} (${gb(e.weightsBytes)} of weights + ${gb(e.kvBytes)} of KV cache at ` +
        `${e.contextTokens} tokens + ${gb(e.arenaBytes)} of activations and scratch) but ${has}` +
        (hint ? `; ${hint}` : ''),
    );
    this.name = 'InsufficientMemoryError';
    this.estimate = estimate;
  }
}
