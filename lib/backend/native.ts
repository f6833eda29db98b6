// The typed view of the addon and its loader (node-gyp-build: prebuilds/ first, then build/). The
// addon is wrapped once, here: every function, constructor and method of it throws (or rejects
// with) the typed error classes of lib/errors.ts, so no call site can forget to map them.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

import type { Device, KvDType, PrecisionMode } from './device.js';
import { DeviceError, fromNative, InvalidArgumentError, UnsupportedError } from '../errors.js';
import type { NativeField, OpSpec, WeightId } from './ops.js';

export type { BufferId, OpSpec, WeightId } from './ops.js';

export type BufferDType = KvDType | 'i32';

export interface SyntheticTensorSpec {
  name: string;
  kind: 'bf16-uniform' | 'bf16-const' | 'u8-uniform' | 'u8-around';
  bytes: number;
  seed: number;
  /** bf16-uniform: half-width; bf16-const: the value; u8-around: the centre byte. */
  a: number;
}

export interface NativeWeights {
  mapFile(path: string): number;
  addMapped(file: number, byteOffset: number, byteLength: number, name: string): WeightId;
  addBytes(bytes: Uint8Array, name: string): WeightId;
  addSynthetic(specs: SyntheticTensorSpec[]): Promise<WeightId[]>;
  prefetch(file: number, byteOffset: number, byteLength: number): Promise<void>;
  /** Bytes of a file's mapping resident in this process and how many are mapped as 2 MB pages (Linux); null where unknown. */
  mappedState(file: number): { resident: number; huge: number } | null;
  /** Drops a range of a mapped file from the mapping and the page cache, so the next touch reads it again (into 2 MB pages). */
  evict(file: number, byteOffset: number, byteLength: number): void;
  /** Copies the weights to the device on a worker thread, held until dispose (programs made after it find them there). */
  upload(device: Device): Promise<void>;
  dispose(): void;
  readonly disposed: boolean;
  readonly ownedBytes: number;
}

export interface BufferSpec {
  dtype: BufferDType;
  rows: number;
  cols: number;
}

/** A recorded step (lib/engine/graph.ts builds it; native/runtime/program.h runs it). */
export interface ProgramSpec {
  /** The backend the program runs on. */
  device: Device;
  /** 'fp32': every product in f32 (the reference); 'default': a backend may use f16/bf16 products within 1e-3 of it. */
  precision: PrecisionMode;
  /** Tokens per step at most. */
  maxTokens: number;
  /** Logit rows per step at most (default maxTokens): sizes the device's logits buffer. */
  maxLogitRows?: number;
  /** Every position of a step is below this (sizes the attention's scratch). */
  maxContext: number;
  rope: { theta: number; factor: number; ntkAlpha: number; ntkBeta: number; initialContext: number; headDim: number };
  buffers: BufferSpec[];
  ops: OpSpec[];
}

/** Sampling parameters as the addon reads them (lib/engine/sampler.ts builds these). */
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

export interface PageTable {
  /** [sequences, ring] page ids. */
  table: Int32Array;
  ring: number;
  pageSize: number;
}

export interface StepArgs {
  tokens: Int32Array;
  positions: Int32Array;
  /** The page-table row (sequence) of each token. */
  seqs: Int32Array;
  full: PageTable;
  sliding: PageTable;
  /** Rows whose logits go to `out`, in order ([logitRows.length, vocab]). */
  logitRows: Int32Array;
  out: Float32Array | null;
  /** One entry per logit row: draw from it with these settings, or not (null). */
  sampling?: (NativeSampling | null)[];
}

/**
 * Bytes a program holds on its device: its arena (activations, the largest op scratch, logits, and
 * at most `runner`, the backend's own buffers such as the CUDA sampler's) and its KV pools.
 */
export interface ProgramMemory {
  device: string;
  activations: number;
  scratch: number;
  logits: number;
  kv: number;
  runner: number;
  arena: number;
  total: number;
}

