// The typed view of the addon and its loader (node-gyp-build: prebuilds/ first, then build/).
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

import { fromNative, UnsupportedError } from './errors.js';

export type BufferDType = 'f32' | 'bf16' | 'i32';

export interface SyntheticTensorSpec {
  name: string;
  kind: 'bf16-uniform' | 'bf16-const' | 'u8-uniform' | 'u8-around';
  bytes: number;
  seed: number;
  /** bf16-uniform: half-width; bf16-const: the value; u8-around: the centre byte. */
  a: number;
}

/** A tensor id in a NativeWeights table. */
export type WeightId = number & { readonly __brand: 'WeightId' };
/** A buffer index in a program spec. */
export type BufferId = number & { readonly __brand: 'BufferId' };

export interface NativeWeights {
  mapFile(path: string): number;
  addMapped(file: number, byteOffset: number, byteLength: number, name: string): WeightId;
  addBytes(bytes: Uint8Array, name: string): WeightId;
  addSynthetic(specs: SyntheticTensorSpec[]): Promise<WeightId[]>;
  prefetch(file: number, byteOffset: number, byteLength: number): Promise<void>;
  dispose(): void;
  readonly disposed: boolean;
  readonly ownedBytes: number;
}

export interface BufferSpec {
  dtype: BufferDType;
  rows: number;
  cols: number;
}

/** One op of a recorded step; field meanings are in native/program.h and kernels/<op>.h. */
export interface OpSpec {
  op:
    | 'embed'
    | 'rmsnorm'
    | 'matmul_bf16'
    | 'rope'
    | 'kv_append'
    | 'attention'
    | 'router_topk'
    | 'moe_mxfp4'
    | 'moe_combine';
  [field: string]: string | number;
}

export interface ProgramSpec {
  maxTokens: number;
  rope: { theta: number; factor: number; ntkAlpha: number; ntkBeta: number; initialContext: number; headDim: number };
  buffers: BufferSpec[];
  ops: OpSpec[];
}

/** Sampling parameters as the addon reads them (lib/sampler.ts builds these). */
export interface NativeSampling {
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  presencePenalty: number;
  frequencyPenalty: number;
  repetitionPenalty: number;
  biasIds?: Int32Array;
  biasValues?: Float32Array;
  historyIds?: Int32Array;
  historyCounts?: Int32Array;
  banFrom: number;
  rng: BigUint64Array;
  /** Also report the model's own log-probabilities: the chosen token's and this many alternatives (-1: none). */
  topLogprobs?: number;
  /** Constrained decoding: ceil(V / 32) words, bit (id & 31) of word id >> 5 set = id allowed. */
  allowMask?: Int32Array;
}

export interface SampledToken {
  token: number;
  /** Under the distribution sampled from (after temperature, top-k/p, penalties). */
  logprob: number;
  /** Under the model's own distribution (log-softmax of the raw logits), when asked for. */
  modelLogprob?: number;
  top?: { token: number; logprob: number }[];
}

/** A logit row whose draw failed (its sequence fails; the step's other rows are unaffected). */
export interface RowError {
  error: Error;
}

export interface NativeProgram {
  run(
    tokens: Int32Array,
    positions: Int32Array,
    logitsStart: number,
    out: Float32Array | null,
    sampling?: NativeSampling | null,
  ): Promise<SampledToken | undefined>;
  step(args: {
    tokens: Int32Array;
    positions: Int32Array;
    seqs: Int32Array;
    full: { table: Int32Array; ring: number; pageSize: number };
    sliding: { table: Int32Array; ring: number; pageSize: number };
    logitRows: Int32Array;
    out: Float32Array | null;
    sampling?: (NativeSampling | null)[];
  }): Promise<(SampledToken | RowError | null)[]>;
  readBuffer(id: number): Uint8Array;
  writeBuffer(id: number, bytes: ArrayBufferView): void;
  dispose(): void;
  readonly disposed: boolean;
  readonly vocab: number;
}

export interface DeviceInfo {
  cpu: { simd: 'avx512' | 'avx2' | 'generic'; threads: number };
  cuda: {
    built: boolean;
    available: boolean;
    deviceCount: number;
    error?: string;
    name?: string;
    totalMemory?: number;
    computeCapability?: string;
  };
}

export interface Addon {
  Weights: new () => NativeWeights;
  Program: new (weights: NativeWeights, spec: ProgramSpec) => NativeProgram;
  deviceInfo(): DeviceInfo;
  sampleMany(logits: Float32Array, params: Omit<NativeSampling, 'rng'>, rng: BigUint64Array, count: number): Promise<Int32Array>;
  measureHostBandwidth(bytes: number, reps: number): Promise<{ bytesPerSecond: number; best: number; median: number }>;
  abiVersion: number;
}

export const packageRoot = fileURLToPath(new URL('..', import.meta.url));

let loaded: Addon | undefined;

/** Loads the addon once. Throws UnsupportedError with the remedies when no build is found. */
export function addon(): Addon {
  if (loaded) return loaded;
  const require = createRequire(import.meta.url);
  const load = require('node-gyp-build') as (dir: string) => Addon;
  try {
    // GPTOSS_ADDON names a specific build (the sanitizer build of `npm run test:asan`).
    loaded = process.env.GPTOSS_ADDON ? (require(process.env.GPTOSS_ADDON) as Addon) : load(packageRoot);
  } catch (e) {
    throw new UnsupportedError(
      `the native addon could not be loaded (${(e as Error).message}). ` +
        `Build it with \`npm rebuild node-gpt-oss\` (needs cmake and a C++17 compiler; nvcc adds CUDA), ` +
        `or \`npx node-gyp rebuild\` in the package for a CPU-only build.`,
      { cause: e },
    );
  }
  return loaded;
}

/** Calls into the addon, mapping its errors to the typed classes. */
export function native<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw fromNative(e);
  }
}

export async function nativeAsync<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw fromNative(e);
  }
}