export interface NativeProgram {
  step(args: StepArgs): Promise<(SampledToken | RowError | null)[]>;
  readBuffer(id: number): Uint8Array;
  writeBuffer(id: number, bytes: ArrayBufferView): void;
  dispose(): void;
  readonly disposed: boolean;
  readonly vocab: number;
  readonly memory: ProgramMemory;
  /**
   * What crossed from the device to the host for sampling over the program's steps: raw logit
   * rows, the device reductions' results, and the rows drawn from them (zeros on the CPU).
   */
  readonly transfers: { logitBytes: number; resultBytes: number; deviceRows: number; stepLaunches: number };
}

export interface DeviceInfo {
  /** bf16: precision 'default' takes AVX-512 BF16 products for the MXFP4 experts (hi/lo split, within
   * ~1e-5 of f32; kernels/cpu/simd_avx512bf16.cc); GPTOSS_BF16=0 turns them off. */
  cpu: { simd: 'avx512' | 'avx2' | 'generic'; bf16: boolean; threads: number };
  cuda: {
    built: boolean;
    /** The emulated build (npm run build:cuda-emu): the CPU runs the CUDA kernels; not a GPU. */
    emulated: boolean;
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
  sampleMany(
    logits: Float32Array,
    params: Omit<NativeSampling, 'rng'>,
    rng: BigUint64Array,
    count: number,
  ): Promise<Int32Array>;
  measureHostBandwidth(bytes: number, reps: number): Promise<{ bytesPerSecond: number; best: number; median: number }>;
  /** The op registry (kernels/ops.h): each op's fields; lib/backend/ops.ts mirrors it. */
  ops: Record<string, NativeField[]>;
  /** What a program built from `spec` would hold on its device (logits `vocab` wide), without allocating. */
  planMemory(spec: ProgramSpec, vocab: number): ProgramMemory;
  /** Devices this build has a backend for. */
  devices: Device[];
  /** The ops each of those backends implements in this build. */
  deviceOps: Record<Device, string[]>;
  abiVersion: number;
}

export const packageRoot = fileURLToPath(new URL('../..', import.meta.url));

let loaded: Addon | undefined;

/** The environment settings the native side reads, checked as flags are, before it reads them. */
function checkEnvironment(): void {
  const threads = process.env.GPTOSS_THREADS;
  if (threads !== undefined && !(/^\d+$/.test(threads) && Number(threads) >= 1 && Number(threads) <= 1024))
    throw new InvalidArgumentError(`GPTOSS_THREADS must be an integer in [1, 1024], got ${JSON.stringify(threads)}`);
  const simd = process.env.GPTOSS_SIMD;
  if (simd !== undefined && !SIMD_VARIANTS.includes(simd))
    throw new InvalidArgumentError(
      `GPTOSS_SIMD must be one of ${SIMD_VARIANTS.join(', ')}, got ${JSON.stringify(simd)}`,
    );
}
const SIMD_VARIANTS = ['avx512', 'avx2', 'generic'];

/** Loads the addon once. Throws UnsupportedError with the remedies when no build is found. */
export function addon(): Addon {
  if (loaded) return loaded;
  checkEnvironment();
  const require = createRequire(import.meta.url);
  const load = require('node-gyp-build') as (dir: string) => Addon;
  let raw: Addon;
  // GPTOSS_ADDON names a specific build (the sanitizer build of `npm run test:asan`);
  // GPTOSS_CUDA=emulate the emulated CUDA build (`npm run build:cuda-emu`).
  const emulate = process.env.GPTOSS_CUDA === 'emulate';
  const path =
    process.env.GPTOSS_ADDON ?? (emulate ? `${packageRoot}build-cuda-emu-addon/Release/gptoss.node` : undefined);
  try {
    raw = path ? (require(path) as Addon) : load(packageRoot);
  } catch (e) {
    if (emulate && !process.env.GPTOSS_ADDON)
      throw new UnsupportedError(
        `GPTOSS_CUDA=emulate: the emulated CUDA build was not found (${(e as Error).message}); build it with \`npm run build:cuda-emu\``,
        { cause: e },
      );
    throw new UnsupportedError(
      `the native addon could not be loaded (${(e as Error).message}). ` +
        `Build it with \`npm rebuild node-gpt-oss\` (needs cmake and a C++17 compiler; nvcc adds CUDA), ` +
        `or \`npx node-gyp rebuild\` in the package for a CPU-only build.`,
      { cause: e },
    );
  }
  loaded = typed(raw);
  // Said once, on stderr: device 'cuda' here is the CPU running the kernels, never a GPU.
  if (loaded.deviceInfo().cuda.emulated)
    process.stderr.write(
      `gptoss: device 'cuda' is emulated on the CPU (${path ?? 'this build'}): results are real, speed is not a GPU's\n`,
    );
  // A variant this CPU lacks falls back to the best it has (tests ask for each one): say so once.
  const want = process.env.GPTOSS_SIMD,
    got = loaded.deviceInfo().cpu.simd;
  if (want !== undefined && want !== got)
    process.stderr.write(`gptoss: GPTOSS_SIMD=${want} is not supported by this CPU; using ${got}\n`);
  return loaded;
}

// The native object behind each wrapper: native methods must get it, not the proxy, as `this`
// and as arguments (a Program's constructor unwraps its Weights).
const targets = new WeakMap<object, object>();
const unwrap = (v: unknown): unknown => (typeof v === 'object' && v !== null ? (targets.get(v) ?? v) : v);

/** A value the addon produced with native errors in it (a step's failed rows) mapped to typed ones. */
function mapResult(v: unknown): unknown {
  if (Array.isArray(v))
    for (const r of v)
      if (typeof r === 'object' && r !== null && 'error' in r)
        (r as { error: unknown }).error = fromNative((r as { error: unknown }).error);
  return v;
}

function call(fn: (...args: unknown[]) => unknown, self: unknown, args: unknown[]): unknown {
  let r: unknown;
  try {
    r = Reflect.apply(fn, self, args.map(unwrap));
  } catch (e) {
    throw fromNative(e);
  }
  if (r instanceof Promise)
    return r.then(mapResult, (e: unknown) => {
      throw fromNative(e);
    });
  return r;
}

/** Wraps a native object, function or class so that everything it throws is typed. */
function typed<T extends object>(target: T): T {
  if (typeof target === 'function') {
    const wrapped = new Proxy(target, {
      apply: (fn, self, args) => call(fn as (...a: unknown[]) => unknown, unwrap(self), args),
      construct: (C, args) => {
        let obj: object;
        try {
          obj = Reflect.construct(C as new (...a: unknown[]) => object, args.map(unwrap));
        } catch (e) {
          throw fromNative(e);
        }
        return typed(obj);
      },
    });
    targets.set(wrapped, target);
    return wrapped;
  }
  const methods = new Map<PropertyKey, unknown>();
  const wrapped = new Proxy(target, {
    get(t, key) {
      const v: unknown = Reflect.get(t, key, t);
      if (typeof v !== 'function') return v;
      let m = methods.get(key);
      if (!m) {
        // Classes (Weights, Program) keep their construct behaviour; functions and methods are called on the native object.
        m = /^[A-Z]/.test(String(key))
          ? typed(v as object)
          : (...args: unknown[]) => call(v as (...a: unknown[]) => unknown, t, args);
        methods.set(key, m);
      }
      return m;
    },
  });
  targets.set(wrapped, target);
  return wrapped;
}

/** What this process can run on: the CPU's SIMD variant and threads, and the CUDA backend's state. */
export function deviceInfo(): DeviceInfo {
  return addon().deviceInfo();
}

/**
 * Throws the typed error that says why `device` cannot run here: ERR_UNSUPPORTED naming what the
 * build lacks (no CUDA compiled in, or no CUDA backend yet), ERR_DEVICE when CUDA is built but no
 * GPU is usable. The addon refuses such a program too; this says so before a checkpoint is read.
 */
export function assertDevice(device: Device): void {
  if (device === 'cuda') {
    const info = addon().deviceInfo().cuda;
    if (!info.built) throw new UnsupportedError(`device 'cuda': ${info.error ?? 'this addon was built without CUDA'}`);
    if (!info.available) throw new DeviceError(`device 'cuda': no usable GPU (${info.error ?? 'no device'})`);
    if (addon().devices.includes(device)) return;
    throw new UnsupportedError(
      `device 'cuda': ${info.name} found, but this build has no CUDA backend; use device 'cpu'`,
    );
  }
  if (addon().devices.includes(device)) return;
  throw new UnsupportedError(
    `device '${device}': this addon has no backend for it (it has ${addon().devices.join(', ')})`,
  );
}
